// A channel whose seq history restarts (a new epoch), through the browser client, against
// real servers: Redis losing the stream mid-subscription (FLUSHALL), a rate-capped subscriber,
// and a channel freed while idle on the memory broker. Without `reset` handling, the new
// epoch's seq 1, 2, ... were dropped as duplicates of the old epoch's (issue 15).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { connect } from "../broadcaster.js";
import { next, record, signal, until, within } from "../testkit/events.mjs";
import { startProxy } from "../testkit/proxy.mjs";
import { startRedis } from "../testkit/redis.mjs";
import { BASE_TOML, startServer } from "../testkit/server.mjs";

let redis;
let clustered;
let memory;
const clients = [];
const proxies = [];

function client(url, options = {}) {
  const c = connect(url, { minDelay: 10, maxDelay: 100, pingInterval: 0, ...options });
  clients.push(c);
  return c;
}

/** Collect a channel's messages as [seq, data]; `count(n)` resolves once n arrived. */
function collector(c, channel, options = {}) {
  const got = [];
  const waiters = [];
  c.subscribe(
    channel,
    (data, meta) => {
      got.push([meta.seq, data]);
      for (const w of [...waiters]) if (w.done()) w.resolve();
    },
    options,
  );
  const wait = (done, what) => {
    if (done()) return Promise.resolve();
    const s = signal();
    waiters.push({ done, resolve: s.resolve });
    return within(s.promise, 10000, what);
  };
  return {
    got,
    count: (n) => wait(() => got.length >= n, `${n} messages of ${channel}`),
    seq: (seq) => wait(() => got.some(([s]) => s === seq), `${channel} seq ${seq}`),
  };
}

before(async () => {
  redis = await startRedis();
  clustered = await startServer(redis.toml);
  memory = await startServer(`[channels."news"]\nhistory_size = 10\nhistory_ttl = 0.3\n`, {
    base: `${BASE_TOML}idle_channel_ttl = 0.2\n`,
  });
});

after(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all([clustered?.kill(), memory?.kill()]);
  await redis?.stop();
});

test("Redis loses the stream mid-subscription: one reset, then every message of the new epoch", async () => {
  const sub = client(clustered.url);
  const pub = client(clustered.url);
  const resets = record(sub, "reset");
  const gaps = record(sub, "gap");
  const subscribed = next(sub, "subscribed", (e) => e.channel === "flushed");
  const news = collector(sub, "flushed");
  const oldEpoch = (await subscribed).epoch;
  for (let n = 0; n < 5; n++) assert.equal(await pub.publish("flushed", `old ${n}`), n + 1);
  await news.count(5);

  assert.equal(await redis.command("FLUSHALL"), "+OK");
  const seqs = [];
  for (let n = 0; n < 7; n++) seqs.push(await pub.publish("flushed", `new ${n}`));
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7], "the lost stream starts again from 1");
  await news.count(12);

  assert.deepEqual(
    news.got.slice(5),
    seqs.map((seq, n) => [seq, `new ${n}`]),
  );
  assert.equal(resets.length, 1);
  const [reset] = resets;
  assert.notEqual(reset.epoch, oldEpoch);
  assert.deepEqual(reset, { channel: "flushed", oldEpoch, epoch: reset.epoch, lastSeq: 5, missed: 0, seq: 0 });
  assert.deepEqual(gaps, []);
  // Nothing beyond the 12: one more message is the next one delivered.
  assert.equal(await pub.publish("flushed", "last"), 8);
  await news.count(13);
  assert.deepEqual(news.got.slice(12), [[8, "last"]]);
});

test("a maxRate subscriber gets the reset, then the new epoch's latest message", async () => {
  const sub = client(clustered.url);
  const pub = client(clustered.url);
  const resets = record(sub, "reset");
  const subscribed = next(sub, "subscribed", (e) => e.channel === "capped");
  const capped = collector(sub, "capped", { maxRate: 20 });
  const oldEpoch = (await subscribed).epoch;
  assert.equal(await pub.publish("capped", "old"), 1);
  await capped.seq(1);

  assert.equal(await redis.command("FLUSHALL"), "+OK");
  for (let n = 0; n < 3; n++) await pub.publish("capped", `new ${n}`);
  await capped.seq(3);
  assert.deepEqual(capped.got.at(-1), [3, "new 2"]);
  await until(sub, ["reset"], () => resets.length >= 1, 10000, "the reset");
  assert.equal(resets.length, 1);
  assert.deepEqual(
    [resets[0].oldEpoch, resets[0].lastSeq, resets[0].seq],
    [oldEpoch, 1, 0],
  );
  assert.notEqual(resets[0].epoch, oldEpoch);
});

test("memory broker: a channel freed while away is a reset on resubscribe, then every later message", async () => {
  const link = await startProxy(memory.port);
  proxies.push(link);
  const sub = client(link.url);
  const pub = client(memory.url);
  const resets = record(sub, "reset");
  const gaps = record(sub, "gap");
  const replies = record(sub, "subscribed");
  const news = collector(sub, "news");
  await until(sub, ["subscribed"], () => replies.length === 1, 10000, "subscribed");
  const oldEpoch = replies[0].epoch;
  for (let n = 0; n < 3; n++) await pub.publish("news", n);
  await news.count(3);

  link.refuse(true);
  const disconnected = next(sub, "disconnected");
  link.cut();
  await disconnected;
  // Freed once unused for idle_channel_ttl (history_ttl, as it keeps history): poll /stats.
  let freed = false;
  for (let attempt = 0; attempt < 500 && !freed; attempt++) {
    freed = (await memory.stats()).totals.channels_freed >= 1; // "news" is its only channel
    if (!freed) await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(freed, "'news' freed while the client was away");
  assert.equal(await pub.publish("news", "while away 0"), 1, "a new epoch");
  assert.equal(await pub.publish("news", "while away 1"), 2);
  link.refuse(false);

  await until(sub, ["subscribed"], () => replies.length === 2, 10000, "resubscribed");
  const again = replies[1];
  assert.deepEqual([again.recovered, again.seq], [false, 2]);
  assert.notEqual(again.epoch, oldEpoch);
  assert.deepEqual(resets, [{ channel: "news", oldEpoch, epoch: again.epoch, lastSeq: 3, missed: null, seq: 2 }]);
  for (let n = 0; n < 4; n++) await pub.publish("news", `after ${n}`);
  await news.count(7);
  assert.deepEqual(news.got.slice(3), [[3, "after 0"], [4, "after 1"], [5, "after 2"], [6, "after 3"]]);
  assert.deepEqual(gaps, []);
  assert.equal(resets.length, 1);
});
