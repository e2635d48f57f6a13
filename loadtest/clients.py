"""Subscriber clients: picows (the default, faster) and websockets (for comparison).

Both backends do the same thing: connect, send ``subscribe``, feed every text
frame to the subscription's :class:`~loadtest.accounting.SubscriberRecord`, and
remember the close code. A *slow* subscriber reads at a fixed average rate by
pausing the transport's reading (so the backlog piles up in the kernel and the
server, as with a real slow client), never by sleeping on buffered data.

picows is the default because it measured faster: a picows subscriber costs less
CPU per message than a websockets one, which matters since the client's core is
the ceiling of every saturation figure (see loadtest/README.md for the numbers).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from typing import Protocol
from urllib.parse import urlsplit

import orjson
import picows
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from loadtest.accounting import SubscriberRecord

__all__ = [
    "PicowsSubscriber",
    "SseSubscriber",
    "Subscriber",
    "WebsocketsSubscriber",
    "make_subscriber",
]


class Subscriber(Protocol):
    """What a worker needs from a subscriber client."""

    record: SubscriberRecord

    async def open(self, wait_s: float) -> None:
        """Connect and (unless idle) subscribe; return once ``subscribed`` arrived."""

    def close(self) -> None:
        """Start a normal close; never blocks."""

    async def wait_closed(self, wait_s: float) -> None:
        """Wait (bounded) until the connection is gone."""

    def bytes_received(self) -> int:
        """Bytes the kernel received on this connection (TCP_INFO): the wire's count."""


def subscribe_frame(channel: str, index: int) -> bytes:
    return orjson.dumps({"op": "subscribe", "channel": channel, "id": index})


def tcp_bytes_received(transport: asyncio.BaseTransport | None) -> int:
    """tcpi_bytes_received of the transport's socket (Linux 4.1+; 0 when unknown).

    Read from the kernel at the end of a run, so counting costs nothing per message
    and covers every client library: compressed or not, these are the bytes that
    crossed the (loopback) wire, WebSocket framing (or SSE's HTTP chunks) included,
    TCP/IP headers not.
    """
    if transport is None:
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return 0
    if len(info) < _TCPI_BYTES_RECEIVED + 8:
        return 0
    return int(struct.unpack_from("Q", info, _TCPI_BYTES_RECEIVED)[0])


# Offset of tcpi_bytes_received in Linux's struct tcp_info.
_TCPI_BYTES_RECEIVED = 128


