"""A channel: seq bookkeeping, fan-out, block admission and conflation keys."""

from __future__ import annotations

import pytest

from broadcaster.core.channel import Channel
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import DropReason, Strategy
from tests.unit.support import Rig, data_seqs, make_message


def conflating(key: str = "symbol") -> Channel:
    policy = ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key=key)
    return Channel("tickers", policy, epoch="e1")


# --- fan-out --------------------------------------------------------------------


def test_fan_out_records_the_last_seq() -> None:
    """`subscribed.seq` reports the last seq the channel assigned."""
    rig = Rig()
    rig.publish(3)
    assert rig.channel.last_seq == 3


def test_fan_out_counts_published_messages() -> None:
    """`messages_published_total` counts each message once, not once per subscriber."""
    rig = Rig()
    rig.add_connection(2)
    rig.publish(3)
    assert rig.channel.counters.published == 3


def test_fan_out_reaches_every_subscriber_in_seq_order() -> None:
    """Every subscriber gets every message, in seq order."""
    rig = Rig()
    other = rig.add_connection(2)
    rig.publish(3)
    assert data_seqs(rig.flush()) == [1, 2, 3]
    assert data_seqs(other.flush()) == [1, 2, 3]


def test_fan_out_shares_one_encoded_message() -> None:
    """A message is encoded once: every subscriber queues the same object."""
    rig = Rig()
    other = rig.add_connection(2)
    message = rig.publish(1)[0]
    assert rig.sub.items[0] is message
    assert other.outbox.subscriptions["c"].items[0] is message


def test_channel_starts_at_a_given_seq() -> None:
    """A channel restored from a broker continues from its last seq."""
    channel = Channel("c", ChannelPolicy(), epoch="e2", last_seq=41)
    assert channel.last_seq == 41
    assert channel.epoch == "e2"


def test_counters_start_at_zero_for_every_reason() -> None:
    """Every drop reason has a counter from the start, so metrics show zeros, not gaps."""
    channel = Channel("c", ChannelPolicy(), epoch="e1")
    assert channel.counters.dropped == dict.fromkeys(DropReason, 0)
    assert channel.counters.dropped_total == 0


def test_dropped_total_sums_the_reasons() -> None:
    """The total of drops adds up every reason."""
    channel = Channel("c", ChannelPolicy(), epoch="e1")
    channel.counters.count_dropped(DropReason.QUEUE_FULL, 2)
    channel.counters.count_dropped(DropReason.CONFLATED, 3)
    assert channel.counters.dropped_total == 5


# --- block admission ------------------------------------------------------------------


def block_rig(queue_size: int = 2) -> Rig:
    return Rig(ChannelPolicy(strategy=Strategy.BLOCK, queue_size=queue_size))


@pytest.mark.parametrize("strategy", [Strategy.DROP_OLDEST, Strategy.DROP_NEWEST])
def test_non_block_channels_always_have_room(strategy: Strategy) -> None:
    """Only block channels ever make a publisher wait."""
    rig = Rig(ChannelPolicy(strategy=strategy, queue_size=2))
    rig.publish(5)
    assert rig.channel.has_room()
    assert not rig.channel.blocking


def test_block_channel_has_room_below_the_size() -> None:
    """A block channel takes publishes while every subscriber has room."""
    rig = block_rig()
    rig.publish(1)
    assert rig.channel.has_room()
    assert rig.channel.full_count == 0


def test_block_channel_is_full_when_one_subscriber_is_full() -> None:
    """One full subscriber makes publishers of a block channel wait."""
    rig = block_rig()
    rig.publish(2)
    assert rig.channel.blocking
    assert rig.channel.full_count == 1
    assert not rig.channel.has_room()


def test_block_full_subscriber_is_counted_once() -> None:
    """Pushing beyond the size does not count the same subscriber twice."""
    rig = block_rig()
    rig.publish(4)
    assert rig.channel.full_count == 1


def test_block_room_returns_when_the_subscriber_drains() -> None:
    """Reading the queue gives the channel its room back and wakes the publishers."""
    rig = block_rig()
    woken: list[Channel] = []
    rig.channel.on_room = woken.append
    rig.publish(2)
    rig.flush()
    assert rig.channel.has_room()
    assert woken == [rig.channel]


