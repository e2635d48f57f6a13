"""Publishers waiting for room on `block` channels, first come first served.

A publish into a `block` channel proceeds only when every local subscriber's
queue has room. Waiters queue per channel in arrival order; a new publisher
queues behind existing waiters even if room just appeared, so publishes keep
the order in which they arrived.

When the server stops, waiting publishers are refused with `BrokerUnavailable`
(PROTOCOL.md's `unavailable`) saying so, and so is any publish that would
start waiting afterwards: a caller that was never cancelled must not get a
bare `CancelledError`, nor wait for room that will never come.
"""

from __future__ import annotations

import asyncio
from collections import deque

from broadcaster.core.channel import Channel
from broadcaster.errors import BrokerUnavailable

__all__ = ["RoomWaiters"]


class RoomWaiters:
    """Per-channel FIFO of futures, woken one at a time as room returns."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._closed = False

    def must_wait(self, channel: Channel) -> bool:
        """Whether a publish to `channel` has to queue now."""
        return channel.full_count > 0 or bool(self._queues.get(channel.name))

    def waiting(self, channel: Channel) -> int:
        return len(self._queues.get(channel.name, ()))

    async def wait(self, channel: Channel) -> None:
        """Return once `channel` has room and this caller is first in line.

        Raises `BrokerUnavailable` if the server stops first (nothing is published).
        """
        if self._closed:
            raise _stopping(channel.name)
        queue = self._queues.setdefault(channel.name, deque())
        waiter: asyncio.Future[None] = self._loop.create_future()
        queue.append(waiter)
        try:
            while True:
                self.wake(channel)
                await waiter
                if channel.has_room():
                    return
                # Room vanished before we ran (a message from elsewhere): wait again, still first.
                waiter = self._loop.create_future()
                queue[0] = waiter
        finally:
            if waiter in queue:
                queue.remove(waiter)
            if queue:
                # The next in line re-checks for room when it runs, after our publish.
                self.wake(channel)
            else:
                del self._queues[channel.name]

    def wake(self, channel: Channel) -> None:
        """Let the first waiter of `channel` go if there is room."""
        queue = self._queues.get(channel.name)
        if queue and channel.has_room() and not queue[0].done():
            queue[0].set_result(None)

    def refuse_all(self) -> None:
        """The server is stopping: refuse every waiting publisher, and every later one."""
        self._closed = True
        for name, queue in self._queues.items():
            for waiter in queue:
                if not waiter.done():
                    waiter.set_exception(_stopping(name))


def _stopping(name: str) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"the server is stopping: the publish to {name!r} waited for room on a block channel "
        "and was not published; publish it again to another node or once the server is back"
    )
