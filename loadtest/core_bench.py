"""The core's cost per delivery without sockets: `python -m loadtest.core_bench`.

One channel, 1,000 subscriptions whose "transport" takes every batch at once,
driven through the same calls the server makes (broker publish, fan-out,
per-iteration flush). It isolates the Python bookkeeping of the hot path from
the kernel's write cost, which dominates real runs; BENCHMARKS.md quotes it for
before/after figures of hot-path changes. It times the process's CPU time, not
the wall clock, so time spent descheduled on a shared machine does not count
(caches shared with other work still do); the best of `--rounds` is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from broadcaster.brokers.base import MessageFactory
from broadcaster.brokers.memory import MemoryBroker
from broadcaster.core.hub import Hub
from broadcaster.core.outbox import Outbox
from broadcaster.core.policy import PolicyTable
from broadcaster.server.websocket import frame_text


class _Sink:
    """Stands in for a session whose socket takes everything."""

    def __init__(self, index: int, pending: list[_Sink], loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.written = 0
        self.outbox = Outbox(
            index,
            on_schedule=lambda _outbox: pending.append(self),
            write_now=lambda _outbox: self.flush(),
            framer=frame_text,
        )

    def flush(self) -> None:
        outbox = self.outbox
        batch = outbox.take_batch(self.loop.time() if outbox.timed else 0.0)
        if batch:
            # As `Subscriber.flush`: a run shared by subscribers comes joined already
            # (getattr: older versions of the package, for before/after runs, lack it).
            joined = getattr(outbox, "joined", None)
            self.written += len(joined or (batch[0] if len(batch) == 1 else b"".join(batch)))
        outbox.written(0)


async def measure(subscribers: int, burst: int, messages: int, rounds: int = 3) -> float:
    """Nanoseconds of core work (CPU time) per delivery (best of `rounds`)."""
    loop = asyncio.get_running_loop()
    hub = Hub(PolicyTable(), epoch="bench")
    broker = MemoryBroker(MessageFactory(frame_text, loop.time), loop.time)
    pending: list[_Sink] = []
    channel = hub.channel("bench")
    assert channel is not None
    for i in range(subscribers):
        hub.subscribe(_Sink(i, pending, loop).outbox, channel)
    data = {"t": 1_700_000_000_000_000_000, "pad": "x" * 80}
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        sent = 0
        while sent < messages:
            for _ in range(burst):
                await broker.publish(channel, data)
                sent += 1
            flushing, pending[:] = pending[:], []
            for sink in flushing:
                sink.flush()
        best = min(best, time.process_time() - started)
    return best / (messages * subscribers) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--burst", type=int, action="append", help="messages per iteration (default: 1 and 10)"
    )
    args = parser.parse_args()
    for burst in args.burst or (1, 10):
        ns = asyncio.run(measure(args.subscribers, burst, args.messages * burst, args.rounds))
        print(f"{burst:>2} message(s) per iteration: {ns:,.0f} ns per delivery")


if __name__ == "__main__":
    main()
