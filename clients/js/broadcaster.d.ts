// Type declarations for broadcaster.js (the browser and Node 20+ client).

/** Options of `connect`; delays are in milliseconds. */
export interface ConnectOptions {
  /** Smallest jitter window of the reconnect backoff (default 500). */
  minDelay?: number;
  /** Largest jitter window of the reconnect backoff (default 20000). */
  maxDelay?: number;
  /** Growth of the window per failed attempt (default 2). */
  factor?: number;
  /** After close 4008, 1013 or 4029: wait between longDelay/2 and longDelay (default 30000). */
  longDelay?: number;
  /** Send a `ping` op this often; 0 turns the heartbeat off (default 25000). */
  pingInterval?: number;
  /** No frame within this long after a ping: the connection is dead (default 10000). */
  pingTimeout?: number;
  /** Most publishes held while disconnected or paused; more are rejected with code "queue_full" (default 1000). */
  maxQueued?: number;
  /** A WebSocket constructor; defaults to globalThis.WebSocket. */
  WebSocket?: new (url: string) => WebSocket;
  /** A random source in [0, 1) for the jitter (default Math.random); inject it to test. */
  random?: () => number;
  /**
   * A JWT (or the admin token), sent in an `auth` op first on every connection; or a function
   * returning one (or a Promise of one), called before each connection, in which case a close
   * 1008 "token expired" reconnects with a fresh token instead of giving up.
   */
  token?: string | (() => string | Promise<string>);
  /**
   * The Server-Sent Events fallback, used when a WebSocket cannot be opened: the stream URL
   * (default: `/sse` beside `apiUrl` when given, else next to `url`, `http://host:port/sse`,
   * which the server redirects to its API port; a page of another origin needs the former,
   * browsers send `Origin: null` after a cross-origin redirect), or false to never fall back.
   */
  sse?: string | false;
  /** Failed WebSocket attempts (never opened) before falling back to SSE (default 2). */
  fallbackAfter?: number;
  /**
   * The HTTP publish API (`http://host:8766/api/publish`, or a path such as "/api/publish"
   * resolved against the page) for publishes over SSE; without it they fail with "unavailable".
   * From another origin the page's origin must be in the server's `[server] allowed_origins`.
   */
  apiUrl?: string;
  /** An `[api] keys` key, sent as `Authorization: apikey KEY` with those publishes. */
  apiKey?: string;
  /** An EventSource constructor; defaults to globalThis.EventSource. */
  EventSource?: new (url: string) => EventSource;
  /** A fetch function for publishes over SSE; defaults to globalThis.fetch. */
  fetch?: typeof fetch;
}

/** Options of `subscribe`. */
export interface SubscribeOptions {
  /** Resume after this seq (the server replays what it still has, see PROTOCOL.md "Recovery"). */
  since?: number;
  /** The epoch `since` belongs to. */
  epoch?: string;
  /** Ask the server for at most this many messages per second. */
  maxRate?: number;
}

/** What comes with every message. */
export interface MessageMeta {
  seq: number;
  channel: string;
  /** True on the snapshot of a conflate channel sent right after subscribing. */
  snapshot?: true;
}

export interface ConnectedEvent {
  url: string;
  /** False on the first connection, true on every reconnection. */
  reconnect: boolean;
  /** How this connection receives: "websocket", or "sse" after the fallback. */
  transport: "websocket" | "sse";
}

export interface FallbackEvent {
  transport: "sse";
  url: string;
}

export interface DisconnectedEvent {
  code: number;
  reason: string;
  willReconnect: boolean;
}

export interface ReconnectingEvent {
  /** 0 for the first retry after a connection was open. */
  attempt: number;
  /** "normal" (exponential, full jitter) or "long" (after 4008, 1013, 4029). */
  kind: "normal" | "long";
  /** Milliseconds until the next attempt. */
  delay: number;
  /** The close code that led here (1006 when the connection failed or died). */
  code: number;
}

/** The server confirmed a subscription (again after every reconnect). */
export interface SubscribedEvent {
  channel: string;
  /** The channel's last seq: live messages follow from seq + 1. */
  seq: number;
  epoch: string;
  strategy: string;
  /** Present when the subscribe carried `since`: whether the missed messages follow. */
  recovered?: boolean;
  /** With recovered false: the oldest seq the server still had. */
  oldestSeq?: number;
}

export interface PauseEvent {
  channel: string;
  depth: number;
  limit: number;
  /** "buffer full" (we read too slowly) or "channel blocked" (our publishes are held). */
  reason: string;
}

export interface ResumeEvent {
  channel: string;
  /** Messages of the channel dropped for us since the pause. */
  dropped: number;
}

export interface GapEvent {
  channel: string;
  /** Exactly how many messages were missed: seqs from..to. */
  missed: number;
  from: number;
  to: number;
}

/**
 * A channel's seq history restarted: seqs count from 1 again under `epoch` (Redis lost the
 * stream, the server restarted, or the channel was freed while idle and used again). What this
 * client had not received of the old history is lost with it: resync from your source of truth.
 */
