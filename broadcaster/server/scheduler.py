"""Writes each scheduled connection once, at the end of the loop iteration.

Pushes during an iteration only add the connection here (once); one
callback per iteration then hands each connection one joined batch. That is
hot path rule 3 of docs/ARCHITECTURE.md (a connection is written once per
loop iteration): the cost of a write is paid per connection per iteration,
not per message.

A connection stays marked scheduled from its push to its flush, and pushes
to a scheduled connection add nothing. So one connection's flush raising
must not end the callback: every connection after it in the list would
stay marked and never be written again. Each flush is guarded on its own
(server/loops.py's "flush" loop: logged once, counted).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from broadcaster.server.loops import LoopGuard

__all__ = ["FlushScheduler", "Flushable"]


class Flushable(Protocol):
    def flush(self, _outbox: Any = None) -> None: ...


class FlushScheduler:
    """Collects connections that have something to write and flushes them in one callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop, guard: LoopGuard) -> None:
        self._loop = loop
        self._guard = guard
        self._pending: list[Flushable] = []
        self._armed = False
        # Test faults (server/faults.py) get their own callback: the usual one checks nothing.
        self._callback = self._flush if guard.fault_hook is None else self._flush_with_faults

    def schedule(self, target: Flushable, _outbox: object = None) -> None:
        """Flush `target` at the end of this iteration (`_outbox`: the caller's, unused)."""
        self._pending.append(target)
        if not self._armed:
            self._armed = True
            self._loop.call_soon(self._callback)

    def _flush(self) -> None:
        self._armed = False
        pending = self._pending
        self._pending = []
        for target in pending:
            try:
                target.flush()
            except Exception as exc:
                self._guard.failed(exc)

    def _flush_with_faults(self) -> None:
        """`_flush` with the test fault hook called after each connection's flush."""
        self._armed = False
        pending = self._pending
        self._pending = []
        for target in pending:
            try:
                target.flush()
                self._guard.fault()
            except Exception as exc:
                self._guard.failed(exc)
