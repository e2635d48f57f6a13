"""Run one scenario against one target: the coordinator's sequence of phases.

1. start (or reach) the target; start sampling its CPU/RSS and /stats;
2. spawn worker processes and connect every reading subscriber, then the stalled ones;
3. publish for ``duration`` (or, idle scenarios, just hold the connections);
4. wait for acknowledgements, let subscribers drain, collect their records;
5. stop everything — workers, stalled sockets, the server — in ``finally`` blocks.

Every phase has a time bound derived from the scenario, so a run that goes wrong
ends with an error instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

from loadtest.publishers import ChannelState, Publisher
from loadtest.report import RunData, build_report
from loadtest.sampler import Sampler
from loadtest.scenarios import Scenario
from loadtest.stalled import StalledClient, open_stalled, watch
from loadtest.targets import TargetSpec, start_target
from loadtest.workers import Board, WorkerPlan, WorkerPool

__all__ = ["RunOptions", "pin_self", "raise_fd_limit", "run_scenario"]


@dataclass(frozen=True)
class RunOptions:
    """How to run, as opposed to what (the scenario) and against what (the target)."""

    pin: bool = False
    """Pin a started server to core 0 (taskset) and the tool to core 1."""
    progress: bool = False
    """Print a live progress line on stderr."""
    server_pid: int | None = None
    """Pid to sample for a ``--url`` target (CPU/RSS), if known."""
    label: str | None = None
    subscribe_urls: tuple[str, ...] = ()
    """More nodes of a cluster: subscriber workers connect round-robin over the target's
    URL and these, publishers to the target's URL only (publish on one node, subscribe
    on all)."""


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one (10k connections need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin_self(core: int = 1) -> bool:
    """Pin this process (and so the workers it spawns) to ``core``, if the machine has it."""
    if core >= (os.cpu_count() or 1):
        return False
    os.sched_setaffinity(0, {core})
    return True


def _plans(
    scenario: Scenario,
    url: str,
    connect_wait: float,
    more_urls: tuple[str, ...] = (),
    client: str | None = None,
) -> list[WorkerPlan]:
    specs = scenario.subscriber_specs()
    urls = (url, *more_urls)
    workers = max(1, min(scenario.processes, len(specs) or 1))
    lifetime = connect_wait + scenario.duration + scenario.drain + 180.0
    return [
        WorkerPlan(
            worker=w,
            url=urls[w % len(urls)],
            client=client or scenario.client,
            idle=scenario.idle,
            subscribers=tuple(s for s in specs if s.worker % workers == w),
            channels=tuple(scenario.channel_names),
            connect_concurrency=scenario.connect_concurrency,
            connect_timeout=min(30.0, connect_wait),
            closed_loop=scenario.rate is None and not scenario.idle,
            slow_rcvbuf=scenario.slow_rcvbuf,
            lifetime=lifetime,
            latency_every=scenario.latency_every,
            compression=scenario.compression,
        )
        for w in range(workers)
    ]


class _Progress:
    """The live line on stderr: elapsed time, published, delivered, server CPU/RSS."""

    def __init__(
        self,
        title: str,
        duration: float,
        board: Board,
        sampler: Sampler,
        channels: list[ChannelState],
    ) -> None:
        self.title = title
        self.duration = duration
        self.board = board
        self.sampler = sampler
        self.channels = channels
        self.start = time.monotonic()
        self.last = (self.start, 0)

    def line(self) -> str:
        now = time.monotonic()
        received = self.board.received()
        prev_t, prev_n = self.last
        rate = (received - prev_n) / (now - prev_t) if now > prev_t else 0.0
        self.last = (now, received)
        sent = sum(c.sent for c in self.channels)
        text = (
            f"[{self.title}] {min(now - self.start, self.duration):5.1f}/{self.duration:.0f}s "
            f"published {sent:,} delivered {received:,} ({rate:,.0f}/s) "
            f"connected {self.board.connected():,}"
        )
        usage = [u for u in self.sampler.usage if u.cpu_percent == u.cpu_percent]  # not NaN
        if usage:
            u = usage[-1]
            text += f" server cpu {u.cpu_percent:.0f}% rss {u.rss_bytes / 2**20:.0f} MB"
        return text

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            sys.stderr.write("\r\x1b[2K" + self.line())
            sys.stderr.flush()


async def run_scenario(
    scenario: Scenario, spec: TargetSpec, options: RunOptions | None = None
) -> dict[str, Any]:
    """Run ``scenario`` against ``spec`` and return the result document (see README)."""
    options = options or RunOptions()
    scenario = scenario.validated()
    raise_fd_limit()
    started_at = time.time()
    connect_wait = 30.0 + (scenario.subscribers + scenario.stalled) / 200.0
    async with start_target(spec, scenario, pin=options.pin) as target:
        data = RunData(scenario=scenario, target=target, label=options.label or spec.label)
        data.started_at = started_at
        # Idle scenarios measure memory per connection: polling /stats there (a document
        # built over every connection, each second) would add its transient allocations
        # to the server's RSS, and only broadcaster serves it. No queue depth to plot.
        sampler = Sampler(
            pid=target.pid or options.server_pid,
            http_base=None if scenario.idle else target.http_base,
        )
        data.sampler = sampler
        sampler.start()
        data.rss_marks["before_connect"] = await _settled_rss(sampler)
        plans = _plans(scenario, target.url, connect_wait, options.subscribe_urls, spec.client)
        board = Board(len(plans), scenario.channels)
        pool = WorkerPool(plans, board)
        stalled: list[StalledClient] = []
        side_tasks: list[asyncio.Task[None]] = []
        try:
            await pool.start(wait_s=60.0)
            data.ready = await pool.connect(wait_s=connect_wait)
            if scenario.stalled:
                stalled = await open_stalled(
                    target.url,
                    scenario.channel_names,
                    scenario.stalled,
                    scenario.stalled_rcvbuf,
                    wait_s=min(30.0, connect_wait),
                    sse=(spec.client or scenario.client) == "sse",
                )
            data.stalled = stalled
            data.rss_marks["after_connect"] = _rss(sampler)
            await _publish_phase(
                scenario, target.url, pool, board, sampler, data, options, side_tasks
            )
            data.rss_marks["end"] = _rss(sampler)
        finally:
            for task in side_tasks:
                task.cancel()
            for task in side_tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if options.progress:
                sys.stderr.write("\n")
            await asyncio.to_thread(pool.shutdown)
            for client in stalled:
                client.close()
            await sampler.stop()
        data.server_log_tail = _log_tail(target.log_path)
    return build_report(data)


async def _publish_phase(
    scenario: Scenario,
    url: str,
    pool: WorkerPool,
    board: Board,
    sampler: Sampler,
    data: RunData,
    options: RunOptions,
    side_tasks: list[asyncio.Task[None]],
) -> None:
    loop = asyncio.get_running_loop()
    base = dict.fromkeys(scenario.channel_names, 0)
    for report in data.ready:
        for name, seq in report.get("base_seqs", {}).items():
            base[name] = max(base[name], seq)
    channels = [
        ChannelState(name=name, index=i, base_seq=base[name])
        for i, name in enumerate(scenario.channel_names)
    ]
    data.channels = channels
    publishers: list[Publisher] = []
    if not scenario.idle:
        per_channel = [0] * scenario.channels
        for p in range(scenario.publishers):
            per_channel[p % scenario.channels] += 1
        for p in range(scenario.publishers):
            channel = channels[p % scenario.channels]
            rate = None
            if scenario.rate is not None:
                rate = scenario.rate / per_channel[channel.index]
            publishers.append(
                Publisher(
                    p,
                    url,
                    channel,
                    rate=rate,
                    size=scenario.size,
                    window=scenario.window,
                    lead=scenario.lead,
                    board=board,
                    payload=scenario.payload,
                )
            )
        await asyncio.gather(*(pub.open() for pub in publishers))
    data.publishers = publishers

    lead_in = 0.3
    start = loop.time() + lead_in
    data.epoch_ns = time.time_ns() + int(lead_in * 1e9)
    sampler.rebase(time.monotonic() + lead_in)
    pool.go(data.epoch_ns)
    end = start + scenario.duration
    if data.stalled:
        until = time.monotonic() + lead_in + scenario.duration + scenario.drain + 30.0
        side_tasks.append(asyncio.create_task(watch(data.stalled, 0.05, until)))
    if options.progress:
        title = f"{scenario.name} -> {data.label}"
        progress = _Progress(title, scenario.duration, board, sampler, channels)
        side_tasks.append(asyncio.create_task(progress.run()))

    await asyncio.sleep(max(0.0, start - loop.time()))
    data.rss_marks["publish_start"] = _rss(sampler)
    data.cpu_marks["publish_start"] = sampler.cpu_seconds()
    if publishers:
        await asyncio.gather(*(pub.run(start, end) for pub in publishers))
        data.publish_end_s = loop.time() - start
        await asyncio.gather(*(pub.finish(10.0) for pub in publishers))
    else:
        await asyncio.sleep(max(0.0, end - loop.time()))
        data.publish_end_s = loop.time() - start
    final = {c.name: c.final_seq for c in channels}
    data.worker_results = await pool.stop(final, scenario.drain, wait_s=60.0)
    data.cpu_marks["drained"] = sampler.cpu_seconds()
    data.drained_s = loop.time() - start
    for client in data.stalled:
        client.check()
    if data.stalled:
        async with asyncio.timeout(10.0):
            await asyncio.gather(*(c.autopsy(idle_s=0.5) for c in data.stalled))
    data.stalled_results = [c.result(data.epoch_ns) for c in data.stalled]


def _rss(sampler: Sampler) -> int | None:
    point = sampler.sample_now()
    return point.rss_bytes if point is not None else None


async def _settled_rss(
    sampler: Sampler, *, within: int = 64 * 1024, step: float = 0.25, limit: float = 10.0
) -> int | None:
    """The server's RSS once start-up has finished growing it.

    A server may still be starting when its port accepts: broadcaster opens
    its HTTP API (and imports aiohttp, ~13 MB) after the WebSocket port. Read
    too early, that import would be charged to the connections opened next
    (~1 KB each of S4's 10,000).
    """
    last = _rss(sampler)
    for _ in range(round(limit / step)):
        await asyncio.sleep(step)
        now = _rss(sampler)
        if last is None or now is None or abs(now - last) < within:
            return now
        last = now
    return last


def _log_tail(path: os.PathLike[str] | None, lines: int = 30) -> list[str]:
    if path is None:
        return []
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except OSError:
        return []
