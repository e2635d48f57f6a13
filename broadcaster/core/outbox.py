"""Everything the server holds for one connection, and what to write to it next.

The writer's rules live here, free of I/O (docs/ARCHITECTURE.md, hot path rules 3 and 4):

- a connection is written at most once per loop iteration: pushes only
  *schedule* the outbox, and the adapter's flush takes one joined batch;
- control frames (replies, `flow.pause` / `flow.resume`) jump the queue:
  they lead every batch and are sent even while data is held back;
- data is handed to the transport only while its buffer is empty, and the
  part of a batch the kernel did not take is attributed back to the
  subscriptions it came from (`in_transport`), so depth counts everything
  the server holds and the queue limits are real.

A connection that negotiated permessage-deflate (`deflate`) takes each
message's shared compressed frame (`Message.compressed`, built once per
message for all such connections) instead of the plain one; control frames
stay plain. Depth, queues and watermarks count messages either way.

The adapter calls `take_batch()`, writes the frames, then `written(unsent)`
with the transport's buffer size, and `transport_drained()` when the
transport reports its buffer empty again.

Delivery latency is sampled, never measured per message: the first message
of every `SAMPLE_EVERY`-th batch that carries data (starting with the
first) is left in `sample_channel` / `sample_created`, and the adapter, which
owns the clock, records publish → write for it after the write.
"""

from __future__ import annotations

import functools
from bisect import bisect_left
from collections.abc import Callable
from itertools import accumulate
from operator import attrgetter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections import deque

    from broadcaster.core.channel import Channel
    from broadcaster.core.message import Message
    from broadcaster.core.subscription import Subscription

__all__ = ["DEFAULT_WRITE_BUDGET", "SAMPLE_EVERY", "FramedOutbox", "Outbox"]

# Bytes of data frames taken per batch: bounds what can sit in the transport
# uncounted if the kernel stops taking bytes mid-batch (tens of KB).
DEFAULT_WRITE_BUDGET = 64 * 1024
# One latency sample per this many data batches per connection: a few
# operations per batch, nothing per message.
SAMPLE_EVERY = 32


def _identity(payload: bytes) -> bytes:
    return payload


_frame: Callable[[Message], bytes] = attrgetter("frame")
# Empty lists that nobody changes, shared by every outbox: the last batch between
# writes, no control frames waiting, no batch segments (an idle connection holds none).
_NOTHING: list[bytes] = []
_NO_SUBSCRIPTIONS: list[Subscription] = []
_NO_STARTS: list[int] = []


