"""websockets' server connection, with the transport hooks the writer needs.

Three things are added to `ServerConnection`, nothing is parsed by hand:

- (SO_SNDBUF, which keeps the kernel from absorbing megabytes for a client
  that stopped reading, is set on the listening socket by the app, and every
  accepted socket inherits it: no per-connection socket object is made);
- the transport's write-buffer limits are (0, 0), so `pause_writing` fires
  as soon as the kernel refuses bytes and `resume_writing` when the buffer is
  empty again: the writer hands data to the transport only when it is empty;
- those two events, and the loss of the connection, are forwarded to the
  session that owns the connection;
- the admission ticket of the handshake (server/handshake.py) is held by the
  connection and released when the TCP connection is lost, so the
  connection counts stay right even for handshakes that never complete;
- until its HTTP request is complete, the connection answers to the edge's
  `RequestGuard` (server/handshake.py): counted as half-open from the moment
  it is accepted (refused there when over the caps), its request head capped
  at `max_header_bytes` as the bytes arrive (431), and a request websockets
  cannot parse answered 400 (websockets itself would only close) and counted.
  websockets still parses everything; the guard only counts bytes and reads
  `protocol.handshake_exc`.

`frame_text` builds a server-to-client text frame with websockets' own frame
serializer; server frames are unmasked, so the same bytes are valid on every
connection and a message is framed once.

Compression (permessage-deflate, RFC 7692) is negotiated by websockets'
own extension classes (`deflate_offer`), always with
`server_no_context_takeover` and `client_no_context_takeover`: every
message the server sends is compressed alone, so one compressed frame
(`deflater`, websockets' `PerMessageDeflate` encoder) is valid on every
connection that negotiated it and is built once per message, and no
connection keeps a zlib stream between messages, in either direction.
Client frames that arrive compressed are inflated by websockets within
`max_size` (the server's `max_message_size`): past it, close 1009.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN
from websockets.protocol import Protocol as WebSocketProtocol

__all__ = [
    "BroadcasterConnection",
    "ConnectionEvents",
    "RequestGuard",
    "deflate_offer",
    "deflater",
    "frame_text",
    "negotiated_deflate",
]

# The window of the shared compressor: a client that limits the server's window
# below it (server_max_window_bits) gets plain frames.
DEFLATE_WINDOW_BITS = 15


def frame_text(payload: bytes) -> bytes:
    """The complete WebSocket text frame carrying `payload` (server side: unmasked)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


def deflater(level: int) -> Callable[[bytes], bytes]:
    """What builds the compressed text frame (RSV1 set) of a payload, compressed alone.

    websockets' encoder with local no-context-takeover starts a fresh zlib
    stream for every message and drops it after, so the frame depends on the
    payload only and any connection that negotiated permessage-deflate with
    `server_no_context_takeover` decodes it.
    """
    extension = PerMessageDeflate(
        True, True, DEFLATE_WINDOW_BITS, DEFLATE_WINDOW_BITS, {"level": level}
    )
    extensions = [extension]

    def deflate(payload: bytes) -> bytes:
        return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=extensions)

    return deflate


def deflate_offer() -> ServerPerMessageDeflateFactory:
    """The server's answer to a client's permessage-deflate offer: no context takeover
    either way, so a connection holds no zlib state between messages."""
    return ServerPerMessageDeflateFactory(
        server_no_context_takeover=True, client_no_context_takeover=True
    )


def negotiated_deflate(protocol: WebSocketProtocol) -> bool:
    """Whether this connection takes the shared compressed frames (`deflater`)."""
    return any(
        isinstance(ext, PerMessageDeflate)
        and ext.local_no_context_takeover
        and ext.local_max_window_bits >= DEFLATE_WINDOW_BITS
        for ext in protocol.extensions
    )


class ConnectionEvents(Protocol):
    """What a session needs to hear from its transport."""

    def transport_drained(self) -> None: ...

    def connection_lost(self) -> None: ...

    def closing_handshake(self) -> None: ...


class Releasable(Protocol):
    """A place this connection holds (an admission ticket), given back when it is lost."""

    def release(self) -> None: ...


class RequestGuard(Protocol):
    """The edge's decisions on a connection whose HTTP request is not complete yet."""

    max_header_bytes: int

    def accepted(self, connection: BroadcasterConnection) -> Response | None:
        """None to read the request (holding a half-open ticket), or the refusal to send."""
        ...

    def too_large(self, connection: BroadcasterConnection) -> Response:
        """The answer to a request head over `max_header_bytes` (counted)."""
        ...

    def unparsable(self, connection: BroadcasterConnection, exc: Exception) -> Response | None:
        """Count a request websockets could not parse; the answer to send, or None when
        websockets already sent one (414, 431)."""
        ...


class FrameQueue:
    """websockets' queue of received frames, holding a deque only while frames wait.

    An idle connection's empty deque costs 760 bytes; a client sends a frame
    now and then, so the deque lives for the moment between its arrival and
    its reading. websockets' `SimpleQueue` uses exactly these operations.
    """

    __slots__ = ("_frames",)

    def __init__(self) -> None:
        self._frames: deque[Frame] | None = None

    def __len__(self) -> int:
        return 0 if self._frames is None else len(self._frames)

    def append(self, frame: Frame) -> None:
        if self._frames is None:
            self._frames = deque()
        self._frames.append(frame)

    def extendleft(self, frames: Iterable[Frame]) -> None:
        if self._frames is None:
            self._frames = deque()
        self._frames.extendleft(frames)

    def popleft(self) -> Frame:
        if self._frames is None:
            raise IndexError("pop from an empty FrameQueue")
        frame = self._frames.popleft()
        if not self._frames:
            self._frames = None
        return frame


