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
  connection counts stay right even for handshakes that never complete.

`frame_text` builds a server-to-client text frame with websockets' own frame
serializer; server frames are unmasked and compression is off, so the same
bytes are valid on every connection and a message is framed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Protocol

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

__all__ = ["BroadcasterConnection", "ConnectionEvents", "frame_text"]


def frame_text(payload: bytes) -> bytes:
    """The complete WebSocket text frame carrying `payload` (server side: unmasked)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


class ConnectionEvents(Protocol):
    """What a session needs to hear from its transport."""

    def transport_drained(self) -> None: ...

    def connection_lost(self) -> None: ...

    def closing_handshake(self) -> None: ...


class Releasable(Protocol):
    """A place this connection holds (an admission ticket), given back when it is lost."""

    def release(self) -> None: ...


class BroadcasterConnection(ServerConnection):
    """A server connection that caps its socket buffer and reports transport events."""

    send_buffer: int = 0
    """SO_SNDBUF in bytes for accepted sockets (0 leaves the kernel's autotuning)."""

    session: ConnectionEvents | None = None
    ticket: Releasable | None = None

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
        ticket, self.ticket = self.ticket, None
        if ticket is not None:
            ticket.release()
        super().connection_lost(exc)
        if self.session is not None:
            self.session.connection_lost()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A close frame from the client ends the OPEN state here: the session
        # must not write data frames after websockets answered it.
        if self.session is not None and self.protocol.state is not OPEN:
            self.session.closing_handshake()

    def eof_received(self) -> None:
        # A half-close from the client ends the connection: websockets answers
        # with its own EOF, after which nothing may be written.
        super().eof_received()
        if self.session is not None and self.protocol.state is not OPEN:
            self.session.closing_handshake()


def connection_class(send_buffer: int) -> type[BroadcasterConnection]:
    """A connection class bound to one server's SO_SNDBUF setting."""
    return type(
        "BoundBroadcasterConnection", (BroadcasterConnection,), {"send_buffer": send_buffer}
    )


__all__ += ["connection_class"]
