// broadcaster.js: the browser (and Node 20+) client for broadcaster's wire protocol v1.
//
// One dependency-free ES module, usable from a plain <script type="module">:
//
//   import { connect } from "/js/broadcaster.js";
//   const client = connect(`ws://${location.host}/ws`);
//   client.subscribe("tickers.demo", (data, meta) => console.log(meta.seq, data));
//
// What it does for you, so that nobody hand-rolls the protocol (docs/PROTOCOL.md):
// - reconnects with exponential backoff, full jitter and a cap; after a close
//   that means "you or the server are overloaded" (4008, 1013, 4029) it waits a
//   long, spread-out delay so that thousands of clients do not come back at once;
//   it never reconnects after close() or a policy close (1008);
// - resubscribes after a reconnect with `since` + `epoch`, so a server that keeps
//   history replays what was missed; what could not be replayed is reported as a
//   `gap` with the exact number of missed messages;
// - detects gaps from `seq` on every live channel (not on conflate channels,
//   whose seqs only grow per key);
// - follows a channel whose seq history restarted (a new epoch: Redis lost the
//   stream, the server restarted, the channel was freed while idle): it emits
//   `reset` and delivers the new epoch's messages from seq 1;
// - pings the server and treats a missing pong as a dead connection;
// - holds publishes while the server says "channel blocked" (a well-behaved
//   publisher), and queues publishes made while disconnected;
// - authenticates with `options.token` (a JWT or the admin token, sent in an `auth`
//   op before anything else on every connection; or a function returning one, called
//   for each connection, so that a close 1008 "token expired" reconnects with a fresh one);
// - falls back to Server-Sent Events when a WebSocket cannot be opened (no WebSocket in
//   the page, or `fallbackAfter` attempts that never opened: a proxy that strips the
//   upgrade): subscriptions then arrive over `GET /sse` (one EventSource per channel, so
//   each resumes from its own `EPOCH:SEQ`) with the same events (`gap`, `pause`, `resume`,
//   `reset`), and publishes go to the HTTP API (`options.apiUrl`) when the page has one.

/** What the client does after a close code: "none" (stay closed), "normal" or "long" backoff.
 * Mirrors broadcaster/codes.py CLOSE_CODES (a test checks that the two agree). */
export const CLOSE_POLICY = Object.freeze({
  1000: "none",
  1001: "normal",
  1008: "none",
  1009: "normal",
  1011: "normal",
  1013: "long",
  4008: "long",
  4029: "long",
});

/** The reconnect decision for a close code; codes not in the table (1006, 1011, ...) retry normally. */
export function closePolicy(code) {
  return CLOSE_POLICY[code] ?? "normal";
}

/** The close reason of a 1008 sent when a token's `exp` passes. */
export const TOKEN_EXPIRED = "token expired";

/** Defaults for `connect` options; delays are in milliseconds. */
export const DEFAULTS = Object.freeze({
  minDelay: 500,
  maxDelay: 20000,
  factor: 2,
  longDelay: 30000,
  pingInterval: 25000,
  pingTimeout: 10000,
  maxQueued: 1000,
  fallbackAfter: 2,
});

/**
 * The reconnect delay policy, a pure object: give it a random source and it is deterministic.
 *
 * normal: attempt n waits random() * min(maxDelay, minDelay * factor^n) ("full jitter":
 * clients that lost the same server spread over the whole window instead of retrying in step).
 * long: waits at least longDelay / 2 (or the server's Retry-After when known) plus up to
 * longDelay / 2 of jitter, so a shed or slow client does not come straight back.
 */
export class Backoff {
  constructor(options = {}, random = Math.random) {
    const o = { ...DEFAULTS, ...options };
    this.minDelay = o.minDelay;
    this.maxDelay = o.maxDelay;
    this.factor = o.factor;
    this.longDelay = o.longDelay;
    this.random = random;
    this.attempt = 0;
  }

  /** The cap of the jitter window for attempt `n` of the normal backoff. */
  cap(n) {
    return Math.min(this.maxDelay, this.minDelay * this.factor ** n);
  }

  /** The next delay; `kind` is "normal" or "long"; `retryAfter` (ms) is honoured on "long". */
  next(kind = "normal", retryAfter = null) {
    const attempt = this.attempt++;
    if (kind === "long") {
      const spread = this.longDelay / 2;
      const floor = retryAfter ?? spread;
      return { attempt, kind, delay: floor + this.random() * spread };
    }
    return { attempt, kind, delay: this.random() * this.cap(attempt) };
  }

