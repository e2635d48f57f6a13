"""The per-connection publish rate limit (`[limits] publish_rate`, `publish_burst`).

One token bucket per connection, across all its channels: what is limited
is what one client can make the server fan out, whatever channel it picks.
A publish over the rate is refused with error `rate_limited` carrying
`retry_after` (seconds until the bucket has a token again); nothing is
published. That error is the warning. A client that keeps going, more than
`rate_limit_strikes` refusals within `rate_limit_window` seconds, is closed
with 4029 (rate limited): it is not listening, and every refusal still
costs the server a parse and a reply.

Pure: time is an argument. The session owns one `PublishLimiter`.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from broadcaster.core.token_bucket import TokenBucket

__all__ = ["PublishLimiter", "Verdict"]


class Verdict(Enum):
    ALLOW = "allow"
    REFUSE = "refuse"
    """Refuse this publish with `rate_limited`."""
    CLOSE = "close"
    """Refuse it, and close the connection with 4029: too many refusals."""


class PublishLimiter:
    """One connection's publish budget and its recent refusals."""

    __slots__ = ("_bucket", "_refused", "retry_after", "strikes", "window")

    def __init__(
        self, rate: float, burst: float, *, strikes: int, window: float, now: float
    ) -> None:
        self._bucket = TokenBucket(rate, max(1.0, burst or rate), now)
        self.strikes = strikes
        self.window = window
        self._refused: deque[float] = deque()
        self.retry_after = 0.0
        """Seconds the last refused publish was told to wait."""

    @property
    def rate(self) -> float:
        return self._bucket.rate

    @property
    def burst(self) -> float:
        return self._bucket.burst

    def check(self, now: float) -> Verdict:
        """Charge one publish at `now`."""
        wait = self._bucket.take(now)
        if wait == 0.0:
            return Verdict.ALLOW
        self.retry_after = wait
        refused = self._refused
        refused.append(now)
        while refused and refused[0] <= now - self.window:
            refused.popleft()
        if len(refused) > self.strikes:
            return Verdict.CLOSE
        return Verdict.REFUSE
