"""CPU time, run-queue wait and RSS of a process tree, read straight from /proc.

The load tool samples the server a few times a second; reading three small /proc
files per process is cheaper than any library and adds no dependency (the tool is
Linux-only anyway: it pins with ``taskset`` and reads TCP_INFO). The tree matters
because a ``--server`` command may be a wrapper that starts the real server as a
child. Run-queue wait (``/proc/PID/schedstat``) is the time a process was ready to
run but another process had its core: on a shared machine it is how a reader tells
a slow server from a server that was not given the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcSample", "ProcessTree", "core_busy_between", "core_times", "usage_between"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcSample:
    """One process at one moment: CPU seconds used, seconds spent waiting to run, RSS."""

    cpu_seconds: float
    wait_seconds: float
    rss_bytes: int


class ProcessTree:
    """A root pid and its descendants, found afresh at every sample."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def pids(self) -> list[int]:
        """The root and every live descendant (depth-first, bounded)."""
        seen: list[int] = []
        frontier = [self.pid]
        while frontier and len(seen) < 4096:
            pid = frontier.pop()
            if pid in seen or not Path(f"/proc/{pid}").exists():
                continue
            seen.append(pid)
            frontier.extend(_children(pid))
        return seen

    def sample(self, exclude: frozenset[int] = frozenset()) -> dict[int, ProcSample]:
        """Every live process of the tree (less ``exclude``); empty once the root has exited."""
        out: dict[int, ProcSample] = {}
        for pid in self.pids():
            if pid in exclude:
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                statm = Path(f"/proc/{pid}/statm").read_text()
                sched = Path(f"/proc/{pid}/schedstat").read_text().split()
            except OSError:
                continue
            # Fields after the parenthesised command name: utime and stime are 14 and 15.
            fields = stat[stat.rindex(")") + 2 :].split()
            out[pid] = ProcSample(
                cpu_seconds=(int(fields[11]) + int(fields[12])) / _CLK_TCK,
                wait_seconds=int(sched[1]) / 1e9 if len(sched) > 1 else 0.0,
                rss_bytes=int(statm.split()[1]) * _PAGE,
            )
        return out


def usage_between(
    before: dict[int, ProcSample], after: dict[int, ProcSample], seconds: float
) -> tuple[float, float]:
    """CPU% and run-queue wait% (of one core) between two samples of a tree.

    Summed per process over those present in ``after``, so a process that exits
    between samples never makes the figure negative; one that appeared counts from 0.
    """
    if seconds <= 0:
        return 0.0, 0.0
    zero = ProcSample(0.0, 0.0, 0)
    cpu = sum(max(0.0, s.cpu_seconds - before.get(p, zero).cpu_seconds) for p, s in after.items())
    wait = sum(
        max(0.0, s.wait_seconds - before.get(p, zero).wait_seconds) for p, s in after.items()
    )
    return 100.0 * cpu / seconds, 100.0 * wait / seconds


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def core_times() -> dict[str, tuple[int, int]]:
    """Per core (``cpu0``, ``cpu1``, ...): (busy, total) jiffies since boot from /proc/stat.

    Busy is everything but idle and iowait, so it includes interrupt and softirq time
    (loopback TCP work that no process is charged for) and other tenants' processes:
    the honest answer to "was this core full?".
    """
    out: dict[str, tuple[int, int]] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            counts = [int(v) for v in values]
            idle = counts[3] + (counts[4] if len(counts) > 4 else 0)
            total = sum(counts[:8])
            out[name] = (total - idle, total)
    return out


def core_busy_between(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, float]:
    """Busy % of each core between two :func:`core_times` readings."""
    busy: dict[str, float] = {}
    for name, (b1, t1) in after.items():
        b0, t0 = before.get(name, (b1, t1))
        busy[name] = round(100.0 * (b1 - b0) / (t1 - t0), 1) if t1 > t0 else 0.0
    return busy
