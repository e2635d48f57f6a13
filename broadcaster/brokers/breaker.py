"""A circuit breaker for broker operations: fail fast while the broker is down.

Pure (time is passed in), so unit tests drive every transition with numbers.

- closed: operations run; `threshold` consecutive failures (errors or
  timeouts) open the breaker.
- open: operations are refused at once (the caller answers `unavailable`
  with `retry_after`), until `cooldown` seconds have passed.
- half-open: one operation at a time is let through as a probe; success
  closes the breaker, failure opens it again for another cooldown.

Why: a Redis that is down or hanging must not make every publish wait for
its own timeout; after a few failures the node stops asking and answers
immediately, and the reader's own attempts (or a publish) probe for recovery.
"""

from __future__ import annotations

import enum

__all__ = ["Breaker", "BreakerState"]


class BreakerState(enum.StrEnum):
    """The names `BrokerStatus.breaker` reports (gauge: 0 closed, 1 half-open, 2 open)."""

    CLOSED = "closed"
    HALF_OPEN = "half-open"
    OPEN = "open"


class Breaker:
    """Counts consecutive failures and decides whether an operation may run now."""

    __slots__ = ("_opened_at", "_probing", "cooldown", "failures", "state", "threshold")

    def __init__(self, *, threshold: int, cooldown: float) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        if not cooldown > 0:
            raise ValueError(f"cooldown must be > 0, got {cooldown}")
        self.threshold = threshold
        self.cooldown = cooldown
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self, now: float) -> bool:
        """Whether an operation may run now; a True in half-open takes the probe slot.

        The caller must then report `success`, `failure` or `release`.
        """
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now < self._opened_at + self.cooldown:
                return False
            self.state = BreakerState.HALF_OPEN
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        """An operation succeeded: the broker answers, close."""
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._probing = False

    def failure(self, now: float) -> None:
        """An operation failed or timed out."""
        self.failures += 1
        self._probing = False
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.threshold
        ):
            self.state = BreakerState.OPEN
            self._opened_at = now

    def release(self) -> None:
        """An operation ended without a verdict (cancelled): free the probe slot."""
        self._probing = False

    def retry_after(self, now: float) -> float:
        """Seconds until the next probe may run (0 when closed)."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.cooldown - now)
        return 0.0
