"""What one subscriber saw: seq accounting, flow-control events, latency, close code.

Every client backend (picows, websockets) feeds received text frames to
:meth:`SubscriberRecord.on_frame`, so the accounting rules live in exactly one
place and the tests can drive them with synthetic frames. The rules follow
PROTOCOL.md: ``seq`` grows by exactly one per published message, so a jump is a
count of missed messages; a seq at or below the last one seen is a duplicate or
an out-of-order delivery and is counted, never silently absorbed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from loadtest.histogram import Histogram

__all__ = ["SubscriberRecord", "SubscriberResult", "Timeline"]


_MESSAGE_PREFIX = b'{"event":"message","channel":"'
_SEQ_KEY = b'","seq":'


def _fast_seq(payload: bytes) -> int | None:
    """The seq of a compactly encoded message event, or None to fall back to a full parse."""
    start = payload.find(_SEQ_KEY, len(_MESSAGE_PREFIX))
    if start < 0:
        return None
    start += len(_SEQ_KEY)
    end = payload.find(b",", start)
    digits = payload[start:end]
    return int(digits) if end > start and digits.isdigit() else None


class Timeline:
    """Per-second latency histograms and delivery counts shared by one worker's subscribers.

    One instance per worker process (not per subscriber) keeps the memory flat with
    thousands of subscribers; ``epoch_ns`` is the coordinator's clock origin so the
    seconds line up across processes.
    """

    __slots__ = ("epoch_ns", "seconds")

    def __init__(self, epoch_ns: int) -> None:
        self.epoch_ns = epoch_ns
        self.seconds: dict[int, Histogram] = {}

    def add(self, now_ns: int, latency_us: int) -> None:
        """Record one delivery at ``now_ns`` with the given end-to-end latency."""
        second = (now_ns - self.epoch_ns) // 1_000_000_000
        h = self.seconds.get(second)
        if h is None:
            h = self.seconds[second] = Histogram()
        h.add(latency_us)


@dataclass
class SubscriberResult:
    """The picklable summary of one subscriber, sent from a worker to the coordinator."""

    index: int
    channel: str
    kind: str
    strategy: str
    subscribed: bool
    base_seq: int
    received: int
    first_seq: int
    last_seq: int
    gap_missed: int
    gaps: int
    duplicates: int
    out_of_order: int
    pauses: int
    resumes: int
    resume_dropped: int
    errors: int
    close_code: int | None
    closed_at_s: float | None
    connected: bool
    error: str | None = None
    wire_bytes: int = 0
    """Bytes the subscriber's kernel received on its connection (TCP_INFO)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


