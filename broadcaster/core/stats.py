"""Frozen snapshots of the core's state, for /stats, the dashboard and metrics.

The hot path only increments integers; these functions read them when an
operator asks, so observing the server costs nothing per message.
"""

from __future__ import annotations

from dataclasses import dataclass

from broadcaster.core.channel import Channel
from broadcaster.core.outbox import Outbox
from broadcaster.core.subscription import Subscription

__all__ = [
    "ChannelStats",
    "SubscriptionStats",
    "channel_stats",
    "outbox_depth",
    "subscription_stats",
]


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    channel: str
    strategy: str
    depth: int
    """Messages held (queued + in the transport)."""
    limit: int
    """The high watermark: depth at which the subscriber is paused."""
    queue_size: int
    dropped: int
    delivered: int
    paused: bool
    seconds_above: float
    """Time spent at or above the high watermark; close 4008 after slow_consumer_timeout."""
    slow_consumer_timeout: float
    bytes_queued: int
    lag: float
    """Seconds the oldest queued message has waited since its publish (0 with no queue)."""
    max_rate: float | None = None
    """The subscriber's rate cap in messages/s (subscribe's `max_rate`), None without one."""


@dataclass(frozen=True, slots=True)
class ChannelStats:
    name: str
    label: str
    strategy: str
    subscribers: int
    last_seq: int
    epoch: str
    published: int
    delivered: int
    dropped: dict[str, int]
    pauses: int
    slow_consumer_disconnects: int


def subscription_stats(sub: Subscription, now: float) -> SubscriptionStats:
    """`sub` now; O(its depth) for `bytes_queued`, so call it for the connections shown only.

    `now` is on the clock of `Message.created` (the loop's).
    """
    policy = sub.channel.policy
    return SubscriptionStats(
        channel=sub.channel.name,
        strategy=policy.strategy.value,
        depth=sub.depth,
        limit=sub.flow.high,
        queue_size=sub.queue_size,
        dropped=sub.dropped,
        delivered=sub.delivered,
        paused=sub.flow.paused,
        seconds_above=round(sub.slow.seconds_above(now), 3),
        slow_consumer_timeout=policy.slow_consumer_timeout,
        bytes_queued=sum(len(m.frame) for m in sub.items),
        lag=round(max(0.0, now - sub.items[0].created), 3) if sub.items else 0.0,
        max_rate=sub.max_rate,
    )


def channel_stats(channel: Channel) -> ChannelStats:
    counters = channel.counters
    return ChannelStats(
        name=channel.name,
        label=channel.policy.label,
        strategy=channel.policy.strategy.value,
        subscribers=len(channel.subscriptions),
        last_seq=channel.last_seq,
        epoch=channel.epoch,
        published=counters.published,
        delivered=counters.delivered,
        dropped={reason.value: n for reason, n in counters.dropped.items()},
        pauses=counters.pauses,
        slow_consumer_disconnects=counters.slow_consumer_disconnects,
    )


def outbox_depth(outbox: Outbox) -> int:
    return outbox.depth
