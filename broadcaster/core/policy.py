"""Per-channel policy and the table that resolves a channel name to it.

A policy is immutable and validated when built, so a running channel never
holds an impossible combination (a low watermark above the high one, a
queue of zero). The table keeps the `[channels]` entries in file order: the
first exact name or glob pattern that matches wins, `[defaults]` covers the
rest.
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass, field, replace

from broadcaster.core.slow_consumer import DEFAULT_BLOCKING_SHARE
from broadcaster.core.strategies import Strategy

__all__ = ["DEFAULT_LABEL", "Access", "ChannelPolicy", "Compression", "PolicyTable"]

# The metrics label of channels that only [defaults] covers.
DEFAULT_LABEL = "*"


class Access(enum.StrEnum):
    """Which WebSocket clients may subscribe to (or publish on) a channel.

    Only WebSocket clients are concerned: sources, the embedding API and the
    HTTP publish API (which has its own keys) are not.
    """

    ANYONE = "anyone"
    """Every client, with or without a token (the default)."""
    TOKEN = "token"
    """Clients whose token grants the channel (its `subscribe` / `publish` claim)."""
    NONE = "none"
    """No WebSocket client at all."""


class Compression(enum.StrEnum):
    """How a channel's messages travel to subscribers that negotiated permessage-deflate.

    Subscribers that did not negotiate it always get plain frames.
    """

    OFF = "off"
    """Plain frames for everyone."""
    DEFLATE = "deflate"
    """Each message of at least `compression_min_size` bytes is compressed once, alone
    (no context takeover), and that one frame goes to every subscriber that negotiated
    compression (the default: docs/channels.md says why)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ChannelPolicy:
    """How one channel treats its subscribers. Every field says its unit and default.

    `high_watermark` defaults to `queue_size` and `low_watermark` to half of
    it when they are not set (None) anywhere in the config; a high watermark
    set at or below half the queue size brings the default low one to half
    of the high one.
    """

    strategy: Strategy = Strategy.DROP_OLDEST
    queue_size: int = 256
    """Messages a subscription may queue (default 256)."""
    high_watermark: int | None = None
    """Depth in messages at which `flow.pause` is sent (default: queue_size)."""
    low_watermark: int | None = None
    """Depth in messages at which `flow.resume` is sent (default: queue_size // 2,
    or high // 2 when the high watermark is at or below that)."""
    slow_consumer_timeout: float = 5.0
    """Seconds at or above the high watermark before close 4008 (default 5.0)."""
    slow_consumer_share: float = DEFAULT_BLOCKING_SHARE
    """Block channels: the share of time (> 0, <= 1) a subscriber may keep publishers
    waiting (its queue full), measured over about `slow_consumer_timeout` seconds,
    before close 4008 (default 0.5; 1 = only the watermark rule)."""
    history_size: int = 0
    """Messages kept for `since` recovery (default 0: none)."""
    history_ttl: float = 300.0
    """Seconds a message stays recoverable (default 300)."""
    conflate_key: str | None = None
    """Dotted path into `data` naming the conflation key (conflate only)."""
    conflate_fallback: Strategy = Strategy.DROP_OLDEST
    """Strategy for messages without the key, or a new key on a full queue."""
    snapshot: bool = False
    """Conflate channels: new subscribers first get the latest message of every key."""
    max_rate: float | None = None
    """The highest `max_rate` (messages/s) a subscriber may ask for (None: no cap)."""
    subscribe: Access = Access.ANYONE
    """Which WebSocket clients may subscribe (default: anyone)."""
    publish: Access = Access.ANYONE
    """Which WebSocket clients may publish (default: anyone)."""
    compression: Compression = Compression.DEFLATE
    """permessage-deflate for subscribers that negotiated it (default: deflate)."""
    compression_min_size: int = 1024
    """Messages (JSON payload bytes) smaller than this go uncompressed (default 1024):
    compressed alone, ticker-sized messages shrink by about a tenth only."""
    compression_level: int = 6
    """zlib level, 1 (fastest) to 9 (smallest) (default 6)."""
    label: str = field(default=DEFAULT_LABEL, compare=False)
    """The [channels] key that matched: the `channel` label of metrics."""

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            key, expected = problems[0]
            raise ValueError(f"{key}: expected {expected}")

    @property
    def high(self) -> int:
        """The effective high watermark in messages."""
        return self.queue_size if self.high_watermark is None else self.high_watermark

    @property
    def low(self) -> int:
        """The effective low watermark: half the queue size, or half the high watermark below it."""
        if self.low_watermark is not None:
            return self.low_watermark
        half = self.queue_size // 2
        return half if half < self.high else self.high // 2

    @property
    def keeps_messages(self) -> bool:
        """Whether a channel of this policy holds messages for later subscribers (history
        for `since`, or a snapshot): only such a channel is worth keeping while unused."""
        return self.history_size > 0 or self.snapshot

    def kept_unused(self, idle_ttl: float) -> float:
        """Seconds a channel of this policy is kept unused: `idle_ttl`, but at least
        `history_ttl` when it keeps history, so retained messages stay recoverable."""
        return max(idle_ttl, self.history_ttl if self.history_size else 0.0)

    def problems(self) -> list[tuple[str, str]]:
        """Every invalid field as (key, what was expected); empty when valid."""
        found: list[tuple[str, str]] = []
        if self.queue_size < 1:
            found.append(("queue_size", f"an integer >= 1 (messages), got {self.queue_size}"))
            return found
        high, low = self.high, self.low
        if not 1 <= high <= self.queue_size:
            found.append(
                (
                    "high_watermark",
                    f"an integer between 1 and queue_size ({self.queue_size}), got {high}",
                )
            )
        elif not 0 <= low < high:
            found.append(
                ("low_watermark", f"an integer >= 0 and below high_watermark ({high}), got {low}")
            )
        if not self.slow_consumer_timeout > 0:
            found.append(
                ("slow_consumer_timeout", f"seconds > 0, got {self.slow_consumer_timeout}")
            )
        if not 0 < self.slow_consumer_share <= 1:
            found.append(
                (
                    "slow_consumer_share",
                    f"a fraction > 0 and <= 1, got {self.slow_consumer_share}",
                )
            )
        if self.history_size < 0:
            found.append(("history_size", f"an integer >= 0, got {self.history_size}"))
        if not self.history_ttl > 0:
            found.append(("history_ttl", f"seconds > 0, got {self.history_ttl}"))
        if self.strategy is Strategy.CONFLATE and not self.conflate_key:
            found.append(("conflate_key", "a field name of `data` when strategy is conflate"))
        if self.conflate_fallback not in (Strategy.DROP_OLDEST, Strategy.DROP_NEWEST):
            found.append(
                (
                    "conflate_fallback",
                    f'"drop-oldest" or "drop-newest", got {self.conflate_fallback}',
                )
            )
        if self.snapshot and self.strategy is not Strategy.CONFLATE:
            found.append(("snapshot", "false unless strategy is conflate (snapshots are per key)"))
        if self.max_rate is not None and not self.max_rate > 0:
            found.append(("max_rate", f"messages per second > 0, got {self.max_rate}"))
        if self.compression_min_size < 0:
            found.append(
                (
                    "compression_min_size",
                    f"an integer >= 0 (bytes), got {self.compression_min_size}",
                )
            )
        if not 1 <= self.compression_level <= 9:
            found.append(
                ("compression_level", f"an integer from 1 to 9, got {self.compression_level}")
            )
        return found

    @property
    def compresses(self) -> bool:
        """Whether some of this channel's messages may be compressed."""
        return self.compression is Compression.DEFLATE


