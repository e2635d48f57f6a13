"""Everything the server holds for one connection, and what to write to it next.

The writer's rules live here, free of I/O (DESIGN.md, hot path rules 3 and 4):

- a connection is written at most once per loop iteration: pushes only
  *schedule* the outbox, and the adapter's flush takes one joined batch;
- control frames (replies, `flow.pause` / `flow.resume`) jump the queue:
  they lead every batch and are sent even while data is held back;
- data is handed to the transport only while its buffer is empty, and the
  part of a batch the kernel did not take is attributed back to the
  subscriptions it came from (`in_transport`), so depth counts everything
  the server holds and the queue limits are real.

The adapter calls `take_batch()`, writes the frames, then `written(unsent)`
with the transport's buffer size, and `transport_drained()` when the
transport reports its buffer empty again.

Delivery latency is sampled, never measured per message: the first message
of every `SAMPLE_EVERY`-th batch that carries data (starting with the
first) is left in `sample_channel` / `sample_created`, and the adapter, which
owns the clock, records publish → write for it after the write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broadcaster.core.channel import Channel
    from broadcaster.core.subscription import Subscription

__all__ = ["DEFAULT_WRITE_BUDGET", "SAMPLE_EVERY", "Outbox"]

# Bytes of data frames taken per batch: bounds what can sit in the transport
# uncounted if the kernel stops taking bytes mid-batch (tens of KB).
DEFAULT_WRITE_BUDGET = 64 * 1024
# One latency sample per this many data batches per connection: a few
# operations per batch, nothing per message.
SAMPLE_EVERY = 32


def _identity(payload: bytes) -> bytes:
    return payload


class Outbox:
    """One connection's subscriptions and pending control frames, written in joined batches."""

    __slots__ = (
        "_countdown",
        "_framer",
        "_last_batch",
        "_on_schedule",
        "_seg_starts",
        "_seg_subs",
        "_write_now",
        "armed",
        "blocked",
        "budget",
        "closed",
        "control",
        "id",
        "sample_channel",
        "sample_created",
        "scheduled",
        "subscriptions",
    )

    def __init__(
        self,
        id: int,
        *,
        on_schedule: Callable[[Outbox], None],
        write_now: Callable[[Outbox], None] | None = None,
        framer: Callable[[bytes], bytes] = _identity,
        budget: int = DEFAULT_WRITE_BUDGET,
    ) -> None:
        self.id = id
        self.subscriptions: dict[str, Subscription] = {}
        self.control: list[bytes] = []
        self.scheduled = False
        """In the adapter's flush list for this loop iteration."""
        self.blocked = False
        """The transport holds unsent bytes: data waits for `transport_drained`."""
        self.armed = True
        """A data push must schedule a flush (not scheduled, not blocked, not closed)."""
        self.closed = False
        self.budget = budget
        self._framer = framer
        self._on_schedule = on_schedule
        self._write_now = write_now
        self._seg_subs: list[Subscription] = []
        self._seg_starts: list[int] = []
        self._last_batch: list[bytes] = []
        self._countdown = 1
        self.sample_channel: Channel | None = None
        """Set by `take_batch` when this batch carries a latency sample; the adapter clears it."""
        self.sample_created = 0.0
        """The sampled message's publish time (the same clock as `Message.created`)."""

    @property
    def depth(self) -> int:
        """Messages held for this connection over all its subscriptions."""
        return sum(sub.depth for sub in self.subscriptions.values())

    def schedule(self) -> None:
        """Ask the adapter to flush this outbox once, at the end of this loop iteration."""
        if self.scheduled or self.closed:
            return
        self.scheduled = True
        self.armed = False
        self._on_schedule(self)

    @property
    def writable(self) -> bool:
        """The transport takes bytes now: data need not wait for the end of the iteration."""
        return not self.blocked and not self.closed and self._write_now is not None

    def flush_now(self) -> None:
        """Write what is queued immediately (a burst within one iteration, no backlog)."""
        if self._write_now is not None:
            self._write_now(self)

    def send_control(self, payload: bytes) -> None:
        """Queue a control event ahead of all data; it is never dropped."""
        if self.closed:
            return
        self.control.append(self._framer(payload))
        self.schedule()

    def has_data(self) -> bool:
        """Whether any subscription still has queued messages."""
        return any(sub.items for sub in self.subscriptions.values())

    def take_batch(self) -> list[bytes]:
        """The frames to write now: control first, then queued data within the budget."""
        self.scheduled = False
        batch = self.control
        self.control = []
        seg_subs = self._seg_subs
        seg_starts = self._seg_starts
        seg_subs.clear()
        seg_starts.clear()
        if self.blocked or self.closed:
            self._last_batch = batch
            return batch
        budget = self.budget
        for sub in self.subscriptions.values():
            items = sub.items
            if not items:
                continue
            index = sub.index
            if not seg_subs:
                # The first data of this batch: maybe the latency sample.
                self._countdown -= 1
                if self._countdown <= 0:
                    self._countdown = SAMPLE_EVERY
                    first = items[0]
                    if index:
                        first = index.get(first.key, first)
                    self.sample_channel = sub.channel
                    self.sample_created = first.created
            start = len(batch)
            popleft = items.popleft
            append = batch.append
            while items:
                entry = popleft()
                frame = (index.pop(entry.key, entry) if index else entry).frame
                append(frame)
                budget -= len(frame)
                if budget <= 0:
                    break
            taken = len(batch) - start
            sub.delivered += taken
            sub.channel.counters.delivered += taken
            seg_subs.append(sub)
            seg_starts.append(start)
            if budget <= 0:
                break
        self._last_batch = batch
        return batch

    def written(self, unsent: int) -> None:
        """The last batch was handed to the transport, which kept `unsent` bytes buffered."""
        if self.closed:
            return
        seg_subs = self._seg_subs
        if unsent > 0:
            self.blocked = True
            if seg_subs:
                self._attribute_tail(unsent)
        for sub in seg_subs:
            sub.settle()
        seg_subs.clear()
        self._last_batch = []
        self._rearm()

    def transport_drained(self) -> None:
        """The transport's buffer is empty: everything handed to it reached the kernel."""
        if self.closed:
            return
        self.blocked = False
        for sub in self.subscriptions.values():
            if sub.in_transport:
                sub.in_transport = 0
                sub.settle()
        self._rearm()

    def close(self) -> list[Subscription]:
        """Stop writing; return the subscriptions so the hub can detach and free them."""
        self.closed = True
        self.armed = False
        self.control = []
        subs = list(self.subscriptions.values())
        self.subscriptions.clear()
        return subs

    def _rearm(self) -> None:
        if self.scheduled:
            return
        if self.control or (not self.blocked and self.has_data()):
            self.schedule()
        else:
            self.armed = not self.blocked

    def _attribute_tail(self, unsent: int) -> None:
        """Count, per subscription, the messages whose bytes are still in the transport."""
        batch = self._last_batch
        end = len(batch)
        remaining = unsent
        for i in range(len(self._seg_subs) - 1, -1, -1):
            sub = self._seg_subs[i]
            start = self._seg_starts[i]
            j = end - 1
            while j >= start and remaining > 0:
                remaining -= len(batch[j])
                sub.in_transport += 1
                j -= 1
            end = start
            if remaining <= 0:
                break
