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
import itertools
from collections import deque
from collections.abc import Hashable
from typing import Protocol

from broadcaster.core.message import Message

__all__ = [
    "EVENT_SEQ",
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
    """The parts of a subscription a strategy may change.

    `capacity` is the queue size minus the messages already handed to the
    transport and still held there, so depth (queued + in transport) never
    exceeds the queue size. The first `preloaded` items are recovered or
    snapshot messages, or anything queued up to an in-band event
    (`Subscription.notice`): a strategy may evict them (never the event
    itself) but never conflates them.
    `index` maps a key to its slot `[placeholder, newest]` (conflate only).
    """

    items: deque[Message]
    index: dict[Hashable, list[Message]]
    indexed: bool
    capacity: int
    preloaded: int


class StrategyRule(Protocol):
    """A strategy: how far the fast path may fill the queue, and what to do beyond."""

    name: Strategy
    shrinks_with_transport: bool
    """Whether messages held in the transport count against the queue's capacity."""

    def fast_limit(self, capacity: int) -> int:
        """Queue length below which a push is a plain append."""
        ...

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        """Queue `message` on a queue at or above its fast limit; return what was dropped."""
        ...


EVENT_SEQ = 0
"""The seq of an in-band event (`MessageFactory.event`, e.g. a reset notice); data starts at 1."""


def _evict_oldest(queue: QueueState) -> bool:
    """Remove the oldest queued message (and its conflation slot); False if none is queued.

    In-band events are never evicted: the oldest data message behind them
    goes instead (events are rare, so this walk is too).
    """
    items = queue.items
    if not items:
        return False
    if items[0].seq == EVENT_SEQ:
        return _evict_behind_events(queue)
    evicted = items.popleft()
    if queue.preloaded:
        queue.preloaded -= 1
    elif evicted.key is not None:
        slot = queue.index.get(evicted.key)
        if slot is not None and slot[0] is evicted:
            del queue.index[evicted.key]
    return True


def _evict_behind_events(queue: QueueState) -> bool:
    items = queue.items
    for position, queued in enumerate(items):
        if queued.seq == EVENT_SEQ:
            continue
        del items[position]
        if position < queue.preloaded:
            queue.preloaded -= 1
        elif queued.key is not None:
            slot = queue.index.get(queued.key)
            if slot is not None and slot[0] is queued:
                del queue.index[queued.key]
        return True
    return False


class DropOldest:
    """Evict the oldest queued message to make room: live data where fresh beats complete.

    When nothing is queued but the transport already holds a full queue's
    worth, there is nothing to evict and the new message is dropped instead.
    """

    name = Strategy.DROP_OLDEST
    shrinks_with_transport = True

    def fast_limit(self, capacity: int) -> int:
        return capacity

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        items = queue.items
        if len(items) < queue.capacity:
            items.append(message)
            return None
        if _evict_oldest(queue):
            items.append(message)
        return DropReason.QUEUE_FULL


class DropNewest:
    """Discard the incoming message: ordered streams where the head of the queue matters."""

    name = Strategy.DROP_NEWEST
    shrinks_with_transport = True

    def fast_limit(self, capacity: int) -> int:
        return capacity

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        items = queue.items
        if len(items) < queue.capacity:
            items.append(message)
            return None
        return DropReason.QUEUE_FULL


class Block:
    """Never drop: the publisher waits for room before the message exists.

    The push that fills the queue comes here (the fast limit is one short of
    the capacity) so the channel can count full subscriptions and tell
    publishers when room returns. A push onto a full queue can only come from
    a source that cannot be made to wait (another node's stream); it is
    queued beyond the size rather than lost, and the slow-consumer rule
    bounds how long that lasts.
    """

    name = Strategy.BLOCK
    shrinks_with_transport = True

    def fast_limit(self, capacity: int) -> int:
        return max(0, capacity - 1)

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        queue.items.append(message)
        return None


class Conflate:
    """Keep the freshest message per key, in the slot of the first one queued.

    Conflation only starts when a backlog exists: a push onto an empty queue is
    a plain append (fast limit 1) and is indexed lazily by the next push. The
    deque holds one placeholder per key (the first message queued for it);
    `index` maps the key to its slot `[placeholder, newest]`, and `Outbox`
    sends the newest when it takes the placeholder, so a key that updates
    often is never starved by the keys behind it. Preloaded (recovered or
    snapshot) messages are never indexed, so they are never replaced.

    The queue's bound is on keys: what the transport holds does not shrink it,
    so a queue larger than the number of keys always keeps every key (memory
    stays bounded: the queue plus at most one write in the transport).
    """

    name = Strategy.CONFLATE
    shrinks_with_transport = False

    def __init__(self, fallback: Strategy = Strategy.DROP_OLDEST) -> None:
        if fallback not in (Strategy.DROP_OLDEST, Strategy.DROP_NEWEST):
            raise ValueError(f"conflate_fallback must be drop-oldest or drop-newest: {fallback}")
        self.fallback = fallback

    def fast_limit(self, capacity: int) -> int:
        return min(1, capacity)

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        items = queue.items
        index = queue.index
        if not queue.indexed:
            # Index what queued without conflation (the index is empty then).
            # A key queued twice gets its slot on the later entry, so a
            # replacement can never overtake an older message of its key.
            for queued in itertools.islice(items, queue.preloaded, None):
                if queued.key is not None:
                    index[queued.key] = [queued, queued]
            queue.indexed = True
        key = message.key
        if key is not None:
            slot = index.get(key)
            if slot is not None:
                slot[1] = message
                return DropReason.CONFLATED
        if len(items) < queue.capacity:
            items.append(message)
            if key is not None:
                index[key] = [message, message]
            return None
        if self.fallback is Strategy.DROP_NEWEST or not _evict_oldest(queue):
            return DropReason.QUEUE_FULL
        items.append(message)
        if key is not None:
            index[key] = [message, message]
        return DropReason.QUEUE_FULL


class Latest:
    """Keep only the newest live message: a rate-capped subscription between two sends.

    Used for subscriptions with `max_rate` on channels without a conflation
    key: the pending live message is replaced, so the next send is always the
    channel's latest. Preloaded messages and in-band events (a reset notice)
    ahead of it are kept: only a message queued after them is replaced. Each
    replaced message counts as conflated.
    """

    name = Strategy.CONFLATE
    shrinks_with_transport = False

    def fast_limit(self, capacity: int) -> int:
        return min(1, capacity)

    def offer(self, queue: QueueState, message: Message) -> DropReason | None:
        items = queue.items
        if len(items) > queue.preloaded:
            items[-1] = message
            return DropReason.CONFLATED
        items.append(message)
        return None


STRATEGIES: dict[Strategy, StrategyRule] = {
    Strategy.DROP_OLDEST: DropOldest(),
    Strategy.DROP_NEWEST: DropNewest(),
    Strategy.BLOCK: Block(),
    Strategy.CONFLATE: Conflate(),
}
