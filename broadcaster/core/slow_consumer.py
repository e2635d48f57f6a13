"""The slow-consumer rule: too long at or above the high watermark, or holding publishers.

A subscription whose depth stays at or above its high watermark for longer
than `timeout` seconds marks its connection as a slow consumer (close 4008).

On a `block` channel a subscriber can also hurt everyone without staying
above the watermark: one that reads a little now and then (a "trickle
reader") dips under it often enough to restart that clock, yet keeps the
publisher waiting almost all the time. So a second measure counts the time
a subscription is the reason publishers wait (its queue is full), in a leaky
bucket: the level grows by the seconds spent blocking and drains at `share`
seconds per second. It passes `(1 - share) * timeout` when the subscriber
blocked publishers more than `share` of the time for long enough: after
exactly `timeout` seconds of blocking without a break, later the closer its
share is to `share`, never at or below it (so `share = 1` turns it off).

Time is an input: the caller passes `now`, so a test drives the rule with
plain numbers instead of sleeping.
"""

from __future__ import annotations

__all__ = ["DEFAULT_BLOCKING_SHARE", "SlowConsumerRule"]

DEFAULT_BLOCKING_SHARE = 0.5
"""The share of time a subscriber may keep a block channel's publishers waiting."""


class SlowConsumerRule:
    """Since when a subscription is at or above its high watermark, and how much it blocked."""

    __slots__ = ("above_since", "blocked_at", "blocking", "share", "timeout")

    def __init__(self, timeout: float, share: float = DEFAULT_BLOCKING_SHARE) -> None:
        if not timeout > 0:
            raise ValueError(f"slow_consumer_timeout must be > 0 seconds, got {timeout}")
        if not 0 < share <= 1:
            raise ValueError(f"slow_consumer_share must be > 0 and <= 1, got {share}")
        self.timeout = timeout
        self.share = share
        self.above_since: float | None = None
        self.blocking = 0.0
        """The leaky bucket's level: recent seconds spent holding publishers, drained."""
        self.blocked_at: float | None = None
        """When `blocking` was last brought up to date (None: never blocked)."""

    def entered(self, now: float) -> None:
        """The depth reached the high watermark at `now`."""
        if self.above_since is None:
            self.above_since = now

    def left(self) -> None:
        """The depth fell below the high watermark."""
        self.above_since = None

    def seconds_above(self, now: float) -> float:
        """How long the depth has been at or above the high watermark (0 if it is not)."""
        return 0.0 if self.above_since is None else max(0.0, now - self.above_since)

    def blocked(self, now: float, seconds: float) -> None:
        """The subscription kept publishers waiting for `seconds` of the time up to `now`.

        The level drains for the whole time since the last call (a subscriber
        that stopped blocking recovers its budget) and grows by `seconds`.
        """
        since = self.blocked_at
        elapsed = seconds if since is None else max(seconds, now - since)
        self.blocking = max(0.0, self.blocking + seconds - elapsed * self.share)
        self.blocked_at = now

    def blocking_too_much(self) -> bool:
        """True once the subscriber blocked publishers more than `share` of the time
        for long enough (see the module docstring)."""
        return self.blocking > (1.0 - self.share) * self.timeout

    def expired(self, now: float) -> bool:
        """True once the depth stayed at or above the watermark for longer than `timeout`,
        or the subscriber kept publishers waiting more than `share` of the time."""
        if self.above_since is not None and now - self.above_since > self.timeout:
            return True
        return self.blocking_too_much()

    def deadline(self) -> float | None:
        """The time at which the watermark rule will expire if nothing changes."""
        return None if self.above_since is None else self.above_since + self.timeout
