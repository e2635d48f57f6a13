"""Test-only fault injection into the server's background loops.

A loop that dies silently is only found in production unless a test can
make one of its iterations fail. `Broadcaster(config, fault_hook=faults)`
hands the hook to every loop guard (server/loops.py); each guarded step
calls it with the loop's name before doing its work, and an armed fault
raises there, once. Without a hook (the default) the guards skip the call:
nothing is checked per message, and per iteration only `hook is None`.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["FaultHook", "FaultInjector", "InjectedFault"]

FaultHook = Callable[[str], None]
"""Called with a loop's name at the start of each guarded step; raising fails that step."""


class InjectedFault(RuntimeError):
    """A failure a test asked for; nothing is wrong with the server."""


class FaultInjector:
    """A fault hook whose faults tests arm by loop name: each raises once, in the next step."""

    def __init__(self) -> None:
        self._armed: dict[str, list[BaseException]] = {}
        self.fired: dict[str, int] = {}
        """Faults raised so far, by loop name."""

    def arm(self, loop: str, error: BaseException | None = None) -> None:
        """Make the next step of `loop` raise `error` (an `InjectedFault` by default).

        An `Exception` is what a bug in the step would raise; a
        `BaseException` such as `asyncio.CancelledError` escapes the guard
        and ends the loop, as a stray cancellation would.
        """
        fault = error if error is not None else InjectedFault(f"fault injected into {loop!r}")
        self._armed.setdefault(loop, []).append(fault)

    def armed(self, loop: str) -> int:
        """Faults of `loop` not raised yet."""
        return len(self._armed.get(loop, ()))

    def __call__(self, loop: str) -> None:
        faults = self._armed.get(loop)
        if faults:
            self.fired[loop] = self.fired.get(loop, 0) + 1
            raise faults.pop(0)
