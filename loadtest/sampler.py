"""Server-side observations over time: CPU% and RSS from /proc, queue depth from /stats.

CPU and RSS need the server's pid, so they exist only for servers the tool started
(or ``--server-pid``). ``GET /stats`` is optional: the baselines do not serve it,
and a broadcaster with many connections should not be asked for all of them every
second, so the sampler asks for ``?top=100&sort=depth`` and keeps the maximum and
the sum over those. After three failures in a row it stops asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadtest.procstat import (
    ProcessTree,
    ProcSample,
    core_busy_between,
    core_times,
    usage_between,
)

__all__ = ["Sampler", "StatsPoint", "UsagePoint"]


@dataclass(frozen=True)
class UsagePoint:
    """One sample: seconds since the sampler's epoch, CPU% of one core, RSS in bytes.

    NaN percentages mean "not measured at this point" (a phase mark taken too soon
    after the previous sample).

    ``client_cpu_percent`` is the load tool's own CPU (coordinator and workers), so a
    reader can tell when the client, not the server, was the limit.
    """

    t: float
    cpu_percent: float
    rss_bytes: int
    client_cpu_percent: float = math.nan
    wait_percent: float = math.nan
    """Server time runnable but not running (another process had the core), % of wall."""
    client_wait_percent: float = math.nan
    cores_busy: dict[str, float] = field(default_factory=dict)
    """Busy % per core of the whole machine (softirq and other tenants included)."""


@dataclass(frozen=True)
class StatsPoint:
    """Queue depth as /stats reported it at ``t``."""

    t: float
    connections: int
    max_depth: int
    total_depth: int
    paused: int


@dataclass
class Sampler:
    """Background sampling; :meth:`rebase` moves time zero to the start of publishing."""

    pid: int | None
    http_base: str | None
    interval: float = 0.5
    stats_interval: float = 1.0
    epoch: float = field(default_factory=time.monotonic)
    usage: list[UsagePoint] = field(default_factory=list)
    stats: list[StatsPoint] = field(default_factory=list)
    stats_available: bool | None = None
    stats_error: str | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _last: tuple[float, dict[int, ProcSample], dict[int, ProcSample]] | None = None
    _last_cores: dict[str, tuple[int, int]] = field(default_factory=dict)

    def start(self) -> None:
        if self.pid is not None:
            self.sample_now()
            self._tasks.append(asyncio.create_task(self._usage_loop()))
        if self.http_base is not None:
            self._tasks.append(asyncio.create_task(self._stats_loop()))

    def rebase(self, epoch: float) -> None:
        """Make ``epoch`` (a time.monotonic() value) time zero for every point."""
        shift = epoch - self.epoch
        self.epoch = epoch
        self.usage = [dataclasses.replace(p, t=p.t - shift) for p in self.usage]
        self.stats = [dataclasses.replace(p, t=p.t - shift) for p in self.stats]

    def cpu_seconds(self) -> float | None:
        """CPU seconds the server (its process tree) has used so far; None if not sampled.

        Read at phase marks, so a run can report server CPU per delivery: the
        figure that compares across load clients, unlike CPU percent.
        """
        if self.pid is None:
            return None
        server = ProcessTree(self.pid).sample()
        if not server:
            return None
        return sum(s.cpu_seconds for s in server.values())

    def sample_now(self) -> UsagePoint | None:
        """Take one usage sample now (also used to mark phase boundaries).

        CPU and wait percentages cover the time since the last sample that was at
        least 0.1 s earlier; closer samples (phase marks) report RSS only, since a
        few jiffies over a millisecond would read as thousands of percent.
        """
        if self.pid is None:
            return None
        tree = ProcessTree(self.pid)
        server = tree.sample()
        if not server:
            return None
        client = ProcessTree(os.getpid()).sample(exclude=frozenset(server))
        now = time.monotonic()
        rss = sum(s.rss_bytes for s in server.values())
        if self._last is None:
            self._last = (now, server, client)
            self._last_cores = core_times()
            point = UsagePoint(now - self.epoch, 0.0, rss)
        else:
            then, server_before, client_before = self._last
            if now - then < 0.1:
                point = UsagePoint(now - self.epoch, math.nan, rss)
            else:
                cpu, wait = usage_between(server_before, server, now - then)
                client_cpu, client_wait = usage_between(client_before, client, now - then)
                self._last = (now, server, client)
                cores = core_times()
                busy = core_busy_between(self._last_cores, cores)
                self._last_cores = cores
                point = UsagePoint(now - self.epoch, cpu, rss, client_cpu, wait, client_wait, busy)
        self.usage.append(point)
        return point

    async def _usage_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.sample_now() is None:
                return

    async def _stats_loop(self) -> None:
        assert self.http_base is not None
        url = f"{self.http_base}/stats?top=100&sort=depth"
        failures = 0
        while failures < 3:
            try:
                doc = await asyncio.to_thread(_get_json, url)
                self.stats.append(_depth_point(time.monotonic() - self.epoch, doc))
                self.stats_available = True
                failures = 0
            except (OSError, ValueError, KeyError, TypeError) as exc:
                failures += 1
                self.stats_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(self.stats_interval)
        if self.stats_available is None:
            self.stats_available = False

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.stats_available is None and self.http_base is not None:
            self.stats_available = bool(self.stats)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2.0) as response:
        return orjson.loads(response.read())


def _depth_point(t: float, doc: Any) -> StatsPoint:
    """Reduce a /stats document to the depth figures the report plots."""
    if not isinstance(doc, dict) or not isinstance(doc.get("connections"), list):
        raise ValueError("/stats has no 'connections' list")
    depths = [int(c.get("depth", 0)) for c in doc["connections"] if isinstance(c, dict)]
    paused = sum(1 for c in doc["connections"] if isinstance(c, dict) and c.get("paused"))
    server = doc.get("server")
    count = len(depths)
    if isinstance(server, dict) and isinstance(server.get("connections"), int):
        count = server["connections"]
    return StatsPoint(
        t=t,
        connections=count,
        max_depth=max(depths, default=0),
        total_depth=sum(depths),
        paused=paused,
    )
