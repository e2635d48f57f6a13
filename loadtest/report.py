"""Turn what a run collected into the result document and the human table.

The result document (``--json``) is the contract of the tool: every field is
described in loadtest/README.md, and ``compare`` and the plots read only this
document, never the live objects. The accounting rule it checks, per subscriber
that stayed connected: messages received in order + messages missed in seq gaps +
messages not received by the end = messages the server acknowledged publishing on
the channel after the subscriber's ``subscribed`` seq. The last is counted from the
publishers' acknowledgements, independently of what the subscriber saw.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from loadtest import __version__
from loadtest.histogram import Histogram
from loadtest.publishers import ChannelState, Publisher
from loadtest.sampler import Sampler
from loadtest.scenarios import Scenario
from loadtest.stalled import StalledClient, StalledResult
from loadtest.targets import RunningTarget

__all__ = [
    "RESULT_FIELDS",
    "RunData",
    "build_report",
    "check_accounting",
    "headline",
    "render_table",
]

RESULT_FIELDS = (
    "tool",
    "started_at",
    "scenario",
    "target",
    "duration_s",
    "drained_s",
    "published",
    "deliveries",
    "latency_ms",
    "latency_ms_slow",
    "latency_timeline",
    "subscribers",
    "connect",
    "drops",
    "flow",
    "disconnects",
    "accounting",
    "stalled",
    "server",
    "stats_endpoint",
    "server_log_tail",
    "per_subscriber",
)
"""Top-level keys of every result document, each described in loadtest/README.md."""

SLOW_CONSUMER_CODE = 4008


@dataclass
class RunData:
    """Everything the runner gathered, handed to :func:`build_report` in one piece."""

    scenario: Scenario
    target: RunningTarget
    label: str
    started_at: float = 0.0
    epoch_ns: int = 0
    sampler: Sampler | None = None
    ready: list[dict[str, Any]] = field(default_factory=list)
    stalled: list[StalledClient] = field(default_factory=list)
    stalled_results: list[StalledResult] = field(default_factory=list)
    channels: list[ChannelState] = field(default_factory=list)
    publishers: list[Publisher] = field(default_factory=list)
    worker_results: list[dict[str, Any]] = field(default_factory=list)
    rss_marks: dict[str, int | None] = field(default_factory=dict)
    cpu_marks: dict[str, float | None] = field(default_factory=dict)
    """Server CPU seconds at `publish_start` and `drained` (subscribers caught up)."""
    publish_end_s: float = 0.0
    drained_s: float = 0.0
    server_log_tail: list[str] = field(default_factory=list)


def _merge_timelines(results: list[dict[str, Any]]) -> dict[str, dict[int, Histogram]]:
    merged: dict[str, dict[int, Histogram]] = {"fast": {}, "slow": {}}
    for result in results:
        for kind, seconds in result["timelines"].items():
            for sec, raw in seconds.items():
                h = merged[kind].setdefault(int(sec), Histogram())
                h.merge(Histogram.from_dict(raw))
    return merged


def _latency(seconds: dict[int, Histogram]) -> dict[str, float]:
    return Histogram.merged(h for s, h in seconds.items() if s >= 0).summary_ms()


def check_accounting(
    subs: list[dict[str, Any]],
    acked: dict[str, list[int]],
    final: dict[str, int],
    unacked: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Check received + gap-missed + tail-missed = acknowledged publishes, per subscriber.

    ``acked`` holds each channel's acknowledged seqs, sorted; ``final`` its last seq;
    ``unacked`` how many publishes per channel were still unacknowledged at the end
    (a blocked channel): their seqs are unknown, so that channel's subscribers are
    counted as ``indeterminate`` rather than checked. Only subscribers still
    connected at the end are checked (one that was cut off legitimately misses the
    rest); conflate channels are skipped.
    """
    unacked = unacked or {}
    checked = balanced = complete = skipped = indeterminate = 0
    mismatches: list[dict[str, Any]] = []
    for s in subs:
        if s["kind"] not in ("fast", "slow") or not s["subscribed"] or not s["connected"]:
            continue
        if s["strategy"] == "conflate":
            skipped += 1  # seqs are per key on conflate channels (PROTOCOL.md)
            continue
        if unacked.get(s["channel"], 0) > 0:
            indeterminate += 1
            continue
        checked += 1
        seqs = acked.get(s["channel"], [])
        published = len(seqs) - bisect.bisect_right(seqs, s["base_seq"])
        in_order = s["received"] - s["duplicates"] - s["out_of_order"]
        tail = max(0, final.get(s["channel"], 0) - s["last_seq"])
        ok = (
            in_order + s["gap_missed"] + tail == published
            and s["duplicates"] == 0
            and s["out_of_order"] == 0
        )
        balanced += ok
        complete += ok and tail == 0
        if not ok and len(mismatches) < 10:
            mismatches.append(
                {
                    "index": s["index"],
                    "channel": s["channel"],
                    "published": published,
                    "received_in_order": in_order,
                    "gap_missed": s["gap_missed"],
                    "tail_missed": tail,
                    "duplicates": s["duplicates"],
                    "out_of_order": s["out_of_order"],
                }
            )
    return {
        "checked": checked,
        "balanced": balanced,
        "complete": complete,
        "failed": checked - balanced,
        "skipped_conflate": skipped,
        "indeterminate": indeterminate,
        "unacked_by_channel": {c: n for c, n in unacked.items() if n},
        "mismatches": mismatches,
    }


