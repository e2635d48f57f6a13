"""Recent per-channel rates (messages per second) for /stats, from periodic counter samples.

The channel counters only ever grow; a rate needs two readings some time
apart. The monitor samples every channel's counters on its tick (a few
integer reads per channel, never per message) and keeps the samples of the
last `window` seconds; a rate is the difference between the newest and the
oldest sample over the time between them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import NamedTuple

from broadcaster.core.channel import Channel

__all__ = ["RateWindow", "Rates"]


class _Sample(NamedTuple):
    at: float
    published: int
    delivered: int
    dropped: int


class Rates(NamedTuple):
    published: float
    delivered: float
    dropped: float
    window: float
    """Seconds the rates were measured over (0 until two samples exist)."""


_ZERO = Rates(0.0, 0.0, 0.0, 0.0)


class RateWindow:
    """Samples of every channel's counters over the last `window` seconds."""

    def __init__(self, window: float = 10.0) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        self.window = window
        self._samples: dict[str, deque[_Sample]] = {}

    def sample(self, now: float, channels: Mapping[str, Channel]) -> None:
        """Record every channel's counters at `now`; forget samples older than the window."""
        horizon = now - self.window
        samples = self._samples
        for name, channel in channels.items():
            counters = channel.counters
            ring = samples.get(name)
            if ring is None:
                ring = samples[name] = deque()
            ring.append(
                _Sample(now, counters.published, counters.delivered, counters.dropped_total)
            )
            # Keep one sample at or before the horizon so the window stays full.
            while len(ring) > 2 and ring[1].at <= horizon:
                ring.popleft()

    def forget(self, name: str) -> None:
        """Drop the samples of a channel the hub freed (a new one of that name starts over)."""
        self._samples.pop(name, None)

    def rates(self, name: str) -> Rates:
        """Messages per second of channel `name` over the recent window."""
        ring = self._samples.get(name)
        if not ring or len(ring) < 2:
            return _ZERO
        first, last = ring[0], ring[-1]
        span = last.at - first.at
        if span <= 0:
            return _ZERO
        return Rates(
            published=round((last.published - first.published) / span, 3),
            delivered=round((last.delivered - first.delivered) / span, 3),
            dropped=round((last.dropped - first.dropped) / span, 3),
            window=round(span, 3),
        )
