// The `token` option against a server with auth on (HS256 tokens signed here with node:crypto).

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, test } from "node:test";

import { connect, TOKEN_EXPIRED } from "../broadcaster.js";
import { startServer } from "../testkit/server.mjs";
import { next, signal, within } from "../testkit/events.mjs";

const SECRET = "js-test-secret-0123456789-abcdefghijkl";

/** An HS256 JWT valid for `ttl` seconds (a fractional exp is allowed). */
function token(claims, ttl = 3600) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "js", exp: Date.now() / 1000 + ttl, ...claims })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

let server;
const clients = [];

function client(options = {}) {
  const c = connect(server.url, { minDelay: 10, maxDelay: 100, ...options });
  clients.push(c);
  return c;
}

before(async () => {
  server = await startServer(`
[auth]
enabled = true
secret = "${SECRET}"

[defaults]
subscribe = "token"
publish = "token"
`);
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server.kill();
});

test("a token string is sent first, so the subscribe behind it is granted", async () => {
  const sub = client({ token: token({ subscribe: ["news"] }) });
  const pub = client({ token: token({ publish: ["news"] }) });
  const got = signal();
  const subscribed = next(sub, "subscribed", (e) => e.channel === "news");
  sub.subscribe("news", (data) => got.resolve(data));
  await subscribed;
  assert.equal(await pub.publish("news", "hi"), 1);
  assert.equal(await within(got.promise, 5000, "the message"), "hi");
});

test("without a token the subscription is refused with forbidden", async () => {
  const anon = client();
  const error = next(anon, "error", (e) => e.channel === "private");
  anon.subscribe("private", () => {});
  const err = await error;
  assert.equal(err.code, "forbidden");
});

test("a fixed token that expires closes for good with 1008", async () => {
  const c = client({ token: token({ subscribe: ["news"] }, 0.3) });
  c.subscribe("news", () => {});
  const closed = await next(c, "disconnected");
  assert.deepEqual(closed, { code: 1008, reason: TOKEN_EXPIRED, willReconnect: false });
});

test("a token function reconnects with a fresh token after expiry", async () => {
  const issued = [];
  const c = client({
    token: async () => {
      const t = token({ subscribe: ["fresh"] }, issued.length === 0 ? 0.3 : 3600);
      issued.push(t);
      return t;
    },
  });
  const first = next(c, "subscribed", (e) => e.channel === "fresh");
  c.subscribe("fresh", () => {});
  await first;
  const closed = await next(c, "disconnected");
  assert.deepEqual(closed, { code: 1008, reason: TOKEN_EXPIRED, willReconnect: true });
  await next(c, "subscribed", (e) => e.channel === "fresh");
  assert.equal(issued.length, 2);
});