def small_buffer_socket(rcvbuf: int) -> socket.socket:
    """An unconnected TCP socket whose SO_RCVBUF is set before connect.

    Slow subscribers use it so their backlog reaches the server's queues instead of
    vanishing into a receive buffer the kernel would otherwise grow to megabytes.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    return sock


class _Throttle:
    """Average-rate reading for slow subscribers: pause reading when ahead of budget."""

    __slots__ = ("loop", "paused", "rate", "resume", "start")

    def __init__(self, rate: float, loop: asyncio.AbstractEventLoop) -> None:
        self.rate = rate
        self.loop = loop
        self.start = time.monotonic()
        self.paused = False
        self.resume: asyncio.TimerHandle | None = None

    def delay_after(self, received: int) -> float:
        """Seconds to stop reading after ``received`` messages (0 when within budget)."""
        allowed_at = self.start + received / self.rate
        return max(0.0, allowed_at - time.monotonic())


_TEXT = picows.WSMsgType.TEXT


class _PicowsListener(picows.WSListener):
    def __init__(self, owner: PicowsSubscriber) -> None:
        self.owner = owner
        self.partial: bytearray | None = None
        self.steady = False
        self.on_frame = owner.record.on_frame

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.owner.record.connected = True
        if not self.owner.idle:
            frame = subscribe_frame(self.owner.record.channel, self.owner.record.index)
            transport.send(picows.WSMsgType.TEXT, frame)
        else:
            self.owner.ready.set()

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is _TEXT and frame.fin:
            if self.steady:
                # Subscribed, fast: the per-message path is one call into the record.
                self.on_frame(frame.get_payload_as_bytes())
                return
            record = self.owner.record
            record.on_frame(frame.get_payload_as_bytes())
            self.steady = record.subscribed and self.owner.throttle is None
            if record.subscribed and not self.owner.ready.is_set():
                self.owner.ready.set()
                if self.owner.throttle is not None:
                    self.owner.throttle.start = time.monotonic()
            if self.owner.throttle is not None:
                self.owner.slow_down(record.received)
        elif msg_type is picows.WSMsgType.TEXT or msg_type is picows.WSMsgType.CONTINUATION:
            self._fragment(frame)
        elif msg_type is picows.WSMsgType.CLOSE:
            code = frame.get_close_code()
            self.owner.record.on_close(int(code.value))
            transport.send_close(code)
            transport.disconnect()

    def _fragment(self, frame: picows.WSFrame) -> None:
        if self.partial is None:
            self.partial = bytearray()
        self.partial += frame.get_payload_as_memoryview()
        if frame.fin:
            payload, self.partial = bytes(self.partial), None
            self.owner.record.on_frame(payload)

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        handshake = transport.close_handshake
        code = None
        if handshake is not None and handshake.recv is not None:
            code = int(handshake.recv.code.value)
        self.owner.record.on_close(code)
        self.owner.ready.set()


class _CallbackSubscriber:
    """What the picows and SSE subscribers share: one connection driven by callbacks
    (no task per connection), throttled by pausing its transport's reading."""

    def __init__(
        self, url: str, record: SubscriberRecord, slow_rate: float, idle: bool, rcvbuf: int = 0
    ) -> None:
        self.url = url
        self.record = record
        self.idle = idle
        self.rcvbuf = rcvbuf
        self.ready = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.throttle = _Throttle(slow_rate, loop) if slow_rate > 0 else None

    def _reading_transport(self) -> asyncio.Transport | None:
        """The socket's asyncio transport while the connection is open (None before or after)."""
        raise NotImplementedError

    def slow_down(self, received: int) -> None:
        throttle = self.throttle
        assert throttle is not None
        if throttle.paused:
            return
        raw = self._reading_transport()
        if raw is None:
            return
        delay = throttle.delay_after(received)
        if delay > 0.0:
            raw.pause_reading()
            throttle.paused = True
            throttle.resume = throttle.loop.call_later(delay, self._resume_reading)

    def _resume_reading(self) -> None:
        assert self.throttle is not None
        self.throttle.paused = False
        raw = self._reading_transport()
        if raw is not None:
            raw.resume_reading()

    def _cancel_resume(self) -> None:
        if self.throttle is not None and self.throttle.resume is not None:
            self.throttle.resume.cancel()


class PicowsSubscriber(_CallbackSubscriber):
    """One subscription over a picows connection (callbacks, no task per connection)."""

    def __init__(
        self, url: str, record: SubscriberRecord, slow_rate: float, idle: bool, rcvbuf: int = 0
    ) -> None:
        super().__init__(url, record, slow_rate, idle, rcvbuf)
        self.transport: picows.WSTransport | None = None

    def _reading_transport(self) -> asyncio.Transport | None:
        transport = self.transport
        if transport is None or transport.is_disconnected:
            return None
        raw: asyncio.Transport = transport.underlying_transport
        return raw

    def bytes_received(self) -> int:
        if self.transport is None:
            return 0
        return tcp_bytes_received(self.transport.underlying_transport)

    async def open(self, wait_s: float) -> None:
        async with asyncio.timeout(wait_s):
            transport, _ = await picows.ws_connect(
                lambda: _PicowsListener(self),
                self.url,
                websocket_handshake_timeout=wait_s,
                max_frame_size=64 * 1024 * 1024,
                socket_factory=(lambda _url: small_buffer_socket(self.rcvbuf))
                if self.rcvbuf
                else None,
            )
            self.transport = transport
            await self.ready.wait()
        if not self.record.connected or (not self.idle and not self.record.subscribed):
            raise ConnectionError(f"closed before subscribing (code {self.record.close_code})")

    def close(self) -> None:
        self._cancel_resume()
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close(picows.WSCloseCode.OK)
            self.transport.disconnect()

    async def wait_closed(self, wait_s: float) -> None:
        if self.transport is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(wait_s):
                await self.transport.wait_disconnected()


