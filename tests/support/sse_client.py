"""An SSE / NDJSON stream client on a raw socket whose reading the test controls.

Like `RawClient` for WebSocket: a slow consumer stops reading at the TCP
level, so this client owns the socket (small SO_RCVBUF set before
connecting) and reads only inside `read_*` calls. HTTP goes through h11
(Sans-I/O); only the SSE lines (`id:`, `data:`, `retry:`, comments) are
split here, as an EventSource would.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import h11
import orjson

__all__ = ["StreamClient"]


class StreamClient:
    """A test client for `GET /sse` (or `/stream` with `ndjson=True`)."""

    def __init__(
        self,
        port: int,
        target: str,
        *,
        headers: dict[str, str] | None = None,
        rcvbuf: int = 4096,
        ndjson: bool = False,
    ) -> None:
        self.port = port
        self.target = target
        self.headers = headers or {}
        self.rcvbuf = rcvbuf
        self.ndjson = ndjson
        self.conn = h11.Connection(our_role=h11.CLIENT)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.status = 0
        self.response_headers: dict[str, str] = {}
        self.body = b""
        """The whole body of a refused (non-200) request."""
        self.events: list[dict[str, Any]] = []
        self.ids: list[str] = []
        """The `id:` of every SSE event that had one, in order."""
        self.retries: list[int] = []
        self.heartbeats = 0
        self.ended = False
        """The response ended normally (the last chunk arrived)."""
        self.reset = False
        self.eof = False
        self._text = b""

    async def connect(self) -> StreamClient:
        loop = asyncio.get_running_loop()
        if self.rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        self.sock.setblocking(False)
        await loop.sock_connect(self.sock, ("127.0.0.1", self.port))
        headers = [("Host", f"127.0.0.1:{self.port}"), *self.headers.items()]
        request = h11.Request(method="GET", target=self.target, headers=headers)
        await loop.sock_sendall(
            self.sock, self.conn.send(request) + self.conn.send(h11.EndOfMessage())
        )
        while not self.status:
            if not await self.read_once(5.0) and not self.status:
                raise ConnectionError("the server closed the connection before answering")
        return self

    @property
    def last_id(self) -> str | None:
        return self.ids[-1] if self.ids else None

    async def read_once(self, timeout: float = 5.0, *, limit: int = 1 << 20) -> bool:
        """Read what the socket has (waiting up to `timeout`); False at EOF, reset or the end."""
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, limit), timeout)
        except ConnectionResetError:
            self.reset = True
            return False
        if not data:
            self.eof = True
        self.conn.receive_data(data)
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.response_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                if self.status == 200:
                    self._feed(bytes(event.data))
                else:
                    self.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.ended = True
            elif isinstance(event, h11.ConnectionClosed):
                break
        return bool(data) and not self.ended

    def _feed(self, data: bytes) -> None:
        self._text += data
        if self.ndjson:
            *lines, self._text = self._text.split(b"\n")
            for line in lines:
                if line:
                    self.events.append(orjson.loads(line))
                else:
                    self.heartbeats += 1
            return
        *blocks, self._text = self._text.split(b"\n\n")
        for block in blocks:
            for line in block.split(b"\n"):
                field, _, value = line.partition(b": ")
                if line.startswith(b":"):
                    self.heartbeats += 1
                elif field == b"id":
                    self.ids.append(value.decode())
                elif field == b"retry":
                    self.retries.append(int(value))
                elif field == b"data":
                    self.events.append(orjson.loads(value))

    async def read_until(self, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Read until `predicate(events)` is true; raise TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.events):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met; last events: {self.events[-3:]}")
            if not await self.read_once(remaining) and not predicate(self.events):
                raise ConnectionError(
                    f"the stream ended before the condition was met: {self.events[-3:]}"
                )
        return self.events

    async def read_to_end(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Read until the server ends the stream (last chunk, EOF or reset)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.read_once(max(0.01, deadline - loop.time())):
            if loop.time() > deadline:
                raise TimeoutError("the server did not end the stream")
        return self.events

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("event") == "message" and (channel is None or e["channel"] == channel)
        ]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    def close(self) -> None:
        self.sock.close()
