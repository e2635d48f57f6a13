"""The strategies on their own: what each keeps and drops when a queue has a backlog."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

import pytest

from broadcaster.core.message import Message
from broadcaster.core.strategies import (
    STRATEGIES,
    Block,
    Conflate,
    DropNewest,
    DropOldest,
    DropReason,
    Strategy,
)
from tests.unit.support import make_message


class Queue:
    """A bare QueueState: exactly the parts of a subscription a strategy may touch."""

    def __init__(self, queue_size: int, *seqs_and_keys: tuple[int, str | None]) -> None:
        self.capacity = queue_size
        self.items: deque[Message] = deque(
            make_message("c", seq, key=key) for seq, key in seqs_and_keys
        )
        self.index: dict[Hashable, list[Message]] = {}
        self.indexed = False
        self.preloaded = 0

    def seqs(self) -> list[int]:
        return [m.seq for m in self.items]

    def delivered_seqs(self) -> list[int]:
        """What Outbox would hand out: a conflated slot carries the newest of its key."""
        return [delivered(self.index, m).seq for m in self.items]


def delivered(index: dict[Hashable, list[Message]], queued: Message) -> Message:
    """The message a queued entry stands for: the newest of its key if it owns the slot."""
    slot = index.get(queued.key) if queued.key is not None else None
    return slot[1] if slot is not None and slot[0] is queued else queued


def msg(seq: int, key: str | None = None) -> Message:
    return make_message("c", seq, key=key)


# --- names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "text"),
    [
        (Strategy.DROP_OLDEST, "drop-oldest"),
        (Strategy.DROP_NEWEST, "drop-newest"),
        (Strategy.BLOCK, "block"),
        (Strategy.CONFLATE, "conflate"),
    ],
)
def test_strategy_values_are_the_config_spellings(strategy: Strategy, text: str) -> None:
    """Config files and `subscribed.strategy` use the PROTOCOL.md spellings."""
    assert Strategy(text) is strategy
    assert str(strategy) == text


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        (DropReason.QUEUE_FULL, "queue_full"),
        (DropReason.CONFLATED, "conflated"),
        (DropReason.DISCONNECTED, "disconnected"),
    ],
)
def test_drop_reasons_are_the_metric_labels(reason: DropReason, label: str) -> None:
    """`messages_dropped_total{reason}` uses the labels docs/metrics.md lists."""
    assert reason.value == label


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_has_a_rule_named_for_it(strategy: Strategy) -> None:
    """Each configurable strategy resolves to the rule that implements it."""
    assert STRATEGIES[strategy].name is strategy


# --- fast limits ------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "queue_size", "limit"),
    [
        (DropOldest(), 8, 8),
        (DropNewest(), 8, 8),
        (Block(), 8, 7),
        (Conflate(), 8, 1),
    ],
)
def test_fast_limit(
    rule: DropOldest | DropNewest | Block | Conflate, queue_size: int, limit: int
) -> None:
    """Only drop strategies append freely up to the size; block stops one short, conflate at 1."""
    assert rule.fast_limit(queue_size) == limit


# --- drop-oldest ------------------------------------------------------------


def test_drop_oldest_appends_while_not_full() -> None:
    """A drop-oldest queue with room keeps every message."""
    queue = Queue(3, (1, None), (2, None))
    assert DropOldest().offer(queue, msg(3)) is None
    assert queue.seqs() == [1, 2, 3]


def test_drop_oldest_evicts_the_oldest_when_full() -> None:
    """A full drop-oldest queue loses its head and keeps the newest message."""
    queue = Queue(3, (1, None), (2, None), (3, None))
    assert DropOldest().offer(queue, msg(4)) is DropReason.QUEUE_FULL
    assert queue.seqs() == [2, 3, 4]


# --- drop-newest ------------------------------------------------------------


def test_drop_newest_appends_while_not_full() -> None:
    """A drop-newest queue with room keeps every message."""
    queue = Queue(3, (1, None))
    assert DropNewest().offer(queue, msg(2)) is None
    assert queue.seqs() == [1, 2]


def test_drop_newest_discards_the_new_message_when_full() -> None:
    """A full drop-newest queue keeps its head and discards the arrival."""
    queue = Queue(2, (1, None), (2, None))
    assert DropNewest().offer(queue, msg(3)) is DropReason.QUEUE_FULL
    assert queue.seqs() == [1, 2]


# --- block ------------------------------------------------------------------


def test_block_never_drops_even_beyond_the_size() -> None:
    """A message that reaches a full block queue (from a source that cannot wait) is kept."""
    queue = Queue(2, (1, None), (2, None))
    assert Block().offer(queue, msg(3)) is None
    assert queue.seqs() == [1, 2, 3]


# --- conflate ---------------------------------------------------------------


@pytest.mark.parametrize("fallback", [Strategy.BLOCK, Strategy.CONFLATE])
def test_conflate_refuses_a_fallback_that_cannot_drop(fallback: Strategy) -> None:
    """Only drop-oldest and drop-newest make sense for messages without a key."""
    with pytest.raises(ValueError, match="conflate_fallback"):
        Conflate(fallback)


def test_conflate_fallback_defaults_to_drop_oldest() -> None:
    """PROTOCOL.md: keyless messages follow drop-oldest unless configured otherwise."""
    assert Conflate().fallback is Strategy.DROP_OLDEST


def test_conflate_indexes_the_queued_message_lazily() -> None:
    """The message queued by the fast path (unindexed) is conflated by the next push of its key."""
    queue = Queue(4, (1, "A"))
    assert Conflate().offer(queue, msg(2, "A")) is DropReason.CONFLATED
    assert queue.indexed
    assert queue.seqs() == [1]
    assert queue.delivered_seqs() == [2]


def test_conflate_replaces_in_the_first_seen_slot() -> None:
    """A newer message of a queued key takes that key's slot, ahead of keys queued after it."""
    queue = Queue(4, (1, "A"))
    rule = Conflate()
    assert rule.offer(queue, msg(2, "B")) is None
    assert rule.offer(queue, msg(3, "A")) is DropReason.CONFLATED
    assert queue.delivered_seqs() == [3, 2]


