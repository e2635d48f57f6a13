"""One keepalive sweep for all connections, instead of a ping task per connection.

websockets' own keepalive runs a task per connection (about 1.5 KB each, kept
for the connection's life); a single periodic task that pings each connection
once per `ping_interval` costs nothing per idle connection. A connection
whose previous ping is still unanswered when the next one is due is dead
(a half-open TCP connection, a frozen peer) and is closed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broadcaster.server.app import Broadcaster
    from broadcaster.server.loops import LoopGuard, Loops

__all__ = ["Keepalive"]


class Keepalive:
    """Pings every connection each `interval` seconds, spread over the interval."""

    def __init__(self, app: Broadcaster, interval: float) -> None:
        self.app = app
        self.interval = interval

    def start(self, loops: Loops) -> None:
        """Run as the guarded loop "keepalive" (stopped by `loops.stop()`)."""
        loops.start("keepalive", self._run)

    async def _run(self, guard: LoopGuard) -> None:
        loop = asyncio.get_running_loop()
        # Checking a few times per interval spreads the pings of connections
        # that arrived together over the interval instead of a burst.
        tick = min(1.0, self.interval / 4)
        while True:
            await asyncio.sleep(tick)
            guard.run(self.sweep, loop.time())

    def sweep(self, now: float) -> None:
        """Ping the connections that are due (a function of its own, so that no
        session stays referenced from the sleeping task between sweeps)."""
        due = now - self.interval
        for session in list(self.app.sessions.values()):
            if session.last_ping <= due:
                session.keepalive(now)
