"""The slow-consumer rule: too long at or above the high watermark.

A subscription whose depth stays at or above its high watermark for longer
than `timeout` seconds marks its connection as a slow consumer (close 4008).
Time is an input: the caller passes `now`, so a test drives the rule with
plain numbers instead of sleeping.
"""

from __future__ import annotations

__all__ = ["SlowConsumerRule"]


class SlowConsumerRule:
    """Tracks since when a subscription has been at or above its high watermark."""

    __slots__ = ("above_since", "timeout")

    def __init__(self, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"slow_consumer_timeout must be > 0 seconds, got {timeout}")
        self.timeout = timeout
        self.above_since: float | None = None

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

    def expired(self, now: float) -> bool:
        """True once the depth has stayed at or above the watermark for longer than `timeout`."""
        return self.above_since is not None and now - self.above_since > self.timeout

    def deadline(self) -> float | None:
        """The time at which the rule will expire if nothing changes."""
        return None if self.above_since is None else self.above_since + self.timeout
