"""One guard for every long-lived loop of the server.

The server's background work (the flush callback, the slow-consumer and
idle-channel sweep, the keepalive sweep, the monitor and its `$sys.stats`
publisher) runs in loops nobody awaits. An exception escaping one of them
used to end it silently: slow consumers were no longer cut off, pending
connections were never written again, and nothing said so. Here every
iteration's work runs through a `LoopGuard`, which keeps the loop going,
logs the first failure with its traceback (later ones are counted, and
logged again only every `LOG_EVERY`th time, so a failing loop cannot flood
the log), and counts them for `/stats` (`server.loops`) and `/metrics`
(`broadcaster_loop_errors_total{loop}`). A loop whose task ends anyway (a
stray cancellation, a bug outside its guarded steps) is marked stopped, and
`/healthz` answers 503 naming it, so an orchestrator restarts the process.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from broadcaster.server.faults import FaultHook

__all__ = ["LOG_EVERY", "LoopGuard", "LoopState", "Loops"]

logger = logging.getLogger("broadcaster.loops")

# After the first failure of a loop (logged with its traceback), one line every this many.
LOG_EVERY = 1000


class LoopState(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"


class LoopGuard:
    """The error count and state of one loop; `run` is how its steps are called."""

    __slots__ = ("errors", "fault_hook", "last_error", "name", "state")

    def __init__(self, name: str, fault_hook: FaultHook | None) -> None:
        self.name = name
        self.fault_hook = fault_hook
        self.errors = 0
        self.last_error: str | None = None
        """`Type: message` of the latest failure (None: none yet)."""
        self.state = LoopState.RUNNING

    def run(self, step: Callable[[float], None], now: float) -> None:
        """Call `step(now)`; an exception in it is logged and counted, never propagated."""
        try:
            hook = self.fault_hook
            if hook is not None:
                hook(self.name)
            step(now)
        except Exception as exc:
            self.failed(exc)

    def fault(self) -> None:
        """Raise the fault a test armed for this loop, if any (the caller guards the call)."""
        hook = self.fault_hook
        if hook is not None:
            hook(self.name)

    def failed(self, exc: BaseException) -> None:
        """Count one failed iteration; log the first with its traceback, then every LOG_EVERYth."""
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.errors == 1:
            logger.error(
                "loop %r: an iteration failed; the loop goes on. Further failures are "
                "counted (/stats server.loops, broadcaster_loop_errors_total) and logged "
                "every %dth time",
                self.name,
                LOG_EVERY,
                exc_info=exc,
            )
        elif self.errors % LOG_EVERY == 0:
            logger.error(
                "loop %r has failed %d times; latest: %s", self.name, self.errors, self.last_error
            )

    def snapshot(self) -> dict[str, Any]:
        """The loop as /stats shows it."""
        return {"state": self.state.value, "errors": self.errors, "last_error": self.last_error}


LoopBody = Callable[[LoopGuard], Coroutine[Any, Any, None]]


class Loops:
    """The guards of one server's loops, and the tasks of those that run as tasks."""

    def __init__(self, fault_hook: FaultHook | None = None) -> None:
        self.fault_hook = fault_hook
        self.guards: dict[str, LoopGuard] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def guard(self, name: str) -> LoopGuard:
        """A guard for loop `name` (one per name), running until `stop()`."""
        guard = self.guards.get(name)
        if guard is None:
            guard = self.guards[name] = LoopGuard(name, self.fault_hook)
        return guard

    def start(self, name: str, body: LoopBody, *, steps: Iterable[str] = ()) -> None:
        """Run `body(guard)` as a task named `name`.

        `steps` names further guards the body runs (their state follows the task's).
        """
        guards = [self.guard(name), *(self.guard(step) for step in steps)]
        task = asyncio.get_running_loop().create_task(self._supervise(guards, body), name=name)
        self._tasks.append(task)

    async def _supervise(self, guards: list[LoopGuard], body: LoopBody) -> None:
        guard = guards[0]
        try:
            await body(guard)
        except asyncio.CancelledError:
            if not self._stopping:
                logger.error(
                    "loop %r was cancelled while the server runs: it is stopped "
                    "(/healthz answers 503); restart the server",
                    guard.name,
                )
            raise
        except Exception as exc:  # outside the guarded steps: the loop cannot go on
            guard.errors += 1
            guard.last_error = f"{type(exc).__name__}: {exc}"
            logger.error(
                "loop %r stopped (/healthz answers 503); restart the server",
                guard.name,
                exc_info=exc,
            )
        else:
            if not self._stopping:
                logger.error(
                    "loop %r ended while the server runs (/healthz answers 503)", guard.name
                )
        finally:
            for stopped in guards:
                stopped.state = LoopState.STOPPED

    def stopped(self) -> list[str]:
        """Names of the loops that stopped although the server did not ask them to."""
        if self._stopping:
            return []
        return [name for name, guard in self.guards.items() if guard.state is LoopState.STOPPED]

    async def stop(self) -> None:
        """Cancel every loop task and wait for it to end (idempotent)."""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # stop() itself is being cancelled
        for guard in self.guards.values():
            guard.state = LoopState.STOPPED
