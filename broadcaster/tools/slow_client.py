"""A client that subscribes and then stops reading: watch the server cut it off.

    python -m broadcaster.tools.slow_client [--url ws://127.0.0.1:8765/ws] [--channel slow.demo]

It opens a WebSocket with a small receive buffer, subscribes, and never
reads its socket again, so its kernel buffer fills, then the server's, then
its queue on the server. Meanwhile a second, well-behaved connection
publishes `--rate` messages of `--size` bytes per second into the channel
(`--rate 0` publishes nothing: use it on a channel that is busy anyway).
The server pauses the stalled subscription at its high watermark and, after
`slow_consumer_timeout`, closes it with 4008 and frees what it held. The
tool learns of it without reading a byte, from the server's own record
(`recent_slow_consumers` in GET /stats) or from the socket being reset;
then it reads what is left, prints the close frame it finds at the end and
what /stats recorded, and exits 0; 1 if nothing happened within
`--max-seconds`.

Open http://127.0.0.1:8765/dashboard meanwhile to watch the depth rise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import socket
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

__all__ = ["Outcome", "main", "run"]

DEFAULT_URL = "ws://127.0.0.1:8765/ws"
# Hang-up, error, or the peer shut its side: the server is done with us.
_GONE = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


@dataclass(frozen=True)
class Outcome:
    cut_off: bool
    """The server ended the connection while we were not reading."""
    seconds: float
    """From the subscription to the end (or to --max-seconds)."""
    published: int
    local_address: str
    """This client's address as the server's /stats shows it (`remote`)."""
    record: dict[str, Any] | None = None
    """The server's `recent_slow_consumers` entry for this client."""
    close_code: int | None = None
    """The close frame found after the data we had not read (None if reset first)."""


