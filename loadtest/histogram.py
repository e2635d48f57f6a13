"""A log-linear latency histogram that is cheap to fill and to merge across processes.

Subscribers can see over a million messages a second in total, so keeping every
latency sample is out of the question, and percentiles must merge exactly across
worker processes. Values (microseconds) below 128 get one bucket each; above, each
power of two is split into 64 buckets, so any reported value is within 1.6 % of
the truth. A histogram is a plain ``dict[int, int]`` (bucket -> count) so it pickles
and JSON-encodes without ceremony.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["Histogram", "bucket_of", "lower_bound_of"]

_LINEAR = 128
_SUB_BITS = 6
_SUB = 1 << _SUB_BITS


def bucket_of(value_us: int) -> int:
    """The bucket index of a non-negative value in microseconds (negatives clamp to 0)."""
    if value_us < _LINEAR:
        return value_us if value_us > 0 else 0
    shift = value_us.bit_length() - _SUB_BITS - 1
    return _LINEAR + (shift - 1) * _SUB + ((value_us >> shift) - _SUB)


def lower_bound_of(bucket: int) -> int:
    """The smallest value (microseconds) that falls into ``bucket``."""
    if bucket < _LINEAR:
        return bucket
    shift = (bucket - _LINEAR) // _SUB + 1
    return (_SUB + (bucket - _LINEAR) % _SUB) << shift


def _upper_bound_of(bucket: int) -> int:
    """The largest value (microseconds) that falls into ``bucket``."""
    return lower_bound_of(bucket + 1) - 1


class Histogram:
    """Counts of latencies by bucket, with exact count, sum and maximum."""

    __slots__ = ("buckets", "count", "max_us", "total_us")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total_us = 0
        self.max_us = 0

    def add(self, value_us: int) -> None:
        """Record one value; the hot path of every subscriber, so kept branch-light."""
        b = bucket_of(value_us)
        buckets = self.buckets
        buckets[b] = buckets.get(b, 0) + 1
        self.count += 1
        self.total_us += value_us
        if value_us > self.max_us:
            self.max_us = value_us

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts into this one."""
        buckets = self.buckets
        for b, n in other.buckets.items():
            buckets[b] = buckets.get(b, 0) + n
        self.count += other.count
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)

    def percentile(self, p: float) -> float:
        """The p-th percentile (0-100) in microseconds; 0.0 for an empty histogram.

        Reports the upper bound of the bucket holding the rank (capped by the true
        maximum), so a percentile is never understated.
        """
        if self.count == 0:
            return 0.0
        rank = max(1, min(self.count, round(self.count * p / 100.0)))
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return float(min(_upper_bound_of(b), self.max_us))
        return float(self.max_us)

    def mean(self) -> float:
        """The exact mean in microseconds (0.0 when empty)."""
        return self.total_us / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, object]:
        """A picklable, JSON-friendly form (bucket keys as strings for JSON)."""
        return {
            "buckets": {str(b): n for b, n in self.buckets.items()},
            "count": self.count,
            "total_us": self.total_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Histogram:
        """Rebuild a histogram from :meth:`to_dict` output."""
        h = cls()
        raw = data.get("buckets", {})
        if isinstance(raw, Mapping):
            h.buckets = {int(b): int(n) for b, n in raw.items()}
        h.count = _as_int(data.get("count", 0))
        h.total_us = _as_int(data.get("total_us", 0))
        h.max_us = _as_int(data.get("max_us", 0))
        return h

    @classmethod
    def merged(cls, parts: Iterable[Histogram]) -> Histogram:
        """One histogram holding all of ``parts``."""
        h = cls()
        for part in parts:
            h.merge(part)
        return h

    def summary_ms(self) -> dict[str, float]:
        """p50/p90/p99/max/mean in milliseconds, the shape every report uses."""
        return {
            "count": float(self.count),
            "p50": self.percentile(50) / 1000.0,
            "p90": self.percentile(90) / 1000.0,
            "p99": self.percentile(99) / 1000.0,
            "max": self.max_us / 1000.0,
            "mean": self.mean() / 1000.0,
        }


def _as_int(value: object) -> int:
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")
