"""Publishers: fixed-rate or closed-loop, each stamping its send time into ``data``.

Every publish carries an ``id`` so the server acknowledges it with the seq it
assigned; the acknowledged seqs are the ground truth the accounting compares each
subscriber against (messages the server says it published on the channel after
the subscriber's ``subscribed`` seq).

- Fixed rate: sends are scheduled at ``start + i / rate``; when the loop is late,
  the messages that are due go out together, so the offered load stays fixed.
- Closed loop (``rate`` None): as fast as the system sustains, bounded two ways:
  at most ``window`` unacknowledged publishes per publisher, and at most ``lead``
  messages ahead of the slowest *fast* subscriber of the channel (read from the
  workers' shared board). Without the second bound a server that buffers without
  limit would look fast while its buffers, not its subscribers, absorb the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from loadtest.workers import NO_SUBSCRIBER, Board

__all__ = ["ChannelState", "Publisher", "book_for", "pad_for"]


def pad_for(size: int, channel: str) -> str:
    """Padding that makes the delivered ``message`` event about ``size`` bytes long."""
    sample = orjson.dumps(
        {
            "event": "message",
            "channel": channel,
            "seq": 1_000_000,
            "data": {"t": time.time_ns(), "k": KEYS - 1, "pad": ""},
        }
    )
    return "x" * max(0, size - len(sample))


def book_for(size: int, channel: str, variants: int = 16) -> list[list[list[str]]]:
    """`variants` order books (price/quantity string pairs, as exchanges send them) that
    make the delivered event about ``size`` bytes: realistic JSON for compression runs,
    where "x" padding would compress to almost nothing. Made once; messages cycle them."""
    rng = random.Random(size)
    base = len(pad_for(0, channel)) + 2  # the event without padding, and its "pad" quotes
    levels = max(1, (size - base) // 22)
    books = []
    for _ in range(variants):
        mid = round(rng.uniform(50, 900), 2)
        books.append(
            [
                [f"{mid + (i - levels // 2) / 100:.2f}", f"{rng.lognormvariate(4, 1.2):.4f}"]
                for i in range(levels)
            ]
        )
    return books


KEYS = 50
"""Messages carry `"k": 0..KEYS-1` round-robin, a conflation key like a ticker's symbol."""


@dataclass
class ChannelState:
    """What the publishers of one channel share: counts, acknowledged seqs, the lead bound."""

    name: str
    index: int
    base_seq: int = 0
    sent: int = 0
    acked_seqs: list[int] = field(default_factory=list)

    @property
    def final_seq(self) -> int:
        return max(self.acked_seqs, default=self.base_seq)


class Publisher:
    """One WebSocket connection publishing to one channel."""

    def __init__(
        self,
        index: int,
        url: str,
        channel: ChannelState,
        *,
        rate: float | None,
        size: int,
        window: int,
        lead: int,
        board: Board | None,
        payload: str = "pad",
    ) -> None:
        self.index = index
        self.url = url
        self.channel = channel
        self.rate = rate
        self.window = window
        self.lead = lead
        self.board = board
        self.pad = pad_for(size, channel.name) if payload == "pad" else ""
        self.books = book_for(size, channel.name) if payload == "json" else None
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.acked = asyncio.Event()
        self.next_id = 0
        self.sent = 0
        self.outstanding = 0
        self.acks = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.pauses = 0
        self.resumes = 0
        self.lead_waits = 0
        self.stopped_early: str | None = None

    async def open(self) -> None:
        self.ws = await connect(
            self.url, compression=None, max_size=None, ping_interval=None, open_timeout=10
        )
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                msg = orjson.loads(raw)
                event = msg.get("event")
                if event == "published":
                    self.outstanding -= 1
                    self.acks += 1
                    self.channel.acked_seqs.append(msg["seq"])
                    self.acked.set()
                elif event == "flow.pause":
                    self.pauses += 1
                elif event == "flow.resume":
                    self.resumes += 1
                elif event == "error":
                    self.errors += 1
                    if "id" in msg:
                        self.outstanding -= 1
                        self.acked.set()
                    if len(self.error_samples) < 5:
                        self.error_samples.append(str(msg.get("code")))
        except ConnectionClosed:
            pass

    def _frame(self) -> bytes:
        self.next_id += 1
        return orjson.dumps(
            {
                "op": "publish",
                "channel": self.channel.name,
                "id": self.next_id,
                "data": {"t": time.time_ns(), "k": self.next_id % KEYS, "pad": self.pad}
                if self.books is None
                else {
                    "t": time.time_ns(),
                    "k": self.next_id % KEYS,
                    "book": self.books[self.next_id % len(self.books)],
                },
            }
        )

    async def _send_one(self) -> None:
        assert self.ws is not None
        frame = self._frame()
        self.outstanding += 1
        self.sent += 1
        self.channel.sent += 1
        await self.ws.send(frame, text=True)

    async def run(self, start: float, end: float) -> None:
        """Publish from ``start`` to ``end`` (loop.time() values); cut off at ``end`` + 1 s."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start - loop.time()))
        body = self._fixed_rate(start, end) if self.rate else self._closed_loop(end)
        try:
            async with asyncio.timeout_at(end + 1.0):
                await body
        except TimeoutError:
            self.stopped_early = "send blocked past the end of the run"
        except ConnectionClosed as exc:
            self.stopped_early = f"connection closed: {exc}"

    async def _fixed_rate(self, start: float, end: float) -> None:
        assert self.rate is not None
        loop = asyncio.get_running_loop()
        total = int((end - start) * self.rate)
        while self.sent < total:
            now = loop.time()
            if now >= end:
                break
            due = min(total, int((now - start) * self.rate) + 1)
            while self.sent < due:
                await self._send_one()
            next_at = start + self.sent / self.rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def _ahead(self) -> bool:
        """True when the channel already leads its slowest fast subscriber by ``lead``."""
        if self.board is None:
            return False
        floor = self.board.min_seq(self.channel.index)
        if floor == NO_SUBSCRIBER:
            return False
        return self.channel.base_seq + self.channel.sent - floor >= self.lead

    async def _closed_loop(self, end: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < end:
            if self.outstanding >= self.window:
                self.acked.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self.acked.wait()
                continue
            if self._ahead():
                self.lead_waits += 1
                await asyncio.sleep(0.001)
                continue
            await self._send_one()

    async def finish(self, wait_s: float) -> None:
        """Wait (bounded) for outstanding acknowledgements, then close."""
        deadline = time.monotonic() + wait_s
        while self.outstanding > 0 and time.monotonic() < deadline:
            if self.reader is not None and self.reader.done():
                break
            self.acked.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self.acked.wait()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader

    def result(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "channel": self.channel.name,
            "sent": self.sent,
            "acked": self.acks,
            "unacked": self.outstanding,
            "errors": self.errors,
            "error_codes": self.error_samples,
            "pauses": self.pauses,
            "resumes": self.resumes,
            "lead_waits": self.lead_waits,
            "stopped_early": self.stopped_early,
        }