@dataclass(frozen=True, slots=True)
class PolicyTable:
    """Resolves channel names to policies: first matching entry wins, defaults fill the rest."""

    defaults: ChannelPolicy = field(default_factory=ChannelPolicy)
    entries: tuple[tuple[str, ChannelPolicy], ...] = ()
    strict: bool = False
    """When true, channels that match no entry are refused (unknown_channel)."""

    def match(self, name: str) -> ChannelPolicy | None:
        """The policy of the first entry matching `name`, or None."""
        for pattern, policy in self.entries:
            if name == pattern or fnmatch.fnmatchcase(name, pattern):
                return policy
        return None

    def resolve(self, name: str) -> ChannelPolicy | None:
        """The policy for `name`; None when strict and nothing matches."""
        policy = self.match(name)
        if policy is not None:
            return policy
        if self.strict:
            return None
        return self.defaults

    def compresses(self) -> bool:
        """Whether any channel may compress: only then is permessage-deflate negotiated."""
        return self.defaults.compresses or any(p.compresses for _, p in self.entries)

    def labels(self) -> list[str]:
        """Every metrics label a channel can carry (bounded by the config)."""
        return [pattern for pattern, _ in self.entries] + [DEFAULT_LABEL]

    def with_entry(self, pattern: str, policy: ChannelPolicy) -> PolicyTable:
        """A copy with `policy` appended as the last entry (labelled by its pattern)."""
        return PolicyTable(
            self.defaults, (*self.entries, (pattern, replace(policy, label=pattern))), self.strict
        )
