"""A WebSocket client on a raw socket whose reading the test controls.

A slow consumer is a client that stops reading at the TCP level: its kernel
receive buffer fills, then the server's send buffer, then the server's
queue. A client library that keeps reading into its own buffer cannot
simulate that, so this client owns the socket (with a small SO_RCVBUF set
before connecting) and reads only when the test says so. Framing and the
handshake go through websockets' Sans-I/O `ClientProtocol`; nothing is
parsed by hand.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

__all__ = ["RawClient"]


class RawClient:
    """A test client that reads from its socket only inside `read_*` calls."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        rcvbuf: int = 4096,
        compression: bool = False,
    ) -> None:
        """`compression`: offer permessage-deflate (websockets' client factory)."""
        self.host = host
        self.port = port
        self.rcvbuf = rcvbuf
        self.protocol = ClientProtocol(
            parse_uri(f"ws://{host}:{port}/ws"),
            max_size=None,
            extensions=[ClientPerMessageDeflateFactory()] if compression else None,
        )
        self.bytes_received = 0
        """Bytes read from the socket since the handshake: what came over the wire."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.events: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.eof = False
        self.reset = False

    async def connect(self) -> RawClient:
        loop = asyncio.get_running_loop()
        if self.rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        self.sock.setblocking(False)
        await loop.sock_connect(self.sock, (self.host, self.port))
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            if not data:
                raise ConnectionError("server closed the connection during the handshake")
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    # Frames may follow the response in the same read: not counted.
                    if event.status_code != 101:
                        raise ConnectionError(f"handshake refused: {event.status_code}")
                    return self
                self._record(event)

    async def send(self, obj: Any) -> None:
        self.protocol.send_text(orjson.dumps(obj))
        await self._flush()

    async def subscribe(self, channel: str) -> None:
        """Subscribe to `channel` and read until the server says `subscribed` (then stop)."""
        await self.send({"op": "subscribe", "channel": channel, "id": 1})
        await self.read_until(
            lambda evs: any(
                e.get("event") == "subscribed" and e.get("channel") == channel for e in evs
            )
        )

    @property
    def deflate(self) -> bool:
        """Whether permessage-deflate was negotiated."""
        return any(isinstance(ext, PerMessageDeflate) for ext in self.protocol.extensions)

    async def send_raw_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self._flush()

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for data in self.protocol.data_to_send():
            if data:
                await loop.sock_sendall(self.sock, data)

    def _record(self, event: object) -> None:
        if not isinstance(event, Frame):
            return
        if event.opcode is Opcode.TEXT:
            self.events.append(orjson.loads(event.data))
        elif event.opcode is Opcode.CLOSE:
            close = self.protocol.close_rcvd
            if close is not None:
                self.close_code = close.code
                self.close_reason = close.reason

    async def read_once(self, timeout: float = 5.0, *, limit: int = 1 << 20) -> bool:
        """Read what the socket has, up to `limit` bytes (waiting up to `timeout`); False at
        EOF or reset."""
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, limit), timeout)
        except ConnectionResetError:
            self.reset = True
            return False
        if not data:
            self.eof = True
            self.protocol.receive_eof()
            return False
        self.bytes_received += len(data)
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            self._record(event)
        await self._flush()  # pongs and the closing handshake
        return True

    async def read_until(self, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Read until `predicate(events)` is true; raise TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.events):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met; last events: {self.events[-3:]}")
            if not await self.read_once(remaining):
                if predicate(self.events):
                    break
                raise ConnectionError(
                    f"connection ended (close={self.close_code}) before the condition was met"
                )
        return self.events

    async def read_to_end(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Read until the server closes the connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.read_once(max(0.01, deadline - loop.time())):
            if loop.time() > deadline:
                raise TimeoutError("the server did not close the connection")
        return self.events

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("event") == "message" and (channel is None or e["channel"] == channel)
        ]

    def close(self) -> None:
        self.sock.close()