  /** A connection opened: the next failure starts from the smallest window again. */
  reset() {
    this.attempt = 0;
  }
}

/**
 * Per-channel seq bookkeeping: which messages were missed, and what to ask for on resubscribe.
 * Pure (no socket), so gap accounting is unit-tested on its own.
 */
export class SeqTracker {
  constructor(since = null, epoch = null) {
    this.seq = typeof since === "number" ? since : null;
    this.epoch = typeof since === "number" ? epoch ?? null : null;
    this.conflate = false;
  }

  /** `{since, epoch}` for the next subscribe op, or null when nothing was seen yet. */
  resumeFrom() {
    return this.seq === null ? null : { since: this.seq, epoch: this.epoch };
  }

  /**
   * A `subscribed` reply to a subscribe sent with `since` (or null): `{gap, reset}`, each or null.
   * A new epoch means seq restarted from 1: forget what we knew (no false gap) and say so.
   */
  subscribed(reply, since) {
    this.conflate = reply.strategy === "conflate";
    const newEpoch = typeof reply.epoch === "string" && this.epoch !== null && reply.epoch !== this.epoch;
    const reset = newEpoch ? this._reset(reply, reply.seq) : null;
    const sameHistory = since !== null && !newEpoch;
    let gap = null;
    if (sameHistory && reply.recovered === true) {
      this.seq = since; // the missed messages follow, then the live stream
    } else {
      if (sameHistory && reply.seq > since) {
        gap = { channel: reply.channel, missed: reply.seq - since, from: since + 1, to: reply.seq };
      }
      this.seq = reply.seq;
    }
    this.epoch = reply.epoch ?? null;
    return { gap, reset };
  }

  /**
   * An in-band `subscribed` with `reset: true`: the old epoch's messages this node delivered
   * came before it, the new epoch's follow from seq 1. Returns the `reset` event.
   */
  reset(notice) {
    this.conflate = notice.strategy === "conflate";
    const reset = this._reset(notice, 0);
    this.seq = 0;
    this.epoch = reset.epoch;
    return reset;
  }

  _reset(reply, seq) {
    // `missed`: exact when the server names the epoch it replaced (previous_epoch and
    // previous_seq, as the Redis broker does) and it is the one followed here; else null
    // (a freed channel, a restarted server): unknown, never a guess.
    let missed = null;
    if (this.epoch != null && reply.previous_epoch === this.epoch && Number.isInteger(reply.previous_seq)) {
      missed = Math.max(0, reply.previous_seq - (this.seq ?? 0));
    }
    return { channel: reply.channel, oldEpoch: this.epoch, epoch: reply.epoch ?? "", lastSeq: this.seq, missed, seq };
  }

  /** A message with `seq`: `{deliver, gap}`; a duplicate is not delivered. */
  message(channel, seq, snapshot = false) {
    if (snapshot) return { deliver: true, gap: null }; // seq <= LAST, sent before the live stream
    if (this.conflate) {
      if (this.seq === null || seq > this.seq) this.seq = seq;
      return { deliver: true, gap: null };
    }
    if (this.seq !== null && seq <= this.seq) return { deliver: false, gap: null };
    let gap = null;
    if (this.seq !== null && seq > this.seq + 1) {
      gap = { channel, missed: seq - this.seq - 1, from: this.seq + 1, to: seq - 1 };
    }
    this.seq = seq;
    return { deliver: true, gap };
  }
}

/** An Error with the protocol's (or the client's) `code`. */
function failure(code, message, extra = {}) {
  const err = new Error(message);
  err.code = code;
  Object.assign(err, extra);
  return err;
}

const OPEN = 1;

/** The stream URL next to a WebSocket URL: `ws://host:port/ws` → `http://host:port/sse`. */
export function sseUrlFor(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = url.pathname.replace(/\/ws$/, "") + "/sse";
  url.search = "";
  return url.href;
}

/**
 * The stream URL beside the HTTP API's: `http://host:8766/api/publish` → `http://host:8766/sse`.
 *
 * The API port serves the streams itself. Going there directly matters for a page of another
 * origin: after the WebSocket port's cross-origin redirect a browser sends `Origin: null`,
 * which no origin allowlist can admit.
 */