class WebsocketsSubscriber:
    """One subscription over a websockets connection (one reader task per connection)."""

    def __init__(
        self,
        url: str,
        record: SubscriberRecord,
        slow_rate: float,
        idle: bool,
        rcvbuf: int = 0,
        compression: bool = False,
    ) -> None:
        self.url = url
        self.record = record
        self.idle = idle
        self.slow_rate = slow_rate
        self.rcvbuf = rcvbuf
        self.compression = compression
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None

    def bytes_received(self) -> int:
        return tcp_bytes_received(self.ws.transport if self.ws is not None else None)

    async def open(self, wait_s: float) -> None:
        async with asyncio.timeout(wait_s):
            sock = None
            if self.rcvbuf:
                sock = small_buffer_socket(self.rcvbuf)
                parts = urlsplit(self.url)
                address = (parts.hostname or "127.0.0.1", parts.port or 80)
                await asyncio.get_running_loop().sock_connect(sock, address)
            self.ws = await ws_connect(
                self.url,
                compression="deflate" if self.compression else None,
                max_size=None,
                ping_interval=None,
                open_timeout=wait_s,
                sock=sock,
            )
            self.record.connected = True
            if self.idle:
                self.reader = asyncio.create_task(self._read())
                return
            await self.ws.send(subscribe_frame(self.record.channel, self.record.index), text=True)
            while not self.record.subscribed:
                self.record.on_frame(await self.ws.recv())
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        record = self.record
        start = time.monotonic()
        try:
            async for message in self.ws:
                record.on_frame(message)
                if self.slow_rate > 0:
                    delay = start + record.received / self.slow_rate - time.monotonic()
                    if delay > 0:
                        # While this task sleeps websockets stops reading once its
                        # receive queue is full, so the backlog builds up in TCP.
                        await asyncio.sleep(delay)
        except ConnectionClosed:
            pass
        rcvd = self.ws.protocol.close_rcvd
        record.on_close(rcvd.code if rcvd is not None else None)

    def close(self) -> None:
        if self.ws is not None:
            asyncio.get_running_loop().create_task(self.ws.close())

    async def wait_closed(self, wait_s: float) -> None:
        if self.ws is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(wait_s):
                await self.ws.wait_closed()
        if self.reader is not None:
            self.reader.cancel()


_STREAM_BASES: dict[str, tuple[str, int]] = {}
"""WebSocket URL -> (host, port) of its server's /sse, learnt from one redirect per process."""


