"""websockets' server connection, with the transport hooks the writer needs.

Three things are added to `ServerConnection`, nothing is parsed by hand:

- SO_SNDBUF is capped on every accepted socket, so the kernel cannot absorb
  megabytes for a client that stopped reading;
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
import contextlib
import socket
from collections.abc import Callable
from typing import Protocol

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


class BroadcasterConnection(ServerConnection):
    """A server connection that caps its socket buffer and reports transport events."""

    send_buffer: int = 0
    """SO_SNDBUF in bytes for accepted sockets (0 leaves the kernel's autotuning)."""
    guard: RequestGuard | None = None
    """Caps and answers before the request is complete (None: websockets' defaults only)."""

    session: ConnectionEvents | None = None
    ticket: Releasable | None = None
    half_open: Releasable | None = None
    """Held from accept until the HTTP request is complete (or the connection lost)."""
    _head_bytes = 0
    _answered = False
    """The edge already answered (or refused) this request: nothing more to count or send."""
    _peer_eof = False
    _head_too_large = False

    def hold(self, ticket: Releasable) -> None:
        """Keep `ticket` until the TCP connection is lost."""
        self.ticket = ticket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.send_buffer:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):  # a platform without the option
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        super().connection_made(transport)
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

    _empty_pause = False

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


def connection_class(
    send_buffer: int, guard: RequestGuard | None = None
) -> type[BroadcasterConnection]:
    """A connection class bound to one server's SO_SNDBUF setting and request guard."""
    return type(
        "BoundBroadcasterConnection",
        (BroadcasterConnection,),
        {"send_buffer": send_buffer, "guard": guard},
    )


__all__ += ["DEFLATE_WINDOW_BITS", "connection_class"]
