"""Frozen snapshots for /stats, the dashboard and metrics."""

from __future__ import annotations

import dataclasses

import pytest

from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.stats import channel_stats, outbox_depth, subscription_stats
from broadcaster.core.strategies import Strategy
from tests.unit.support import Rig


def test_subscription_stats_of_a_paused_subscriber() -> None:
    """/stats shows a subscriber's depth, limit, drops, pause state and time behind."""
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_NEWEST, queue_size=4, slow_consumer_timeout=3.0))
    messages = rig.publish(6, created=10.0)
    stats = subscription_stats(rig.sub, now=11.25)
    assert (stats.channel, stats.strategy) == ("c", "drop-newest")
    assert (stats.depth, stats.limit, stats.queue_size) == (4, 4, 4)
    assert (stats.dropped, stats.delivered, stats.paused) == (2, 0, True)
    assert (stats.seconds_above, stats.slow_consumer_timeout) == (1.25, 3.0)
    assert stats.bytes_queued == sum(len(m.frame) for m in messages[:4])


def test_subscription_stats_count_the_transport_tail() -> None:
    """The depth in /stats includes messages still in the transport; they are not delivered."""
    rig = Rig()
    rig.publish(3)
    rig.conn.flush_holding(2)
    stats = subscription_stats(rig.sub, now=0.0)
    assert (stats.depth, stats.delivered, stats.bytes_queued) == (2, 1, 0)


def test_subscription_stats_are_frozen() -> None:
    """A snapshot cannot be changed by whoever reads it."""
    stats = subscription_stats(Rig().sub, now=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.depth = 5  # type: ignore[misc]


def test_channel_stats() -> None:
    """Channel stats carry its counters, with drop reasons as metric label strings."""
    rig = Rig(ChannelPolicy(queue_size=2))
    rig.add_connection(2)
    rig.publish(3)
    rig.flush()
    stats = channel_stats(rig.channel)
    assert (stats.name, stats.label, stats.strategy) == ("c", "*", "drop-oldest")
    assert (stats.subscribers, stats.last_seq, stats.epoch) == (2, 3, "epoch-1")
    assert (stats.published, stats.delivered, stats.pauses) == (3, 2, 2)
    assert stats.dropped == {"queue_full": 2, "conflated": 0, "disconnected": 0}
    assert stats.slow_consumer_disconnects == 0


def test_outbox_depth_sums_subscriptions() -> None:
    """A connection's depth in /stats is the sum over its subscriptions."""
    rig = Rig()
    other = Rig(name="d", share=rig)
    rig.publish(2)
    other.publish(3)
    assert outbox_depth(rig.outbox) == 5