async def stream_address(ws_url: str, wait_s: float) -> tuple[str, int]:
    """Where `GET /sse` lives for the server at `ws_url`: its 307 says (the API port)."""
    known = _STREAM_BASES.get(ws_url)
    if known is not None:
        return known
    parts = urlsplit(ws_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    async with asyncio.timeout(wait_s):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /sse HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"location":
            target = urlsplit(value.strip().decode())
            found = (target.hostname or host, target.port or 80)
            _STREAM_BASES[ws_url] = found
            return found
    raise ConnectionError(f"GET /sse on {host}:{port} did not redirect: {head[:80]!r}")


_SSE_CLOSE = b'{"event":"close"'


class _SseProtocol(asyncio.Protocol):
    """Reads one SSE stream about as cheaply per event as picows reads WebSocket frames.

    broadcaster writes every SSE event as one HTTP chunk (core/streams.py): its size
    in hex, CRLF, the event (`id: EPOCH:SEQ` LF, only on channel messages, then
    `data: <json>` LF LF), CRLF. So, like picows with frame lengths, the reader jumps
    from chunk to chunk by their sizes and never scans an event's payload: per event
    it reads the seq from the short `id:` line, collects it, and decodes only the
    events whose latency is sampled, with the same one-in-`latency_every` choice and
    the same orjson decode as the WebSocket clients, so both transports are measured
    alike. The collected seqs are accounted in one call per read
    (`SubscriberRecord.on_seqs`, C comparisons for the steady run) before any other
    event, so the order of `subscribed`, flow notices and messages is kept.
    """

    def __init__(self, owner: SseSubscriber) -> None:
        self.owner = owner
        self.record = owner.record
        self.buf = b""
        self.head = True
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        record = self.record
        if self.head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 200"):
                record.on_close(None)
                self.owner.ready.set()
                return
            self.head = False
            buf = buf[end + 4 :]
            record.connected = True
        find = buf.find
        size = len(buf)
        seqs: list[int] = []
        sampled: list[tuple[int, int]] = []  # (start, stop) of the decoded events' JSON
        countdown = record.sample_countdown
        every = record.latency_every
        pos = 0
        while True:
            crlf = find(b"\r\n", pos)
            if crlf < 0:
                break
            start = crlf + 2
            stop = start + int(buf[pos:crlf], 16)
            if stop + 2 > size:
                break
            pos = stop + 2
            if buf.startswith(b"id: ", start):
                line_end = find(b"\n", start, stop)
                seqs.append(int(buf[buf.rfind(b":", start, line_end) + 1 : line_end]))
                countdown -= 1
                if not countdown:
                    countdown = every
                    sampled.append((line_end + 7, stop - 2))
                continue
            if seqs:
                record.sample_countdown = countdown
                self._messages(buf, seqs, sampled)
                seqs, sampled = [], []
            self._control(buf, start, stop)
            countdown = record.sample_countdown
        record.sample_countdown = countdown
        if seqs:
            self._messages(buf, seqs, sampled)
        self.buf = buf[pos:]
        owner = self.owner
        if owner.throttle is not None or not owner.ready.is_set():
            self._after_read()

    def _messages(self, buf: bytes, seqs: list[int], sampled: list[tuple[int, int]]) -> None:
        record = self.record
        record.on_seqs(seqs)
        if sampled:
            now = time.time_ns()
            for start, stop in sampled:
                record.on_sample(now, buf[start:stop])

    def _control(self, buf: bytes, start: int, stop: int) -> None:
        """An event without an id: a reply, a notice, the `close` event; or no data at all."""
        if not buf.startswith(b"data: ", start):
            return  # a heartbeat comment, a retry hint, the last (empty) chunk
        payload = buf[start + 6 : stop - 2]
        if payload.startswith(_SSE_CLOSE):
            self.record.on_close(int(orjson.loads(payload)["code"]))
        else:
            self.record.on_frame(payload)

    def _after_read(self) -> None:
        owner, record = self.owner, self.record
        if record.subscribed and not owner.ready.is_set():
            owner.ready.set()
            if owner.throttle is not None:
                owner.throttle.start = time.monotonic()
        if owner.throttle is not None:
            owner.slow_down(record.received)

    def connection_lost(self, exc: Exception | None) -> None:
        self.record.on_close(self.record.close_code)
        self.owner.ready.set()
        self.owner.lost.set()


class SseSubscriber(_CallbackSubscriber):
    """One subscription over `GET /sse` (callbacks, no task per connection)."""

    def __init__(
        self, url: str, record: SubscriberRecord, slow_rate: float, idle: bool, rcvbuf: int = 0
    ) -> None:
        super().__init__(url, record, slow_rate, idle, rcvbuf)
        self.lost = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def _reading_transport(self) -> asyncio.Transport | None:
        transport = self.transport
        return None if transport is None or transport.is_closing() else transport

    def bytes_received(self) -> int:
        return tcp_bytes_received(self.transport)

    async def open(self, wait_s: float) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(wait_s):
            host, port = await stream_address(self.url, wait_s)
            if self.rcvbuf:
                sock = small_buffer_socket(self.rcvbuf)
                await loop.sock_connect(sock, (host, port))
                transport, _ = await loop.create_connection(lambda: _SseProtocol(self), sock=sock)
            else:
                transport, _ = await loop.create_connection(lambda: _SseProtocol(self), host, port)
            self.transport = transport
            channel = self.record.channel
            transport.write(
                f"GET /sse?channel={channel} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
            )
            await self.ready.wait()
        if not self.record.connected or not self.record.subscribed:
            raise ConnectionError(f"closed before subscribing (code {self.record.close_code})")

    def close(self) -> None:
        self._cancel_resume()
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self, wait_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self.lost.wait()


def make_subscriber(
    client: str,
    url: str,
    record: SubscriberRecord,
    slow_rate: float,
    idle: bool,
    rcvbuf: int = 0,
    *,
    compression: bool = False,
) -> Subscriber:
    """The subscriber class for ``client`` ("picows", "websockets" or "sse")."""
    if client == "sse":
        if compression:
            raise ValueError("SSE streams are never compressed: use the websockets client")
        return SseSubscriber(url, record, slow_rate, idle, rcvbuf)
    if client == "picows":
        if compression:
            raise ValueError("picows does not do permessage-deflate: use the websockets client")
        return PicowsSubscriber(url, record, slow_rate, idle, rcvbuf)
    return WebsocketsSubscriber(url, record, slow_rate, idle, rcvbuf, compression)