export function sseUrlBeside(apiUrl) {
  const url = new URL(apiUrl);
  url.pathname = url.pathname.replace(/\/api\/publish$/, "") + "/sse";
  url.search = "";
  return url.href;
}

/**
 * A WebSocket look-alike over Server-Sent Events, for `Client` when WebSockets cannot go.
 *
 * It answers the ops the client sends as the server would: `subscribe` opens one
 * EventSource per channel (`last_event_id=EPOCH:SEQ` when resuming), `unsubscribe`
 * closes it, `ping` and `auth` are answered at once (the token goes into the stream
 * URLs), `publish` is a POST to `apiUrl` (refused with `unavailable` without one; from
 * another origin the API answers the browser's preflight for its allowed origins only).
 * The EventSource's own reconnect is not used: a failed stream, or the server's `close`
 * event, closes this socket with that code, and the client reconnects and resubscribes
 * with its own backoff and `since`, exactly as over WebSocket.
 */
export class SseSocket {
  constructor(url, options = {}) {
    this.url = url;
    this.readyState = 0;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._EventSource = options.EventSource ?? globalThis.EventSource;
    // Bound: a browser's fetch called as another object's method throws "Illegal invocation".
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this._apiUrl = options.apiUrl ?? null;
    this._apiKey = options.apiKey ?? null;
    this._token = null;
    this._streams = new Map(); // channel -> {es, id}
    if (typeof this._EventSource !== "function") {
      throw new Error("broadcaster: no EventSource implementation for the SSE fallback");
    }
    setTimeout(() => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }

  send(text) {
    if (this.readyState !== 1) return;
    const op = JSON.parse(text);
    switch (op.op) {
      case "subscribe":
        return this._subscribe(op);
      case "unsubscribe": {
        const stream = this._streams.get(op.channel);
        if (stream) {
          stream.es.close();
          this._streams.delete(op.channel);
        }
        return this._reply({ event: "unsubscribed", channel: op.channel, id: op.id });
      }
      case "ping":
        return this._reply({ event: "pong", id: op.id });
      case "auth":
        this._token = op.token;
        return this._reply({ event: "authenticated", id: op.id });
      case "publish":
        return this._publish(op);
      default:
        return undefined;
    }
  }

  close(code = 1000, reason = "client closed") {
    this._end(code, reason);
  }

  _reply(event) {
    setTimeout(() => this._deliver(JSON.stringify(event)), 0);
  }

  _deliver(data) {
    if (this.readyState === 1) this.onmessage?.({ data });
  }

  _subscribe(op) {
    this._streams.get(op.channel)?.es.close();
    const params = new URLSearchParams({ channel: op.channel });
    if (typeof op.since === "number" && op.epoch) params.set("last_event_id", `${op.epoch}:${op.since}`);
    if (op.max_rate !== undefined) params.set("max_rate", String(op.max_rate));
    if (this._token !== null) params.set("token", this._token);
    const es = new this._EventSource(`${this.url}?${params}`);
    const stream = { es, id: op.id };
    this._streams.set(op.channel, stream);
    es.onmessage = (ev) => {
      if (this._streams.get(op.channel) !== stream) return;
      if (ev.data.startsWith('{"event":"message"')) return this._deliver(ev.data); // as sent
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return this._deliver(ev.data);
      }
      if (msg.event === "close") return this._end(msg.code, msg.reason);
      // The stream's own subscribe reply: give it the op's id, as over WebSocket.
      if (msg.event === "subscribed" && msg.id === undefined && msg.reset !== true) msg.id = stream.id;
      this._deliver(JSON.stringify(msg));
    };
    es.onerror = () => {
      if (this._streams.get(op.channel) === stream) this._end(1006, "stream failed");
    };
  }

  _publish(op) {
    const fail = (code, message, extra = {}) =>
      this._reply({ event: "error", code, message, id: op.id, ...extra });
    if (this._apiUrl === null || typeof this._fetch !== "function") {
      return fail("unavailable", "broadcaster: publishing without a WebSocket needs options.apiUrl");
    }
    const headers = { "Content-Type": "application/json" };
    if (this._apiKey !== null) headers.Authorization = `apikey ${this._apiKey}`;
    this._fetch(this._apiUrl, { method: "POST", headers, body: JSON.stringify({ channel: op.channel, data: op.data }) })
      .then(async (res) => {
        const body = await res.json().catch(() => ({}));
        if (res.ok) return this._reply({ event: "published", channel: op.channel, id: op.id, seq: body.seq });
        const extra = body.retry_after === undefined ? {} : { retry_after: body.retry_after };
        return fail(body.error ?? "unavailable", body.message ?? `HTTP ${res.status}`, extra);
      })
      .catch((err) => fail("unavailable", `broadcaster: the publish request failed: ${err}`));
  }

