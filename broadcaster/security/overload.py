"""Load shedding on event-loop lag: refuse new clients, then shed some open ones.

Event-loop lag (how late the monitor's timer runs, `server/monitor.py`) is
the one number that says "this process cannot keep up": every callback,
every client, waits that long. Above `[limits] max_loop_lag`:

1. new handshakes get HTTP 503 with Retry-After (admission.py) as long as
   the last reading is above the threshold;
2. when readings stay above it for `shed_after` seconds, every monitor tick
   closes a bounded part of the open connections with 1013 (try again
   later): `shed_fraction` of them (at least one), **newest first**. The
   newest have the least invested (no long history, no snapshot yet), a
   connection flood is the newest by definition, and long-lived subscribers
   keep their service. Admin connections (the dashboard that watches the
   overload) are never shed. Clients wait a long, jittered delay after 1013
   (both clients do), so the shed crowd does not come straight back.

Pure: the monitor passes each lag reading and its time in.
"""

from __future__ import annotations

import math

__all__ = ["Overload"]


class Overload:
    """Tracks lag readings against the threshold; says how many connections to shed."""

    def __init__(self, max_lag: float, shed_after: float, shed_fraction: float) -> None:
        self.max_lag = max_lag
        self.shed_after = shed_after
        self.shed_fraction = shed_fraction
        self.overloaded = False
        """The last reading was above `max_lag` (and the check is on)."""
        self.since: float | None = None
        """When the current run of readings above `max_lag` began."""
        self.last_lag = 0.0

    def sample(self, lag: float, now: float) -> None:
        """One lag reading (seconds) taken at `now`."""
        self.last_lag = lag
        if self.max_lag > 0 and lag > self.max_lag:
            if not self.overloaded:
                self.since = now
            self.overloaded = True
        else:
            self.overloaded = False
            self.since = None

    def to_shed(self, connections: int, now: float) -> int:
        """How many of `connections` open connections to close at this tick."""
        if not self.overloaded or self.since is None or self.shed_after <= 0:
            return 0
        if now - self.since < self.shed_after or connections <= 0:
            return 0
        return min(connections, max(1, math.floor(connections * self.shed_fraction)))
