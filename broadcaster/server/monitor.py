"""The server's periodic observer: event-loop lag and `$sys.stats`.

Each lag reading also goes to the server's load shedding (`Broadcaster.lag_sampled`).

One task wakes every `interval` seconds on absolute deadlines. How late it
wakes is the event-loop lag (a loop busy with a long callback wakes every
timer late). On each tick, only while `$sys.stats` has subscribers, it
publishes the /stats document there (the `top` worst connections, the
busiest channels, aggregates of all). Nobody watching costs one dictionary
lookup per tick. Rates are not sampled here: `rates.py` reads them lazily
for what a document shows.

The interval (`[server] stats_interval`, 0.5 s by default) is below one
second so that subscribers get a document at least once a second even when
a tick runs a little late.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from broadcaster.server.stats import build_stats
from broadcaster.server.system import STATS_CHANNEL, publish_local

if TYPE_CHECKING:
    from broadcaster.server.app import Broadcaster
    from broadcaster.server.loops import LoopGuard, Loops

__all__ = ["STATS_TOP", "Monitor"]

# Connections detailed in each $sys.stats document; the rest are in its histogram.
STATS_TOP = 50
# Channels in each `$sys.stats` document: the busiest (the dashboard shows 30);
# `totals` still covers all of them.
STATS_CHANNELS = 100


class Monitor:
    """Measures loop lag and feeds `$sys.stats`; start() after the hub exists."""

    def __init__(
        self,
        app: Broadcaster,
        *,
        interval: float = 0.5,
        stats_top: int = STATS_TOP,
    ) -> None:
        self.app = app
        self.interval = interval
        self.stats_top = stats_top
        self.loop_lag = 0.0
        """Seconds the last tick woke after its deadline."""
        self.ticks = 0
        self.stats_published = 0

    def start(self, loops: Loops) -> None:
        """Run as the guarded loop "monitor", with "stats" ($sys.stats) a separately guarded step.

        Separate guards: a failing /stats document must not stop the lag
        readings that load shedding depends on, nor the reverse.
        """
        self._stats_guard = loops.guard("stats")
        loops.start("monitor", self._run, steps=("stats",))

    async def _run(self, guard: LoopGuard) -> None:
        loop = self.app.loop
        stats = self._stats_guard
        next_at = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            now = loop.time()
            self.loop_lag = max(0.0, now - next_at)
            next_at += self.interval
            if next_at <= now:  # a stall longer than the interval: do not tick in a burst
                next_at = now + self.interval
            # Load shedding acts on each reading (security/overload.py).
            guard.run(self._sample, now)
            stats.run(self.tick, now)

    def _sample(self, now: float) -> None:
        self.app.lag_sampled(self.loop_lag, now)

    def tick(self, now: float) -> None:
        """Publish /stats on `$sys.stats` if anyone listens."""
        self.ticks += 1
        hub = self.app.hub
        channel = hub.channels.get(STATS_CHANNEL)
        if channel is not None and channel.subscriptions:
            view = self.app.http.view
            if view is not None:  # a worker: every worker's document, merged
                view.publish_stats(channel, top=self.stats_top, max_channels=STATS_CHANNELS)
                self.stats_published += 1
                return
            document = build_stats(
                self.app, top=self.stats_top, sort="depth", max_channels=STATS_CHANNELS
            )
            publish_local(self.app.factory, channel, document)
            self.stats_published += 1