export interface ResetEvent {
  channel: string;
  /** The epoch this client knew (null if it never learnt one). */
  oldEpoch: string | null;
  /** The new epoch. */
  epoch: string;
  /** The last seq of the old epoch this client saw (null if none). */
  lastSeq: number | null;
  /**
   * How many messages of the old epoch after lastSeq were lost: exact when the server names the
   * epoch it replaced (`previous_epoch`, `previous_seq`; the Redis broker does) and it is the one
   * this client followed; null otherwise (unknown): treat null as "possibly some", never as 0.
   */
  missed: number | null;
  /**
   * The new epoch's seq when this client joined it: 0 after an in-band reset (every message of the
   * new epoch follows, from seq 1); after a resubscribe, seqs 1..seq came before it and are not delivered.
   */
  seq: number;
}

/** An `error` reply or a client-side failure: `code` is a PROTOCOL.md error code, or
 * "disconnected", "closed", "queue_full" from the client. */
export interface BroadcasterError extends Error {
  code: string;
  /** Seconds, for rate_limited and unavailable. */
  retryAfter?: number;
  /** Set when a subscribe was refused. */
  channel?: string;
}

export interface ClientEvents {
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  reconnecting: ReconnectingEvent;
  subscribed: SubscribedEvent;
  pause: PauseEvent;
  resume: ResumeEvent;
  gap: GapEvent;
  reset: ResetEvent;
  fallback: FallbackEvent;
  error: BroadcasterError;
}

export declare class Client {
  constructor(url: string, options?: ConnectOptions);
  readonly url: string;
  /** True while a connection is open. */
  readonly connected: boolean;
  /** "websocket", or "sse" once the client fell back to Server-Sent Events. */
  readonly transport: "websocket" | "sse";
  /** Publishes waiting to be sent (disconnected, or paused by a blocked channel). */
  readonly queued: number;
  /** Listen to an event; returns a function that removes the listener. */
  on<E extends keyof ClientEvents>(event: E, handler: (payload: ClientEvents[E]) => void): () => void;
  /** Receive a channel's messages; returns the unsubscribe function. */
  subscribe<T = unknown>(
    channel: string,
    handler: (data: T, meta: MessageMeta) => void,
    options?: SubscribeOptions,
  ): () => void;
  /** Publish; resolves with the seq the server assigned, rejects with a BroadcasterError. */
  publish(channel: string, data: unknown): Promise<number>;
  /** Close for good (code 1000); resolves when the socket is closed. */
  close(): Promise<void>;
}

/** Connect to `url` (ws://host:port/ws, or "/ws" in a page); reconnects on its own until close(). */
export declare function connect(url: string, options?: ConnectOptions): Client;

/** `url` as a ws:// or wss:// URL, resolved against the page's location when there is one. */
export declare function resolveUrl(url: string): string;

export declare const CLOSE_POLICY: Readonly<Record<number, "none" | "normal" | "long">>;
export declare function closePolicy(code: number): "none" | "normal" | "long";
export declare const DEFAULTS: Readonly<
  Required<
    Omit<ConnectOptions, "WebSocket" | "random" | "token" | "sse" | "apiUrl" | "apiKey" | "EventSource" | "fetch">
  >
>;
/** The SSE stream URL next to a WebSocket URL: ws://host:port/ws → http://host:port/sse. */
export declare function sseUrlFor(wsUrl: string): string;
/** The SSE stream URL beside the HTTP API's: http://host:8766/api/publish → http://host:8766/sse. */
export declare function sseUrlBeside(apiUrl: string): string;
/** A WebSocket look-alike over Server-Sent Events (what the client falls back to). */
export declare class SseSocket {
  constructor(
    url: string,
    options?: { EventSource?: ConnectOptions["EventSource"]; fetch?: typeof fetch; apiUrl?: string; apiKey?: string },
  );
  readonly url: string;
  readyState: number;
  send(text: string): void;
  close(code?: number, reason?: string): void;
}
/** The close reason of a 1008 sent when a token's `exp` passes. */
export declare const TOKEN_EXPIRED: string;

export interface BackoffStep {
  attempt: number;
  kind: "normal" | "long";
  delay: number;
}

/** The reconnect delay policy (pure; deterministic with an injected random source). */
export declare class Backoff {
  constructor(options?: ConnectOptions, random?: () => number);
  attempt: number;
  cap(attempt: number): number;
  next(kind?: "normal" | "long", retryAfter?: number | null): BackoffStep;
  reset(): void;
}

/** Per-channel seq bookkeeping behind `gap` and `reset` events. */
export declare class SeqTracker {
  constructor(since?: number | null, epoch?: string | null);
  seq: number | null;
  epoch: string | null;
  conflate: boolean;
  resumeFrom(): { since: number; epoch: string | null } | null;
  subscribed(
    reply: { channel: string; seq: number; epoch: string; strategy?: string; recovered?: boolean },
    since: number | null,
  ): { gap: GapEvent | null; reset: ResetEvent | null };
  /** An in-band `subscribed` with `reset: true`: seq starts again from 1 in `notice.epoch`. */
  reset(notice: { channel: string; epoch: string; strategy?: string }): ResetEvent;
  message(channel: string, seq: number, snapshot?: boolean): { deliver: boolean; gap: GapEvent | null };
}
