"""CPU time and RSS of a process tree, read straight from /proc.

The load tool samples the server a few times a second; reading two small /proc
files per process is cheaper than any library and adds no dependency (the tool is
Linux-only anyway: it pins with ``taskset`` and reads TCP_INFO). The tree matters
because a ``--server`` command may be a wrapper that starts the real server as a
child.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessTree", "TreeSample"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class TreeSample:
    """CPU seconds used so far and resident memory now, summed over the tree."""

    cpu_seconds: float
    rss_bytes: int
    processes: int


class ProcessTree:
    """A root pid and its descendants, found afresh at every sample."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def pids(self) -> list[int]:
        """The root and every live descendant (breadth-first, bounded)."""
        seen: list[int] = []
        frontier = [self.pid]
        while frontier and len(seen) < 4096:
            pid = frontier.pop()
            if pid in seen or not Path(f"/proc/{pid}").exists():
                continue
            seen.append(pid)
            frontier.extend(_children(pid))
        return seen

    def sample(self, exclude: frozenset[int] = frozenset()) -> TreeSample | None:
        """One reading of the whole tree (less ``exclude``), or None once the root has exited."""
        cpu = 0.0
        rss = 0
        count = 0
        for pid in self.pids():
            if pid in exclude:
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                statm = Path(f"/proc/{pid}/statm").read_text()
            except OSError:
                continue
            # Fields after the parenthesised command name: utime and stime are 14 and 15.
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu += (int(fields[11]) + int(fields[12])) / _CLK_TCK
            rss += int(statm.split()[1]) * _PAGE
            count += 1
        if count == 0:
            return None
        return TreeSample(cpu_seconds=cpu, rss_bytes=rss, processes=count)


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
