"""A channel on this node: its seq, its local subscriptions and its counters."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from broadcaster.core.histogram import BLOCKED_BUCKETS, LATENCY_BUCKETS, Buckets
from broadcaster.core.message import Message
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import DropReason, Strategy

if TYPE_CHECKING:
    from broadcaster.core.subscription import Subscription

__all__ = ["SNAPSHOT_MAX_KEYS", "Channel", "ChannelCounters"]

# Keys a snapshot channel remembers; beyond it the least recently updated key
# is forgotten, so publishers of ever-new keys cannot grow memory without bound.
SNAPSHOT_MAX_KEYS = 10_000

_TRUE_KEY = ("bool", True)
_FALSE_KEY = ("bool", False)


class ChannelCounters:
    """Plain integers the hot path increments; metrics and /stats read them later.

    `latency` holds sampled publish → socket-write delays (the adapter
    observes the first message of every Nth batch per connection: see
    `Outbox.take_batch`, which leaves it in `Outbox.sample_channel`);
    `blocked` how long publishes on a `block` channel waited for room (only
    publishes that had to wait are observed).
    `deflate_plain` / `deflate_wire` are the bytes of the frames taken for
    subscribers that negotiated permessage-deflate, as plain frames and as
    sent (compressed or not): their ratio is the channel's compression ratio,
    their difference the bytes compression saved.
    """

    __slots__ = (
        "blocked",
        "deflate_plain",
        "deflate_wire",
        "delivered",
        "dropped",
        "latency",
        "pauses",
        "published",
        "slow_consumer_disconnects",
    )

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.pauses = 0
        self.slow_consumer_disconnects = 0
        self.deflate_plain = 0
        self.deflate_wire = 0
        self.dropped: dict[DropReason, int] = dict.fromkeys(DropReason, 0)
        self.latency = Buckets(LATENCY_BUCKETS)
        self.blocked = Buckets(BLOCKED_BUCKETS)

    @property
    def deflate_saved(self) -> int:
        """Bytes compression kept off the wire (frames taken for compressing subscribers)."""
        return self.deflate_plain - self.deflate_wire

    def count_dropped(self, reason: DropReason, count: int) -> None:
        self.dropped[reason] += count

    def absorb(self, other: ChannelCounters) -> None:
        """Add `other`'s counts to these: a freed channel's totals live on in its label's."""
        self.published += other.published
        self.delivered += other.delivered
        self.pauses += other.pauses
        self.slow_consumer_disconnects += other.slow_consumer_disconnects
        self.deflate_plain += other.deflate_plain
        self.deflate_wire += other.deflate_wire
        for reason, count in other.dropped.items():
            self.dropped[reason] += count
        self.latency.merge(other.latency)
        self.blocked.merge(other.blocked)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class Channel:
    """Fans each message out to the local subscriptions, in seq order.

    `full_count` counts subscriptions of a `block` channel whose queue is full;
    the channel has room for a publish only when it is zero. `on_room` is
    called when it returns to zero, so the adapter can wake a waiting
    publisher. Under `serve --workers`, `remote_full` of that count are other
    workers with a full subscriber (`remote_fullness`), and `on_local_full`
    hears when this process's own count leaves zero and returns to it, so the
    bus can tell the other workers. `pins` counts operations that hold the channel across an await
    before attaching to it (a subscribe waiting on the broker): the hub does
    not free a pinned channel, or that subscriber would attach to an orphan.
    """

    __slots__ = (
        "_key_path",
        "counters",
        "created",
        "epoch",
        "full_count",
        "last_seq",
        "latest",
        "name",
        "on_local_full",
        "on_room",
        "pins",
        "policy",
        "remote_full",
        "shared_run",
        "subscriptions",
    )

    def __init__(
        self,
        name: str,
        policy: ChannelPolicy,
        *,
        epoch: str,
        last_seq: int = 0,
        created: float = 0.0,
    ) -> None:
        self.name = name
        self.created = created
        """When the hub created it: where its counters started from zero (for rates)."""
        self.policy = policy
        self.epoch = epoch
        self.last_seq = last_seq
        self.subscriptions: dict[Subscription, None] = {}
        """The local subscriptions in attach order (a dict used as an ordered set):
        fan-out iterates it as fast as a list, and a detach is O(1) where a list's
        `remove` scanned it (shedding 40,000 subscribers newest-first took 15 s)."""
        self.counters = ChannelCounters()
        self.full_count = 0
        self.pins = 0
        self.on_room: Callable[[Channel], None] | None = None
        self.remote_full = 0
        """Other workers with a full subscriber of this channel (counted in `full_count`)."""
        self.on_local_full: Callable[[Channel, bool], None] | None = None
        self.shared_run: tuple[Message, int, list[bytes], int, bytes] | None = None
        """The last run of messages taken for a subscriber (first message, count,
        frames, bytes, the frames joined), reused by the next subscriber holding the
        same run (core/outbox.py `_shared_run`)."""
        self.latest: dict[Hashable, Message] | None = {} if policy.snapshot else None
        """Snapshot channels: the newest message of every key (last-value cache)."""
        self._key_path: tuple[str, ...] = (
            tuple(policy.conflate_key.split("."))
            if policy.strategy is Strategy.CONFLATE and policy.conflate_key
            else ()
        )

    @property
    def blocking(self) -> bool:
        return self.policy.strategy is Strategy.BLOCK

    def has_room(self) -> bool:
        """Whether a publish can proceed now (always, unless a `block` queue is full)."""
        return self.full_count == 0

    @property
    def conflates(self) -> bool:
        """Whether messages carry a conflation key (a `conflate` channel with `conflate_key`)."""
        return bool(self._key_path)

    def became_full(self) -> None:
        """A subscription's queue filled up (a `block` channel)."""
        self.full_count += 1
        if self.on_local_full is not None and self.full_count - self.remote_full == 1:
            self.on_local_full(self, True)

    def room_freed(self) -> None:
        """A full subscription got room back (drained, or left the channel)."""
        self.full_count -= 1
        if self.on_local_full is not None and self.full_count == self.remote_full:
            self.on_local_full(self, False)
        if self.full_count == 0 and self.on_room is not None:
            self.on_room(self)

    def remote_fullness(self, full: bool) -> None:
        """Another worker's subscribers of this channel got full, or all have room again."""
        if full:
            self.remote_full += 1
            self.full_count += 1
            return
        self.remote_full -= 1
        self.full_count -= 1
        if self.full_count == 0 and self.on_room is not None:
            self.on_room(self)

    def conflation_key(self, data: Any) -> Hashable | None:
        """The value of `conflate_key` in `data`, or None when absent or not a scalar."""
        path = self._key_path
        if not path:
            return None
        value = data
        for part in path:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        if isinstance(value, bool):
            # In Python True == 1; as JSON values they are different keys.
            return _TRUE_KEY if value else _FALSE_KEY
        if isinstance(value, str | int | float):
            return value
        return None

    def fan_out(self, message: Message) -> None:
        """Hand `message` to every local subscription; seq must be `last_seq + 1` or later."""
        self.last_seq = message.seq
        self.counters.published += 1
        latest = self.latest
        if latest is not None and message.key is not None:
            latest.pop(message.key, None)
            latest[message.key] = message
            if len(latest) > SNAPSHOT_MAX_KEYS:
                del latest[next(iter(latest))]
        # `Subscription.push`'s fast path, inlined: one call less per delivery.
        for sub in self.subscriptions:
            items = sub.items
            if len(items) < sub.fast_limit:
                items.append(message)
                outbox = sub.outbox
                if outbox.armed:
                    outbox.schedule()
            else:
                sub.push(message)

    def snapshot(self) -> list[Message]:
        """The newest message of every key, in seq order (empty unless `snapshot = true`)."""
        if not self.latest:
            return []
        return sorted(self.latest.values(), key=lambda m: m.seq)

    def __repr__(self) -> str:
        return (
            f"Channel({self.name!r}, strategy={self.policy.strategy}, last_seq={self.last_seq}, "
            f"subscribers={len(self.subscriptions)})"
        )
