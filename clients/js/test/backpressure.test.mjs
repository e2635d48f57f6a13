// A subscriber that really stops reading (a stalled TCP proxy in front of it), on a
// drop-oldest channel (gap detection), a block channel (a well-behaved publisher) and a
// channel that cuts slow consumers (close 4008: a long backoff, no reconnect storm).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { connect } from "../broadcaster.js";
import { next, record, signal, until, within } from "../testkit/events.mjs";
import { startProxy } from "../testkit/proxy.mjs";
import { BASE_TOML, startServer } from "../testkit/server.mjs";

const CHANNELS = `
[channels."oldest"]
strategy = "drop-oldest"
queue_size = 8
slow_consumer_timeout = 30.0

[channels."orders"]
strategy = "block"
queue_size = 8
slow_consumer_timeout = 30.0

[channels."slow"]
strategy = "drop-oldest"
queue_size = 8
slow_consumer_timeout = 0.2
`;

const PAD = "x".repeat(1000);
const BATCH = 100;
const MAX_BATCHES = 60;

let server;
const clients = [];
const proxies = [];
const servers = [];

function client(url, options = {}) {
  const c = connect(url, { minDelay: 10, maxDelay: 100, pingInterval: 0, ...options });
  clients.push(c);
  return c;
}

async function stalledSubscriber(target, channel, options = {}) {
  const link = await startProxy(target.port);
  proxies.push(link);
  const sub = client(link.url, options);
  const got = [];
  const waiters = [];
  sub.subscribe(channel, (data, meta) => {
    got.push(meta.seq);
    for (const w of [...waiters]) if (meta.seq >= w.seq) w.resolve();
  });
  await next(sub, "subscribed", (e) => e.channel === channel);
  link.stall();
  const reached = (seq) => {
    if (got.length && got[got.length - 1] >= seq) return Promise.resolve();
    const s = signal();
    waiters.push({ seq, resolve: s.resolve });
    return within(s.promise, 10000, `${channel} seq ${seq}`);
  };
  return { sub, link, got, reached };
}

/** Publish batches until the server reports that `channel` dropped messages (bounded). */
async function publishUntilDropped(target, pub, channel) {
  let last = 0;
  for (let batch = 0; batch < MAX_BATCHES; batch++) {
    const acks = [];
    for (let i = 0; i < BATCH; i++) acks.push(pub.publish(channel, { pad: PAD }));
    last = Math.max(...(await Promise.all(acks)));
    const stats = await target.stats();
    const dropped = Object.values(stats.channels[channel]?.dropped ?? {}).reduce((a, b) => a + b, 0);
    if (dropped > 0) return last;
  }
  throw new Error(`${channel}: no drop after ${MAX_BATCHES * BATCH} messages`);
}

before(async () => {
  server = await startServer(CHANNELS);
  servers.push(server);
});

after(async () => {
  await Promise.all(proxies.map((p) => p.close())); // first: a stalled link would hold a close
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.kill()));
});

test("a subscriber that fell behind on drop-oldest reports gaps with the exact missed count", async () => {
  const { sub, link, got, reached } = await stalledSubscriber(server, "oldest");
  const pub = client(server.url);
  const gaps = record(sub, "gap");
  const pauses = record(sub, "pause");
  const resumes = record(sub, "resume");
  const total = await publishUntilDropped(server, pub, "oldest");
  link.resume();
  await reached(total);
  await until(sub, ["resume"], () => resumes.length >= 1, 10000, "flow.resume");

  const missed = gaps.reduce((n, g) => n + g.missed, 0);
  assert.ok(missed > 0);
  assert.equal(missed, total - got.length, "every missing seq is accounted for, exactly");
  assert.equal(missed, resumes.reduce((n, r) => n + r.dropped, 0), "and matches the server's count");
  assert.deepEqual(got, [...got].sort((a, b) => a - b));
  assert.equal(got.at(-1), total, "drop-oldest keeps the newest");
  for (const g of gaps) assert.equal(g.to - g.from + 1, g.missed);
  assert.equal(pauses[0].reason, "buffer full");
  assert.equal(pauses[0].limit, 8);
});

test("a publisher on a blocked channel holds its publishes until flow.resume and loses none", async () => {
  const { link, got, reached } = await stalledSubscriber(server, "orders");
  const pub = client(server.url);
  const paused = next(pub, "pause", (e) => e.channel === "orders", 20000);
  const resumed = next(pub, "resume", (e) => e.channel === "orders", 20000);
  const acks = [];
  const publish = () => acks.push(pub.publish("orders", { n: acks.length, pad: PAD }));
  let pause = null;
  let heldAtPause = null;
  pub.on("pause", (e) => {
    // While the server has this publisher paused, new publishes stay in the client.
    if (e.reason !== "channel blocked" || pause) return;
    pause = e;
    const before = pub.queued;
    for (let i = 0; i < 20; i++) publish();
    heldAtPause = pub.queued - before;
  });
  for (let batch = 0; batch < MAX_BATCHES && pause === null; batch++) {
    for (let i = 0; i < BATCH; i++) publish();
    await Promise.race([acks.at(-1), paused]);
  }
  assert.ok(pause, "the server paused the publisher");
  assert.equal(pause.reason, "channel blocked");
  assert.equal(heldAtPause, 20);

  link.resume();
  assert.equal((await resumed).dropped, 0);
  const seqs = await within(Promise.all(acks), 20000, "every publish acknowledged");
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "every publish accepted once, in order");
  await reached(seqs.length);
  assert.deepEqual(got, seqs, "the subscriber got every message: block loses nothing");
  assert.equal(pub.queued, 0);
});

test("after close 4008 the client waits a long backoff: one reconnect, no storm", async () => {
  // close_timeout is long so that the 4008 close frame waits in the stalled link for us.
  const slowServer = await startServer(CHANNELS, { base: BASE_TOML.replace("close_timeout = 0.5", "close_timeout = 30") });
  servers.push(slowServer);
  const { sub, link } = await stalledSubscriber(slowServer, "slow", { minDelay: 1, maxDelay: 2, longDelay: 400 });
  const pub = client(slowServer.url);
  const steps = record(sub, "reconnecting");
  const disconnected = next(sub, "disconnected", () => true, 20000);
  // Keep the queue full (the stalled link's kernel buffers still take a little now and
  // then) until the server has cut the subscriber off.
  const cut = /closing with 4008/;
  for (let batch = 0; batch < 10 * MAX_BATCHES && !cut.test(slowServer.log); batch++) {
    const acks = [];
    for (let i = 0; i < BATCH; i++) acks.push(pub.publish("slow", { pad: PAD }));
    await Promise.all(acks);
  }
  await slowServer.waitForLog(cut);
  const accepted = link.accepted;
  const back = next(sub, "connected", (e) => e.reconnect, 20000);
  link.resume();
  assert.deepEqual(await disconnected, { code: 4008, reason: "slow consumer", willReconnect: true });
  assert.equal(steps.length, 1);
  assert.equal(steps[0].kind, "long");
  assert.ok(steps[0].delay >= 200 && steps[0].delay < 400, `long delay, got ${steps[0].delay}`);
  await back;
  assert.equal(steps.length, 1, "exactly one reconnect attempt");
  assert.equal(link.accepted, accepted + 1, "exactly one new connection");
});