class BroadcasterConnection(ServerConnection):
    """A server connection that reports transport events."""

    guard: RequestGuard | None = None
    """Caps and answers before the request is complete (None: websockets' defaults only)."""

    # Slots, not instance-dict entries: websockets' connection already has 27
    # attributes, and a 31st turns CPython's compact shared-key instance dict
    # into a full one (~1.3 KB more per connection).
    __slots__ = (
        "_answered",
        "_empty_pause",
        "_head_bytes",
        "_head_too_large",
        "_peer_eof",
        "half_open",
        "session",
        "ticket",
    )
    session: ConnectionEvents | None
    ticket: Releasable | None
    half_open: Releasable | None
    """Held from accept until the HTTP request is complete (or the connection lost)."""
    _answered: bool
    """The edge already answered (or refused) this request: nothing more to count or send."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.session = None
        self.ticket = None
        self.half_open = None
        self._head_bytes = 0
        self._answered = False
        self._peer_eof = False
        self._head_too_large = False
        self._empty_pause = False
        super().__init__(*args, **kwargs)
        # websockets only appends, removes and iterates its drain waiters; an
        # empty list costs 56 bytes where an empty deque costs 760.
        self.drain_waiters = []  # type: ignore[assignment]
        # websockets wraps its logger per connection to add a `websocket` record
        # attribute that nothing here reads (~230 bytes): log to the logger itself.
        wrapped = self.protocol.logger
        if isinstance(wrapped, logging.LoggerAdapter):
            self.protocol.logger = self.logger = wrapped.logger

    def hold(self, ticket: Releasable) -> None:
        """Keep `ticket` until the TCP connection is lost."""
        self.ticket = ticket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.recv_messages.frames.queue = FrameQueue()  # type: ignore[assignment]
        if self.guard is not None:
            refusal = self.guard.accepted(self)
            if refusal is not None:
                self._refuse(refusal)

    def _refuse(self, response: Response) -> None:
        """Answer and close now: the handshake then ends by itself.

        Used at accept time, when nothing of the request has been read, so the
        connection holds nothing (a client that already sent its request may
        see a reset instead of the answer: the price of not keeping it).
        """
        self._answered = True
        self.transport.write(response.serialize())
        self.transport.close()

    def _answer_and_discard(self, response: Response) -> None:
        """Answer, half-close, and discard what the client still sends until it closes.

        Closing with unread bytes would make the kernel reset the connection and
        the client would never see the answer. Discarding buffers nothing; the
        connection keeps its half-open place until it is gone, and websockets'
        open timeout ends it if the client never closes.
        """
        self._answered = True
        self.transport.write(response.serialize())
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:  # TLS: no half-close
            self.transport.close()

    def _request_complete(self) -> None:
        half_open, self.half_open = self.half_open, None
        if half_open is not None:
            half_open.release()

    def send_data(self) -> None:
        # websockets reports a request it could not parse only by half-closing
        # (or with its own 414 / 431): answer and count it before that EOF goes out.
        guard = self.guard
        if (
            guard is not None
            and self.request is None
            and not self._answered
            and self.protocol.handshake_exc is not None
        ):
            self._answered = True
            # A client that closed mid-request (a port check) is not refused: it left.
            if not self._peer_eof:
                response = guard.unparsable(self, self.protocol.handshake_exc)
                if response is not None:
                    self.transport.write(response.serialize())
        super().send_data()

    def pause_writing(self) -> None:
        # asyncio's and uvloop's SSL transports compare `size >= high`: with
        # limits (0, 0) every write or read flips them between paused and
        # resumed, even with nothing buffered. websockets' drain() (after its
        # keepalive ping, its close) would then wait, one time in two, for
        # traffic that may never come, and a silent TLS peer would never hit
        # the ping timeout (tests/integration/test_tls.py). Such a pause
        # (nothing buffered) is noted, not obeyed; the session's writer reads
        # get_write_buffer_size() after each write anyway.
        transport = getattr(self, "transport", None)  # unset during connection_made
        if transport is not None and transport.get_write_buffer_size() == 0:
            self._empty_pause = True
            return
        super().pause_writing()

    def resume_writing(self) -> None:
        if self._empty_pause:
            self._empty_pause = False
        else:
            super().resume_writing()
        if self.session is not None:
            self.session.transport_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self._request_complete()
        ticket, self.ticket = self.ticket, None
        if ticket is not None:
            ticket.release()
        super().connection_lost(exc)
        if self.session is not None:
            self.session.connection_lost()

    def data_received(self, data: bytes) -> None:
        if self.request is None and self.guard is not None:
            if self._head_too_large:
                return  # answered 431: discarded
            self._head_bytes += len(data)
            if self._head_bytes > self.guard.max_header_bytes and not self._answered:
                self._head_too_large = True
                self._answer_and_discard(self.guard.too_large(self))
                return
        super().data_received(data)
        if self.half_open is not None and self.request is not None:
            self._request_complete()
        # A close frame from the client ends the OPEN state here: the session
        # must not write data frames after websockets answered it.
        if self.session is not None and self.protocol.state is not OPEN:
            self.session.closing_handshake()

    def eof_received(self) -> None:
        # A half-close from the client ends the connection: websockets answers
        # with its own EOF, after which nothing may be written.
        self._peer_eof = True
        super().eof_received()
        if self.session is not None and self.protocol.state is not OPEN:
            self.session.closing_handshake()


def connection_class(guard: RequestGuard | None = None) -> type[BroadcasterConnection]:
    """A connection class bound to one server's request guard."""
    return type("BoundBroadcasterConnection", (BroadcasterConnection,), {"guard": guard})


__all__ += ["DEFLATE_WINDOW_BITS", "connection_class"]
