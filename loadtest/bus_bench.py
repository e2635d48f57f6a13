"""The local bus's cost per message (`serve --workers`): `python -m loadtest.bus_bench`.

The bus (workers/bus.py) runs in its own process, as in the supervisor; two
workers (`Broadcaster(worker=...)`) run in this process, each with one
WebSocket subscriber of the channel, so both workers get every message. Then:

- round trip: `Broadcaster.publish` on worker 0, one at a time: publish ->
  bus -> both workers -> ack. Median and p99 in microseconds, next to the
  same call on a one-process server (memory broker), measured in the same run.
- bus CPU per message: the bus process's CPU seconds (from /proc) over
  `--messages` publishes sent from both workers with `--window` in flight
  each, divided by the messages. It does not depend on subscribers: the bus
  writes one frame per interested worker.
- a worker's cost to take in one message (frames decoded from a read of 100
  frames, the Message built from the data bytes) next to a one-process
  server's cost to build it from the published value (`MessageFactory.build`),
  both before fan-out, which is the same code either way.

Rounds are interleaved (workers, one process, workers, ...) and medians
reported, because the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import uvloop
from websockets.asyncio.client import connect

from broadcaster.brokers.base import MessageFactory
from broadcaster.config import parse_config
from broadcaster.core.channel import Channel
from broadcaster.core.policy import ChannelPolicy
from broadcaster.server.app import Broadcaster
from broadcaster.server.websocket import frame_text
from broadcaster.workers.bus import BusServer
from broadcaster.workers.framing import FrameDecoder, encode
from broadcaster.workers.identity import WorkerIdentity
from loadtest.procstat import ProcessTree

CONFIG = """
[server]
host = "127.0.0.1"
port = 0
stats_interval = 3600
"""
CHANNEL = "bench"


async def _serve_bus(path: Path, workers: int) -> None:
    bus = BusServer(path, workers=workers)
    await bus.start()
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await bus.stop()


async def _drain(url: str, ready: asyncio.Event) -> None:
    async with connect(url, max_size=None) as ws:
        await ws.send(f'{{"op":"subscribe","channel":"{CHANNEL}"}}')
        await ws.recv()
        ready.set()
        async for _ in ws:
            pass


async def _round_trips(server: Broadcaster, count: int) -> list[float]:
    times = []
    clock = time.perf_counter
    for i in range(count):
        start = clock()
        await server.publish(CHANNEL, {"i": i, "price": 101.25})
        times.append((clock() - start) * 1e6)
    return times


async def _pipeline_share(server: Broadcaster, count: int, window: int) -> None:
    sent = 0
    while sent < count:
        batch = min(window, count - sent)
        await asyncio.gather(
            *(server.publish(CHANNEL, {"i": sent + j, "price": 101.25}) for j in range(batch))
        )
        sent += batch


async def _with_subscribers(servers: list[Broadcaster]) -> list[asyncio.Task[None]]:
    tasks = []
    for server in servers:
        ready = asyncio.Event()
        tasks.append(asyncio.get_running_loop().create_task(_drain(server.url, ready)))
        await ready.wait()
    return tasks


async def _workers_round(args: argparse.Namespace) -> tuple[list[float], float]:
    run_dir = Path(tempfile.mkdtemp(prefix="busbench-"))
    bus = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.bus_bench",
        "--bus",
        str(run_dir / "bus.sock"),
        "--workers",
        str(args.workers),
        stdin=asyncio.subprocess.PIPE,
    )
    servers: list[Broadcaster] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for _ in range(500):
            if (run_dir / "bus.sock").exists():
                break
            await asyncio.sleep(0.01)
        config = parse_config(CONFIG, source="<bench>")
        for index in range(args.workers):
            server = Broadcaster(config, worker=WorkerIdentity(index, args.workers, run_dir))
            await server.start()
            servers.append(server)
        tasks = await _with_subscribers(servers)
        await _round_trips(servers[0], 200)  # warm-up
        trips = await _round_trips(servers[0], args.round_trips)
        tree = ProcessTree(bus.pid)
        before = tree.sample()[bus.pid].cpu_seconds
        await _pipeline_all(servers, args.messages, args.window)
        after = tree.sample()[bus.pid].cpu_seconds
        return trips, (after - before) / args.messages * 1e6
    finally:
        for task in tasks:
            task.cancel()
        for server in servers:
            await server.stop()
        if bus.stdin is not None:
            bus.stdin.close()
        try:
            await asyncio.wait_for(bus.wait(), 10)
        except TimeoutError:
            bus.kill()
            await bus.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


async def _pipeline_all(servers: list[Broadcaster], count: int, window: int) -> None:
    per = count // len(servers)
    await asyncio.gather(*(_pipeline_share(server, per, window) for server in servers))


async def _single_round(args: argparse.Namespace) -> list[float]:
    server = Broadcaster(parse_config(CONFIG, source="<bench>"))
    await server.start()
    tasks = await _with_subscribers([server, server])
    try:
        await _round_trips(server, 200)
        return await _round_trips(server, args.round_trips)
    finally:
        for task in tasks:
            task.cancel()
        await server.stop()


def _intake_costs(count: int = 20000) -> tuple[float, float]:
    """(µs per message taken in from bus frames, µs per message built in one process)."""
    factory = MessageFactory(frame_text, time.monotonic)
    channel = Channel(CHANNEL, ChannelPolicy(), epoch="e")
    value = {"symbol": "AAPL", "price": 189.25, "ts": 1733500000.123}
    body = orjson.dumps(value)
    frames = b"".join(
        encode({"t": "m", "c": CHANNEL, "s": seq, "tm": 1.0}, body) for seq in range(1, 101)
    )
    decoder = FrameDecoder()
    start = time.process_time()
    for _ in range(count // 100):
        for header, payload in decoder.feed(frames):
            factory.from_data(channel, header["s"], payload, header["tm"])
    intake = (time.process_time() - start) / count * 1e6
    start = time.process_time()
    for seq in range(count):
        factory.build(channel, seq, value)
    built = (time.process_time() - start) / count * 1e6
    return intake, built


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _main(args: argparse.Namespace) -> None:
    bus_trips: list[float] = []
    one_trips: list[float] = []
    cpu: list[float] = []
    for _ in range(args.rounds):
        trips, per_message = await _workers_round(args)
        bus_trips.append(statistics.median(trips))
        bus_trips_p99 = _p(trips, 0.99)
        cpu.append(per_message)
        single = await _single_round(args)
        one_trips.append(statistics.median(single))
        print(
            f"round: workers={args.workers} publish round trip median {bus_trips[-1]:.1f} us "
            f"(p99 {bus_trips_p99:.1f}), one process {one_trips[-1]:.1f} us; "
            f"bus CPU {per_message:.2f} us/message",
            flush=True,
        )
    intake = [_intake_costs() for _ in range(5)]
    print(
        f"a worker takes in a message from the bus in "
        f"{statistics.median(i for i, _ in intake):.2f} us; one process builds it in "
        f"{statistics.median(b for _, b in intake):.2f} us (median of 5 x 20,000)"
    )
    print(
        f"median of {args.rounds} rounds: round trip {statistics.median(bus_trips):.1f} us with "
        f"{args.workers} workers vs {statistics.median(one_trips):.1f} us in one process; "
        f"bus CPU {statistics.median(cpu):.2f} us per message "
        f"({args.messages} messages, window {args.window} per worker)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=40000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bus is not None:
        uvloop.run(_serve_bus(args.bus, args.workers))
        return
    uvloop.run(_main(args))


if __name__ == "__main__":
    main()