class Outbox:
    """One connection's subscriptions and pending control frames, written in joined batches."""

    __slots__ = (
        "_countdown",
        "_frame_of",
        "_framer",
        "_last_batch",
        "_more",
        "_on_schedule",
        "_one",
        "_seg_starts",
        "_seg_subs",
        "_take",
        "_write_now",
        "armed",
        "blocked",
        "budget",
        "closed",
        "control",
        "deflate",
        "id",
        "joined",
        "sample_channel",
        "sample_created",
        "scheduled",
        "subscriptions",
        "timed",
        "wake_at",
        "wire_bytes",
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
        """`framer` frames control events; data goes out as `Message.frame`, the
        WebSocket frame built at publish, or its shared compressed frame with
        `deflate` (`FramedOutbox`: other bytes)."""
        self.id = id
        self.subscriptions: dict[str, Subscription] = {}
        self.control: list[bytes] = _NOTHING
        """Control frames waiting (a list of its own once there is one: `send_control`)."""
        self.scheduled = False
        """In the adapter's flush list for this loop iteration."""
        self.blocked = False
        """The transport holds unsent bytes: data waits for `transport_drained`."""
        self.armed = True
        """A data push must schedule a flush (not scheduled, not blocked, not closed)."""
        self.closed = False
        self.deflate = False
        """The connection negotiated permessage-deflate: data goes as `Message.compressed()`."""
        self.wire_bytes = 0
        """Bytes handed to the transport (frames as sent); the adapter adds them."""
        self.budget = budget
        self._framer = framer
        self._frame_of: Callable[[Message, Channel], bytes] | None = None
        self._take: Callable[[Subscription, list[bytes], int, int, bool], int] = _take
        self._on_schedule = on_schedule
        self._write_now = write_now
        # The general path's batch segments: which subscription's messages start where
        # (lists of their own from the first general batch; an idle connection has none).
        self._seg_subs: list[Subscription] = _NO_SUBSCRIPTIONS
        self._seg_starts: list[int] = _NO_STARTS
        self._one: Subscription | None = None
        """The last batch was this subscription's data alone (else `_seg_subs` says)."""
        self._last_batch: list[bytes] = _NOTHING
        self.joined: bytes | None = None
        """The last batch's frames already joined, when it is a run shared with other
        connections (`take_batch`): the adapter writes it instead of joining again."""
        self.timed = 0
        """Rate-capped subscriptions: only then does `take_batch` need the time."""
        self.wake_at: float | None = None
        """When a rate-capped subscription with pending data is next due (None: none is)."""
        self._more = False
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
        frame = self._framer(payload)
        control = self.control
        if control:
            control.append(frame)
        else:
            self.control = [frame]
        self.schedule()

    def has_data(self) -> bool:
        """Whether any subscription still has queued messages."""
        return any(sub.items for sub in self.subscriptions.values())

    def take_batch(self, now: float = 0.0) -> list[bytes]:
        """The frames to write now: control first, then queued data within the budget.

        Each subscription gives at most `queue_size` messages per batch, so
        what can end up held in the transport never exceeds a queue. `now`
        matters only to rate-capped subscriptions (`max_rate`): one message
        leaves each of them per interval; `wake_at` says when the next is due.
        The list returned may be shared with other outboxes: it is never changed.
        `joined` is then its frames joined (else None), made once for all of them.
        """
        self.scheduled = False
        self.wake_at = None
        self._more = False
        subs = self.subscriptions
        if len(subs) == 1 and not (self.control or self.blocked or self.closed or self.timed):
            # The common case of a subscriber that keeps up: one subscription's
            # messages, all of them (the general path gives the same result).
            (sub,) = subs.values()
            items = sub.items
            count = len(items)
            if count == 1 and not sub.index and not sub.preloaded:
                message = items.popleft()
                self._countdown -= 1
                if self._countdown <= 0:
                    self._countdown = SAMPLE_EVERY
                    self.sample_channel = sub.channel
                    self.sample_created = message.created
                if self.deflate:
                    frame = message.deflated or message.compressed()
                    counters = sub.channel.counters
                    counters.deflate_plain += len(message.frame)
                    counters.deflate_wire += len(frame)
                    batch = [frame]
                else:
                    batch = [message.frame]
                self._one = sub
                self.joined = None
                self._last_batch = batch
                return batch
            if (
                count
                and count <= sub.queue_size
                and not (sub.mixed or sub.index or sub.preloaded or self.deflate)
            ):
                # Several messages that only fan-out appended: the same run of
                # the channel's messages that its other subscribers that keep up
                # hold, so the frames are taken once per channel (`_shared_run`).
                first = items[0]
                channel = sub.channel
                frames, used, joined = _shared_run(channel, items, first, count)
                if used - len(frames[-1]) < self.budget:
                    items.clear()
                    self._countdown -= 1
                    if self._countdown <= 0:
                        self._countdown = SAMPLE_EVERY
                        self.sample_channel = channel
                        self.sample_created = first.created
                    self._one = sub
                    self.joined = joined
                    self._last_batch = frames
                    return frames
        return self._take_all(now)

    def _take_all(self, now: float) -> list[bytes]:
        """`take_batch`'s general path: control, then every subscription in turn."""
        self._one = None
        self.joined = None
        seg_subs: list[Subscription] = []
        seg_starts: list[int] = []
        self._seg_subs = seg_subs
        self._seg_starts = seg_starts
        batch = self.control or []
        self.control = _NOTHING
        if self.blocked or self.closed:
            self._last_batch = batch
            return batch
        budget = self.budget
        take = self._take
        for sub in self.subscriptions.values():
            items = sub.items
            if not items:
                continue
            if not seg_subs:
                # The first data of this batch: maybe the latency sample.
                self._countdown -= 1
                if self._countdown <= 0:
                    self._countdown = SAMPLE_EVERY
                    first = items[0]
                    slot = sub.index.get(first.key) if first.key is not None else None
                    if slot is not None and slot[0] is first:
                        first = slot[1]
                    self.sample_channel = sub.channel
                    self.sample_created = first.created
            start = len(batch)
            if sub.interval:
                if now < sub.next_due:
                    if self.wake_at is None or sub.next_due < self.wake_at:
                        self.wake_at = sub.next_due
                    continue
                sub.next_due = now + sub.interval
                budget -= take(sub, batch, 1, budget, self.deflate)
                if items and (self.wake_at is None or sub.next_due < self.wake_at):
                    self.wake_at = sub.next_due
            else:
                budget -= take(sub, batch, sub.queue_size, budget, self.deflate)
                if items:
                    self._more = True
            if sub.preloaded or sub.indexed:
                sub.taken(len(batch) - start)
            if sub.mixed and not items:
                sub.mixed = False
            seg_subs.append(sub)
            seg_starts.append(start)
            if budget <= 0:
                self._more = True
                self._rotate(seg_subs)
                break
        self._last_batch = batch
        return batch

    def written(self, unsent: int) -> None:
        """The last batch was handed to the transport, which kept `unsent` bytes buffered.

        Messages whose bytes reached the kernel count as delivered; the rest
        stay in their subscription's depth until `transport_drained`.
        """
        if self.closed:
            return
        one = self._one
        if one is not None:
            # The batch was one subscription's messages and nothing else (take_batch).
            self._one = None
            if unsent == 0:
                # The common case: all taken by the kernel.
                sent = len(self._last_batch)
                one.delivered += sent
                one.channel.counters.delivered += sent
                if one.needs_settle:
                    one.settle()
                self._last_batch = _NOTHING
                if not self.scheduled:
                    # Not blocked (a blocked outbox takes no data), all data taken.
                    if self.control:
                        self.schedule()
                    else:
                        self.armed = True
                return
            self._seg_subs = [one]
            self._seg_starts = [0]
        seg_subs = self._seg_subs
        if unsent > 0 and not self.blocked:
            self.blocked = True
            self._pressure()
        if seg_subs:
            held = self._attribute_tail(unsent) if unsent > 0 else None
            batch_end = len(self._last_batch)
            for i, sub in enumerate(seg_subs):
                end = self._seg_starts[i + 1] if i + 1 < len(seg_subs) else batch_end
                in_transport = held[i] if held is not None else 0
                sent = end - self._seg_starts[i] - in_transport
                sub.delivered += sent
                sub.channel.counters.delivered += sent
                if in_transport:
                    sub.transport_holds(in_transport)
                    sub.needs_settle = True
                if sub.needs_settle:
                    sub.settle()
        self._seg_subs = _NO_SUBSCRIPTIONS
        self._seg_starts = _NO_STARTS
        self._last_batch = _NOTHING
        self._rearm()

    def transport_drained(self) -> None:
        """The transport's buffer is empty: everything handed to it reached the kernel."""
        if self.closed:
            return
        self.blocked = False
        self._pressure()
        for sub in self.subscriptions.values():
            held = sub.in_transport
            if held:
                sub.delivered += held
                sub.channel.counters.delivered += held
                sub.transport_holds(0)
                sub.settle()
        # Data may have queued while blocked: look at it on the next flush.
        self._more = self.has_data()
        self._rearm()

    def close(self) -> list[Subscription]:
        """Stop writing; return the subscriptions so the hub can detach and free them."""
        self.closed = True
        self.armed = False
        self.control = _NOTHING
        self._one = None
        subs = list(self.subscriptions.values())
        self.subscriptions.clear()
        return subs

    def _rearm(self) -> None:
        if self.scheduled:
            return
        if self.control or (not self.blocked and self._more):
            self.schedule()
        else:
            self.armed = not self.blocked

    def _pressure(self) -> None:
        """Tell conflate subscriptions whether the connection can take bytes now."""
        on = not self.writable
        for sub in self.subscriptions.values():
            if sub.conflates:
                sub.set_pressure(on)

    def _rotate(self, served: list[Subscription]) -> None:
        """Move the subscriptions just served behind the others, so none starves the rest."""
        subs = self.subscriptions
        for sub in served:
            name = sub.channel.name
            if subs.get(name) is sub:
                subs[name] = subs.pop(name)

    def _attribute_tail(self, unsent: int) -> list[int]:
        """Per batch segment, how many of its messages still have bytes in the transport."""
        batch = self._last_batch
        held = [0] * len(self._seg_subs)
        end = len(batch)
        remaining = unsent
        for i in range(len(self._seg_subs) - 1, -1, -1):
            start = self._seg_starts[i]
            j = end - 1
            while j >= start and remaining > 0:
                remaining -= len(batch[j])
                held[i] += 1
                j -= 1
            end = start
            if remaining <= 0:
                break
        return held


class FramedOutbox(Outbox):
    """An outbox whose transport writes other bytes than `Message.frame` (SSE, NDJSON).

    It has its own copy of `take_batch`'s one-message fast path, so that the
    WebSocket outbox's, the hot path of every delivery, checks nothing for
    it; anything else goes through `Outbox.take_batch`, whose general path
    takes the messages' bytes with `frame_of` (`_take_framed`). Such a
    transport never compresses: `deflate` stays False.
    """

    __slots__ = ()

    def __init__(
        self,
        id: int,
        *,
        on_schedule: Callable[[Outbox], None],
        write_now: Callable[[Outbox], None] | None = None,
        framer: Callable[[bytes], bytes] = _identity,
        frame_of: Callable[[Message, Channel], bytes],
        budget: int = DEFAULT_WRITE_BUDGET,
    ) -> None:
        super().__init__(
            id, on_schedule=on_schedule, write_now=write_now, framer=framer, budget=budget
        )
        self._frame_of = frame_of
        # Chosen once here, not per message or per batch.
        self._take = functools.partial(_take_framed, frame_of)

    def take_batch(self, now: float = 0.0) -> list[bytes]:
        subs = self.subscriptions
        if len(subs) == 1 and not (self.control or self.blocked or self.closed or self.timed):
            (sub,) = subs.values()
            items = sub.items
            if len(items) == 1 and not sub.index and not sub.preloaded:
                # Outbox.take_batch's fast path, with this transport's bytes.
                self.scheduled = False
                self.wake_at = None
                self._more = False
                message = items.popleft()
                self._countdown -= 1
                if self._countdown <= 0:
                    self._countdown = SAMPLE_EVERY
                    self.sample_channel = sub.channel
                    self.sample_created = message.created
                frame_of = self._frame_of
                assert frame_of is not None
                batch = [frame_of(message, sub.channel)]
                self._one = sub
                self._last_batch = batch
                return batch
        self.scheduled = False
        self.wake_at = None
        self._more = False
        return self._take_all(now)


def _shared_run(
    channel: Channel, items: deque[Message], first: Message, count: int
) -> tuple[list[bytes], int, bytes]:
    """The frames of `items`, their bytes and the frames joined, made once for all
    subscriptions holding them.

    Only for a queue that nothing but `Channel.fan_out`'s plain append has
    filled since it was last empty (`Subscription.mixed` is False): such a
    queue is a run of the channel's messages in fan-out order, so two of them
    with the same first message and the same length hold the same messages.
    The list is shared: nobody changes a batch once taken.
    """
    shared = channel.shared_run
    if shared is not None and shared[0] is first and shared[1] == count:
        return shared[2], shared[3], shared[4]
    frames = list(map(_frame, items))
    joined = b"".join(frames)
    channel.shared_run = (first, count, frames, len(joined), joined)
    return frames, len(joined), joined


def _take(sub: Subscription, batch: list[bytes], limit: int, budget: int, deflate: bool) -> int:
    """Move up to `limit` messages of `sub` into `batch` within `budget` bytes; return bytes used.

    A conflation placeholder is swapped for the newest message of its key,
    but only when the slot still belongs to that exact placeholder. With
    `deflate`, the messages' compressed frames are taken.
    """
    if deflate:
        return _take_deflated(sub, batch, limit, budget)
    items = sub.items
    index = sub.index
    if items and not index and len(items) <= limit:
        # Nothing to swap and no more than the limit: the frames are taken with
        # C-level calls, not a Python loop per message.
        frames = list(map(_frame, items))
        used = sum(map(len, frames))
        if used - len(frames[-1]) < budget:
            # The loop below would take them all (the last may cross the budget).
            batch += frames
            items.clear()
            return used
        # Over the budget: up to and including the frame that reaches it.
        ends = list(accumulate(map(len, frames)))
        count = bisect_left(ends, budget) + 1
        batch += frames[:count]
        popleft = items.popleft
        for _ in range(count):
            popleft()
        return ends[count - 1]
    popleft = items.popleft
    append = batch.append
    used = 0
    while items and limit > 0:
        entry = popleft()
        if index:
            slot = index.get(entry.key)
            if slot is not None and slot[0] is entry:
                del index[entry.key]
                entry = slot[1]
        frame = entry.frame
        append(frame)
        used += len(frame)
        limit -= 1
        if used >= budget:
            break
    return used


def _take_framed(
    frame_of: Callable[[Message, Channel], bytes],
    sub: Subscription,
    batch: list[bytes],
    limit: int,
    budget: int,
    deflate: bool,
) -> int:
    """`_take` for a transport whose bytes are not `Message.frame` (core/streams.py).

    Such a transport never compresses: `deflate` is always False for it.
    """
    items = sub.items
    index = sub.index
    channel = sub.channel
    popleft = items.popleft
    append = batch.append
    used = 0
    while items and limit > 0:
        entry = popleft()
        if index:
            slot = index.get(entry.key)
            if slot is not None and slot[0] is entry:
                del index[entry.key]
                entry = slot[1]
        frame = frame_of(entry, channel)
        append(frame)
        used += len(frame)
        limit -= 1
        if used >= budget:
            break
    return used


def _take_deflated(sub: Subscription, batch: list[bytes], limit: int, budget: int) -> int:
    """`_take` for a connection that negotiated permessage-deflate; counts the bytes saved.

    A separate loop, so connections without compression run the plain one unchanged.
    """
    items = sub.items
    index = sub.index
    popleft = items.popleft
    append = batch.append
    used = 0
    plain = 0
    while items and limit > 0:
        entry = popleft()
        if index:
            slot = index.get(entry.key)
            if slot is not None and slot[0] is entry:
                del index[entry.key]
                entry = slot[1]
        frame = entry.deflated or entry.compressed()
        append(frame)
        plain += len(entry.frame)
        used += len(frame)
        limit -= 1
        if used >= budget:
            break
    counters = sub.channel.counters
    counters.deflate_plain += plain
    counters.deflate_wire += used
    return used