def test_conflate_appends_a_new_key_while_not_full() -> None:
    """A key not yet queued gets its own slot when there is room."""
    queue = Queue(4, (1, "A"))
    assert Conflate().offer(queue, msg(2, "B")) is None
    assert queue.seqs() == [1, 2]
    assert set(queue.index) == {"A", "B"}


def test_conflate_keyless_messages_are_never_merged() -> None:
    """Messages without the key field each keep a slot while there is room."""
    queue = Queue(4, (1, None))
    rule = Conflate()
    assert rule.offer(queue, msg(2)) is None
    assert rule.offer(queue, msg(3)) is None
    assert queue.seqs() == [1, 2, 3]


def test_conflate_replaces_a_queued_key_even_when_full() -> None:
    """On a full queue, an update of a queued key replaces it instead of evicting anything."""
    queue = Queue(2, (1, "A"), (2, "B"))
    assert Conflate(Strategy.DROP_NEWEST).offer(queue, msg(3, "A")) is DropReason.CONFLATED
    assert queue.delivered_seqs() == [3, 2]


def test_conflate_full_new_key_drop_oldest_evicts_the_head() -> None:
    """With the drop-oldest fallback, a new key on a full queue evicts the oldest slot."""
    queue = Queue(2, (1, "A"), (2, "B"))
    rule = Conflate(Strategy.DROP_OLDEST)
    assert rule.offer(queue, msg(3, "C")) is DropReason.QUEUE_FULL
    assert queue.delivered_seqs() == [2, 3]
    assert set(queue.index) == {"B", "C"}


def test_conflate_evicted_key_starts_a_new_slot() -> None:
    """After its slot was evicted, a key's next message is queued again (not lost)."""
    queue = Queue(2, (1, "A"), (2, "B"))
    rule = Conflate(Strategy.DROP_OLDEST)
    rule.offer(queue, msg(3, "C"))
    assert rule.offer(queue, msg(4, "A")) is DropReason.QUEUE_FULL
    assert queue.delivered_seqs() == [3, 4]


def test_conflate_full_keyless_drop_oldest_evicts_the_head() -> None:
    """With the drop-oldest fallback, a keyless message on a full queue evicts the oldest."""
    queue = Queue(2, (1, "A"), (2, "B"))
    assert Conflate(Strategy.DROP_OLDEST).offer(queue, msg(3)) is DropReason.QUEUE_FULL
    assert queue.delivered_seqs() == [2, 3]


def test_conflate_full_new_key_drop_newest_discards_it() -> None:
    """With the drop-newest fallback, a new key on a full queue is discarded."""
    queue = Queue(2, (1, "A"), (2, "B"))
    assert Conflate(Strategy.DROP_NEWEST).offer(queue, msg(3, "C")) is DropReason.QUEUE_FULL
    assert queue.delivered_seqs() == [1, 2]
    assert "C" not in queue.index


def test_conflate_full_keyless_drop_newest_discards_it() -> None:
    """With the drop-newest fallback, a keyless message on a full queue is discarded."""
    queue = Queue(2, (1, "A"), (2, "B"))
    assert Conflate(Strategy.DROP_NEWEST).offer(queue, msg(3)) is DropReason.QUEUE_FULL
    assert queue.delivered_seqs() == [1, 2]
