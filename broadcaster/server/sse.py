"""Server-Sent Events and NDJSON streams: `GET /sse` and `GET /stream` on the API port.

Why the API port: the WebSocket port is served by `websockets`, whose
`process_request` can only answer with a complete response (it half-closes
the connection after any answer other than 101, and its open timeout
cancels a `process_request` that would keep streaming). A stream needs a
real HTTP server, and the API port has one (aiohttp). Pages served by the
WebSocket port reach it cross-origin, so the answer carries CORS headers
for the allowed origins (`[server] allowed_origins`; "self" also means the
WebSocket port of the same host here).

A stream is a `Subscriber` like a WebSocket client (server/subscriber.py):
the same queues, strategies, flow notices, slow-consumer cut, admission,
origin and token rules. This module only adds the transport:

- the subscriptions come from the URL (`channel=` repeated, `max_rate=`,
  `token=`, and `Last-Event-ID` or `last_event_id=` for recovery); bad
  input is refused before the stream starts, with a JSON body that says
  what to send instead;
- the response is HTTP/1.1 chunked; after its head the session writes
  complete chunks straight to the transport (core/streams.py), so a
  message's stream bytes are built once and shared like its WebSocket
  frame, and `flush` is the same code as for WebSocket;
- aiohttp tells a handler neither that its transport drained nor that the
  client went away, so `_Watch` sits between the transport and aiohttp's
  protocol and tells the session both (as server/websocket.py does for /ws);
- heartbeats (an SSE comment, an empty NDJSON line) every `ping_interval`,
  from the keepalive sweep, keep idle streams open through proxies;
- the stream ends with a `close` event (`code`, `reason`: the WebSocket
  close code the same cause would have sent) after an SSE `retry:` hint,
  long after a slow-consumer cut; a client that does not read it is
  aborted after `close_timeout`, as on /ws.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.http import HttpVersion11

from broadcaster.codes import CLOSE_CODES, CloseCode, ErrorCode
from broadcaster.core import streams
from broadcaster.core.channel import Channel
from broadcaster.core.message import Message
from broadcaster.core.ops import SYSTEM_PREFIX, Subscribe, validate_channel
from broadcaster.security.access import refuse_subscribe
from broadcaster.security.admin import peer_ip
from broadcaster.security.admission import Refusal
from broadcaster.security.auth import TokenRejected
from broadcaster.server.api import FORBIDDEN_ORIGIN, ApiError, cors_headers, origin_allowed
from broadcaster.server.subscriber import Subscriber

if TYPE_CHECKING:
    from broadcaster.server.app import Broadcaster

__all__ = ["NDJSON_PATH", "SSE_PATH", "SseSession", "StreamEndpoints", "retry_hint"]

logger = logging.getLogger("broadcaster.sse")

SSE_PATH = "/sse"
NDJSON_PATH = "/stream"
# Channels one stream may name (more: use several streams or a WebSocket).
MAX_STREAM_CHANNELS = 64
# What EventSource waits before reconnecting, by the close code's backoff (codes.py).
RETRY_MS = {"none": 60_000, "normal": 2_000, "long": 30_000}
# The first retry hint of every stream: how soon to come back after a network drop.
FIRST_RETRY_MS = 2_000


def retry_hint(code: int) -> int:
    """Milliseconds a browser should wait before reconnecting after a close with `code`."""
    info = CLOSE_CODES.get(CloseCode(code)) if code in CloseCode._value2member_map_ else None
    return RETRY_MS[info.backoff] if info is not None else RETRY_MS["normal"]


class _Format:
    """How one stream kind frames its events."""

    def __init__(
        self,
        name: str,
        content_type: str,
        control: Callable[[bytes], bytes],
        message: Callable[[Message, Channel], bytes],
        heartbeat: bytes,
        *,
        retry: bool,
    ) -> None:
        self.name = name
        self.content_type = content_type
        self.control = control
        self.message = message
        self.heartbeat = heartbeat
        self.retry = retry


SSE = _Format(
    "sse",
    "text/event-stream",
    streams.sse_control,
    streams.sse_message,
    streams.sse_heartbeat(),
    retry=True,
)
NDJSON = _Format(
    "ndjson",
    "application/x-ndjson",
    streams.ndjson_control,
    streams.ndjson_message,
    streams.ndjson_heartbeat(),
    retry=False,
)


class SseSession(Subscriber):
    """One SSE or NDJSON stream: a subscriber whose bytes go down a chunked response."""

    def __init__(
        self,
        app: Broadcaster,
        transport: asyncio.Transport,
        session_id: int,
        fmt: _Format,
    ) -> None:
        super().__init__(
            app,
            transport,
            transport.get_extra_info("peername"),
            session_id,
            framer=fmt.control,
            frame_of=fmt.message,
        )
        self.transport_name = fmt.name
        self.format = fmt
        self._wake: asyncio.Future[None] | None = None

    async def run(self) -> None:
        """Wait until the stream ends: data goes out from `flush`, drains are reported by
        the transport (`_Watch`), the end by `close` or the connection's loss."""
        self._wake = self.loop.create_future()
        try:
            if not self.closing:  # a refused token closes before the stream runs
                await self._wake
        except asyncio.CancelledError:
            if not self.closing:
                raise
        finally:
            # The ending, if any, is written: aiohttp then writes the last chunk and
            # closes, while the abort timer of `close` cuts a client that stopped reading.
            self._release()

    def _stop_reading(self) -> None:
        super()._stop_reading()
        wake = self._wake
        if wake is not None and not wake.done():
            wake.cancel()

    # --- keepalive -------------------------------------------------------------

    def keepalive(self, now: float) -> None:
        """A heartbeat while idle; a transport that went away frees the session."""
        self.last_ping = now
        if self.closing:
            return
        transport = self._transport
        if transport.is_closing():
            self._release()
            return
        if not transport.get_write_buffer_size() and not self.outbox.scheduled:
            transport.write(self.format.heartbeat)

    # --- closing -------------------------------------------------------------

    def _send_end(self, code: int, reason: str) -> None:
        """The `close` event (after a `retry:` hint on SSE), behind what is already written."""
        transport = self._transport
        if transport.is_closing():
            return
        end = self.format.control(orjson.dumps({"event": "close", "code": code, "reason": reason}))
        if self.format.retry:
            end = streams.sse_retry(retry_hint(code)) + end
        transport.write(end)


