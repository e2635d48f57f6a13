"""Recent rates (messages per second) for /stats, from two marks per counter set, read lazily.

The counters only ever grow; a rate needs two readings some time apart.
Sampling every channel on a timer would cost per channel per tick (with
100,000 channels: ~90 ms every half second, and 20 samples each held in
memory), so nothing is sampled on a timer. Instead each named counter set
keeps two marks, an old one and a middle one, taken when it is read: a rate
is the growth from the old mark to now (the first old mark is the moment the
counts started from zero). When the middle mark is half a
window old it becomes the old one and now becomes the middle, so a set read
regularly (the dashboard's channels, every `stats_interval`) has a rate over
the last half to whole window. Only what /stats shows is ever read, so the
cost follows the document, not the number of channels.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["RateWindow", "Rates"]


class _Mark(NamedTuple):
    at: float
    published: int
    delivered: int
    dropped: int


class Rates(NamedTuple):
    published: float
    delivered: float
    dropped: float
    window: float
    """Seconds the rates were measured over."""


_ZERO = Rates(0.0, 0.0, 0.0, 0.0)


class RateWindow:
    """Rates of named counter sets (channels, and "" for the totals) over about `window` s."""

    def __init__(self, window: float = 10.0) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        self.window = window
        self._step = window / 2
        self._marks: dict[str, tuple[_Mark, _Mark]] = {}

    def rates(
        self,
        name: str,
        now: float,
        *,
        published: int,
        delivered: int,
        dropped: int,
        since: float,
    ) -> Rates:
        """Messages per second of `name` from its old mark to `now` (whose counts are given).

        `since` is when the counts were all zero (the channel's creation, the
        server's start): the first reading is the average since then.
        """
        current = _Mark(now, published, delivered, dropped)
        marks = self._marks.get(name)
        if marks is None:
            marks = (_Mark(since, 0, 0, 0), current)
            self._marks[name] = marks
        old, middle = marks
        if now - middle.at >= self._step:
            old, middle = middle, current
            self._marks[name] = (old, middle)
        span = now - old.at
        if span <= 0:
            return _ZERO
        return Rates(
            published=round((published - old.published) / span, 3),
            delivered=round((delivered - old.delivered) / span, 3),
            dropped=round((dropped - old.dropped) / span, 3),
            window=round(span, 3),
        )

    def forget(self, name: str) -> None:
        """Drop the marks of a channel the hub freed (a new one of that name starts over)."""
        self._marks.pop(name, None)

    def __len__(self) -> int:
        return len(self._marks)