def _by_strategy(subs: list[dict[str, Any]], final: dict[str, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(
            (
                "subscribers",
                "gap_missed",
                "tail_missed",
                "pauses",
                "resumes",
                "resume_dropped",
                "slow_consumer_disconnects",
            ),
            0,
        )
    )
    for s in subs:
        row = out[s["strategy"]]
        row["subscribers"] += 1
        row["gap_missed"] += s["gap_missed"]
        if s["connected"]:
            row["tail_missed"] += max(0, final.get(s["channel"], 0) - s["last_seq"])
        row["pauses"] += s["pauses"]
        row["resumes"] += s["resumes"]
        row["resume_dropped"] += s["resume_dropped"]
        row["slow_consumer_disconnects"] += s["close_code"] == SLOW_CONSUMER_CODE
    return dict(out)


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 2)


def _num(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 1)


def _mean_max(values: list[float]) -> dict[str, float | None]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return {"mean": None, "max": None}
    return {"mean": round(sum(values) / len(values), 1), "max": round(max(values), 1)}


def _cpu_per_delivery_us(data: RunData, deliveries: int) -> float | None:
    """Server CPU (user + system) from the start of publishing until every subscriber
    caught up, divided by the messages the subscribers received in that time."""
    start, end = data.cpu_marks.get("publish_start"), data.cpu_marks.get("drained")
    if start is None or end is None or deliveries <= 0:
        return None
    return round((end - start) * 1e6 / deliveries, 3)


def _reader_cpu_per_delivery_us(data: RunData, deliveries: int) -> float | None:
    """The subscriber workers' CPU (all of it: reading, accounting, sampling) from the
    start of publishing until they drained, per message they received. Unlike
    `client_cpu_percent` it leaves out the publishers, so it compares client kinds."""
    spent = [r["cpu_s"] for r in data.worker_results if isinstance(r.get("cpu_s"), float)]
    if deliveries <= 0 or not spent or len(spent) < len(data.worker_results):
        return None
    return round(float(sum(spent)) * 1e6 / deliveries, 3)


