// Subscribe, publish, errors and unsubscribe against a real server.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { connect } from "../broadcaster.js";
import { startServer } from "../testkit/server.mjs";
import { next, signal, within } from "../testkit/events.mjs";

let server;
const clients = [];

function client(options = {}) {
  const c = connect(server.url, { minDelay: 10, maxDelay: 100, ...options });
  clients.push(c);
  return c;
}

before(async () => {
  server = await startServer();
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server.kill();
});

test("a subscriber receives what a publisher publishes, with seq and channel", async () => {
  const sub = client();
  const pub = client();
  const got = [];
  const three = signal();
  const subscribed = next(sub, "subscribed", (e) => e.channel === "news");
  sub.subscribe("news", (data, meta) => {
    got.push({ data, meta });
    if (got.length === 3) three.resolve();
  });
  const reply = await subscribed;
  assert.equal(reply.seq, 0);
  assert.equal(reply.strategy, "drop-oldest");
  const seqs = [];
  for (let i = 0; i < 3; i++) seqs.push(await pub.publish("news", { n: i }));
  assert.deepEqual(seqs, [1, 2, 3]);
  await within(three.promise, 5000, "three messages");
  assert.deepEqual(got, [0, 1, 2].map((n) => ({ data: { n }, meta: { seq: n + 1, channel: "news" } })));
});

test("an error reply rejects the publish with its code", async () => {
  const pub = client();
  await assert.rejects(pub.publish("$sys.stats", 1), (err) => err.code === "forbidden");
});

test("unsubscribing stops delivery; other handlers of the channel keep theirs", async () => {
  const sub = client();
  const pub = client();
  const a = [];
  const b = [];
  const offA = sub.subscribe("u", (data) => a.push(data));
  sub.subscribe("u", (data) => b.push(data));
  await next(sub, "subscribed", (e) => e.channel === "u");
  const first = signal();
  const offOther = sub.subscribe("u.other", () => first.resolve());
  await next(sub, "subscribed", (e) => e.channel === "u.other");
  offA();
  await pub.publish("u", 1);
  await pub.publish("u.other", "marker");
  await within(first.promise, 5000, "the marker");
  assert.deepEqual(a, []);
  assert.deepEqual(b, [1]);
  offOther();
});

test("close() is final: no reconnect, and publishes are rejected", async () => {
  const c = client();
  await next(c, "connected");
  const disconnected = next(c, "disconnected");
  let reconnecting = 0;
  c.on("reconnecting", () => reconnecting++);
  await c.close();
  assert.deepEqual(await disconnected, { code: 1000, reason: "client closed", willReconnect: false });
  assert.equal(reconnecting, 0);
  await assert.rejects(c.publish("x", 1), (err) => err.code === "closed");
});
