// Reconnecting: a server restart mid-stream, a cut link with and without history, a dead link.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { connect } from "../broadcaster.js";
import { next, record, signal, until, within } from "../testkit/events.mjs";
import { startProxy } from "../testkit/proxy.mjs";
import { startServer } from "../testkit/server.mjs";

const CHANNELS = `
[channels."hist"]
history_size = 100
`;

let server;
const clients = [];
const proxies = [];

function client(url, options = {}) {
  const c = connect(url, { minDelay: 10, maxDelay: 100, pingInterval: 0, ...options });
  clients.push(c);
  return c;
}

async function proxy() {
  const p = await startProxy(server.port);
  proxies.push(p);
  return p;
}

/** Collect a channel's messages; `waitFor(seq)` resolves once that seq arrived. */
function collector(c, channel) {
  const got = [];
  const waiters = [];
  c.subscribe(channel, (data, meta) => {
    got.push(meta.seq);
    for (const w of [...waiters]) if (got.includes(w.seq)) w.resolve();
  });
  return {
    got,
    waitFor(seq, what = `${channel} seq ${seq}`) {
      if (got.includes(seq)) return Promise.resolve();
      const s = signal();
      waiters.push({ seq, resolve: s.resolve });
      return within(s.promise, 10000, what);
    },
  };
}

before(async () => {
  server = await startServer(CHANNELS);
});

after(async () => {
  await Promise.all(proxies.map((p) => p.close())); // first: a stalled link would hold a close
  await Promise.all(clients.map((c) => c.close()));
  await server.kill();
});

test("server restarted mid-stream: backoff grows with full jitter, then resubscribe, one reset, no false gap", async () => {
  const drawn = [];
  const random = () => {
    const r = Math.random();
    drawn.push(r);
    return r;
  };
  const options = { minDelay: 5, maxDelay: 40, factor: 2, random };
  const sub = client(server.url, options);
  const pub = client(server.url);
  const first = next(sub, "subscribed", (e) => e.channel === "ticks");
  const ticks = collector(sub, "ticks");
  const oldEpoch = (await first).epoch;
  const resets = record(sub, "reset");
  for (let i = 1; i <= 3; i++) assert.equal(await pub.publish("ticks", { i }), i);
  await ticks.waitFor(3);
  const gaps = record(sub, "gap");
  const steps = record(sub, "reconnecting");
  const disconnected = next(sub, "disconnected");

  await server.stop(); // SIGTERM: close 1001, then the port refuses connections
  assert.deepEqual(await disconnected, { code: 1001, reason: "server shutting down", willReconnect: true });
  // Let the client fail a few times against the closed port before the server comes back.
  await until(sub, ["reconnecting"], () => steps.length >= 6, 10000, "six reconnect attempts");
  const queued = pub.publish("ticks", { i: "while down" });
  assert.equal(pub.queued, 1, "a publish made while disconnected is held");
  const back = next(sub, "subscribed", (e) => e.channel === "ticks");
  await server.start();
  const reply = await back;
  assert.equal(reply.recovered, false, "a new epoch cannot recover the old one");
  assert.deepEqual(
    resets,
    [{ channel: "ticks", oldEpoch, epoch: reply.epoch, lastSeq: 3, missed: null, seq: reply.seq }],
    "the restart is reported once, with where each history stands",
  );

  // Growth and jitter bounds of every chosen delay: delay = r * min(maxDelay, minDelay * 2^n).
  assert.deepEqual(
    steps.slice(0, 6).map((s) => s.attempt),
    [0, 1, 2, 3, 4, 5],
  );
  const caps = steps.map((s) => Math.min(40, 5 * 2 ** s.attempt));
  assert.deepEqual(caps.slice(0, 6), [5, 10, 20, 40, 40, 40]);
  steps.forEach((s, i) => {
    assert.equal(s.kind, "normal");
    assert.equal(s.delay, drawn[i] * caps[i]);
    assert.ok(s.delay >= 0 && s.delay < caps[i]);
  });
  assert.equal(steps[0].code, 1001);
  assert.ok(steps.slice(1).every((s) => s.code === 1006), "failed attempts are abnormal closes");

  // The held publish went out after the reconnect; live delivery goes on in the new epoch.
  const queuedSeq = await within(queued, 10000, "the held publish");
  assert.ok(queuedSeq >= 1);
  const seq = await pub.publish("ticks", { i: "after" });
  await ticks.waitFor(seq);
  assert.deepEqual(gaps, [], "a restarted server starts a new epoch: no false gap");
});

test("a cut link: resubscribe with since recovers from history; without history the gap is exact", async () => {
  const link = await proxy();
  const sub = client(link.url);
  const pub = client(server.url);
  const first = record(sub, "subscribed");
  const hist = collector(sub, "hist");
  const plain = collector(sub, "plain");
  await until(sub, ["subscribed"], () => first.length === 2, 10000, "both subscriptions");
  for (let i = 1; i <= 2; i++) {
    await pub.publish("hist", i);
    await pub.publish("plain", i);
  }
  await hist.waitFor(2);
  await plain.waitFor(2);
  const gaps = record(sub, "gap");
  const replies = record(sub, "subscribed");

  link.refuse(true);
  const disconnected = next(sub, "disconnected");
  link.cut();
  assert.equal((await disconnected).code, 1006);
  for (let i = 3; i <= 7; i++) {
    await pub.publish("hist", i);
    await pub.publish("plain", i);
  }
  link.refuse(false);
  await hist.waitFor(7);
  await until(sub, ["gap"], () => gaps.length >= 1, 10000, "the gap on plain");
  assert.deepEqual(hist.got, [1, 2, 3, 4, 5, 6, 7], "replayed in order, nothing twice");
  assert.deepEqual(gaps, [{ channel: "plain", missed: 5, from: 3, to: 7 }]);
  assert.deepEqual(
    replies.map((r) => [r.channel, r.recovered]).sort(),
    [
      ["hist", true],
      ["plain", false],
    ],
  );
  const seq = await pub.publish("plain", 8);
  await plain.waitFor(seq);
  assert.deepEqual(plain.got, [1, 2, 8]);
  assert.equal(gaps.length, 1);
});

test("a dead link is detected by the heartbeat and replaced", async () => {
  const link = await proxy();
  const sub = client(link.url, { pingInterval: 30, pingTimeout: 60 });
  await next(sub, "connected");
  const disconnected = next(sub, "disconnected");
  const reconnected = next(sub, "connected", (e) => e.reconnect);
  link.freeze();
  assert.deepEqual(await disconnected, { code: 1006, reason: "ping timeout", willReconnect: true });
  await reconnected;
  assert.equal(sub.connected, true);
});
