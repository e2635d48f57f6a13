"""The WebSocket transport (`/ws`): a thin adapter around the `Subscriber`.

What a subscriber is (ops, access rules, limits, subscriptions, the outbox)
lives in `server/subscriber.py`; this module only adds what WebSocket
brings: ops read from frames, `?token=` from the handshake URL, pings
through websockets' bookkeeping, the close frame with its code, and
permessage-deflate when the handshake negotiated it (`outbox.deflate`). The
messages' WebSocket frames are built once at publish (`Message.frame`, or
the shared compressed one, `Message.compressed()`), so the shared `flush`
hands them to the transport as they are.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.protocol import OPEN

from broadcaster.codes import CloseCode
from broadcaster.server.subscriber import (
    ABUSE_LIMIT,
    ABUSE_WINDOW,
    REPLY_BACKLOG_LIMIT,
    Subscriber,
)
from broadcaster.server.websocket import BroadcasterConnection, negotiated_deflate

if TYPE_CHECKING:
    from broadcaster.server.app import Broadcaster

__all__ = ["ABUSE_LIMIT", "ABUSE_WINDOW", "ClientSession"]


class ClientSession(Subscriber):
    """The server side of one WebSocket client."""

    __slots__ = ("_lost", "_ping", "_protocol", "ws")

    transport_name = "websocket"

    def __init__(self, app: Broadcaster, ws: BroadcasterConnection, session_id: int) -> None:
        super().__init__(app, ws.transport, ws.remote_address, session_id, framer=app.framer)
        self.ws = ws
        # Compressed subscribers take each message's shared compressed frame.
        self.outbox.deflate = negotiated_deflate(ws.protocol)
        self._protocol = ws.protocol
        self._ping: bytes | None = None
        self._lost = False

    # --- reading -----------------------------------------------------------

    async def run(self) -> None:
        """Read and answer ops until the connection closes, then wait out a lingering close.

        A lingering close (`close(linger=...)`) is waited for here, bounded by
        its abort: websockets aborts a connection `close_timeout` after its
        handler returns, which would cut off a slow client still reading
        towards its close frame. One coroutine for both, awaited by the
        handler task directly (`Broadcaster._handle`): an idle connection's
        suspended chain is as short as it can be.
        """
        ws = self.ws
        self._run_task = asyncio.current_task()
        try:
            while not self.closing:
                if self._transport.get_write_buffer_size() > REPLY_BACKLOG_LIMIT:
                    await self._wait_drained()
                    continue
                frame = await ws.recv()
                await self.handle(frame)
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            if not self.closing:
                raise
        finally:
            # The TCP connection may outlive the read loop (a close handshake in
            # progress, an abort pending): free what was held, keep the abort timer.
            self._run_task = None
            self._release()
        if self._lingering:
            await ws.wait_closed()

    def authenticate_handshake(self) -> None:
        """Apply `?token=` from the handshake URL, if any (a bad one closes with 1008)."""
        request = self.ws.request
        if request is None:
            return
        tokens = parse_qs(urlsplit(request.path).query).get("token")
        if tokens and self._checks(tokens[-1]):
            self._apply_token(tokens[-1], None)

    # --- keepalive -------------------------------------------------------------

    def keepalive(self, now: float) -> None:
        """Ping the client; if the previous ping is still unanswered, it is gone: close.

        The ping goes through websockets' own bookkeeping (`pending_pings`), so
        the pong is matched and `ws.latency` measured as with its keepalive.
        """
        self.last_ping = now
        ws = self.ws
        if self.closing or self._protocol.state is not OPEN:
            return
        if self._ping is not None and self._ping in ws.pending_pings:
            self.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout", flush=False)
            return
        data = os.urandom(4)
        ws.pending_pings[data] = (self.loop.create_future(), now)
        self._protocol.send_ping(data)
        ws.send_data()
        self._ping = data

    # --- closing -------------------------------------------------------------

    def _send_end(self, code: int, reason: str) -> None:
        """The close frame, behind what the socket already holds."""
        ws = self.ws
        if ws.protocol.state is OPEN:
            ws.protocol.send_close(code, reason)
            ws.send_data()

    def connection_lost(self) -> None:
        """The TCP connection is gone: free what it held (idempotent)."""
        if not self._lost:
            self._lost = True
            # websockets itself closes with 1009 on an oversized frame: count it here.
            sent = self.ws.protocol.close_sent
            if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
                self.app.metrics.refused("message_size")
        super().connection_lost()

    def closing_handshake(self) -> None:
        """The client started the closing handshake: write no more data frames."""
        self._open = False
