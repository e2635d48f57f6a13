"""When to reconnect: the backoff policy and what close codes and HTTP statuses mean.

The policy is a pure object: its only input besides the attempt number is an
injectable random source, so tests check exact delays with a seeded random.

- normal: attempt n waits `random() * min(max_delay, min_delay * factor**n)`.
  Full jitter: clients that lost the same server spread over the whole window
  instead of coming back in step.
- long (after close 4008, 1013, 4029, or HTTP 503/429 at the handshake): at least
  `long_delay / 2`, or the server's Retry-After when it sent one, plus up to
  `long_delay / 2` of jitter. A shed or slow client must not come straight back.
"""

from __future__ import annotations

import email.utils
import math
import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from broadcaster.codes import CLOSE_CODES

__all__ = [
    "Backoff",
    "BackoffStep",
    "Policy",
    "close_policy",
    "http_policy",
    "parse_retry_after",
]

Policy = Literal["none", "normal", "long"]

_POLICIES: dict[str, Policy] = {"none": "none", "normal": "normal", "long": "long"}


def close_policy(code: int) -> Policy:
    """What a close code asks of a client (broadcaster/codes.py); unknown codes retry normally."""
    info = CLOSE_CODES.get(code)  # type: ignore[call-overload]
    return "normal" if info is None else _POLICIES[info.backoff]


def http_policy(status: int) -> Policy:
    """A refused handshake: overload and rate limits wait long; a refused token or origin stops."""
    if status in (429, 503):
        return "long"
    if status in (401, 403):
        return "none"
    return "normal"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class BackoffStep:
    """One chosen delay: which attempt it is, which kind, how long (seconds)."""

    attempt: int
    kind: Literal["normal", "long"]
    delay: float


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with full jitter and a cap, plus the long wait for overload closes."""

    min_delay: float = 0.5
    max_delay: float = 20.0
    factor: float = 2.0
    long_delay: float = 30.0
    random: Callable[[], float] = field(default=_random.random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay <= self.max_delay:
            raise ValueError(
                f"backoff: need 0 <= min_delay <= max_delay, got {self.min_delay}, {self.max_delay}"
            )
        if self.factor < 1:
            raise ValueError(f"backoff: factor must be >= 1, got {self.factor}")
        if self.long_delay < 0:
            raise ValueError(f"backoff: long_delay must be >= 0, got {self.long_delay}")

    def cap(self, attempt: int) -> float:
        """The top of the jitter window for normal attempt `attempt`."""
        if self.min_delay == 0:
            return 0.0
        # Compare exponents, not powers: factor**attempt overflows long before attempt is large.
        if attempt * math.log(self.factor or 1) >= math.log(self.max_delay / self.min_delay or 1):
            return self.max_delay
        return min(self.max_delay, self.min_delay * self.factor**attempt)

    def next(
        self, kind: Literal["normal", "long"] = "normal", retry_after: float | None = None
    ) -> BackoffStep:
        """The delay before the next attempt; `retry_after` (s) is the floor of a long wait."""
        attempt = self.attempt
        self.attempt += 1
        if kind == "long":
            spread = self.long_delay / 2
            floor = spread if retry_after is None else retry_after
            return BackoffStep(attempt, "long", floor + self.random() * spread)
        return BackoffStep(attempt, "normal", self.random() * self.cap(attempt))

    def reset(self) -> None:
        """A connection opened: the next failure starts from the smallest window again."""
        self.attempt = 0