def test_block_room_returns_after_one_message_is_read() -> None:
    """A full queue that gets one slot free has room again."""
    rig = Rig(ChannelPolicy(strategy=Strategy.BLOCK, queue_size=2), budget=1)
    rig.publish(2)
    rig.flush()
    assert rig.channel.has_room()


def test_block_room_waits_for_every_full_subscriber() -> None:
    """Publishers wake only when every full subscriber has room, once."""
    rig = block_rig()
    other = rig.add_connection(2)
    woken: list[Channel] = []
    rig.channel.on_room = woken.append
    rig.publish(2)
    assert rig.channel.full_count == 2
    rig.flush()
    assert woken == []
    assert not rig.channel.has_room()
    other.flush()
    assert woken == [rig.channel]


def test_block_room_without_a_waiter_is_fine() -> None:
    """A channel with no `on_room` listener still tracks its room."""
    rig = block_rig()
    rig.publish(2)
    rig.flush()
    assert rig.channel.full_count == 0


def test_unsubscribing_a_full_subscriber_gives_room_back() -> None:
    """A full subscriber that leaves no longer blocks the channel."""
    rig = block_rig()
    woken: list[Channel] = []
    rig.channel.on_room = woken.append
    rig.publish(2)
    rig.hub.unsubscribe(rig.outbox, "c")
    assert rig.channel.has_room()
    assert woken == [rig.channel]


# --- conflation keys -------------------------------------------------------------------


def test_conflation_key_of_a_top_level_field() -> None:
    """`conflate_key` names a field of `data`."""
    assert conflating().conflation_key({"symbol": "AAPL", "price": 1}) == "AAPL"


def test_conflation_key_of_a_dotted_path() -> None:
    """A dotted `conflate_key` reaches into nested objects."""
    channel = conflating("instrument.symbol")
    assert channel.conflation_key({"instrument": {"symbol": "MSFT"}}) == "MSFT"


@pytest.mark.parametrize(
    "data",
    [
        {"price": 1},
        {"symbol": None},
        {"symbol": {"nested": 1}},
        {"symbol": [1, 2]},
        "AAPL",
        [{"symbol": "AAPL"}],
        None,
    ],
)
def test_conflation_key_absent_or_not_a_scalar(data: object) -> None:
    """Messages without a scalar key value have no key and follow the fallback."""
    assert conflating().conflation_key(data) is None


def test_conflation_key_through_a_non_object() -> None:
    """A dotted path that meets a non-object has no key."""
    assert conflating("a.b").conflation_key({"a": 5}) is None


@pytest.mark.parametrize("value", ["AAPL", 7, 1.5])
def test_conflation_key_scalars(value: object) -> None:
    """Strings and numbers are keys."""
    assert conflating().conflation_key({"symbol": value}) == value


def test_conflation_key_booleans_are_keys_of_their_own() -> None:
    """Booleans are keys too, equal to themselves and distinct from the numbers 0 and 1."""
    channel = conflating()
    true_key = channel.conflation_key({"symbol": True})
    false_key = channel.conflation_key({"symbol": False})
    assert true_key is not None
    assert false_key is not None
    assert true_key == channel.conflation_key({"symbol": True})
    assert len({true_key, false_key, 1, 0}) == 4


def test_non_conflate_channel_has_no_keys() -> None:
    """Only conflate channels compute keys."""
    channel = Channel("c", ChannelPolicy(conflate_key="symbol"), epoch="e1")
    assert channel.conflation_key({"symbol": "AAPL"}) is None


def test_true_and_one_are_different_keys() -> None:
    """`true` and `1` are different conflate_key values: one never replaces the other."""
    rig = Rig(ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="key"))
    for value in (1, True):
        rig.publish(key=rig.channel.conflation_key({"key": value}))
    assert data_seqs(rig.flush()) == [1, 2]


def test_channel_repr_shows_strategy_seq_and_subscribers() -> None:
    """Logs show a channel's strategy, last seq and subscriber count."""
    rig = Rig()
    rig.publish(2)
    assert repr(rig.channel) == ("Channel('c', strategy=drop-oldest, last_seq=2, subscribers=1)")


def test_message_repr_names_channel_seq_and_key() -> None:
    """Logs show which message is which."""
    assert repr(make_message("c", 3, key="A")) == "Message(channel='c', seq=3, key='A')"
