// Snapshots and max_rate through the browser client, against a real server.

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
  server = await startServer(`
[channels."book"]
strategy = "conflate"
conflate_key = "symbol"
snapshot = true

[channels."plain"]
strategy = "drop-oldest"
max_rate = 10
`);
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server.kill();
});

test("a late subscriber gets the snapshot flagged, then live messages, and no gap", async () => {
  const pub = client();
  for (const [symbol, price] of [["A", 1], ["B", 2], ["A", 3]]) await pub.publish("book", { symbol, price });
  const sub = client();
  const got = [];
  const gaps = [];
  sub.on("gap", (g) => gaps.push(g));
  const three = signal();
  sub.subscribe("book", (data, meta) => {
    got.push([meta.seq, data.symbol, meta.snapshot === true]);
    if (got.length === 3) three.resolve();
  });
  await next(sub, "subscribed", (e) => e.channel === "book");
  await pub.publish("book", { symbol: "B", price: 4 });
  await within(three.promise, 5000, "snapshot and one live message");
  assert.deepEqual(got, [[2, "B", true], [3, "A", true], [4, "B", false]]);
  assert.deepEqual(gaps, []);
});

test("maxRate reaches the server, capped by the channel's max_rate", async () => {
  const sub = client();
  sub.subscribe("plain", () => {}, { maxRate: 1000 });
  await next(sub, "subscribed", (e) => e.channel === "plain");
  const stats = await (await fetch(server.url.replace("ws://", "http://").replace("/ws", "/stats"))).json();
  const rates = stats.connections.flatMap((c) =>
    c.subscriptions.filter((s) => s.channel === "plain").map((s) => s.max_rate),
  );
  assert.deepEqual(rates, [10]);
});
