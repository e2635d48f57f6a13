"""One (connection, channel) subscription: its bounded queue and its flow state.

`push` is the fan-out hot path (`Channel.fan_out` inlines its fast path):
for a subscriber that keeps up it is one length check against `fast_limit`
(which folds in the strategy's limit, the flush-now threshold and the next
watermark), one append and one flag check. Everything else (strategies,
watermark crossings, the slow-consumer clock) happens only when the queue has
a backlog.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING

from broadcaster.core import events
from broadcaster.core.flow_control import FlowControl
from broadcaster.core.message import Message
from broadcaster.core.slow_consumer import SlowConsumerRule
from broadcaster.core.strategies import (
    STRATEGIES,
    Conflate,
    DropReason,
    Latest,
    Strategy,
    StrategyRule,
)

if TYPE_CHECKING:
    from broadcaster.core.channel import Channel
    from broadcaster.core.outbox import Outbox

__all__ = ["Subscription"]

_NEVER = sys.maxsize


class Subscription:
    """A subscriber's bounded queue on one channel, with watermarks and the slow-consumer rule.

    Depth counts every message the server still holds for this subscription:
    those queued here and those already handed to the transport whose bytes
    have not reached the kernel yet (`in_transport`, reported by `Outbox`).
    On drop-oldest, drop-newest and block channels depth never exceeds the
    queue size (see `Block` for its one exception): what the transport holds
    shrinks the queue's `capacity`. Conflate queues are bounded by keys
    instead (see `Conflate`).
    """

    __slots__ = (
        "_watch",
        "blocking",
        "capacity",
        "channel",
        "conflates",
        "created",
        "delivered",
        "dropped",
        "dropped_since_resume",
        "fast_limit",
        "flow",
        "flush_at",
        "full",
        "in_transport",
        "index",
        "indexed",
        "interval",
        "items",
        "max_rate",
        "mixed",
        "needs_settle",
        "next_due",
        "outbox",
        "preloaded",
        "pressure",
        "queue_size",
        "rise_at",
        "rule",
        "slow",
        "strategy_limit",
    )

    def __init__(
        self,
        channel: Channel,
        outbox: Outbox,
        *,
        watch: set[Subscription],
        now: float = 0.0,
        max_rate: float | None = None,
    ) -> None:
        policy = channel.policy
        self.channel = channel
        self.outbox = outbox
        self.created = now
        self.max_rate = max_rate
        self.queue_size = policy.queue_size
        self.rule: StrategyRule
        if policy.strategy is Strategy.CONFLATE:
            self.rule = Conflate(policy.conflate_fallback)
        elif max_rate is not None:
            self.rule = Latest()
        else:
            self.rule = STRATEGIES[policy.strategy]
        # With max_rate, at most one message leaves per interval (Outbox.take_batch);
        # in between, pending messages conflate (per key, or to the latest).
        self.interval = 1.0 / max_rate if max_rate else 0.0
        self.next_due = float("-inf")
        if self.interval:
            outbox.timed += 1
        self.blocking = policy.strategy is Strategy.BLOCK
        # A burst that would take a writable subscriber to its watermark (or
        # fill a block queue) is handed to the transport instead: it has no
        # backlog, only a big iteration.
        self.flush_at = max(
            0, min(policy.high, policy.queue_size - (1 if self.blocking else 0)) - 1
        )
        self.items: deque[Message] = deque()
        self.mixed = False
        """Something other than fan-out's plain append put messages in the queue since
        it was last empty (the strategy, a preload, a notice): `Outbox` may then not
        take its frames from the channel's shared run (`outbox._shared_run`)."""
        self.index: dict[Hashable, list[Message]] = {}
        self.indexed = False
        self.preloaded = 0
        self.full = False
        self.delivered = 0
        self.dropped = 0
        self.dropped_since_resume = 0
        self.in_transport = 0
        self.capacity = self.queue_size
        # Rate-capped subscriptions conflate between sends whatever the transport does.
        self.conflates = isinstance(self.rule, Conflate) and not self.interval
        self.pressure = not outbox.writable
        """The connection cannot take bytes now (its transport holds unsent ones):
        a conflate queue conflates only then."""
        self.strategy_limit = 0
        self.fast_limit = 0
        self.rise_at = policy.high
        """The depth at which `_rose` runs (the high watermark; never while above it)."""
        self._limits()
        self.flow = FlowControl(
            high=policy.high, low=policy.low, on_pause=self._paused, on_resume=self._resumed
        )
        self.slow = SlowConsumerRule(policy.slow_consumer_timeout, policy.slow_consumer_share)
        self.needs_settle = False
        """Full, behind or paused: `settle` has something to re-check after a write."""
        self._watch = watch

    @property
    def depth(self) -> int:
        """Messages held for this subscriber and not yet handed to the kernel."""
        return len(self.items) + self.in_transport

    def push(self, message: Message) -> None:
        """Queue one message for this subscriber, applying the channel's strategy.

        `Channel.fan_out` inlines the first branch (the fast path) and calls
        this only when it does not apply; the check is repeated here so that
        `push` is complete on its own.
        """
        items = self.items
        if len(items) < self.fast_limit:
            # Below every limit at once: strategy, flush-now, watermark (`_limits`).
            items.append(message)
            outbox = self.outbox
            if outbox.armed:
                outbox.schedule()
            return
        self.mixed = True
        wake = self._push_slow(message)
        depth = len(items) + self.in_transport
        if depth >= self.rise_at:
            self._rose(depth, message.created)
        outbox = self.outbox
        if outbox.armed and wake:
            outbox.schedule()

    def _push_slow(self, message: Message) -> bool:
        """Near the watermark or conflating: flush, append, or ask the strategy.

        Returns whether the outbox should be scheduled: a rate-capped
        subscription that is not due yet waits for its timer instead.
        """
        items = self.items
        if len(items) >= self.flush_at and self.outbox.writable and not self.interval:
            self.outbox.flush_now()
        if len(items) < self.strategy_limit:
            items.append(message)
        else:
            reason = self.rule.offer(self, message)
            if reason is not None:
                self._dropped(reason)
            if self.conflates and not self.pressure and self.index:
                # A full queue started conflating without pressure: from now on
                # every push goes through the index until it empties again.
                self._limits()
        if self.blocking and not self.full and len(items) + self.in_transport >= self.queue_size:
            self.full = True
            self.needs_settle = True
            self.channel.became_full()
        return not self.interval or message.created >= self.next_due

    def preload(self, messages: list[Message], now: float) -> None:
        """Queue recovered or snapshot messages ahead of the live stream, without strategy.

        They are what the client asked for: all of them are queued (even
        beyond the queue size) and they are never conflated; a full queue of
        a drop-oldest channel may later evict them like any other message.
        The slow-consumer clock starts at `now`, the subscribe time.
        """
        if not messages:
            return
        self.mixed = True
        self.items.extend(messages)
        self.preloaded += len(messages)
        if self.blocking and not self.full and self.depth >= self.queue_size:
            self.full = True
            self.needs_settle = True
            self.channel.became_full()
        depth = self.depth
        if depth >= self.rise_at:
            self._rose(depth, now)
        if self.outbox.armed:
            self.outbox.schedule()

    def notice(self, message: Message) -> None:
        """Queue an in-band event behind what is queued (e.g. a stream reset), past any strategy.

        A client that misses it misreads every message after it (a reset
        notice: the new epoch's seqs look like duplicates), so it is never
        dropped and nothing crosses it. Conflation slots are settled first
        (each placeholder takes its newest message), then everything up to
        the event counts as preloaded: never conflated or replaced by a
        rate cap (`Latest`); a full drop-oldest queue evicts the data around
        an event, never the event (`_evict_oldest`).
        """
        if self.index:
            self._settle_slots()
        self.indexed = False
        self.mixed = True
        self.items.append(message)
        self.preloaded = len(self.items)
        if self.conflates:
            self._limits()
        if self.outbox.armed:
            self.outbox.schedule()

    def taken(self, count: int) -> None:
        """`count` messages left the queue for the transport (called by `Outbox`)."""
        if self.preloaded:
            self.preloaded = max(0, self.preloaded - count)
        if not self.items:
            self.indexed = False
            if self.index:
                self.index.clear()
                if self.conflates:
                    self._limits()

    def transport_holds(self, count: int) -> None:
        """`count` of this subscription's messages sit in the transport, not yet in the kernel."""
        self.in_transport = count
        if self.rule.shrinks_with_transport:
            self.capacity = max(0, self.queue_size - count)
        self._limits()

    def set_pressure(self, pressure: bool) -> None:
        """The connection's transport started (or stopped) holding unsent bytes.

        A conflate subscription conflates only under pressure (or when its
        queue is full): while its socket takes bytes it keeps up and receives
        every message, bursts included. Invariant: outside conflation the index
        is empty, so plain appends can never overtake a slot of their key.
        """
        if pressure != self.pressure:
            self.pressure = pressure
            if not pressure:
                if self.index:
                    self._settle_slots()
                # Plain appends follow; the next backlog indexes the queue afresh.
                self.indexed = False
            self._limits()

    def _settle_slots(self) -> None:
        """Put each conflation slot's newest message in its placeholder's place.

        Done when pressure ends, so the queue is plain again and the next
        backlog indexes it from scratch (a rare step: O(queue)).
        """
        index = self.index
        resolved: deque[Message] = deque()
        for entry in self.items:
            slot = index.get(entry.key) if entry.key is not None else None
            resolved.append(slot[1] if slot is not None and slot[0] is entry else entry)
        self.items = resolved
        index.clear()
        self.indexed = False

    def _limits(self) -> None:
        """Recompute the queue lengths that decide which path a push takes.

        `fast_limit` merges three checks into the one comparison of the fast
        path: below the strategy's limit (plain append), below `flush_at`
        (no burst to hand over now), and an append that cannot reach the
        watermark (`len(items) + 1 + in_transport < rise_at`). Called whenever
        one of its inputs changes: capacity or `in_transport`
        (`transport_holds`), pressure, conflation, `rise_at` (`_rose`, `settle`).
        """
        if self.conflates and not self.pressure and not self.index:
            self.strategy_limit = self.capacity  # keeping up: no conflation
        else:
            self.strategy_limit = self.rule.fast_limit(self.capacity)
        self.fast_limit = min(
            self.strategy_limit, self.flush_at, self.rise_at - self.in_transport - 1
        )

    def settle(self) -> None:
        """Re-evaluate room, the slow-consumer clock and flow control after the depth fell."""
        depth = len(self.items) + self.in_transport
        if self.full and depth < self.queue_size:
            self.full = False
            self.channel.room_freed()
        if depth < self.flow.high and self.slow.above_since is not None:
            self.slow.left()
            self._watch.discard(self)
            self.rise_at = self.flow.high
            self._limits()
        if depth <= self.flow.resume_at:
            self.flow.depth_fell(depth)
        self.needs_settle = self.full or self.slow.above_since is not None or self.flow.paused

    def discard(self) -> int:
        """Drop everything held (the subscription ends); returns how many messages were lost."""
        lost = len(self.items) + self.in_transport
        if lost:
            self.channel.counters.count_dropped(DropReason.DISCONNECTED, lost)
            self.dropped += lost
        self.items.clear()
        self.mixed = False
        self.index.clear()
        self.preloaded = 0
        if self.interval:
            self.outbox.timed -= 1
            self.interval = 0.0
        self.transport_holds(0)
        if self.full:
            self.full = False
            self.channel.room_freed()
        self._watch.discard(self)
        return lost

    def _rose(self, depth: int, now: float) -> None:
        self.rise_at = _NEVER
        self._limits()
        self.needs_settle = True
        self.slow.entered(now)
        self._watch.add(self)
        self.flow.depth_rose(depth)

    def _dropped(self, reason: DropReason) -> None:
        self.dropped += 1
        self.dropped_since_resume += 1
        self.channel.counters.count_dropped(reason, 1)

    def _paused(self, depth: int) -> None:
        self.channel.counters.pauses += 1
        # flow.resume reports what was dropped since this pause (PROTOCOL.md).
        self.dropped_since_resume = 0
        self.outbox.send_control(
            events.flow_pause(
                self.channel.name, reason="buffer full", depth=depth, limit=self.flow.high
            )
        )

    def _resumed(self, depth: int) -> None:
        dropped, self.dropped_since_resume = self.dropped_since_resume, 0
        self.outbox.send_control(events.flow_resume(self.channel.name, dropped=dropped))

    def __repr__(self) -> str:
        return (
            f"Subscription(channel={self.channel.name!r}, outbox={self.outbox.id}, "
            f"depth={self.depth}, paused={self.flow.paused})"
        )