def _server(data: RunData, deliveries: int = 0) -> dict[str, Any]:
    sampler = data.sampler
    usage = sampler.usage if sampler is not None else []
    window = [p for p in usage if 0.0 <= p.t <= data.publish_end_s + 0.25]
    marks = data.rss_marks
    during = [p.rss_bytes for p in usage if p.t >= 0.0]
    rss_max = max(during, default=None)
    start = marks.get("publish_start")
    before, after = marks.get("before_connect"), marks.get("after_connect")
    connections = sum(r["connected"] for r in data.ready) + sum(
        1 for c in data.stalled if c.subscribed
    )
    per_conn = None
    if before is not None and after is not None and connections:
        per_conn = round((after - before) / connections / 1024, 2)
    measured = [p for p in window if not math.isnan(p.cpu_percent)]
    return {
        "pid": data.target.pid,
        "sampled": bool(usage),
        "cpu_percent": _mean_max([p.cpu_percent for p in measured]),
        "cpu_us_per_delivery": _cpu_per_delivery_us(data, deliveries),
        "wait_percent": _mean_max([p.wait_percent for p in measured]),
        "rss_mb": {
            "before_connect": _mb(before),
            "after_connect": _mb(after),
            "publish_start": _mb(start),
            "max": _mb(rss_max),
            "end": _mb(marks.get("end")),
            "growth": _mb(rss_max - start) if rss_max is not None and start is not None else None,
        },
        "rss_per_connection_kb": per_conn,
        "client_cpu_percent": _mean_max([p.client_cpu_percent for p in measured]),
        "client_wait_percent": _mean_max([p.client_wait_percent for p in measured]),
        "cores_busy_percent": {
            core: _mean_max([p.cores_busy.get(core, math.nan) for p in measured])["mean"]
            for core in sorted({c for p in measured for c in p.cores_busy})
        },
        "timeline": [
            {
                "t": round(p.t, 3),
                "cpu_percent": _num(p.cpu_percent),
                "rss_mb": _mb(p.rss_bytes),
                "wait_percent": _num(p.wait_percent),
                "client_cpu_percent": _num(p.client_cpu_percent),
                "client_wait_percent": _num(p.client_wait_percent),
                "cores_busy_percent": p.cores_busy,
            }
            for p in usage
        ],
    }


def _stalled(data: RunData) -> dict[str, Any]:
    results = data.stalled_results or [c.result(data.epoch_ns) for c in data.stalled]
    closed = [r for r in results if r.closed]
    codes = Counter(
        str(r.close_code) if r.close_code is not None else (r.closed_how or "unknown")
        for r in closed
    )
    times = sorted(r.closed_at_s for r in closed if r.closed_at_s is not None)
    return {
        "count": len(results),
        "subscribed": sum(r.subscribed for r in results),
        "closed": len(closed),
        "closed_during_run": sum(r.seen == "during run" for r in closed),
        "closed_how": dict(codes),
        "closed_after_s": {
            "first": round(times[0], 3) if times else None,
            "last": round(times[-1], 3) if times else None,
        },
        "clients": [r.to_dict() for r in results],
    }


