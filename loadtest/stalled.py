"""Stalled subscribers: clients that stop reading at the TCP level.

A stalled client is the case a fan-out server must survive: it subscribes and then
never reads again, so its kernel receive buffer fills, the server's send buffer
fills, and every further message for it piles up in the server. To make that
happen for real, each stalled client is a raw socket whose SO_RCVBUF is set small
*before* connect (so the window scaling negotiated at the handshake is small too),
doing the WebSocket handshake with websockets' Sans-I/O ``ClientProtocol``. After
the ``subscribed`` reply the socket is never read again.

Whether the server cut it off is observed without reading: the kernel's TCP state
(TCP_INFO) leaves ESTABLISHED when the server aborts (RST) or closes. Only then
does the client read what is left, to find a close frame and its code if one made
it through; a server that aborts a non-reading client usually leaves none, and the
report says ``reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from loadtest.clients import stream_address

__all__ = ["StalledClient", "StalledResult", "open_stalled", "tcp_state"]

_SSE_CLOSE = b'{"event":"close","code":'


class _SseTail:
    """Stands in for websockets' `ClientProtocol` on an SSE stream (`--client sse`).

    It only needs to see two events in the bytes: `subscribed` (then the client
    stops reading) and, read after the run, the server's `close` event with its code.
    """

    def __init__(self) -> None:
        self.tail = b""
        self.subscribed = False
        self.close_rcvd: Close | None = None

    def receive_data(self, data: bytes) -> None:
        text = self.tail + data
        if not self.subscribed and b'"event":"subscribed"' in text:
            self.subscribed = True
        at = text.rfind(_SSE_CLOSE)
        if at >= 0 and self.close_rcvd is None:
            end = text.find(b"}", at)
            if end > 0:
                event = orjson.loads(text[at : end + 1])
                self.close_rcvd = Close(int(event["code"]), str(event.get("reason", "")))
        self.tail = text[-256:]

    def events_received(self) -> list[object]:
        return []


TCP_ESTABLISHED = 1
_TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of ``sock`` (1 = ESTABLISHED), read without touching the data."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return info[0]


def receive_queue_bytes(sock: socket.socket) -> int:
    """Bytes the kernel holds for ``sock`` that nobody has read (FIONREAD)."""
    buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
    value: int = struct.unpack("i", buf)[0]
    return value


@dataclass
class StalledResult:
    """What happened to one stalled client."""

    index: int
    channel: str
    subscribed: bool
    closed: bool
    closed_at_s: float | None
    """Seconds from the start of publishing until the kernel saw the connection end."""
    close_code: int | None
    closed_how: str | None
    """``close frame`` (code read), ``reset`` (RST), ``eof`` (FIN, no close frame)."""
    seen: str | None
    """``during run`` (the kernel saw the end while the client was still stalled) or
    ``after run`` (found by reading the socket once the run was over)."""
    tcp_state: str
    receive_queue_bytes: int
    """Unread bytes in the kernel at the last check: proof that the client stopped reading."""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StalledClient:
    """One raw-socket subscriber that reads nothing after its ``subscribed`` reply."""

    def __init__(
        self, index: int, url: str, channel: str, rcvbuf: int, *, sse: bool = False
    ) -> None:
        self.index = index
        self.url = url
        self.channel = channel
        self.rcvbuf = rcvbuf
        self.sock: socket.socket | None = None
        self.sse: _SseTail | None = _SseTail() if sse else None
        self.protocol: ClientProtocol | _SseTail = (
            self.sse if self.sse is not None else ClientProtocol(parse_uri(url), max_size=None)
        )
        self.subscribed = False
        self.closed_at_ns: int | None = None
        self.close_code: int | None = None
        self.closed_how: str | None = None
        self.seen: str | None = None
        self.reading = False
        self.last_rcvq = 0
        self.error: str | None = None

    async def open(self, wait_s: float) -> None:
        """Connect with a small receive buffer, handshake, subscribe, read the reply, stop."""
        loop = asyncio.get_running_loop()
        parts = urlsplit(self.url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect: the window scale is fixed at the SYN, so a later shrink
        # would not stop a peer that was offered a large window.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.setblocking(False)
        self.sock = sock
        if self.sse is not None:
            await self._open_sse(sock, wait_s)
            return
        assert isinstance(self.protocol, ClientProtocol)
        async with asyncio.timeout(wait_s):
            await loop.sock_connect(sock, (parts.hostname or "127.0.0.1", parts.port or 80))
            self.protocol.send_request(self.protocol.connect())
            await self._flush()
            while self.protocol.state is State.CONNECTING:
                await self._read_some()
            if self.protocol.handshake_exc is not None:
                raise self.protocol.handshake_exc
            frame = {"op": "subscribe", "channel": self.channel, "id": self.index}
            self.protocol.send_text(orjson.dumps(frame))
            await self._flush()
            while not self.subscribed:
                await self._read_some()
        # From here on: no recv() until the kernel says the connection ended.

    async def _open_sse(self, sock: socket.socket, wait_s: float) -> None:
        """`GET /sse?channel=...` on the API port; read until `subscribed`, then stop."""
        assert self.sse is not None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(wait_s):
            host, port = await stream_address(self.url, wait_s)
            await loop.sock_connect(sock, (host, port))
            request = f"GET /sse?channel={self.channel} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
            await loop.sock_sendall(sock, request.encode())
            while not self.sse.subscribed:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    raise ConnectionError("server closed before the stream started")
                self.sse.receive_data(data)
            self.subscribed = True

    async def _flush(self) -> None:
        assert self.sock is not None
        assert isinstance(self.protocol, ClientProtocol)
        loop = asyncio.get_running_loop()
        for data in self.protocol.data_to_send():
            if data:
                await loop.sock_sendall(self.sock, data)

    async def _read_some(self) -> None:
        assert self.sock is not None
        assert isinstance(self.protocol, ClientProtocol)
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if not data:
            raise ConnectionError("server closed during the handshake")
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                with contextlib.suppress(orjson.JSONDecodeError):
                    msg = orjson.loads(event.data)
                    if isinstance(msg, dict) and msg.get("event") == "subscribed":
                        self.subscribed = True

    def check(self) -> bool:
        """Poll the kernel's view; on the first sign of an end, read the remains. True if ended."""
        if self.error is not None or self.sock is None:
            return True  # never got going: nothing to watch
        if self.closed_at_ns is not None:
            return True
        if self.reading:
            return False  # the autopsy owns the socket now; its reads are not the server's doing
        state = tcp_state(self.sock)
        if state == TCP_ESTABLISHED:
            self.last_rcvq = receive_queue_bytes(self.sock)
            return False
        self.closed_at_ns = time.time_ns()
        self.seen = "during run"
        self._read_remains()
        return True

    async def autopsy(self, idle_s: float) -> None:
        """After the run, read the socket to see whether the server had closed it.

        A server that gives up on a non-reading client may close its socket with
        data still unsent; the kernel then keeps sending into the zero window, and
        the client sees neither FIN nor RST while it stays stalled. Reading now lets
        that data, the close frame and the FIN through. Stops at the close, at EOF or
        RST, or after ``idle_s`` without data (the server still holds it open).
        """
        if self.sock is None or self.error is not None or self.closed_at_ns is not None:
            return
        self.reading = True
        loop = asyncio.get_running_loop()
        budget = 256 * 1024 * 1024
        how: str | None = None
        try:
            while budget > 0 and self.protocol.close_rcvd is None:
                async with asyncio.timeout(idle_s):
                    data = await loop.sock_recv(self.sock, 262144)
                if not data:
                    how = "eof"
                    break
                budget -= len(data)
                self.protocol.receive_data(data)
                self.protocol.events_received()
        except TimeoutError:
            return
        except ConnectionResetError:
            how = "reset"
        except OSError as exc:
            how = f"error: {exc.strerror}"
        close: Close | None = self.protocol.close_rcvd
        if close is not None:
            self.close_code = close.code
            how = "close frame"
        if how is not None:
            self.closed_how = how
            self.seen = "after run"

    def _read_remains(self) -> None:
        """Read what the kernel still holds, looking for a close frame; bounded in bytes."""
        assert self.sock is not None
        self.closed_how = "eof"
        budget = 64 * 1024 * 1024
        try:
            while budget > 0:
                data = self.sock.recv(65536)
                if not data:
                    break
                budget -= len(data)
                self.protocol.receive_data(data)
                self.protocol.events_received()
        except BlockingIOError:
            pass
        except ConnectionResetError:
            self.closed_how = "reset"
        except OSError as exc:
            self.closed_how = f"error: {exc.strerror}"
        close: Close | None = self.protocol.close_rcvd
        if close is not None:
            self.close_code = close.code
            self.closed_how = "close frame"

    def result(self, epoch_ns: int) -> StalledResult:
        state = "unknown"
        if self.sock is not None:
            with contextlib.suppress(OSError):
                state = _TCP_STATES.get(tcp_state(self.sock), "?")
        closed_at = None
        if self.closed_at_ns is not None:
            closed_at = (self.closed_at_ns - epoch_ns) / 1e9
        return StalledResult(
            index=self.index,
            channel=self.channel,
            subscribed=self.subscribed,
            closed=self.closed_how is not None,
            closed_at_s=closed_at,
            close_code=self.close_code,
            closed_how=self.closed_how,
            seen=self.seen,
            tcp_state=state,
            receive_queue_bytes=self.last_rcvq,
            error=self.error,
        )

    def close(self) -> None:
        """Drop the socket (abortive when data is unread, which is what a dead client does)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None


async def open_stalled(
    url: str, channels: list[str], count: int, rcvbuf: int, wait_s: float, *, sse: bool = False
) -> list[StalledClient]:
    """Open ``count`` stalled clients over ``channels``; failures are recorded, not raised."""
    clients = [
        StalledClient(10_000_000 + i, url, channels[i % len(channels)], rcvbuf, sse=sse)
        for i in range(count)
    ]

    async def open_one(client: StalledClient) -> None:
        try:
            await client.open(wait_s)
        except Exception as exc:
            client.error = f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(open_one(c) for c in clients))
    return clients


async def watch(clients: list[StalledClient], interval: float, until: float) -> None:
    """Poll every stalled client's TCP state until ``until`` (monotonic) or all have ended."""
    while time.monotonic() < until:
        if all(c.check() for c in clients):
            return
        await asyncio.sleep(interval)
