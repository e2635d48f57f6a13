"""Histogram bucket counts kept as plain integers, read by the metrics exporter at scrape.

The hot path must not call into prometheus-client (locks, label lookups,
float atomics): the places that time something (a publish waiting for room,
a sampled delivery) add one observation here with a bisect and two
additions, and the exporter turns the counts into a histogram family when
Prometheus asks.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

__all__ = ["BLOCKED_BUCKETS", "DEPTH_BUCKETS", "LATENCY_BUCKETS", "Buckets"]

# Upper bounds in seconds. Publish → socket write on loopback is tens of
# microseconds to milliseconds; a backlog makes it seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# A publish on a `block` channel waits at most about one slow-consumer timeout.
BLOCKED_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# Queue depths in messages: powers of two up to 4096 (queue sizes are typically 8..4096).
DEPTH_BUCKETS: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Buckets:
    """Non-cumulative counts per upper bound (the last slot is +Inf), their sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"bucket bounds must be strictly increasing, got {bounds}")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one value in the first bucket whose upper bound is >= value."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def merge(self, other: Buckets) -> None:
        """Add `other`'s counts (same bounds): channels sharing a metrics label."""
        counts = self.counts
        for i, n in enumerate(other.counts):
            counts[i] += n
        self.sum += other.sum
        self.count += other.count

    @classmethod
    def merged(cls, bounds: Sequence[float], parts: Iterable[Buckets]) -> Buckets:
        total = cls(bounds)
        for part in parts:
            total.merge(part)
        return total

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, count of values <= it) pairs ending with +inf, as exposition wants."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((bound, running))
        out.append((math.inf, running + self.counts[-1]))
        return out
