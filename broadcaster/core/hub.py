"""The registry of this node's channels and subscriptions, and the slow-consumer sweep."""

from __future__ import annotations

from collections.abc import Callable

from broadcaster.core.channel import Channel
from broadcaster.core.outbox import Outbox
from broadcaster.core.policy import PolicyTable
from broadcaster.core.subscription import Subscription

__all__ = ["Hub"]


class Hub:
    """Channels by name, created on first use with the policy the table resolves.

    The callbacks tell the broker when a channel is created, gets its first
    local subscriber (active) and loses its last one (idle);
    `on_slow_consumer(sub, now)` hears of each subscription `tick` cuts off,
    before its state is freed, so the operator's views can say who and why.

    Subscriptions at or above their high watermark are kept in one set, so
    the periodic `tick(now)` looks only at subscribers that are behind.
    """

    def __init__(
        self,
        policies: PolicyTable,
        *,
        epoch: str,
        on_channel_created: Callable[[Channel], None] | None = None,
        on_channel_active: Callable[[Channel], None] | None = None,
        on_channel_idle: Callable[[Channel], None] | None = None,
        on_slow_consumer: Callable[[Subscription, float], None] | None = None,
    ) -> None:
        self.policies = policies
        self.epoch = epoch
        self.channels: dict[str, Channel] = {}
        self.outboxes: dict[int, Outbox] = {}
        self.behind: set[Subscription] = set()
        self._on_channel_created = on_channel_created
        self._on_channel_active = on_channel_active
        self._on_channel_idle = on_channel_idle
        self._on_slow_consumer = on_slow_consumer

    def channel(self, name: str) -> Channel | None:
        """The channel called `name`, created if needed; None if strict config refuses it."""
        channel = self.channels.get(name)
        if channel is None:
            policy = self.policies.resolve(name)
            if policy is None:
                return None
            channel = Channel(name, policy, epoch=self.epoch)
            self.channels[name] = channel
            if self._on_channel_created is not None:
                self._on_channel_created(channel)
        return channel

    def add_outbox(self, outbox: Outbox) -> None:
        self.outboxes[outbox.id] = outbox

    def subscribe(
        self,
        outbox: Outbox,
        channel: Channel,
        *,
        now: float = 0.0,
        max_rate: float | None = None,
    ) -> Subscription:
        """Attach a new subscription of `outbox` to `channel` (the caller checked it is new)."""
        sub = Subscription(channel, outbox, watch=self.behind, now=now, max_rate=max_rate)
        outbox.subscriptions[channel.name] = sub
        channel.subscriptions.append(sub)
        if len(channel.subscriptions) == 1 and self._on_channel_active is not None:
            self._on_channel_active(channel)
        return sub

    def unsubscribe(self, outbox: Outbox, name: str) -> Subscription | None:
        """Detach and free the subscription of `outbox` to `name`; None if there was none."""
        sub = outbox.subscriptions.pop(name, None)
        if sub is not None:
            self._detach(sub)
        return sub

    def drop(self, outbox: Outbox) -> None:
        """Free everything held for a connection that is going away."""
        self.outboxes.pop(outbox.id, None)
        for sub in outbox.close():
            self._detach(sub)

    def tick(self, now: float) -> list[Outbox]:
        """Drop every connection with a subscription behind for too long; return their outboxes.

        Each one is counted as a slow-consumer disconnect on the channel that
        was behind, and everything it held is freed at once; the adapter then
        closes the connection with 4008.
        """
        # Earliest first, then by name: a connection behind on several channels
        # is counted once, on the channel that has been behind the longest.
        expired = sorted(
            (sub for sub in self.behind if sub.slow.expired(now)),
            key=lambda sub: (sub.slow.above_since or 0.0, sub.channel.name),
        )
        dropped: list[Outbox] = []
        for sub in expired:
            if sub.outbox.closed:
                continue
            sub.channel.counters.slow_consumer_disconnects += 1
            if self._on_slow_consumer is not None:
                self._on_slow_consumer(sub, now)
            dropped.append(sub.outbox)
            self.drop(sub.outbox)
        return dropped

    def _detach(self, sub: Subscription) -> None:
        sub.discard()
        subs = sub.channel.subscriptions
        if sub in subs:
            subs.remove(sub)
            if not subs and self._on_channel_idle is not None:
                self._on_channel_idle(sub.channel)
