"""Which worker a `Broadcaster` is, and where its siblings and the bus are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorkerIdentity"]


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """Handed to `Broadcaster(worker=...)` by the supervisor (workers/supervisor.py).

    `run_dir` is the supervisor's private directory (mode 0700): the bus's
    Unix socket lives there, so only this user's processes can join it.
    """

    index: int
    """0 .. count-1: the worker column of /stats and the dashboard, the `worker` metric label."""
    count: int
    run_dir: Path

    @property
    def bus_path(self) -> Path:
        return self.run_dir / "bus.sock"
