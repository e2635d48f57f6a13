"""Every broker operation goes through a `Guard`: a per-operation timeout and the breaker.

Why one place: "Redis down or slow never freezes a node" holds only if no
operation can wait longer than `timeout`, and if after a few failures
publishes stop waiting at all. The guard also remembers whether the last
operation reached the broker, for `status()` (/healthz, /stats, metrics).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from broadcaster.brokers.base import BrokerStatus
from broadcaster.brokers.breaker import Breaker, BreakerState
from broadcaster.errors import BrokerUnavailable

__all__ = ["FAILURES", "Guard"]

logger = logging.getLogger("broadcaster.redis")

T = TypeVar("T")

# What counts as "the broker did not answer": Redis errors (connection
# refused or reset, timeouts, LOADING, READONLY...), socket errors and our
# own per-operation timeout.
FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# The smallest retry_after we advertise, so clients do not spin.
MIN_RETRY_AFTER = 0.1


class Guard:
    """Runs operations with a timeout through a circuit breaker; tracks up/down."""

    def __init__(
        self,
        kind: str,
        breaker: Breaker,
        *,
        timeout: float,
        clock: Callable[[], float],
        on_connection_lost: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.kind = kind
        self.breaker = breaker
        self.timeout = timeout
        self._clock = clock
        self._on_connection_lost = on_connection_lost
        self._resets: set[asyncio.Task[None]] = set()
        self.up = False
        self.detail: str | None = "not connected yet"

    def close(self) -> None:
        """Cancel pending connection resets (the broker is stopping)."""
        for task in list(self._resets):
            task.cancel()

    def status(self) -> BrokerStatus:
        return BrokerStatus(
            kind=self.kind,
            up=self.up and self.breaker.state is BreakerState.CLOSED,
            breaker=self.breaker.state.value,
            detail=self.detail,
        )

    def retry_after(self) -> float:
        return round(max(self.breaker.retry_after(self._clock()), MIN_RETRY_AFTER), 3)

    def unavailable(self, what: str) -> BrokerUnavailable:
        reason = self.detail or "unreachable"
        return BrokerUnavailable(
            f"the broker cannot {what} now ({reason}); circuit {self.breaker.state.value}",
            retry_after=self.retry_after(),
        )

    async def run(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation` within the timeout, or raise `BrokerUnavailable` (at once if open)."""
        if not self.breaker.allow(self._clock()):
            raise self.unavailable(what)
        try:
            async with asyncio.timeout(self.timeout):
                result = await operation()
        except asyncio.CancelledError:
            self.breaker.release()
            raise
        except FAILURES as exc:
            self.failed(exc)
            raise self.unavailable(what) from None
        except Exception as exc:
            # Not a Redis or socket error (a reply we could not read, a bug):
            # still a failed operation, or a half-open probe would keep its
            # slot for ever and the breaker would never probe again.
            logger.exception("%s broker: %s failed unexpectedly", self.kind, what)
            self.failed(exc)
            raise self.unavailable(what) from exc
        self.succeeded()
        return result

    def succeeded(self) -> None:
        if not self.up:
            logger.info("%s broker is up", self.kind)
        self.up = True
        self.detail = None
        self.breaker.success()

    def failed(self, exc: BaseException) -> None:
        before = self.breaker.state
        self.up = False
        self.detail = _describe(exc)
        self.breaker.failure(self._clock())
        if self._on_connection_lost is not None and isinstance(exc, RedisConnectionError | OSError):
            # Idle pooled connections to a Redis that went away are stale too:
            # drop them now, or each would fail once after Redis returns.
            task = asyncio.get_running_loop().create_task(self._on_connection_lost())
            self._resets.add(task)
            task.add_done_callback(self._resets.discard)
        if self.breaker.state is not before:
            logger.warning(
                "%s broker: circuit %s after %d failure(s): %s",
                self.kind,
                self.breaker.state.value,
                self.breaker.failures,
                self.detail,
            )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