class StalledSubscriber:
    """A raw socket speaking WebSocket through websockets' Sans-I/O protocol, read only once."""

    def __init__(self, url: str, rcvbuf: int) -> None:
        self.url = url
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connecting, so the TCP window stays small from the start.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setblocking(False)

    async def subscribe(self, channel: str) -> dict[str, Any]:
        """Connect, subscribe, and return the `subscribed` reply: the last read we do."""
        loop = asyncio.get_running_loop()
        split = urlsplit(self.url)
        await loop.sock_connect(self.sock, (split.hostname or "127.0.0.1", split.port or 80))
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    if event.status_code != 101:
                        raise ConnectionError(f"handshake refused: HTTP {event.status_code}")
                    op = {"op": "subscribe", "channel": channel, "id": 1}
                    self.protocol.send_text(orjson.dumps(op))
                    await self._flush()
                elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    reply: dict[str, Any] = orjson.loads(event.data)
                    if reply.get("event") == "error":
                        raise ConnectionError(f"subscribe refused: {reply}")
                    if reply.get("event") == "subscribed":
                        return reply

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for data in self.protocol.data_to_send():
            if data:
                await loop.sock_sendall(self.sock, data)

    @property
    def local_address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def gone(self) -> bool:
        """Whether the connection was reset or shut; looks at the socket without reading it.

        A server that closes a client which is not reading usually cannot say
        so at the TCP level: its FIN waits behind the unread bytes. Hence the
        /stats check in `run`.
        """
        poller = select.poll()
        poller.register(self.sock, _GONE)
        if poller.poll(0):
            return True
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0

    async def drain(self) -> int | None:
        """Read everything left; the code of the close frame at the end (None on reset or EOF)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(self.sock, 1 << 20)
            except OSError:
                return None
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self.protocol.events_received()
            close = self.protocol.close_rcvd
            if close is not None:
                return close.code
            if not data:
                return None

    def close(self) -> None:
        self.sock.close()


async def _flood(url: str, channel: str, rate: float, size: int, stop: asyncio.Event) -> int:
    """Publish `rate` messages/s of about `size` bytes until `stop`; returns how many."""
    if rate <= 0:
        await stop.wait()
        return 0
    loop = asyncio.get_running_loop()
    pad = "x" * size
    sent = 0
    tick = 0.01
    async with connect(url, max_size=None) as ws:
        started = loop.time()
        while not stop.is_set():
            due = int((loop.time() - started) * rate) + 1
            while sent < due:
                op = {"op": "publish", "channel": channel, "data": {"n": sent, "pad": pad}}
                await ws.send(orjson.dumps(op).decode())
                sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
    return sent


async def run(
    url: str = DEFAULT_URL,
    channel: str = "slow.demo",
    *,
    rate: float = 200.0,
    size: int = 1000,
    rcvbuf: int = 4096,
    max_seconds: float = 120.0,
    check_every: float = 1.0,
    report: Callable[[str], None] | None = None,
) -> Outcome:
    """Subscribe, stop reading, flood the channel, and wait for the server to cut us off."""
    say: Callable[[str], None] = report or (lambda text: None)
    loop = asyncio.get_running_loop()
    client = StalledSubscriber(url, rcvbuf)
    stop = asyncio.Event()
    try:
        reply = await client.subscribe(channel)
        say(
            f"subscribed to {channel!r} as {client.local_address} "
            f"(strategy {reply['strategy']}, queue {reply['queue_size']}); not reading any more"
        )
        flood = asyncio.create_task(_flood(url, channel, rate, size, stop))
        started = loop.time()
        next_check = started
        record: dict[str, Any] | None = None
        cut_off = False
        while loop.time() - started < max_seconds:
            if client.gone():
                cut_off = True
                break
            if flood.done():
                break  # the publisher failed: its exception is raised below
            if loop.time() >= next_check:
                record = await asyncio.to_thread(recorded, url, client.local_address)
                if record is not None:
                    cut_off = True
                    break
                say(f"  {loop.time() - started:5.1f} s: still connected, still not reading")
                next_check += check_every
            await asyncio.sleep(0.05)
        seconds = loop.time() - started
        stop.set()
        published = await flood
        close_code = None
        if cut_off:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    close_code = await client.drain()
        if cut_off and record is None:
            record = await asyncio.to_thread(recorded, url, client.local_address)
        return Outcome(cut_off, seconds, published, client.local_address, record, close_code)
    finally:
        stop.set()
        client.close()


def recorded(url: str, address: str) -> dict[str, Any] | None:
    """The server's /stats entry for this client among recent slow consumers, if any."""
    split = urlsplit(url)
    scheme = "https" if split.scheme == "wss" else "http"
    stats_url = f"{scheme}://{split.netloc}/stats?top=0"
    try:
        with urllib.request.urlopen(stats_url, timeout=5) as response:
            stats = json.load(response)
    except OSError:
        return None
    for entry in stats.get("recent_slow_consumers", []):
        if entry.get("remote") == address:
            found: dict[str, Any] = entry
            return found
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m broadcaster.tools.slow_client",
        description="Subscribe, stop reading at the TCP level, and watch the server cut us off.",
    )
    parser.add_argument("--url", default=os.environ.get("BROADCASTER_URL", DEFAULT_URL))
    parser.add_argument("--channel", default="slow.demo", help="channel to subscribe to")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="messages/s to publish into it (0: none)"
    )
    parser.add_argument("--size", type=int, default=1000, help="bytes of padding per message")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="give up after this long")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        outcome = asyncio.run(
            run(
                args.url,
                args.channel,
                rate=args.rate,
                size=args.size,
                max_seconds=args.max_seconds,
                report=say,
            )
        )
    except (OSError, ConnectionError) as exc:
        print(f"slow_client: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if not outcome.cut_off:
        say(f"not cut off after {outcome.seconds:.1f} s ({outcome.published} published)")
        return 1
    say(
        f"cut off by the server after {outcome.seconds:.1f} s "
        f"({outcome.published} messages published meanwhile)"
    )
    if outcome.close_code is not None:
        say(
            f"reading again: the unread messages, then a close frame with code {outcome.close_code}"
        )
    entry = outcome.record
    if entry is not None:
        say(
            f"/stats recent_slow_consumers: channel {entry['channel']}, depth {entry['depth']}"
            f"/{entry['limit']}, {entry['seconds_above']} s above the watermark, "
            f"{entry['dropped']} dropped"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