def build_report(data: RunData) -> dict[str, Any]:
    """The result document of one run (the ``--json`` file)."""
    scenario = data.scenario
    subs = [s for r in data.worker_results for s in r["subscribers"]]
    timelines = _merge_timelines(data.worker_results)
    acked = {c.name: sorted(c.acked_seqs) for c in data.channels}
    unacked: dict[str, int] = {c.name: 0 for c in data.channels}
    for pub in data.publishers:
        unacked[pub.channel.name] += max(0, pub.outstanding)
    seen_last: dict[str, int] = {}
    for s in (s for r in data.worker_results for s in r["subscribers"]):
        seen_last[s["channel"]] = max(seen_last.get(s["channel"], 0), s["last_seq"])
    # A blocked channel may have published more than was acknowledged by the end.
    final = {c.name: max(c.final_seq, seen_last.get(c.name, 0)) for c in data.channels}
    published_total = sum(len(v) for v in acked.values())
    duration = scenario.duration
    whole = max(1, int(duration))
    window_s = float(whole) if duration >= 1 else duration
    # Each latency sample stands for `latency_every` deliveries of its subscriber
    # (exact when it is 1; within one sample per subscriber otherwise).
    in_window = scenario.latency_every * sum(
        h.count for seconds in timelines.values() for s, h in seconds.items() if 0 <= s < whole
    )
    received_total = sum(s["received"] for s in subs)
    wire_total = sum(s.get("wire_bytes", 0) for s in subs)
    fast_seconds = timelines["fast"]
    disconnected = [s for s in subs if s["subscribed"] or s["kind"] == "fast"]
    disconnected = [s for s in disconnected if not s["connected"] and s["error"] is None]
    codes = Counter(str(s["close_code"]) for s in disconnected)
    close_times = sorted(s["closed_at_s"] for s in disconnected if s["closed_at_s"] is not None)
    connect_starts = [r["connect_start_ns"] for r in data.ready]
    connect_ends = [r["connect_end_ns"] for r in data.ready]
    pubs = [p.result() for p in data.publishers]
    sampler = data.sampler
    return {
        "tool": {"name": "loadtest", "version": __version__, "client": scenario.client},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(data.started_at)),
        "scenario": scenario.to_dict(),
        "target": {
            "label": data.label,
            "url": data.target.url,
            "command": data.target.command,
            "config": data.target.config_text,
        },
        "duration_s": round(data.publish_end_s, 3),
        "drained_s": round(data.drained_s, 3),
        "published": {
            "total": published_total,
            "per_s": round(published_total / duration, 1),
            "sent": sum(p["sent"] for p in pubs),
            "per_channel": {
                c.name: {"count": len(acked[c.name]), "final_seq": final[c.name]}
                for c in data.channels
            },
            "publishers": pubs,
        },
        "deliveries": {
            "total": received_total,
            "in_window": in_window,
            "window_s": window_s,
            "per_s": round(in_window / window_s, 1),
            "wire_bytes": wire_total,
            "wire_bytes_per_delivery": round(wire_total / received_total, 1)
            if received_total
            else None,
            "reader_cpu_us_per_delivery": _reader_cpu_per_delivery_us(data, received_total),
        },
        "latency_ms": _latency(fast_seconds),
        "latency_ms_slow": _latency(timelines["slow"]) if timelines["slow"] else None,
        "latency_timeline": [
            {"t": sec, **Histogram.merged([h]).summary_ms()}
            for sec, h in sorted(fast_seconds.items())
        ],
        "subscribers": {
            "requested": scenario.subscribers,
            "connected": sum(r["connected"] for r in data.ready),
            "failed": sum(r["failed"] for r in data.ready),
            "connect_errors": [e for r in data.ready for e in r["errors"]][:10],
            "fast": sum(s["kind"] == "fast" for s in subs),
            "slow": sum(s["kind"] == "slow" for s in subs),
            "connected_at_end": sum(s["connected"] for s in subs),
        },
        "connect": {
            "connections": sum(r["connected"] for r in data.ready),
            "seconds": round((max(connect_ends) - min(connect_starts)) / 1e9, 3)
            if data.ready
            else None,
        },
        "drops": {
            "gap_missed": sum(s["gap_missed"] for s in subs),
            "gaps": sum(s["gaps"] for s in subs),
            "tail_missed": sum(
                max(0, final.get(s["channel"], 0) - s["last_seq"]) for s in subs if s["connected"]
            ),
            "resume_dropped": sum(s["resume_dropped"] for s in subs),
            "duplicates": sum(s["duplicates"] for s in subs),
            "out_of_order": sum(s["out_of_order"] for s in subs),
            "by_strategy": _by_strategy(subs, final),
        },
        "flow": {
            "pauses": sum(s["pauses"] for s in subs),
            "resumes": sum(s["resumes"] for s in subs),
            "subscribers_paused": sum(s["pauses"] > 0 for s in subs),
            "publisher_pauses": sum(p["pauses"] for p in pubs),
        },
        "disconnects": {
            "total": len(disconnected),
            "slow_consumer": codes.get(str(SLOW_CONSUMER_CODE), 0),
            "by_code": dict(codes),
            "closed_after_s": {
                "first": round(close_times[0], 3) if close_times else None,
                "last": round(close_times[-1], 3) if close_times else None,
            },
        },
        "accounting": check_accounting(subs, acked, final, unacked),
        "stalled": _stalled(data),
        "server": _server(data, received_total),
        "stats_endpoint": {
            "available": bool(sampler and sampler.stats_available),
            "error": sampler.stats_error if sampler else None,
            "timeline": [
                {
                    "t": round(p.t, 3),
                    "connections": p.connections,
                    "max_depth": p.max_depth,
                    "total_depth": p.total_depth,
                    "paused": p.paused,
                }
                for p in (sampler.stats if sampler else [])
            ],
        },
        "server_log_tail": data.server_log_tail,
        "per_subscriber": subs,
    }


