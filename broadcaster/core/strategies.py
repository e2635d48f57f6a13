"""What a subscription's queue does when it cannot simply append: the strategies.

A subscriber that keeps up never reaches this module: `Subscription.push`
appends to its queue while the queue is below its `fast_limit`. Only a
subscription with a backlog calls its strategy's `offer`, which decides what
is kept and reports what was dropped:

- drop-oldest: evict the oldest queued message, enqueue the new one;
- drop-newest: discard the new message, keep the queue;
- block: enqueue (the publisher already waited for room: admission happens
  before publish, see `Channel.has_room`);
- conflate: keep at most one queued message per key; a newer one replaces the
  queued one in its slot; messages without a key follow the fallback.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable
from typing import Protocol

from broadcaster.core.message import Message

__all__ = [
    "STRATEGIES",
    "Block",
    "Conflate",
    "DropNewest",
    "DropOldest",
    "DropReason",
    "Latest",
    "QueueState",
    "Strategy",
    "StrategyRule",
]


class Strategy(enum.StrEnum):
    """The per-channel choice of what happens when a subscriber falls behind."""

    DROP_OLDEST = "drop-oldest"
    DROP_NEWEST = "drop-newest"
    BLOCK = "block"
    CONFLATE = "conflate"


class DropReason(enum.StrEnum):
    """Why a message did not reach a subscriber (the `reason` metric label)."""

    QUEUE_FULL = "queue_full"
    CONFLATED = "conflated"
    DISCONNECTED = "disconnected"


class QueueState(Protocol):
    """The parts of a subscription a strategy may change."""

    items: deque[Message]
    index: dict[Hashable, Message]
    indexed: bool
    queue_size: int


class StrategyRule(Protocol):
    """A strategy: how far the fast path may fill the queue, and what to do beyond."""

    name: Strategy

    def fast_limit(self, queue_size: int) -> int:
        """Queue length below which a push is a plain append."""
        ...

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        """Queue `message` on a queue at or above its fast limit; return what was dropped."""
        ...


class DropOldest:
    """Evict the oldest queued message to make room: live data where fresh beats complete."""

    name = Strategy.DROP_OLDEST

    def fast_limit(self, queue_size: int) -> int:
        return queue_size

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        items = queue.items
        if len(items) < queue.queue_size:
            items.append(message)
            return None
        items.popleft()
        items.append(message)
        return DropReason.QUEUE_FULL


class DropNewest:
    """Discard the incoming message: ordered streams where the head of the queue matters."""

    name = Strategy.DROP_NEWEST

    def fast_limit(self, queue_size: int) -> int:
        return queue_size

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        items = queue.items
        if len(items) < queue.queue_size:
            items.append(message)
            return None
        return DropReason.QUEUE_FULL


class Block:
    """Never drop: the publisher waits for room before the message exists.

    The push that fills the queue comes here (the fast limit is one short of
    the size) so the channel can count full subscriptions and tell publishers
    when room returns. A push onto a full queue can only come from a source
    that cannot be made to wait (another node's stream); it is queued beyond
    the size rather than lost, and the slow-consumer rule bounds how long that
    lasts.
    """

    name = Strategy.BLOCK

    def fast_limit(self, queue_size: int) -> int:
        return queue_size - 1

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        queue.items.append(message)
        return None


class Conflate:
    """Keep the freshest message per key, in the slot of the first one queued.

    Conflation only starts when a backlog exists: a push onto an empty queue is
    a plain append (fast limit 1) and is indexed lazily by the next push. The
    deque holds one placeholder per key (the first message queued for it) and
    `index` maps the key to the newest message; `Outbox` swaps the placeholder
    for the newest when it takes it, so a key that updates often is never
    starved by the keys behind it.
    """

    name = Strategy.CONFLATE

    def __init__(self, fallback: Strategy = Strategy.DROP_OLDEST) -> None:
        if fallback not in (Strategy.DROP_OLDEST, Strategy.DROP_NEWEST):
            raise ValueError(
                f"conflate_fallback must be drop-oldest or drop-newest, got {fallback}"
            )
        self.fallback = fallback

    def fast_limit(self, queue_size: int) -> int:
        return 1

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        items = queue.items
        index = queue.index
        if not queue.indexed:
            for queued in items:
                if queued.key is not None:
                    index.setdefault(queued.key, queued)
            queue.indexed = True
        key = message.key
        if key is not None and key in index:
            index[key] = message
            return DropReason.CONFLATED
        if len(items) < queue.queue_size:
            items.append(message)
            if key is not None:
                index[key] = message
            return None
        if self.fallback is Strategy.DROP_NEWEST:
            return DropReason.QUEUE_FULL
        evicted = items.popleft()
        if evicted.key is not None:
            index.pop(evicted.key, None)
        items.append(message)
        if key is not None:
            index[key] = message
        return DropReason.QUEUE_FULL


class Latest:
    """Keep only the newest message: a rate-capped subscription between two sends.

    Used for subscriptions with `max_rate` on channels without a conflation
    key: whatever is pending is replaced, so the next send is always the
    channel's latest message. Each replaced message counts as conflated.
    """

    name = Strategy.CONFLATE

    def fast_limit(self, queue_size: int) -> int:
        return 1

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        items = queue.items
        if not items:
            items.append(message)
            return None
        items.clear()
        items.append(message)
        return DropReason.CONFLATED


STRATEGIES: dict[Strategy, StrategyRule] = {
    Strategy.DROP_OLDEST: DropOldest(),
    Strategy.DROP_NEWEST: DropNewest(),
    Strategy.BLOCK: Block(),
    Strategy.CONFLATE: Conflate(),
}
