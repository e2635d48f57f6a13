"""The plain-integer pieces behind metrics and /stats, driven without a server."""

from __future__ import annotations

import pytest

from broadcaster.core.channel import Channel
from broadcaster.core.histogram import Buckets
from broadcaster.core.message import Message
from broadcaster.core.outbox import SAMPLE_EVERY, Outbox
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.stats import subscription_stats
from broadcaster.core.subscription import Subscription
from broadcaster.server.rates import Rates, RateWindow


def test_buckets_count_each_value_in_the_first_bound_at_or_above_it() -> None:
    buckets = Buckets((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        buckets.observe(value)
    assert buckets.counts == [2, 1, 1]
    assert buckets.count == 4
    assert buckets.sum == pytest.approx(3.65)
    assert buckets.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]


def test_buckets_merge_sums_channels_that_share_a_label() -> None:
    a, b = Buckets((1.0,)), Buckets((1.0,))
    a.observe(0.5)
    b.observe(2.0)
    total = Buckets.merged((1.0,), [a, b])
    assert total.counts == [1, 1]
    assert total.sum == 2.5


def test_buckets_refuse_unordered_bounds() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Buckets((1.0, 0.5))


def _channel_with_subscriber() -> tuple[Channel, Outbox]:
    channel = Channel("c", ChannelPolicy(queue_size=8), epoch="e")
    outbox = Outbox(1, on_schedule=lambda _outbox: None)
    sub = Subscription(channel, outbox, watch=set())
    outbox.subscriptions["c"] = sub
    channel.subscriptions[sub] = None
    return channel, outbox


def _message(seq: int, created: float) -> Message:
    return Message(channel="c", seq=seq, payload=b"{}", frame=b"{}", created=created)


def test_outbox_samples_the_first_data_batch_then_every_nth() -> None:
    """Latency sampling costs a countdown per batch: batch 1, 1 + N, 1 + 2N... carry a sample."""
    channel, outbox = _channel_with_subscriber()
    sampled: list[int] = []
    for batch in range(1, 2 * SAMPLE_EVERY + 2):
        outbox.send_control(b"control only: not a data batch")
        outbox.take_batch()
        outbox.written(0)
        assert outbox.sample_channel is None
        channel.fan_out(_message(batch, created=float(batch)))
        channel.fan_out(_message(batch, created=float(batch) + 0.5))
        outbox.take_batch()
        outbox.written(0)
        if outbox.sample_channel is not None:
            assert outbox.sample_channel is channel
            assert outbox.sample_created == float(batch), "the batch's first message"
            sampled.append(batch)
            outbox.sample_channel = None
    assert sampled == [1, 1 + SAMPLE_EVERY, 1 + 2 * SAMPLE_EVERY]


def test_rate_window_measures_counter_growth_over_the_last_half_to_whole_window() -> None:
    """Read every second: the rate is the growth over 5-10 s, so a change shows within 10 s."""
    window = RateWindow(window=10.0)
    published = delivered = 0

    def read(second: int) -> Rates:
        return window.rates(
            "c", float(second), published=published, delivered=delivered, dropped=0, since=0.0
        )

    assert read(0) == Rates(0.0, 0.0, 0.0, 0.0), "no time since the counts started"
    for second in range(1, 30):
        published += 5
        delivered += 4
        rates = read(second)
        assert (rates.published, rates.delivered, rates.dropped) == (5.0, 4.0, 0.0)
        if second >= 10:
            assert 5.0 <= rates.window < 10.0
    for second in range(30, 40):  # publishing stops
        rates = read(second)
    assert rates.published == 0.0
    assert read(40).window < 10.0


def test_rate_window_keeps_marks_only_for_what_was_read_and_forgets_freed_channels() -> None:
    """No timer samples every channel: cost and memory follow what /stats shows."""
    window = RateWindow(window=10.0)
    window.rates("a", 5.0, published=0, delivered=0, dropped=0, since=0.0)
    assert len(window) == 1
    window.forget("a")
    window.forget("never-read")
    assert len(window) == 0
    first = window.rates("a", 6.0, published=9, delivered=0, dropped=0, since=3.0)
    assert (first.published, first.window) == (3.0, 3.0), "the average since `since`"


def test_subscription_stats_report_lag_of_the_oldest_queued_message() -> None:
    """`lag`: how long the oldest message still queued has waited since its publish."""
    channel, outbox = _channel_with_subscriber()
    sub = outbox.subscriptions["c"]
    assert subscription_stats(sub, now=5.0).lag == 0.0
    channel.fan_out(_message(1, created=1.0))
    channel.fan_out(_message(2, created=2.0))
    stats = subscription_stats(sub, now=3.5)
    assert stats.lag == 2.5
    assert stats.depth == 2
    assert stats.bytes_queued == 4