def headline(result: dict[str, Any]) -> dict[str, float | None]:
    """The few numbers ``compare`` puts side by side (None where a run has no such figure)."""
    lat = result["latency_ms"]
    server = result["server"]
    scenario = result["scenario"]
    has_traffic = not scenario["idle"]
    cores = {f"{core}_busy_percent": value for core, value in server["cores_busy_percent"].items()}
    return {
        "deliveries_per_s": result["deliveries"]["per_s"] if has_traffic else None,
        "wire_bytes_per_delivery": result["deliveries"].get("wire_bytes_per_delivery")
        if has_traffic
        else None,
        "published_per_s": result["published"]["per_s"] if has_traffic else None,
        "latency_p50_ms": lat["p50"] if lat["count"] else None,
        "latency_p90_ms": lat["p90"] if lat["count"] else None,
        "latency_p99_ms": lat["p99"] if lat["count"] else None,
        "latency_max_ms": lat["max"] if lat["count"] else None,
        "server_cpu_percent": server["cpu_percent"]["mean"],
        "server_cpu_us_per_delivery": server.get("cpu_us_per_delivery") if has_traffic else None,
        "server_wait_percent": server["wait_percent"]["mean"],
        "client_cpu_percent": server["client_cpu_percent"]["mean"],
        "reader_cpu_us_per_delivery": result["deliveries"].get("reader_cpu_us_per_delivery")
        if has_traffic
        else None,
        "client_wait_percent": server["client_wait_percent"]["mean"],
        "rss_growth_mb": server["rss_mb"]["growth"] if has_traffic else None,
        "rss_per_connection_kb": server["rss_per_connection_kb"] if not has_traffic else None,
        "connect_seconds": result["connect"]["seconds"] if not has_traffic else None,
        "drops_gap_missed": float(result["drops"]["gap_missed"]) if has_traffic else None,
        "stalled_closed": float(result["stalled"]["closed"]) if scenario["stalled"] else None,
        "disconnects": float(result["disconnects"]["total"]),
        "accounting_failed": float(result["accounting"]["failed"]) if has_traffic else None,
        **cores,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_table(result: dict[str, Any]) -> str:
    """The human summary printed on stdout after a run."""
    sc = result["scenario"]
    lat = result["latency_ms"]
    server = result["server"]
    drops = result["drops"]
    acc = result["accounting"]
    st = result["stalled"]
    rows: list[tuple[str, Any]] = [
        ("scenario", f"{sc['name']}: {sc['description']}"),
        ("target", f"{result['target']['label']} ({result['target']['url']})"),
        ("client", f"{sc['client']}, {sc['processes']} worker process(es)"),
        ("subscribers connected", result["subscribers"]["connected"]),
        ("subscribers failed", result["subscribers"]["failed"]),
        ("connect time (s)", result["connect"]["seconds"]),
    ]
    if not sc["idle"]:
        rows += [
            ("rate (msg/s per channel)", sc["rate"]),
            ("published", result["published"]["total"]),
            ("published/s", result["published"]["per_s"]),
            ("deliveries", result["deliveries"]["total"]),
            ("deliveries/s", result["deliveries"]["per_s"]),
            (
                "bytes on the wire per delivery",
                result["deliveries"].get("wire_bytes_per_delivery"),
            ),
            ("latency p50 (ms)", lat["p50"]),
            ("latency p90 (ms)", lat["p90"]),
            ("latency p99 (ms)", lat["p99"]),
            ("latency max (ms)", lat["max"]),
        ]
        if result["latency_ms_slow"]:
            rows.append(("slow consumers p99 (ms)", result["latency_ms_slow"]["p99"]))
        rows += [
            ("drops (seq gaps)", drops["gap_missed"]),
            ("not received by the end", drops["tail_missed"]),
            ("dropped per flow.resume", drops["resume_dropped"]),
            ("duplicates / out of order", f"{drops['duplicates']} / {drops['out_of_order']}"),
            (
                "flow.pause / flow.resume",
                f"{result['flow']['pauses']} / {result['flow']['resumes']}",
            ),
        ]
        for strategy, row in sorted(drops["by_strategy"].items()):
            rows.append(
                (
                    f"  strategy {strategy}",
                    f"{row['subscribers']} subs, {row['gap_missed']} dropped, "
                    f"{row['pauses']} pauses, {row['slow_consumer_disconnects']} cut off",
                )
            )
        rows.append(
            (
                "accounting",
                f"{acc['balanced']}/{acc['checked']} balanced, {acc['complete']} complete"
                + (f", {acc['indeterminate']} indeterminate" if acc["indeterminate"] else "")
                + (f", {acc['failed']} FAILED" if acc["failed"] else ""),
            )
        )
    rows += [
        ("disconnects (by code)", result["disconnects"]["by_code"] or 0),
        (
            "server cpu % (mean/max)",
            f"{_fmt(server['cpu_percent']['mean'])} / {_fmt(server['cpu_percent']['max'])}",
        ),
        ("server cpu µs per delivery", server.get("cpu_us_per_delivery")),
        (
            "load client cpu % (mean/max)",
            f"{_fmt(server['client_cpu_percent']['mean'])} / "
            f"{_fmt(server['client_cpu_percent']['max'])}",
        ),
        (
            "machine cores busy % (mean)",
            ", ".join(f"{c} {v}" for c, v in server["cores_busy_percent"].items()) or "-",
        ),
        (
            "run-queue wait % server/client",
            f"{_fmt(server['wait_percent']['mean'])} / "
            f"{_fmt(server['client_wait_percent']['mean'])}",
        ),
        (
            "server rss MB (start/max/end)",
            f"{_fmt(server['rss_mb']['publish_start'])} / "
            f"{_fmt(server['rss_mb']['max'])} / "
            f"{_fmt(server['rss_mb']['end'])}",
        ),
        ("server rss growth (MB)", server["rss_mb"]["growth"]),
    ]
    if sc["idle"]:
        rows.append(("rss per connection (KB)", server["rss_per_connection_kb"]))
    if st["count"]:
        rows += [
            (
                "stalled closed",
                f"{st['closed']} of {st['count']} ({st['closed_during_run']} seen during the run)"
                + "".join(f", {n} {how}" for how, n in sorted(st["closed_how"].items())),
            ),
            (
                "stalled closed after (s)",
                f"{_fmt(st['closed_after_s']['first'])} .. {_fmt(st['closed_after_s']['last'])}",
            ),
        ]
    rows.append(("/stats", "available" if result["stats_endpoint"]["available"] else "absent"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {_fmt(v)}" for k, v in rows)
