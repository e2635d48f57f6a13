// The SSE fallback against a scripted EventSource: the same events as over WebSocket,
// one stream per channel, resumption from EPOCH:SEQ, the server's close code obeyed.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, sseUrlBeside, sseUrlFor } from "../broadcaster.js";

/** An EventSource the test drives: it records every instance and its URL. */
function fakeEventSource() {
  const opened = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.closed = false;
      this.onmessage = this.onerror = null;
      opened.push(this);
    }
    close() {
      this.closed = true;
    }
    emit(event) {
      this.onmessage?.({ data: JSON.stringify(event) });
    }
  }
  return { FakeEventSource, opened };
}

/** A WebSocket a locked-down page might have: its constructor refuses. */
class BlockedWebSocket {
  constructor() {
    throw new Error("WebSocket is blocked here");
  }
}

const tick = (ms = 5) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(predicate, what) {
  for (let i = 0; i < 200; i++) {
    if (predicate()) return;
    await tick();
  }
  throw new Error(`timed out waiting for ${what}`);
}

test("the stream URL sits next to the WebSocket URL", () => {
  assert.equal(sseUrlFor("ws://127.0.0.1:8765/ws"), "http://127.0.0.1:8765/sse");
  assert.equal(sseUrlFor("wss://example.com/ws"), "https://example.com/sse");
});

test("with an apiUrl the streams come straight from the API port (no cross-origin redirect)", async () => {
  assert.equal(sseUrlBeside("http://127.0.0.1:8766/api/publish"), "http://127.0.0.1:8766/sse");
  assert.equal(sseUrlBeside("https://example.com/rt/api/publish"), "https://example.com/rt/sse");
  const { FakeEventSource, opened } = fakeEventSource();
  const client = new Client("ws://127.0.0.1:8765/ws", {
    WebSocket: BlockedWebSocket,
    EventSource: FakeEventSource,
    apiUrl: "http://127.0.0.1:8766/api/publish",
    pingInterval: 0,
  });
  client.subscribe("news", () => {});
  await until(() => opened.length === 1, "the stream");
  assert.equal(opened[0].url, "http://127.0.0.1:8766/sse?channel=news");
  await client.close();
});

test("when WebSocket is refused the client subscribes over SSE and resumes from EPOCH:SEQ", async () => {
  const { FakeEventSource, opened } = fakeEventSource();
  const client = new Client("ws://127.0.0.1:1/ws", {
    WebSocket: BlockedWebSocket,
    EventSource: FakeEventSource,
    longDelay: 20,
    pingInterval: 0,
  });
  const events = [];
  for (const name of ["connected", "subscribed", "gap", "disconnected", "reconnecting"]) {
    client.on(name, (e) => events.push([name, e]));
  }
  const got = [];
  client.subscribe("news", (data, meta) => got.push([meta.seq, data]));
  await until(() => opened.length === 1, "the first stream");
  assert.equal(client.transport, "sse");
  const first = opened[0];
  assert.equal(first.url, "http://127.0.0.1:1/sse?channel=news");
  first.emit({ event: "subscribed", channel: "news", strategy: "drop-oldest", queue_size: 8, seq: 0, epoch: "e1" });
  first.emit({ event: "message", channel: "news", seq: 1, data: "a" });
  first.emit({ event: "message", channel: "news", seq: 3, data: "c" });
  await until(() => got.length === 2, "two messages");
  assert.deepEqual(got, [[1, "a"], [3, "c"]]);
  assert.deepEqual(events.find(([n]) => n === "gap")[1], { channel: "news", missed: 1, from: 2, to: 2 });

  // The server cuts the reader as a slow consumer: the client obeys 4008 (long backoff),
  // then opens a new stream that resumes where it was.
  first.emit({ event: "close", code: 4008, reason: "slow consumer" });
  await until(() => opened.length === 2, "the stream to be reopened");
  assert.ok(first.closed, "the old EventSource is closed, never left to reconnect by itself");
  const disconnected = events.find(([n]) => n === "disconnected")[1];
  assert.equal(disconnected.code, 4008);
  assert.equal(events.find(([n]) => n === "reconnecting")[1].kind, "long");
  assert.equal(opened[1].url, "http://127.0.0.1:1/sse?channel=news&last_event_id=e1%3A3");
  opened[1].emit({ event: "subscribed", channel: "news", strategy: "drop-oldest", queue_size: 8, seq: 4, epoch: "e1", recovered: true });
  opened[1].emit({ event: "message", channel: "news", seq: 4, data: "d" });
  await until(() => got.length === 3, "the recovered message");
  assert.deepEqual(got.at(-1), [4, "d"]);
  await client.close();
  assert.ok(opened[1].closed);
});

test("publishes over SSE go to the HTTP API, or fail with unavailable without one", async () => {
  const { FakeEventSource } = fakeEventSource();
  const posted = [];
  const fetch = async (url, init) => {
    posted.push([url, JSON.parse(init.body), init.headers]);
    return { ok: true, status: 200, json: async () => ({ seq: 7 }) };
  };
  const withApi = new Client("ws://127.0.0.1:1/ws", {
    WebSocket: BlockedWebSocket,
    EventSource: FakeEventSource,
    apiUrl: "http://127.0.0.1:2/api/publish",
    apiKey: "k",
    fetch,
    pingInterval: 0,
  });
  assert.equal(await withApi.publish("news", { a: 1 }), 7);
  assert.deepEqual(posted, [
    ["http://127.0.0.1:2/api/publish", { channel: "news", data: { a: 1 } }, { "Content-Type": "application/json", Authorization: "apikey k" }],
  ]);
  await withApi.close();

  const without = new Client("ws://127.0.0.1:1/ws", { WebSocket: BlockedWebSocket, EventSource: FakeEventSource, pingInterval: 0 });
  await assert.rejects(without.publish("news", 1), (err) => err.code === "unavailable");
  await without.close();
});

test("a relative apiUrl is resolved against the page, like the stream URL", async () => {
  const { FakeEventSource } = fakeEventSource();
  const posted = [];
  const fetch = async (url) => {
    posted.push(url);
    return { ok: true, status: 200, json: async () => ({ seq: 1 }) };
  };
  const had = Object.getOwnPropertyDescriptor(globalThis, "location");
  Object.defineProperty(globalThis, "location", { value: { href: "https://app.example/desk/" }, configurable: true });
  try {
    const client = new Client("wss://app.example/ws", {
      WebSocket: BlockedWebSocket,
      EventSource: FakeEventSource,
      apiUrl: "/api/publish",
      fetch,
      pingInterval: 0,
    });
    assert.equal(await client.publish("news", 1), 1);
    assert.deepEqual(posted, ["https://app.example/api/publish"]);
    await client.close();
  } finally {
    if (had) Object.defineProperty(globalThis, "location", had);
    else delete globalThis.location;
  }
});
