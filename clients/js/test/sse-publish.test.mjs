// Publishing while on SSE, against a real server: the client POSTs to the configured HTTP
// API, and the API's CORS answers let a page of an allowed origin do it and no other page.
//
// Node's fetch does not enforce CORS, so `pageFetch(origin)` does what a browser does for a
// page of `origin`: it preflights the JSON POST (OPTIONS with Origin and the requested
// method and headers), sends the POST only when the answer approves exactly that, and hands
// the page the response only when it names the origin; otherwise it fails as a browser's
// fetch does (a TypeError). Chromium itself runs the same path in
// tests/browser/test_sse_cross_origin.py.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, connect } from "../broadcaster.js";
import { freePort, startServer } from "../testkit/server.mjs";
import { signal, within } from "../testkit/events.mjs";

const PAGE = "http://page.test:9000";
const ELSEWHERE = "https://elsewhere.example";
const KEY = "page-key";

let server;
let apiUrl;
const clients = [];

before(async () => {
  const apiPort = await freePort();
  apiUrl = `http://127.0.0.1:${apiPort}/api/publish`;
  server = await startServer(
    `allowed_origins = ["self", "${PAGE}"]\n\n[api]\nenabled = true\nport = ${apiPort}\nkeys = ["${KEY}"]\n`,
  );
});

after(async () => {
  for (const c of clients) await c.close();
  await server?.kill();
});

/** A WebSocket a locked-down page might have: its constructor refuses. */
class BlockedWebSocket {
  constructor() {
    throw new Error("WebSocket is blocked here");
  }
}

/** An EventSource that opens and stays quiet: these tests only publish over SSE. */
class QuietEventSource {
  constructor(url) {
    this.url = url;
    this.onmessage = this.onerror = null;
  }
  close() {}
}

/** fetch as a browser runs it for a page of `origin` (CORS enforced); records what it sent. */
function pageFetch(origin, seen = []) {
  return async (url, init) => {
    const requested = Object.keys(init.headers).map((h) => h.toLowerCase()).sort();
    const preflight = await fetch(url, {
      method: "OPTIONS",
      headers: {
        Origin: origin,
        "Access-Control-Request-Method": init.method,
        "Access-Control-Request-Headers": requested.join(","),
      },
    });
    seen.push({ preflight: preflight.status });
    const approved = (preflight.headers.get("access-control-allow-headers") ?? "")
      .split(",")
      .map((h) => h.trim().toLowerCase());
    if (
      !preflight.ok ||
      preflight.headers.get("access-control-allow-origin") !== origin ||
      !(preflight.headers.get("access-control-allow-methods") ?? "").split(",").map((m) => m.trim()).includes(init.method) ||
      !requested.every((h) => approved.includes(h))
    ) {
      throw new TypeError("Failed to fetch (CORS preflight refused)");
    }
    const response = await fetch(url, { ...init, headers: { ...init.headers, Origin: origin } });
    seen.push({ post: response.status });
    if (response.headers.get("access-control-allow-origin") !== origin) {
      throw new TypeError("Failed to fetch (no CORS header on the response)");
    }
    return response;
  };
}

function sseClient(origin, options = {}) {
  const c = new Client(server.url, {
    WebSocket: BlockedWebSocket,
    EventSource: QuietEventSource,
    fetch: pageFetch(origin, options.seen),
    apiUrl,
    apiKey: KEY,
    pingInterval: 0,
    ...options,
  });
  clients.push(c);
  return c;
}

/** A WebSocket subscriber of `channel` that collects what arrives. */
async function listener(channel) {
  const c = connect(server.url, { minDelay: 10, maxDelay: 100 });
  clients.push(c);
  const got = [];
  const waiters = [];
  c.subscribe(channel, (data, meta) => {
    got.push({ data, seq: meta.seq });
    for (const w of waiters.splice(0)) w();
  });
  await within(new Promise((resolve) => c.on("subscribed", resolve)), 10000, "subscribed");
  const count = (n) =>
    within(
      new Promise((resolve) => {
        const check = () => (got.length >= n ? resolve(got) : waiters.push(check));
        check();
      }),
      10000,
      `${n} messages on ${channel}`,
    );
  return count;
}

test("on SSE a page of an allowed origin publishes through the API with its key", async () => {
  const received = await listener("chat.allowed");
  const seen = [];
  const page = sseClient(PAGE, { seen });
  const seq = await page.publish("chat.allowed", { from: "page" });
  assert.equal(page.transport, "sse");
  assert.equal(seq, 1);
  assert.deepEqual(seen, [{ preflight: 204 }, { post: 200 }]);
  assert.deepEqual(await received(1), [{ data: { from: "page" }, seq: 1 }]);
});

test("the API's refusals reach the page with their code (a wrong key is unauthorized)", async () => {
  const page = sseClient(PAGE, { apiKey: "wrong" });
  await assert.rejects(page.publish("chat.refused", 1), (err) => err.code === "unauthorized");
});

test("a page of another origin cannot publish: the preflight is refused, nothing is sent", async () => {
  const received = await listener("chat.other");
  const seen = [];
  const page = sseClient(ELSEWHERE, { seen });
  await assert.rejects(page.publish("chat.other", { from: "elsewhere" }), (err) => err.code === "unavailable");
  assert.deepEqual(seen, [{ preflight: 403 }]);
  // What arrives next is the allowed page's publish, as seq 1: the refused one never existed.
  const done = signal();
  sseClient(PAGE).publish("chat.other", { from: "page" }).then(done.resolve);
  assert.equal(await within(done.promise, 10000, "the allowed publish"), 1);
  assert.deepEqual(await received(1), [{ data: { from: "page" }, seq: 1 }]);
});
