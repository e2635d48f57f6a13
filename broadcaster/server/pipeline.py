"""A connection's publishes in flight: sent without waiting, answered in op order.

Why: with the local bus of `serve --workers` a publish is a round trip to
the supervisor (about 120 µs idle, far more under load). A WebSocket
connection that waited for each ack before reading its next frame would
publish one message per round trip, each reaching the workers alone, so
each subscriber would get one write per message instead of one joined write
per loop iteration. A connection therefore sends each publish as it reads
it (`Broadcaster.submit`: the link keeps their order, the bus gives them
their seqs in that order) and keeps the acks it waits for here.

What this keeps:

- replies in op order: a publish's reply (`published`, or `error`) is sent
  only when every publish read before it has had its own, whatever order
  the futures complete in (only the oldest entries are ever answered);
- a bound: at `limit` publishes in flight the connection stops reading
  (`wait_for_room`), so a fast publisher cannot queue without limit;
- nothing else overtakes: the connection `drain`s (waits until every
  publish in flight is answered) before any reply that is not a pipelined
  publish's own (another op, a refused publish, a `block` publish).

Pure bookkeeping over asyncio futures, with no transport: the connection
says how a settled publish is answered (`answer`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["MAX_IN_FLIGHT", "PublishPipeline"]

MAX_IN_FLIGHT = 64
"""Publishes one connection may have in flight before it stops reading its frames."""

T = TypeVar("T")


class PublishPipeline(Generic[T]):
    """The in-flight publishes of one connection, answered strictly in the order added.

    `answer(future, op)` is called once per publish added, oldest first, when
    it and every publish added before it are done (the future done: its
    result, exception or cancellation is the answer's to read). After
    `close()` nothing more is answered.
    """

    __slots__ = ("_answer", "_closed", "_entries", "_waiter", "limit")

    def __init__(
        self, answer: Callable[[asyncio.Future[int], T], None], limit: int = MAX_IN_FLIGHT
    ) -> None:
        if limit < 1:
            raise ValueError("a pipeline needs room for one publish")
        self.limit = limit
        self._answer = answer
        self._entries: deque[tuple[asyncio.Future[int], T]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        """Publishes added and not answered yet (falsy when there are none)."""
        return len(self._entries)

    @property
    def full(self) -> bool:
        """Whether `limit` publishes are in flight: read no more until one is answered."""
        return len(self._entries) >= self.limit

    def add(self, future: asyncio.Future[int], op: T) -> None:
        """Keep `future` (a publish sent, its seq to come) to answer `op` in its turn."""
        self._entries.append((future, op))
        future.add_done_callback(self._settle)

    def _settle(self, _done: asyncio.Future[int]) -> None:
        """Answer the oldest publishes that are done, stopping at the first that is not."""
        entries = self._entries
        while entries and entries[0][0].done():
            future, op = entries.popleft()
            if not self._closed:
                self._answer(future, op)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_for_room(self) -> None:
        """Return once fewer than `limit` publishes are in flight."""
        await self._wait_until(self.limit - 1)

    async def drain(self) -> None:
        """Return once every publish added is answered (at once when closed)."""
        await self._wait_until(0)

    async def _wait_until(self, most: int) -> None:
        # On a future of our own: a cancelled wait (the connection closing)
        # must not cancel the publishes' futures, which other code completes.
        while len(self._entries) > most and not self._closed:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        """The connection is gone: answer nothing more (the futures still complete)."""
        self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
