"""Watermark flow control with hysteresis, one instance per subscription.

Modelled on websockets' `Assembler`: the watermarks are checked once in the
constructor, one `paused` flag holds the state, and each callback fires once
per crossing, so pause and resume strictly alternate starting with a pause.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["FlowControl"]

_NEVER = sys.maxsize


class FlowControl:
    """Pauses when depth reaches `high`, resumes when it falls to `low`.

    `pause_at` and `resume_at` are the depths at which the next transition
    happens; the hot path compares against them instead of calling in, so a
    subscription that keeps up pays one integer comparison per message.
    """

    __slots__ = ("_on_pause", "_on_resume", "high", "low", "pause_at", "paused", "resume_at")

    def __init__(
        self,
        *,
        high: int,
        low: int,
        on_pause: Callable[[int], None],
        on_resume: Callable[[int], None],
    ) -> None:
        if not 0 <= low < high:
            raise ValueError(f"watermarks need 0 <= low < high, got low={low} high={high}")
        self.high = high
        self.low = low
        self.paused = False
        self.pause_at = high
        self.resume_at = -1
        self._on_pause = on_pause
        self._on_resume = on_resume

    def depth_rose(self, depth: int) -> None:
        """Record a new depth after growth; fires `on_pause(depth)` on the upward crossing."""
        if not self.paused and depth >= self.high:
            self.paused = True
            self.pause_at = _NEVER
            self.resume_at = self.low
            self._on_pause(depth)

    def depth_fell(self, depth: int) -> None:
        """Record a new depth after draining; fires `on_resume(depth)` on the downward crossing."""
        if self.paused and depth <= self.low:
            self.paused = False
            self.pause_at = self.high
            self.resume_at = -1
            self._on_resume(depth)