class SubscriberRecord:
    """Live counters of one subscription; :meth:`on_frame` is the per-message hot path."""

    __slots__ = (
        "_sample_countdown",
        "base_seq",
        "channel",
        "close_code",
        "closed_at_ns",
        "connected",
        "duplicates",
        "error",
        "errors",
        "first_seq",
        "gap_missed",
        "gaps",
        "index",
        "kind",
        "last_seq",
        "latency_every",
        "out_of_order",
        "pauses",
        "received",
        "resume_dropped",
        "resumes",
        "strategy",
        "subscribed",
        "subscribed_event",
        "timeline",
        "wire_bytes",
    )

    def __init__(
        self, index: int, channel: str, kind: str, timeline: Timeline, latency_every: int = 1
    ) -> None:
        self.index = index
        self.latency_every = max(1, latency_every)
        """Latency is measured on one message in this many (every seq is still accounted)."""
        self._sample_countdown = 1
        self.channel = channel
        self.kind = kind
        self.timeline = timeline
        self.strategy = "unknown"
        self.subscribed = False
        self.subscribed_event: dict[str, Any] | None = None
        self.base_seq = 0
        self.received = 0
        self.wire_bytes = 0
        self.first_seq = 0
        self.last_seq = 0
        self.gap_missed = 0
        self.gaps = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.pauses = 0
        self.resumes = 0
        self.resume_dropped = 0
        self.errors = 0
        self.close_code: int | None = None
        self.closed_at_ns: int | None = None
        self.connected = False
        self.error: str | None = None

    def on_frame(self, payload: bytes | bytearray | memoryview | str) -> None:
        """Account for one text frame from the server.

        The common case, a `message` event as broadcaster and the trivial server
        encode it (`{"event":"message","channel":...,"seq":N,...}`), is accounted
        from its seq alone; the full JSON parse runs only for the messages whose
        latency is sampled and for anything not in that exact shape, so the
        client's ceiling stays well above the servers it measures.
        """
        if not isinstance(payload, bytes):
            payload = payload.encode() if isinstance(payload, str) else bytes(payload)
        if payload.startswith(_MESSAGE_PREFIX):
            self._sample_countdown -= 1
            if self._sample_countdown > 0:
                seq = _fast_seq(payload)
                if seq is not None:
                    self._count(seq)
                    return
            self._sample_countdown = self.latency_every
        msg = orjson.loads(payload)
        event = msg.get("event")
        if event == "message":
            self._on_message(msg)
        elif event == "subscribed":
            self._on_subscribed(msg)
        elif event == "flow.pause":
            self.pauses += 1
        elif event == "flow.resume":
            self.resumes += 1
            dropped = msg.get("dropped", 0)
            if isinstance(dropped, int):
                self.resume_dropped += dropped
        elif event == "error":
            self.errors += 1

    @property
    def sample_countdown(self) -> int:
        """Messages until the next latency sample (1: the next one), as :meth:`on_frame` counts."""
        return self._sample_countdown

    @sample_countdown.setter
    def sample_countdown(self, value: int) -> None:
        self._sample_countdown = value

    def on_seqs(self, seqs: list[int]) -> None:
        """Account for channel messages already known by their seqs alone, in arrival order.

        The same counting as one :meth:`on_frame` per message (gaps, duplicates and
        out-of-order deliveries included), for a reader that finds seqs without
        decoding each event (the SSE client, loadtest/clients.py). A run of consecutive
        seqs after the last one seen, the steady state, costs O(1) Python operations;
        anything else is counted one seq at a time. Latency sampling is the caller's:
        it counts down :attr:`sample_countdown` as :meth:`on_frame` does and hands the
        chosen events to :meth:`on_sample`.
        """
        n = len(seqs)
        if not n:
            return
        first = seqs[0]
        # n seqs spanning exactly n values are consecutive iff strictly increasing;
        # the list comparison runs in C.
        if (
            first > self.last_seq
            and seqs[-1] - first == n - 1
            and (n < 3 or seqs == list(range(first, first + n)))
        ):
            self._count(first)
            self.received += n - 1
            self.last_seq = seqs[-1]
            return
        for seq in seqs:
            self._count(seq)

    def on_sample(self, now_ns: int, payload: bytes) -> None:
        """Record the latency of one sampled `message` event (its seq is counted elsewhere)."""
        msg = orjson.loads(payload)
        data = msg.get("data")
        if isinstance(data, dict):
            sent = data.get("t")
            if isinstance(sent, int):
                self.timeline.add(now_ns, (now_ns - sent) // 1000)

    def _on_subscribed(self, msg: dict[str, Any]) -> None:
        self.subscribed = True
        self.subscribed_event = msg
        seq = msg.get("seq", 0)
        self.base_seq = seq if isinstance(seq, int) else 0
        if self.last_seq < self.base_seq:
            self.last_seq = self.base_seq
        strategy = msg.get("strategy")
        self.strategy = strategy if isinstance(strategy, str) else "unbounded"

    def _on_message(self, msg: dict[str, Any]) -> None:
        now = time.time_ns()
        self._count(msg["seq"])
        data = msg.get("data")
        if isinstance(data, dict):
            sent = data.get("t")
            if isinstance(sent, int):
                self.timeline.add(now, (now - sent) // 1000)

    def _count(self, seq: int) -> None:
        last = self.last_seq
        self.received += 1
        if seq > last:
            if seq != last + 1:
                self.gaps += 1
                self.gap_missed += seq - last - 1
            if not self.first_seq:
                self.first_seq = seq
            self.last_seq = seq
        elif seq == last:
            self.duplicates += 1
        else:
            self.out_of_order += 1

    def on_close(self, code: int | None) -> None:
        """The connection ended; ``code`` is the server's close code when one was read."""
        if self.closed_at_ns is None:
            self.closed_at_ns = time.time_ns()
            self.close_code = code
        self.connected = False

    def result(self) -> SubscriberResult:
        """Freeze the counters into a :class:`SubscriberResult`."""
        closed_at = None
        if self.closed_at_ns is not None:
            closed_at = (self.closed_at_ns - self.timeline.epoch_ns) / 1e9
        return SubscriberResult(
            index=self.index,
            channel=self.channel,
            kind=self.kind,
            strategy=self.strategy,
            subscribed=self.subscribed,
            base_seq=self.base_seq,
            received=self.received,
            first_seq=self.first_seq,
            last_seq=self.last_seq,
            gap_missed=self.gap_missed,
            gaps=self.gaps,
            duplicates=self.duplicates,
            out_of_order=self.out_of_order,
            pauses=self.pauses,
            resumes=self.resumes,
            resume_dropped=self.resume_dropped,
            errors=self.errors,
            close_code=self.close_code,
            closed_at_s=closed_at,
            connected=self.connected,
            error=self.error,
            wire_bytes=self.wire_bytes,
        )
