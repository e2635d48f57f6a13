"""The /stats document: server, channels, the N worst connections, and all of them aggregated.

Built on demand from the core's counters and snapshots; the same document
is published on `$sys.stats` for the dashboard. It stays cheap with many
connections: one pass over every connection reads a few integers per
subscription (depth, dropped, paused) for the sort key and for the
aggregates (a depth histogram, paused and behind counts), a heap picks the
`top` worst, and only those are rendered in detail (`bytes_queued` walks a
queue, so it is computed for the shown connections only).
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from broadcaster.core.histogram import DEPTH_BUCKETS
from broadcaster.core.stats import channel_stats, subscription_stats

if TYPE_CHECKING:
    from broadcaster.core.channel import Channel
    from broadcaster.server.app import Broadcaster
    from broadcaster.server.subscriber import Subscriber

__all__ = ["DEPTH_BOUNDS", "SORT_KEYS", "StatsQueryError", "build_stats", "connection_entry"]

SORT_KEYS = ("depth", "dropped", "age")
# Upper bounds (messages) of the all-connections depth histogram; the last
# count is everything above the last bound. The same as the metric's buckets.
DEPTH_BOUNDS = DEPTH_BUCKETS


class StatsQueryError(ValueError):
    """A bad /stats query parameter; the message says which and what is allowed."""


def connection_entry(session: Subscriber, now: float) -> dict[str, Any]:
    """One connection in detail: totals, how close it is to being cut off, each subscription."""
    subs = list(session.outbox.subscriptions.values())
    stats = [subscription_stats(sub, now) for sub in subs]
    deadlines = [d for d in (sub.slow.deadline() for sub in subs) if d is not None]
    return {
        "id": session.id,
        "remote": session.remote,
        "transport": session.transport_name,
        "user": session.grant.subject if session.grant is not None else None,
        "connected_at": session.connected_at,
        "age": round(now - session.connected_mono, 3),
        "depth": sum(s.depth for s in stats),
        "dropped": sum(s.dropped for s in stats),
        "bytes_queued": sum(s.bytes_queued for s in stats)
        + session.transport.get_write_buffer_size(),
        "paused": any(s.paused for s in stats),
        "seconds_above": max((s.seconds_above for s in stats), default=0.0),
        "closes_in": round(max(0.0, min(deadlines) - now), 3) if deadlines else None,
        "fill": round(max((s.depth / s.limit for s in stats), default=0.0), 3),
        "lag": max((s.lag for s in stats), default=0.0),
        "compression": "permessage-deflate" if session.outbox.deflate else None,
        "bytes_sent": session.outbox.wire_bytes,
        "subscriptions": [asdict(s) for s in stats],
    }


def compression_entry(channel: Channel) -> dict[str, Any]:
    """The channel's compression: its mode, and over the frames taken for subscribers
    that negotiated permessage-deflate, their plain and sent bytes and the ratio."""
    counters = channel.counters
    plain, wire = counters.deflate_plain, counters.deflate_wire
    return {
        "mode": channel.policy.compression.value,
        "plain_bytes": plain,
        "wire_bytes": wire,
        "ratio": round(wire / plain, 3) if plain else None,
    }


def _busy(channel: Channel) -> tuple[int, int]:
    return len(channel.subscriptions), channel.counters.published


def _check(top: int | None, sort: str) -> None:
    if sort not in SORT_KEYS:
        raise StatsQueryError(f"sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
    if top is not None and top < 0:
        raise StatsQueryError(f"top must be an integer >= 0, got {top}")


def build_stats(
    app: Broadcaster,
    *,
    top: int | None = None,
    sort: str = "depth",
    max_channels: int | None = None,
) -> dict[str, Any]:
    """The document served at /stats and published on $sys.stats.

    `connections` lists the `top` worst by `sort` (all when `top` is None),
    worst first; ties go to the older connection. `summary` covers every
    connection, shown or not. `channels` lists the `max_channels` busiest
    (most subscribers, then most published; all when None); `totals` covers
    every channel, shown or not.
    """
    _check(top, sort)
    if max_channels is not None and max_channels < 0:
        raise StatsQueryError(f"channels must be an integer >= 0, got {max_channels}")
    now = app.loop.time()
    sessions = list(app.sessions.values())
    # One tight pass over every connection (a few integer reads per
    # subscription): the depth histogram, the paused count, and the depths.
    histogram = [0] * (len(DEPTH_BOUNDS) + 1)
    paused = 0
    depths: list[int] = []
    append = depths.append
    by_transport: dict[str, int] = {}
    for session in sessions:
        kind = session.transport_name
        by_transport[kind] = by_transport.get(kind, 0) + 1
        depth = 0
        is_paused = 0
        for sub in session.outbox.subscriptions.values():
            depth += len(sub.items) + sub.in_transport
            if sub.flow.paused:
                is_paused = 1
        histogram[bisect_left(DEPTH_BOUNDS, depth)] += 1
        paused += is_paused
        append(depth)
    keys: list[float] | list[int]
    if sort == "depth":
        keys = depths
    elif sort == "dropped":
        keys = [sum(sub.dropped for sub in s.outbox.subscriptions.values()) for s in sessions]
    else:
        keys = [now - s.connected_mono for s in sessions]
    # Worst first; ties keep connection order (both sorts below are stable that way).
    if top is None:
        order = sorted(range(len(sessions)), key=keys.__getitem__, reverse=True)
    else:
        order = heapq.nlargest(top, range(len(sessions)), key=keys.__getitem__)
    chosen = [sessions[i] for i in order]
    hub = app.hub
    rates = app.rates
    if max_channels is None or max_channels >= len(hub.channels):
        shown_channels = list(hub.channels.values())
    else:
        shown_channels = heapq.nlargest(max_channels, hub.channels.values(), key=_busy)
    channels = {}
    for channel in shown_channels:
        entry = asdict(channel_stats(channel))
        counters = channel.counters
        entry["dropped_total"] = dropped = counters.dropped_total
        entry["compression"] = compression_entry(channel)
        entry["rates"] = rates.rates(
            channel.name,
            now,
            published=counters.published,
            delivered=counters.delivered,
            dropped=dropped,
            since=channel.created,
        )._asdict()
        channels[channel.name] = entry
    # Every channel counts, shown or not, and freed ones too (hub.retired):
    # totals never go backwards. A few integer reads per channel.
    published = delivered = dropped = pauses = cut_off = saved = 0
    for counters in itertools.chain(
        (channel.counters for channel in hub.channels.values()), hub.retired.values()
    ):
        published += counters.published
        delivered += counters.delivered
        dropped += counters.dropped_total
        pauses += counters.pauses
        cut_off += counters.slow_consumer_disconnects
        saved += counters.deflate_saved
    totals = {
        "published": published,
        "delivered": delivered,
        "dropped": dropped,
        "pauses": pauses,
        "slow_consumer_disconnects": cut_off,
        "compression_saved_bytes": saved,
        "channels": len(hub.channels),
        "channels_shown": len(channels),
        "channels_freed": hub.freed,
        "rates": rates.rates(
            "",
            now,
            published=published,
            delivered=delivered,
            dropped=dropped,
            since=app.started_mono,
        )._asdict(),
    }
    return {
        "server": {
            "started_at": app.started_at,
            "uptime": round(now - app.started_mono, 3),
            "connections": len(sessions),
            "loop_lag": round(app.monitor.loop_lag, 6),
            "broker": app.broker.status().as_dict(),
            "epoch": app.hub.epoch,
            "loops": {name: guard.snapshot() for name, guard in app.loops.guards.items()},
        },
        "sort": sort,
        "connections": [connection_entry(s, now) for s in chosen],
        "summary": {
            "connections": len(sessions),
            "shown": len(chosen),
            "by_transport": by_transport,
            "paused": paused,
            "behind": len({sub.outbox.id for sub in app.hub.behind}),
            "depth_histogram": {"bounds": list(DEPTH_BOUNDS), "counts": histogram},
        },
        "recent_slow_consumers": list(app.recent_slow_consumers),
        "refusals": dict(app.metrics.refusals),
        "admission": {
            "open": app.admission.open,
            "addresses": len(app.admission.per_address),
            "overloaded": app.overload.overloaded,
            "shed": app.shed,
        },
        "channels": channels,
        "totals": totals,
        "sources": [asdict(state) for state in app.sources.states],
    }