class StreamEndpoints:
    """Serves `/sse` and `/stream` for one `Broadcaster` on the HTTP API's aiohttp app."""

    def __init__(self, app: Broadcaster) -> None:
        self.app = app
        self._stopping = False
        self._handlers: set[asyncio.Task[Any]] = set()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(SSE_PATH, self.sse)
        router.add_get(NDJSON_PATH, self.ndjson)

    async def sse(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, SSE)

    async def ndjson(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, NDJSON)

    async def stop(self) -> None:
        """End every stream (drained up to `shutdown_timeout`, then `close` 1001); refuse new ones.

        Runs before the API port closes: aiohttp would otherwise wait for the
        streaming handlers, then cancel them without an ending.
        """
        self._stopping = True
        app = self.app
        cfg = app.config.server
        mine = [s for s in app.sessions.values() if isinstance(s, SseSession)]
        deadline = app.loop.time() + cfg.shutdown_timeout
        while app.loop.time() < deadline and any(s.outbox.depth for s in mine):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        for session in mine:
            behind = session.outbox.depth > 0
            session.close(
                CloseCode.GOING_AWAY,
                "server shutting down",
                flush=not behind,
                linger=cfg.shutdown_timeout if behind else 0.0,
            )
        handlers = [t for t in self._handlers if not t.done()]
        if handlers:
            await asyncio.wait(handlers, timeout=cfg.shutdown_timeout + cfg.close_timeout + 1.0)

    # --- one stream -------------------------------------------------------------

    async def _stream(self, request: web.Request, fmt: _Format) -> web.StreamResponse:
        app = self.app
        cors = self._cors(request)
        ticket = None
        try:
            if self._stopping:
                raise ApiError(
                    503, ErrorCode.UNAVAILABLE, "the server is shutting down", retry_after=1.0
                )
            if request.version != HttpVersion11:
                raise ApiError(
                    505, ErrorCode.INVALID_MESSAGE, "streams need HTTP/1.1 (chunked responses)"
                )
            plan = self._plan(request)
            transport = request.transport
            if transport is None:
                return web.Response(status=499)
            peer = transport.get_extra_info("peername")
            decision = app.admission.admit(peer_ip(peer), app.loop.time())
            if isinstance(decision, Refusal):
                app.metrics.refused(decision.reason)
                raise ApiError(
                    decision.status,
                    ErrorCode.UNAVAILABLE if decision.status == 503 else ErrorCode.RATE_LIMITED,
                    decision.message,
                    retry_after=decision.retry_after,
                )
            ticket = decision
        except ApiError as exc:
            if ticket is not None:
                ticket.release()
            exc.headers.update(cors)
            return exc.response()
        try:
            return await self._serve(request, fmt, plan, transport, cors)
        finally:
            ticket.release()

    async def _serve(
        self,
        request: web.Request,
        fmt: _Format,
        plan: _Plan,
        transport: asyncio.Transport,
        cors: dict[str, str],
    ) -> web.StreamResponse:
        app = self.app
        response = web.StreamResponse(
            headers={
                "Content-Type": fmt.content_type,
                "Cache-Control": "no-store",
                # nginx buffers proxied responses unless told not to.
                "X-Accel-Buffering": "no",
                **cors,
            }
        )
        send_buffer = app.config.server.socket_send_buffer
        sock = transport.get_extra_info("socket")
        if send_buffer and sock is not None:
            # As on /ws: the kernel must not absorb megabytes for a reader that stopped.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        response.enable_chunked_encoding()
        response.force_close()  # the connection ends with the stream
        await response.prepare(request)
        # Writes after the head go to the transport directly; with limits (0, 0)
        # the protocol hears of any backlog at once (as server/websocket.py does).
        transport.set_write_buffer_limits(0, 0)
        session = SseSession(app, transport, app.next_session_id(), fmt)
        transport.set_protocol(_Watch(transport.get_protocol(), session))
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        app.sessions[session.id] = session
        app.hub.add_outbox(session.outbox)
        try:
            if fmt.retry:
                transport.write(streams.sse_retry(FIRST_RETRY_MS))
            if plan.token is not None:
                session.apply_token(plan.token)
            for name in plan.channels:
                if session.closing:
                    break
                await session.subscribe(
                    Subscribe(
                        channel=name,
                        since=plan.since if plan.recover else None,
                        epoch=plan.epoch if plan.recover else None,
                        max_rate=plan.max_rate,
                    ),
                    # Several channels: one id cannot say where each of them was.
                    position_unknown=plan.last_event_id is not None and not plan.recover,
                )
            await session.run()
        finally:
            if task is not None:
                self._handlers.discard(task)
            session._release()
        return response

    # --- input -------------------------------------------------------------------

    def _plan(self, request: web.Request) -> _Plan:
        """What the URL asks for, checked before the stream starts (ApiError if bad)."""
        app = self.app
        query = request.query
        origins = request.headers.getall("Origin", [])
        if not self._origin_allowed(request, origins):
            app.metrics.refused("origin")
            raise ApiError(
                403,
                FORBIDDEN_ORIGIN,
                f"origin {origins[0] if origins else ''!r} is not allowed "
                "([server] allowed_origins)",
            )
        names = query.getall("channel", [])
        if not names:
            raise ApiError(
                400,
                ErrorCode.INVALID_MESSAGE,
                f"name the channels to stream: {request.path}?channel=NAME (repeat for more)",
            )
        if len(names) > MAX_STREAM_CHANNELS or len(set(names)) != len(names):
            raise ApiError(
                400,
                ErrorCode.INVALID_MESSAGE,
                f"name each channel once, at most {MAX_STREAM_CHANNELS} per stream",
            )
        token = query.getall("token", [None])[-1]
        grant = None
        if token is not None and (app.auth.enabled or app.auth.is_admin_token(token)):
            try:
                grant = app.auth.verify(token, time.time())
            except TokenRejected as exc:
                app.metrics.refused("token")
                raise ApiError(401, ErrorCode.UNAUTHORIZED, str(exc)) from None
        else:
            token = None
        for name in names:
            problem = validate_channel(name)
            if problem:
                raise ApiError(400, ErrorCode.INVALID_MESSAGE, problem)
            if name.startswith(SYSTEM_PREFIX):
                continue  # the subscribe op's own check answers with an `error` event
            channel = app.hub.channels.get(name)
            policy = channel.policy if channel is not None else app.hub.policies.resolve(name)
            if policy is None:
                app.metrics.refused("unknown_channel")
                raise ApiError(
                    404,
                    ErrorCode.UNKNOWN_CHANNEL,
                    f"channel {name!r} matches no [channels] entry and strict_channels is on",
                )
            refusal = refuse_subscribe(policy, name, grant)
            if refusal is not None:
                app.metrics.refused("forbidden")
                raise ApiError(403, ErrorCode.FORBIDDEN, refusal)
        max_rate = None
        if "max_rate" in query:
            try:
                max_rate = float(query["max_rate"])
            except ValueError:
                max_rate = -1.0
            if not (max_rate > 0 and math.isfinite(max_rate)):
                raise ApiError(
                    400,
                    ErrorCode.INVALID_MESSAGE,
                    "max_rate must be a number of messages per second above 0",
                )
        last = request.headers.get("Last-Event-ID") or query.get("last_event_id")
        epoch, since = None, None
        if last:
            try:
                epoch, since = streams.parse_last_event_id(last)
            except streams.LastEventIdError as exc:
                raise ApiError(400, ErrorCode.INVALID_MESSAGE, str(exc)) from None
        return _Plan(names, token, max_rate, last or None, epoch, since)

    def _origin_allowed(self, request: web.Request, origins: list[str]) -> bool:
        """The /ws rule; "self" also covers pages of the WebSocket port on the same host."""
        return origin_allowed(self.app, request, origins)

    def _cors(self, request: web.Request) -> dict[str, str]:
        """CORS headers for an allowed cross-origin page (EventSource and fetch need them)."""
        return cors_headers(self.app, request)


class _Watch(asyncio.Protocol):
    """Stands between the transport and aiohttp's protocol, telling the session too.

    aiohttp tells a handler neither that its transport drained nor that the
    client went away; the session needs both at once (the outbox's backlog,
    freeing what a gone client held). Everything is passed on to aiohttp.
    """

    def __init__(self, inner: asyncio.BaseProtocol, session: SseSession) -> None:
        assert isinstance(inner, asyncio.Protocol)
        self.inner = inner
        self.session = session

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
        self.session.transport_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)
        self.session.connection_lost()


class _Plan:
    """A stream's checked URL: channels, token, max_rate and where to resume."""

    def __init__(
        self,
        channels: list[str],
        token: str | None,
        max_rate: float | None,
        last_event_id: str | None,
        epoch: str | None,
        since: int | None,
    ) -> None:
        self.channels = channels
        self.token = token
        self.max_rate = max_rate
        self.last_event_id = last_event_id
        self.epoch = epoch
        self.since = since
        self.recover = since is not None and len(channels) == 1
