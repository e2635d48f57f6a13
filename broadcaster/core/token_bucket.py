"""Token buckets: a publisher's rate limit, with time passed in.

A bucket holds up to `burst` tokens and gains `rate` tokens per second; a
publish of `cost` messages takes `cost` tokens or is refused with the number
of seconds after which it would succeed (what `Retry-After` carries). Time is
an argument, so tests drive every case with numbers and no clock.

`TokenBuckets` keeps one bucket per publisher (an API key, a client address)
in bounded memory: a bucket that has refilled to `burst` is indistinguishable
from a new one, so full buckets are forgotten first; when that is not enough
the least recently used go. The HTTP publish API uses it today; the WebSocket
publish rate limit is meant to reuse it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["TokenBucket", "TokenBuckets"]


class TokenBucket:
    """`rate` tokens per second, at most `burst` banked; starts full."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not rate > 0:
            raise ValueError(f"rate: expected tokens per second > 0, got {rate}")
        if not burst >= 1:
            raise ValueError(f"burst: expected at least 1 token, got {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = self.burst
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens and return 0.0, or take nothing and return the seconds to wait.

        A cost above `burst` can never be paid; callers reject such requests
        before asking (the wait returned for them is the time to a full bucket,
        which would still not suffice).
        """
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        needed = min(cost, self.burst) - self.tokens
        return max(needed / self.rate, 1e-9)

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled to `burst` (so it can be forgotten)."""
        self._refill(now)
        return self.tokens >= self.burst


class TokenBuckets:
    """One `TokenBucket` per key, created full on first use, at most `max_keys` remembered."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys: expected at least 1, got {max_keys}")
        TokenBucket(rate, burst, 0.0)  # validate once, here, with a useful message
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """Charge `key` `cost` tokens: 0.0 when allowed, else the seconds until it would be."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)

    def _forget(self, now: float) -> None:
        """Make room for at least an eighth of `max_keys` new keys.

        Full buckets go first (forgetting them changes nothing); then the least
        recently used, whose publishers start again with a full bucket. Freeing
        an eighth at a time keeps the scan amortized: O(8) per new key.
        """
        for key in [key for key, bucket in self._buckets.items() if bucket.full(now)]:
            del self._buckets[key]
        target = self.max_keys - max(1, self.max_keys // 8)
        while len(self._buckets) > target:
            self._buckets.popitem(last=False)
