"""The /stats document: server, channels and the N worst connections.

Built on demand from the core's snapshots; `top` and `sort` keep it cheap
with many connections (sorting by a key is O(n log n) over plain integers,
and only the returned connections are rendered in detail).
"""

from __future__ import annotations

import heapq
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from broadcaster.core.stats import channel_stats, subscription_stats

if TYPE_CHECKING:
    from broadcaster.server.app import Broadcaster
    from broadcaster.server.session import ClientSession

__all__ = ["SORT_KEYS", "StatsQueryError", "build_stats"]

SORT_KEYS = ("depth", "dropped", "age")


class StatsQueryError(ValueError):
    """A bad /stats query parameter; the message says which and what is allowed."""


def _sort_value(session: ClientSession, sort: str, now: float) -> float:
    if sort == "depth":
        return float(session.outbox.depth)
    if sort == "dropped":
        return float(sum(sub.dropped for sub in session.outbox.subscriptions.values()))
    return now - session.connected_mono


def connection_entry(session: ClientSession, now: float) -> dict[str, Any]:
    subs = [asdict(subscription_stats(sub, now)) for sub in session.outbox.subscriptions.values()]
    return {
        "id": session.id,
        "remote": session.remote,
        "connected_at": session.connected_at,
        "age": round(now - session.connected_mono, 3),
        "depth": sum(s["depth"] for s in subs),
        "dropped": sum(s["dropped"] for s in subs),
        "bytes_queued": sum(s["bytes_queued"] for s in subs)
        + session.ws.transport.get_write_buffer_size(),
        "paused": any(s["paused"] for s in subs),
        "seconds_above": max((s["seconds_above"] for s in subs), default=0.0),
        "subscriptions": subs,
    }


def build_stats(app: Broadcaster, *, top: int | None = None, sort: str = "depth") -> dict[str, Any]:
    """The document served at /stats (and published on $sys.stats)."""
    if sort not in SORT_KEYS:
        raise StatsQueryError(f"sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
    if top is not None and top < 0:
        raise StatsQueryError(f"top must be an integer >= 0, got {top}")
    now = app.loop.time()
    sessions = list(app.sessions.values())
    if top is None:
        chosen = sorted(sessions, key=lambda s: _sort_value(s, sort, now), reverse=True)
    else:
        chosen = heapq.nlargest(top, sessions, key=lambda s: _sort_value(s, sort, now))
    channels = {name: asdict(channel_stats(ch)) for name, ch in app.hub.channels.items()}
    totals = {
        "published": sum(c["published"] for c in channels.values()),
        "delivered": sum(c["delivered"] for c in channels.values()),
        "dropped": sum(sum(c["dropped"].values()) for c in channels.values()),
        "pauses": sum(c["pauses"] for c in channels.values()),
        "slow_consumer_disconnects": sum(c["slow_consumer_disconnects"] for c in channels.values()),
    }
    return {
        "server": {
            "started_at": app.started_at,
            "uptime": round(now - app.started_mono, 3),
            "connections": len(sessions),
            "broker": asdict(app.broker.status()),
            "epoch": app.hub.epoch,
        },
        "connections": [connection_entry(s, now) for s in chosen],
        "channels": channels,
        "totals": totals,
        "sources": [asdict(state) for state in app.sources.states],
    }