  _end(code, reason) {
    if (this.readyState === 3) return;
    const wasOpen = this.readyState === 1;
    this.readyState = 3;
    for (const stream of this._streams.values()) stream.es.close();
    this._streams.clear();
    setTimeout(() => (wasOpen ? this.onclose?.({ code, reason }) : this.onerror?.({})), 0);
  }
}

/** A connection to a broadcaster server that keeps itself connected until `close()`. */
export class Client {
  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    // Where publishes go while on SSE: the HTTP API, resolved against the page (it may say
    // "/api/publish" behind a proxy). Another origin's API must list the page's origin in
    // `[server] allowed_origins`: it then approves the browser's CORS preflight.
    this._apiUrl = options.apiUrl == null ? null : new URL(options.apiUrl, globalThis.location?.href).href;
    // The SSE fallback: the stream URL (`options.sse`; else `/sse` beside `apiUrl`, the port
    // that serves streams; else next to `url`, which redirects there), or off.
    const EventSourceImpl = options.EventSource ?? globalThis.EventSource;
    this._sseUrl =
      options.sse === false || typeof EventSourceImpl !== "function"
        ? null
        : typeof options.sse === "string"
          ? new URL(options.sse, globalThis.location?.href).href
          : this._apiUrl !== null
            ? sseUrlBeside(this._apiUrl)
            : sseUrlFor(url);
    this._useSse = false;
    this._wsFailures = 0;
    if (typeof this._WebSocket !== "function") {
      if (this._sseUrl === null) {
        throw new Error(
          "broadcaster: no WebSocket implementation: on Node 20 run with --experimental-websocket " +
            "or pass options.WebSocket",
        );
      }
      this._useSse = true;
    }
    this._backoff = new Backoff(this.options, options.random ?? Math.random);
    this._listeners = new Map(); // event name -> Set of handlers
    this._channels = new Map(); // channel -> {handlers, options, tracker, subId, sentSince, active}
    this._pending = new Map(); // op id -> {kind, channel, resolve, reject}
    this._held = []; // publishes not sent yet: {id, frame, resolve, reject}
    this._blocked = new Set(); // channels on which the server paused this publisher
    this._ws = null;
    this._open = false;
    this._closed = false;
    this._everConnected = false;
    this._retryTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._ids = 0;
    this._token = null;
    this._connect(true);
  }

  /** True while a connection is open. */
  get connected() {
    return this._open;
  }

  /** "websocket", or "sse" once the client fell back to Server-Sent Events. */
  get transport() {
    return this._useSse ? "sse" : "websocket";
  }

  /** Publishes waiting to be sent: made while disconnected or while the server paused us. */
  get queued() {
    return this._held.length;
  }

  /** Listen to `event`; returns a function that removes the listener. */
  on(event, handler) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    const wrapped = (payload) => handler(payload);
    set.add(wrapped);
    return () => set.delete(wrapped);
  }

  /** Receive `channel`'s messages as `handler(data, {seq, channel, snapshot?})`; returns unsubscribe. */
  subscribe(channel, handler, options = {}) {
    let entry = this._channels.get(channel);
    if (!entry) {
      entry = {
        handlers: new Set(),
        options,
        tracker: new SeqTracker(options.since, options.epoch),
        subId: null,
        sentSince: null,
        active: false,
      };
      this._channels.set(channel, entry);
      if (this._open) this._sendSubscribe(channel, entry);
    }
    const wrapped = (data, meta) => handler(data, meta);
    entry.handlers.add(wrapped);
    return () => {
      if (!entry.handlers.delete(wrapped) || entry.handlers.size > 0) return;
      if (this._channels.get(channel) !== entry) return;
      this._channels.delete(channel);
      if (this._open) this._send({ op: "unsubscribe", channel, id: this._id("u") });
    };
  }

  /** Publish `data` to `channel`; resolves with its seq once the server acknowledged it. */
  publish(channel, data) {
    if (this._closed) return Promise.reject(failure("closed", "broadcaster: the client is closed"));
    const id = this._id("p");
    let frame;
    try {
      frame = JSON.stringify({ op: "publish", channel, data, id });
    } catch (err) {
      return Promise.reject(failure("invalid_message", `broadcaster: data is not JSON: ${err}`));
    }
    return new Promise((resolve, reject) => {
      const item = { id, channel, frame, resolve, reject };
      if (this._canPublish() && this._held.length === 0) this._sendPublish(item);
      else if (this._held.length >= this.options.maxQueued) {
        reject(failure("queue_full", `broadcaster: ${this._held.length} publishes already queued`));
      } else this._held.push(item);
    });
  }

  /** Close for good (code 1000): no reconnect; pending publishes are rejected with code "closed". */
  close() {
    if (this._closed) return Promise.resolve();
    this._closed = true;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const ws = this._ws;
    const wasOpen = this._open;
    this._failAll("closed", "broadcaster: the client was closed");
    this._detach();
    if (wasOpen) {
      this._emit("disconnected", { code: 1000, reason: "client closed", willReconnect: false });
    }
    if (!ws) return Promise.resolve();
    return new Promise((resolve) => {
      ws.onclose = () => resolve();
      ws.onerror = () => resolve();
      try {
        ws.close(1000, "client closed");
      } catch {
        resolve();
      }
      if (ws.readyState === 3) resolve();
    });
  }

  // --- connection lifecycle -------------------------------------------------

  _connect(first = false) {
    this._retryTimer = null;
    const source = this.options.token;
    if (typeof source !== "function") return this._openSocket(first, source ?? null);
    // A token function (maybe async) gives a fresh token for each connection.
    Promise.resolve()
      .then(() => source())
      .then(
        (token) => {
          if (!this._closed) this._openSocket(false, String(token));
        },
        (err) => {
          if (this._closed) return;
          this._report(err);
          const { attempt, kind, delay } = this._backoff.next("normal");
          this._emit("reconnecting", { attempt, kind, delay, code: 1006 });
          this._retryTimer = setTimeout(() => this._connect(), delay);
        },
      );
  }

  _openSocket(first, token) {
    this._token = token;
    let ws;
    try {
      ws = this._useSse ? this._openSse() : new this._WebSocket(this.url);
    } catch (err) {
      if (!this._useSse && this._sseUrl !== null) {
        // A page whose WebSocket constructor refuses (disabled, blocked): go on over SSE.
        this._fallBack();
        return this._openSocket(first, token);
      }
      if (first) throw err; // a malformed URL is the caller's mistake: say so at once
      this._report(err);
      const { attempt, kind, delay } = this._backoff.next("normal");
      this._emit("reconnecting", { attempt, kind, delay, code: 1006 });
      this._retryTimer = setTimeout(() => this._connect(), delay);
      return;
    }
    this._ws = ws;
    ws.onopen = () => this._opened(ws);
    ws.onmessage = (ev) => this._received(ws, ev.data);
    ws.onclose = (ev) => this._lost(ws, ev.code, ev.reason);
    // An error always means an abnormal close (1006). Browsers then fire `close` too, but
    // Node 20's WebSocket fires only `error` when the handshake fails: act on the first.
    ws.onerror = () => this._lost(ws, 1006, this._open ? "connection error" : "connection failed");
  }

  _openSse() {
    const o = this.options;
    return new SseSocket(this._sseUrl, { EventSource: o.EventSource, fetch: o.fetch, apiUrl: this._apiUrl, apiKey: o.apiKey });
  }

  /** WebSocket cannot be opened here: subscriptions go over SSE from now on. */
  _fallBack() {
    this._useSse = true;
    this._emit("fallback", { transport: "sse", url: this._sseUrl });
  }

  _opened(ws) {
    if (ws !== this._ws) return;
    this._open = true;
    this._backoff.reset();
    const reconnect = this._everConnected;
    this._everConnected = true;
    if (this.options.pingInterval > 0) {
      this._pingTimer = setInterval(() => this._ping(ws), this.options.pingInterval);
    }
    // First, so the subscribes behind it are judged with its grant (ops are answered in order).
    if (this._token !== null) this._send({ op: "auth", token: this._token, id: this._id("a") });
    for (const [channel, entry] of this._channels) this._sendSubscribe(channel, entry);
    this._flushHeld();
    this._emit("connected", { url: this._useSse ? this._sseUrl : this.url, reconnect, transport: this.transport });
  }

  /** The connection ended (close event, or a dead connection we gave up on). */
  _lost(ws, code, reason) {
    if (ws !== this._ws) return;
    const wasOpen = this._open;
    this._detach();
    if (this._closed) return;
    let policy = closePolicy(code);
    // A token function can give a fresh token: come back with it.
    if (code === 1008 && reason === TOKEN_EXPIRED && typeof this.options.token === "function") {
      policy = "normal";
    }
    const willReconnect = policy !== "none";
    // A failed attempt is not a disconnection: only `reconnecting` tells about it.
    if (wasOpen) this._emit("disconnected", { code, reason, willReconnect });
    if (!willReconnect) {
      this._closed = true;
      this._failAll("closed", `broadcaster: the server closed the connection (${code} ${reason})`);
      return;
    }
    if (!wasOpen && !this._everConnected && !this._useSse && this._sseUrl !== null) {
      // Never opened: a proxy may strip WebSocket upgrades. After a few tries, use SSE.
      this._wsFailures += 1;
      if (this._wsFailures >= this.options.fallbackAfter) {
        this._fallBack();
        this._backoff.reset();
      }
    }
    const { attempt, kind, delay } = this._backoff.next(policy);
    this._emit("reconnecting", { attempt, kind, delay, code });
    this._retryTimer = setTimeout(() => this._connect(), delay);
  }

  /** Forget the socket: timers stop, in-flight publishes fail, subscriptions await resubscribe. */
  _detach() {
    const ws = this._ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {};
    }
    this._ws = null;
    this._open = false;
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pingTimer = this._pongTimer = null;
    this._blocked.clear();
    for (const [id, p] of this._pending) {
      // A publish sent but not acknowledged may or may not have been applied: say so.
      if (p.kind === "publish") {
        p.reject(failure("disconnected", "broadcaster: disconnected before the publish was acknowledged"));
      }
      this._pending.delete(id);
    }
    for (const entry of this._channels.values()) entry.active = false;
  }

  _failAll(code, message) {
    for (const item of this._held.splice(0)) item.reject(failure(code, message));
    for (const p of this._pending.values()) if (p.kind === "publish") p.reject(failure(code, message));
    this._pending.clear();
  }

  // --- heartbeat -------------------------------------------------------------

  _ping(ws) {
    // While the server holds us as a blocked publisher it reads nothing, pings included.
    if (ws !== this._ws || this._pongTimer !== null || this._blocked.size > 0) return;
    this._send({ op: "ping", id: this._id("h") });
    this._pongTimer = setTimeout(() => this._dead(ws), this.options.pingTimeout);
  }

  _dead(ws) {
    if (ws !== this._ws) return;
    // A dead connection may never deliver a close event: abandon it now.
    try {
      ws.close();
    } catch {
      // already closing
    }
    this._lost(ws, 1006, "ping timeout");
  }

  // --- receiving -------------------------------------------------------------

  _received(ws, raw) {
    if (ws !== this._ws) return;
    clearTimeout(this._pongTimer); // any frame proves the connection is alive
    this._pongTimer = null;
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      this._emit("error", failure("invalid_json", "broadcaster: the server sent a frame that is not JSON"));
      return;
    }
    switch (msg.event) {
      case "message":
        return this._message(msg);
      case "subscribed":
        return this._subscribed(msg);
      case "published": {
        const p = this._pending.get(msg.id);
        if (p) {
          this._pending.delete(msg.id);
          p.resolve(msg.seq);
        }
        return;
      }
      case "flow.pause":
        if (msg.reason === "channel blocked") {
          this._blocked.add(msg.channel);
          clearTimeout(this._pongTimer);
          this._pongTimer = null;
        }
        this._emit("pause", { channel: msg.channel, depth: msg.depth, limit: msg.limit, reason: msg.reason });
        return;
      case "flow.resume":
        if (this._blocked.delete(msg.channel)) this._flushHeld();
        this._emit("resume", { channel: msg.channel, dropped: msg.dropped });
        return;
      case "error":
        return this._error(msg);
      default:
        this._pending.delete(msg.id); // pong, unsubscribed, authenticated
    }
  }

  _message(msg) {
    const entry = this._channels.get(msg.channel);
    if (!entry || !entry.active) return; // not (or not yet again) subscribed
    const { deliver, gap } = entry.tracker.message(msg.channel, msg.seq, msg.snapshot === true);
    if (gap) this._emit("gap", gap);
    if (!deliver) return;
    const meta = { seq: msg.seq, channel: msg.channel };
    if (msg.snapshot === true) meta.snapshot = true;
    for (const handler of [...entry.handlers]) {
      try {
        handler(msg.data, meta);
      } catch (err) {
        this._report(err);
      }
    }
  }

  _subscribed(msg) {
    if (msg.reset === true && msg.id === undefined) return this._reset(msg);
    this._pending.delete(msg.id);
    const entry = this._channels.get(msg.channel);
    if (!entry || entry.subId !== msg.id) return;
    entry.active = true;
    const { gap, reset } = entry.tracker.subscribed(msg, entry.sentSince);
    const event = { channel: msg.channel, seq: msg.seq, epoch: msg.epoch, strategy: msg.strategy };
    if (msg.recovered !== undefined) event.recovered = msg.recovered;
    if (msg.oldest_seq !== undefined) event.oldestSeq = msg.oldest_seq;
    this._emit("subscribed", event);
    if (reset) this._emit("reset", reset);
    if (gap) this._emit("gap", gap);
  }

  /** The server's in-band notice that the channel's seq history restarted (PROTOCOL.md).
   * Without it the new epoch's seq 1, 2, ... would be dropped as duplicates of the old ones. */
  _reset(msg) {
    const entry = this._channels.get(msg.channel);
    if (!entry || !entry.active) return; // leaving it, or its subscribe reply is still to come
    this._emit("reset", entry.tracker.reset(msg));
  }

  _error(msg) {
    const err = failure(msg.code, msg.message, msg.retry_after === undefined ? {} : { retryAfter: msg.retry_after });
    const p = msg.id === undefined ? undefined : this._pending.get(msg.id);
    if (p) this._pending.delete(msg.id);
    if (p?.kind === "publish") return p.reject(err);
    if (p?.kind === "subscribe") {
      // The server refused the subscription: forget it (its handlers get nothing more).
      err.channel = p.channel;
      const entry = this._channels.get(p.channel);
      if (entry && entry.subId === msg.id) this._channels.delete(p.channel);
    }
    this._report(err);
  }

  _report(err) {
    if (this._listeners.get("error")?.size) this._emit("error", err);
    else console.error(err);
  }

  // --- sending ---------------------------------------------------------------

  _id(prefix) {
    this._ids += 1;
    return `${prefix}${this._ids}`;
  }

  _send(op) {
    const ws = this._ws;
    if (ws && ws.readyState === OPEN) ws.send(typeof op === "string" ? op : JSON.stringify(op));
  }

  _sendSubscribe(channel, entry) {
    const id = this._id("s");
    const op = { op: "subscribe", channel, id };
    const from = entry.tracker.resumeFrom();
    if (from) {
      op.since = from.since;
      if (from.epoch !== null) op.epoch = from.epoch;
    }
    if (entry.options.maxRate !== undefined) op.max_rate = entry.options.maxRate;
    entry.subId = id;
    entry.sentSince = from ? from.since : null;
    entry.active = false;
    this._pending.set(id, { kind: "subscribe", channel });
    this._send(op);
  }

  _canPublish() {
    return this._open && this._blocked.size === 0;
  }

  _sendPublish(item) {
    this._pending.set(item.id, { kind: "publish", channel: item.channel, resolve: item.resolve, reject: item.reject });
    this._send(item.frame);
  }

  _flushHeld() {
    while (this._held.length > 0 && this._canPublish()) this._sendPublish(this._held.shift());
  }

  _emit(event, payload) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        handler(payload);
      } catch (err) {
        console.error(err);
      }
    }
  }
}

/** `url` as a ws:// or wss:// URL; in a page, "/ws" means the page's own server. */
export function resolveUrl(url) {
  const base = globalThis.location?.href;
  const resolved = new URL(url, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  else if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved.href;
}

/** Connect to `url` (`ws://host:port/ws`, or "/ws" in a page); reconnects on its own until `close()`. */
export function connect(url, options = {}) {
  return new Client(resolveUrl(url), options);
}
