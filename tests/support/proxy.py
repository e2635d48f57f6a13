"""A TCP proxy on loopback that a test can cut, stall or freeze: real network trouble.

- `cut()`: abort every link (the client sees an abnormal close, 1006);
- `refuse(True)`: accept and drop new connections (a server that cannot be reached);
- `stall()`: stop reading from the server on existing links, so its kernel buffers and
  then its queues fill exactly as for a client that stopped reading; `resume()` undoes it;
- `freeze()`: stop forwarding both ways on existing links (a dead link).

Bytes are forwarded as they are; nothing is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

__all__ = ["TcpProxy"]


class _Side(asyncio.Protocol):
    """One socket of a link; forwards what it receives to the other side."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.abort()


class _Refuse(asyncio.Protocol):
    """Accept, then drop at once: the handshake fails as against a dead server."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()


class _Link:
    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.upstream = _Side(self)
        self.client.peer = self.upstream
        self.upstream.peer = self.client

    async def open(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: self.upstream, "127.0.0.1", port)
        except OSError:
            self.abort()
            return
        assert self.upstream.transport is not None
        for data in self.client.early:
            self.upstream.transport.write(data)
        self.client.early.clear()

    def abort(self) -> None:
        self.proxy.links.discard(self)
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: set[_Link] = set()
        self.accepted = 0
        self._refusing = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> TcpProxy:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, "127.0.0.1", 0)
        return self

    def _accept(self) -> asyncio.Protocol:
        self.accepted += 1
        link = _Link(self)
        if self._refusing:
            return _Refuse()
        self.links.add(link)
        task = asyncio.get_running_loop().create_task(link.open(self.target_port))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return link.client

    def cut(self) -> None:
        for link in list(self.links):
            link.abort()

    def refuse(self, on: bool) -> None:
        self._refusing = on

    def stall(self) -> None:
        for link in self.links:
            if link.upstream.transport is not None:
                link.upstream.transport.pause_reading()

    def resume(self) -> None:
        for link in self.links:
            for side in (link.client, link.upstream):
                if side.transport is not None and not side.transport.is_closing():
                    side.transport.resume_reading()

    def freeze(self) -> None:
        for link in self.links:
            for side in (link.client, link.upstream):
                if side.transport is not None:
                    side.transport.pause_reading()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
