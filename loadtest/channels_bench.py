"""What many channels cost the server between messages: `python -m loadtest.channels_bench`.

Starts a real in-process server on a free loopback port, creates N channels
(100,000 by default) by publishing one message to each, then times the
periodic work that looks at channels, each as the longest single call (the
event loop is held for that long):

- the `/stats` document with every channel in it (what `$sys.stats` built
  before it was capped) against the document with the 100 busiest
  (`$sys.stats` now);
- one idle-channel sweep call (`Hub.sweep_idle`, bounded by its budget), and
  the sweep calls it takes to free all N once they are unused.

Bounded: one server, N publishes, a fixed number of rounds; it stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from broadcaster.config import parse_config
from broadcaster.core.hub import IDLE_SWEEP_BUDGET
from broadcaster.server.app import Broadcaster
from broadcaster.server.monitor import STATS_CHANNELS
from broadcaster.server.stats import build_stats

CONFIG = """
[server]
host = "127.0.0.1"
port = 0
idle_channel_ttl = 3600.0  # the server's own sweeper never frees one during the run

[defaults]
history_size = 1  # channels keeping messages wait for the idle sweep (others go at once)

[api]
enabled = false
"""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


async def _run(channels: int, rounds: int) -> None:
    server = Broadcaster(parse_config(CONFIG, source="<channels_bench>"))
    await server.start()
    try:
        for i in range(channels):
            await server.publish(f"bench.{i}", i)
        print(f"{channels:,} channels, {rounds} rounds (median of the rounds)")

        def timed(call: Callable[[], object]) -> float:
            start = time.perf_counter()
            call()
            return time.perf_counter() - start

        every = [timed(lambda: build_stats(server, top=50)) for _ in range(rounds)]
        capped = [
            timed(lambda: build_stats(server, top=50, max_channels=STATS_CHANNELS))
            for _ in range(rounds)
        ]
        print(f"/stats document, every channel: {_ms(statistics.median(every))}")
        print(
            f"/stats document, the {STATS_CHANNELS} busiest channels: "
            f"{_ms(statistics.median(capped))}"
        )

        hub = server.hub
        now = server.loop.time()
        # Two passes over every candidate: the first sees each unused, the
        # second (a TTL later) frees it. A pass takes several calls (the budget).
        sweeps = [
            timed(lambda: hub.sweep_idle(now)) for _ in range(-(-channels // IDLE_SWEEP_BUDGET))
        ]
        later = now + hub.idle_ttl
        while hub.channels and len(sweeps) < 10 * channels:
            sweeps.append(timed(lambda: hub.sweep_idle(later)))
        print(
            f"idle sweep ({IDLE_SWEEP_BUDGET:,} per call): {len(sweeps)} calls saw and freed "
            f"{hub.freed:,} channels; longest call {_ms(max(sweeps))}, all {_ms(sum(sweeps))}"
        )
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.channels_bench", description=__doc__)
    parser.add_argument("--channels", type=int, default=100_000, help="channels to create")
    parser.add_argument("--rounds", type=int, default=5, help="timed builds of each document")
    args = parser.parse_args()
    asyncio.run(_run(args.channels, args.rounds))


if __name__ == "__main__":
    main()
