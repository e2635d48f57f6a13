"""A subscription as an async iterator, over a bounded inbox that pushes back.

When a subscription's inbox is full, the connection's reader waits for the
iterator to take a message: it stops reading the socket, the server's queue
for this client fills, and the channel's strategy decides (drops are then
reported as `gap` events). A Python consumer that cannot keep up is treated
exactly like a slow browser, instead of growing the client's memory without
bound. All subscriptions of one connection share that connection: one that
is never iterated stalls the others once its inbox is full.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Self

from broadcaster.client.events import Message

__all__ = ["Inbox", "Subscription"]


class Inbox:
    """A bounded FIFO with one reader; `put` waits while full; `end` finishes it."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_queue must be >= 1, got {limit}")
        self.limit = limit
        self._items: deque[Message] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._ended = False
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ended(self) -> bool:
        return self._ended

    def full(self) -> bool:
        return len(self._items) >= self.limit

    async def put(self, message: Message) -> None:
        """Append `message`, waiting while the inbox is full (dropped if the inbox ended)."""
        while len(self._items) >= self.limit and not self._ended:
            self._writable.clear()
            await self._writable.wait()
        if not self._ended:
            self._items.append(message)
            self._readable.set()

    async def get(self) -> Message:
        """The next message; raises StopAsyncIteration (or the end error) once ended and empty."""
        while not self._items:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        message = self._items.popleft()
        if len(self._items) < self.limit:
            self._writable.set()
        return message

    def end(self, error: BaseException | None = None) -> None:
        """No more messages: readers drain what is there, then stop (or raise `error`)."""
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._readable.set()
        self._writable.set()


class Subscription:
    """Messages of one channel: `async for msg in subscription`.

    Breaking out of the `async for` unsubscribes (when the iteration is
    finalized); so does `close()` or leaving `async with`.
    """

    def __init__(self, channel: str, max_queue: int, release: Callable[[Subscription], None]):
        self.channel = channel
        self.inbox = Inbox(max_queue)
        self._release = release
        self.closed = False

    async def get(self) -> Message:
        """The next message (raises StopAsyncIteration when the subscription ended)."""
        return await self.inbox.get()

    async def _iterate(self) -> AsyncIterator[Message]:
        try:
            while True:
                try:
                    message = await self.inbox.get()
                except StopAsyncIteration:
                    return
                yield message
        finally:
            self.close()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    def close(self) -> None:
        """Stop receiving this channel here (the client unsubscribes when nobody else listens)."""
        if self.closed:
            return
        self.closed = True
        self.inbox.end()
        self._release(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
