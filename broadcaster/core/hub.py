"""The registry of this node's channels and subscriptions, and the slow-consumer sweep."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from broadcaster.core.channel import Channel, ChannelCounters
from broadcaster.core.outbox import Outbox
from broadcaster.core.policy import PolicyTable
from broadcaster.core.subscription import Subscription

__all__ = ["IDLE_SWEEP_BUDGET", "RESTING_MAX", "Hub", "starting_point"]

# Idle candidates one `sweep_idle` call looks at: a few milliseconds of work.
IDLE_SWEEP_BUDGET = 2_000
# Seqs remembered of channels freed early (about 200 bytes each, not a channel's 1 KB).
RESTING_MAX = 10_000


def starting_point(
    resting: dict[str, tuple[str, int]], name: str, base_epoch: str, freed: int
) -> tuple[str, int]:
    """The epoch and last seq a channel called `name` is (re)created with.

    A name freed early (it kept no messages) goes on from where it rested;
    any other starts at seq 0 under the epoch of the channels created since
    the `freed`-th free (`<base>.<freed>`), so clients see a new history.
    The hub and the workers' bus (workers/channels.py) apply this one rule.
    """
    rest = resting.pop(name, None)
    if rest is not None:
        return rest
    return (f"{base_epoch}.{freed}" if freed else base_epoch), 0


class Hub:
    """Channels by name, created on first use with the policy the table resolves.

    The callbacks tell the broker when a channel is created, gets its first
    local subscriber (active) and loses its last one (idle);
    `on_slow_consumer(sub, now)` hears of each subscription `tick` cuts off,
    before its state is freed, so the operator's views can say who and why.

    Subscriptions at or above their high watermark are kept in one set, so
    the periodic `tick(now)` looks only at subscribers that are behind.

    Channels are created by any name a client or publisher uses, so they must
    also go. A channel that keeps no messages (no history, no snapshot) holds
    nothing a later subscriber could use, so it is freed as soon as nothing
    uses it: its last subscriber leaves, or its last pin goes (`unpin`: a
    subscribe that waited on the broker, a publish). Otherwise a client
    subscribing and unsubscribing invented names filled `max_channels` in
    seconds for everyone, for minutes. Freeing early must not change what
    clients see, so the name's epoch and seq are remembered (`resting`, at
    most `RESTING_MAX`, oldest forgotten first) and the channel created again
    under that name goes on from them.

    The others are freed by `sweep_idle(now)` after no subscriber, no publish
    and no pin for `idle_ttl` seconds (at least their `history_ttl` when they
    keep history, so retained messages stay recoverable); idle candidates are
    kept in their own map, so a sweep costs per idle channel, not per
    channel. With `idle_ttl` 0 no channel is ever freed.

    A freed channel's counters are added to `retired` under its metrics
    label, so totals never go backwards; `on_channel_freed` lets the broker
    forget its state. A channel created after any channel was freed (and not
    resting) gets a new epoch (`<epoch>.<frees so far>`): a name used again
    starts at seq 1, and clients must see a new epoch then.
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
        on_channel_freed: Callable[[Channel], None] | None = None,
        idle_ttl: float = 0.0,
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
        self._on_channel_freed = on_channel_freed
        self.idle_ttl = idle_ttl
        """Seconds an unused channel is kept; 0 keeps every channel forever."""
        self.freed = 0
        """Channels freed so far (it also names the epoch of channels created since)."""
        self.retired: dict[str, ChannelCounters] = {}
        """The counters of freed channels, summed per metrics label."""
        self.resting: dict[str, tuple[str, int]] = {}
        """Channels freed early: name -> (epoch, last_seq), oldest first."""
        self._ticked: float | None = None
        """When `tick` last ran: each tick charges full block subscriptions the time since."""
        # name -> (when it was first seen unused, its published count then);
        # None: seen unused since the last sweep, stamped by the next one.
        self._idle: dict[str, tuple[float | None, int]] = {}

    def channel(self, name: str, now: float = 0.0) -> Channel | None:
        """The channel called `name`, created at `now` if needed; None if strict refuses it."""
        channel = self.channels.get(name)
        if channel is None:
            policy = self.policies.resolve(name)
            if policy is None:
                return None
            epoch, last_seq = starting_point(self.resting, name, self.epoch, self.freed)
            channel = Channel(name, policy, epoch=epoch, last_seq=last_seq, created=now)
            self.channels[name] = channel
            if self.idle_ttl:
                self._idle[name] = (None, 0)
            if self._on_channel_created is not None:
                self._on_channel_created(channel)
        return channel

    def pin(self, channel: Channel) -> None:
        """Hold `channel` across an await (it is not freed meanwhile): pair with `unpin`."""
        channel.pins += 1

    def unpin(self, channel: Channel) -> None:
        """Release a pin; a channel that keeps no messages and is now unused is freed."""
        channel.pins -= 1
        self._free_if_unused(channel)

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
        channel.subscriptions[sub] = None
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
        """Drop every connection with a subscription behind for too long, or holding a block
        channel's publishers too much of the time (`SlowConsumerRule`); return their outboxes.

        Each one is counted as a slow-consumer disconnect on the channel that
        was behind, and everything it held is freed at once; the adapter then
        closes the connection with 4008.
        """
        # A full subscription of a block channel is what its publishers wait
        # for: charge it the time since the last tick (sampled, so a sweep
        # costs per subscriber behind, nothing on the hot path).
        seconds = 0.0 if self._ticked is None else max(0.0, now - self._ticked)
        self._ticked = now
        for sub in self.behind:
            if sub.full:
                sub.slow.blocked(now, seconds)
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

    def sweep_idle(self, now: float, budget: int = IDLE_SWEEP_BUDGET) -> list[Channel]:
        """Look at up to `budget` idle candidates; free those unused for their idle time.

        Unused means no subscription, no pin and no publish between two looks
        `ChannelPolicy.kept_unused(idle_ttl)` apart. (A `block` publisher waits
        only on full subscriptions, so a channel without any has none waiting.)
        The budget bounds the time one call holds the event loop (100,000
        candidates at once took ~50 ms, freeing them ~280 ms); candidates are
        visited round-robin, each look moving one to the back. Returns the
        channels freed.
        """
        if not self.idle_ttl:
            return []
        freed: list[Channel] = []
        idle = self._idle
        for name in list(itertools.islice(idle, budget)):
            since, published = idle.pop(name)
            channel = self.channels.get(name)
            if channel is None or channel.subscriptions:
                continue  # gone already, or in use: _detach makes it a candidate again
            if channel.pins:
                idle[name] = (None, 0)  # in use now: the idle time starts after it
                continue
            count = channel.counters.published
            if since is None or count != published:
                idle[name] = (now, count)
                continue
            # Compare against the deadline, not the elapsed time: `now - since` can
            # round just under the TTL (1000.003 + 3600 - 1000.003 == 3599.9999999999995)
            # and a look exactly one TTL later would then never free the channel.
            if now >= since + channel.policy.kept_unused(self.idle_ttl):
                self._free(channel)
                freed.append(channel)
            else:
                idle[name] = (since, published)
        return freed

    def _free_if_unused(self, channel: Channel) -> None:
        """Free `channel` now if it keeps no messages and nothing uses it (see the class)."""
        if (
            self.idle_ttl
            and not channel.subscriptions
            and not channel.pins
            and not channel.policy.keeps_messages
            and self.channels.get(channel.name) is channel
        ):
            self._idle.pop(channel.name, None)
            self._free(channel)
            resting = self.resting
            resting[channel.name] = (channel.epoch, channel.last_seq)
            if len(resting) > RESTING_MAX:
                del resting[next(iter(resting))]

    def _free(self, channel: Channel) -> None:
        del self.channels[channel.name]
        self.freed += 1
        label = channel.policy.label
        retired = self.retired.get(label)
        if retired is None:
            retired = self.retired[label] = ChannelCounters()
        retired.absorb(channel.counters)
        if self._on_channel_freed is not None:
            self._on_channel_freed(channel)

    def _detach(self, sub: Subscription) -> None:
        sub.discard()
        subs = sub.channel.subscriptions
        if sub in subs:
            del subs[sub]
            if not subs:
                channel = sub.channel
                if self.idle_ttl:
                    self._idle[channel.name] = (None, 0)
                if self._on_channel_idle is not None:
                    self._on_channel_idle(channel)
                self._free_if_unused(channel)
