"""Writes each scheduled connection once, at the end of the loop iteration.

Pushes during an iteration only add the connection here (once); one
callback per iteration then hands each connection one joined batch. That is
hot path rule 3 of docs/ARCHITECTURE.md (a connection is written once per
loop iteration): the cost of a write is paid per connection per iteration,
not per message.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["FlushScheduler", "Flushable"]


class Flushable(Protocol):
    def flush(self, _outbox: Any = None) -> None: ...


class FlushScheduler:
    """Collects connections that have something to write and flushes them in one callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[Flushable] = []
        self._armed = False

    def schedule(self, target: Flushable, _outbox: object = None) -> None:
        """Flush `target` at the end of this iteration (`_outbox`: the caller's, unused)."""
        self._pending.append(target)
        if not self._armed:
            self._armed = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._armed = False
        pending = self._pending
        self._pending = []
        for target in pending:
            target.flush()
