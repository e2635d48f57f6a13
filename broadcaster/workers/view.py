"""One view of a server made of workers: /stats, $sys.stats, /metrics and /healthz merged.

Pure functions over the snapshots each worker returns to `BusLink.gather`
(workers/answers.py asks for them and serves the result); no I/O, so the
rules are unit-tested with hand-made snapshots (tests/unit/test_worker_view.py).

How a /stats document merges (`merge_stats`), field by field:

- **connections**: every worker's, each marked with its `worker`, sorted
  again by the query's key (worst first, ties to the older connection) and
  cut to `top`. Each worker was asked for its own `top` worst, so the
  merged `top` worst are among them.
- **summary**, **refusals**, **admission** counts: summed; the depth
  histograms bucket by bucket. `admission.addresses` sums per-worker
  counts, so an address connected to two workers counts twice.
- **channels**: one entry per name however many workers hold it.
  Per-subscriber counters (`subscribers`, `delivered`, `dropped`, `pauses`,
  `slow_consumer_disconnects`, compression bytes, the delivered/dropped
  rates) are summed. `published`, `last_seq` and the published rate are
  the largest any worker saw, not a sum: every worker holding the channel
  receives each message the bus sequenced once, so summing would count a
  message once per worker.
- **totals**: delivered, dropped, pauses, cut-offs and compression savings
  are summed over the workers, so they equal the sum of the `workers`
  entries. `published` counts each message once: the merged channels'
  `published` plus what each worker counted on channels it has since freed
  (when a worker's document lists only some of its channels, the largest
  worker total, a lower bound, is used instead).
- **server**: connections summed, the oldest start, the worst loop lag, a
  loop is "stopped" if it stopped on any worker (errors summed).
- **workers**: one entry per worker 0..count-1, `up` false (and no numbers)
  for a worker that is down or did not answer in time.

/metrics (`merge_metrics`): every worker's exposition parsed with
prometheus_client's parser, each sample given a `worker` label, the
families of the same name joined, written again in the classic text
format; plus `broadcaster_worker_up{worker}`. Summing across workers is
then the usual `sum without (worker) (...)` in PromQL, as for any
multi-process exporter: no sample is pre-summed, so none is counted twice.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "RECENT_SLOW_CONSUMERS",
    "down_workers",
    "merge_channel",
    "merge_metrics",
    "merge_stats",
]

# Slow-consumer cut-offs kept in the merged document (as one process keeps).
RECENT_SLOW_CONSUMERS = 20

_SUMMED_TOTALS = (
    "delivered",
    "dropped",
    "pauses",
    "slow_consumer_disconnects",
    "compression_saved_bytes",
    "channels_freed",
)
_SORT_FIELDS = {"depth": "depth", "dropped": "dropped", "age": "age"}


def down_workers(count: int, up: Iterable[int]) -> list[int]:
    """The worker indexes 0..count-1 that are not in `up`, in order."""
    alive = set(up)
    return [index for index in range(count) if index not in alive]


def _sum_dicts(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Key by key sums of numeric values (nested dicts summed the same way)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, Mapping):
                out[key] = _sum_dicts([out.get(key, {}), value])
            elif isinstance(value, bool):
                out[key] = bool(out.get(key, False)) or value
            elif isinstance(value, int | float):
                out[key] = out.get(key, 0) + value
            else:
                out.setdefault(key, value)
    return out


def merge_channel(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One channel held by several workers, as one entry (the module docstring's rules)."""
    first = max(entries, key=lambda e: e.get("last_seq", 0))
    merged = dict(first)
    for key in ("subscribers", "delivered", "pauses", "slow_consumer_disconnects", "dropped_total"):
        merged[key] = sum(e.get(key, 0) for e in entries)
    for key in ("published", "last_seq"):
        merged[key] = max(e.get(key, 0) for e in entries)
    merged["dropped"] = _sum_dicts(e.get("dropped", {}) for e in entries)
    compressions = [e["compression"] for e in entries if "compression" in e]
    if compressions:
        plain = sum(c.get("plain_bytes", 0) for c in compressions)
        wire = sum(c.get("wire_bytes", 0) for c in compressions)
        merged["compression"] = {
            **compressions[0],
            "plain_bytes": plain,
            "wire_bytes": wire,
            "ratio": round(wire / plain, 3) if plain else None,
        }
    rates = [e["rates"] for e in entries if "rates" in e]
    if rates:
        merged["rates"] = _merge_rates(rates)
    merged["workers"] = sorted(e["worker"] for e in entries if "worker" in e)
    return merged


def _merge_rates(rates: list[Mapping[str, float]]) -> dict[str, float]:
    return {
        "published": max(r.get("published", 0.0) for r in rates),
        "delivered": round(sum(r.get("delivered", 0.0) for r in rates), 3),
        "dropped": round(sum(r.get("dropped", 0.0) for r in rates), 3),
        "window": max(r.get("window", 0.0) for r in rates),
    }


def _channel_sort_key(entry: Mapping[str, Any]) -> tuple[int, int]:
    return entry.get("subscribers", 0), entry.get("published", 0)


def _connection_key(sort: str) -> Any:
    field = _SORT_FIELDS[sort]

    def key(entry: Mapping[str, Any]) -> tuple[float, float]:
        return entry.get(field, 0), entry.get("age", 0.0)

    return key


def _merge_server(docs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    servers = [doc["server"] for _, doc in sorted(docs.items())]
    loops: dict[str, dict[str, Any]] = {}
    for server in servers:
        for name, snapshot in server.get("loops", {}).items():
            seen = loops.setdefault(name, {"state": "running", "errors": 0, "last_error": None})
            if snapshot.get("state") == "stopped":
                seen["state"] = "stopped"
            seen["errors"] += snapshot.get("errors", 0)
            seen["last_error"] = snapshot.get("last_error") or seen["last_error"]
    merged = dict(servers[0])
    merged.update(
        started_at=min(s.get("started_at", 0.0) for s in servers),
        uptime=max(s.get("uptime", 0.0) for s in servers),
        connections=sum(s.get("connections", 0) for s in servers),
        loop_lag=max(s.get("loop_lag", 0.0) for s in servers),
        loops=loops,
    )
    return merged


def _worker_entry(index: int, doc: Mapping[str, Any] | None) -> dict[str, Any]:
    if doc is None:
        return {"index": index, "up": False, "pid": None, "connections": None}
    me = doc.get("worker", {})
    totals = doc.get("totals", {})
    return {
        "index": index,
        "up": True,
        "pid": me.get("pid"),
        "restarts": me.get("restarts", 0),
        "connections": doc.get("server", {}).get("connections", 0),
        "channels": totals.get("channels", 0),
        "published": totals.get("published", 0),
        "delivered": totals.get("delivered", 0),
        "dropped": totals.get("dropped", 0),
        "loop_lag": doc.get("server", {}).get("loop_lag", 0.0),
    }


def _merge_totals(
    docs: Mapping[int, Mapping[str, Any]],
    channels: Mapping[str, Mapping[str, Any]],
    shown: int,
) -> dict[str, Any]:
    all_totals = [doc["totals"] for _, doc in sorted(docs.items())]
    totals: dict[str, Any] = {key: sum(t.get(key, 0) for t in all_totals) for key in _SUMMED_TOTALS}
    complete = all(t.get("channels_shown", 0) >= t.get("channels", 0) for t in all_totals)
    if complete:
        # Channels a worker freed still count: its total minus what its listed channels hold.
        freed = sum(
            t.get("published", 0) - sum(c.get("published", 0) for c in doc["channels"].values())
            for t, doc in zip(all_totals, (d for _, d in sorted(docs.items())), strict=True)
        )
        totals["published"] = sum(c.get("published", 0) for c in channels.values()) + freed
    else:
        totals["published"] = max(t.get("published", 0) for t in all_totals)
    totals["channels"] = (
        len(channels) if complete else max(t.get("channels", 0) for t in all_totals)
    )
    totals["channels_shown"] = shown
    rates = [t["rates"] for t in all_totals if "rates" in t]
    if rates:
        totals["rates"] = _merge_rates(rates)
    return totals


def merge_stats(
    docs: Mapping[int, Mapping[str, Any] | None],
    *,
    count: int,
    top: int | None = None,
    sort: str = "depth",
    max_channels: int | None = None,
) -> dict[str, Any]:
    """The /stats document of the whole server from each worker's own document.

    `docs[i]` is worker i's `build_stats` document (with its `worker` entry:
    pid, restarts), or None when it is down or did not answer. `top`, `sort`
    and `max_channels` are the query the workers were asked with. At least
    one worker must have answered (the one serving the request always does).
    """
    if sort not in _SORT_FIELDS:
        raise ValueError(f"sort must be one of {', '.join(_SORT_FIELDS)}, got {sort!r}")
    answered = {index: doc for index, doc in docs.items() if doc is not None}
    if not answered:
        raise ValueError("no worker answered")
    ordered = sorted(answered.items())

    connections: list[dict[str, Any]] = []
    for index, doc in ordered:
        connections.extend({**c, "worker": index} for c in doc.get("connections", []))
    key = _connection_key(sort)
    if top is None:
        connections.sort(key=key, reverse=True)
    else:
        connections = heapq.nlargest(top, connections, key=key)

    by_name: dict[str, list[dict[str, Any]]] = {}
    for index, doc in ordered:
        for name, entry in doc.get("channels", {}).items():
            by_name.setdefault(name, []).append({**entry, "worker": index})
    merged_channels = {name: merge_channel(entries) for name, entries in by_name.items()}
    shown = list(merged_channels.values())
    if max_channels is not None and max_channels < len(shown):
        shown = heapq.nlargest(max_channels, shown, key=_channel_sort_key)
    channels = {entry["name"]: entry for entry in shown}

    summaries = [doc.get("summary", {}) for _, doc in ordered]
    summary = _sum_dicts(
        {key: value for key, value in s.items() if key != "depth_histogram"} for s in summaries
    )
    summary["shown"] = len(connections)
    histograms = [s["depth_histogram"] for s in summaries if "depth_histogram" in s]
    if histograms:
        counts = [sum(column) for column in zip(*(h["counts"] for h in histograms), strict=True)]
        summary["depth_histogram"] = {"bounds": histograms[0]["bounds"], "counts": counts}

    slow: list[dict[str, Any]] = []
    for index, doc in ordered:
        slow.extend({**s, "worker": index} for s in doc.get("recent_slow_consumers", []))
    slow = heapq.nlargest(RECENT_SLOW_CONSUMERS, slow, key=lambda s: s.get("at", 0.0))

    sources: list[dict[str, Any]] = []
    for index, doc in ordered:
        sources.extend({**s, "worker": index} for s in doc.get("sources", []))

    workers = [_worker_entry(index, answered.get(index)) for index in range(count)]
    return {
        "server": {**_merge_server(answered), "workers": count},
        "sort": sort,
        "connections": connections,
        "summary": summary,
        "recent_slow_consumers": slow,
        "refusals": _sum_dicts(doc.get("refusals", {}) for _, doc in ordered),
        "admission": _sum_dicts(doc.get("admission", {}) for _, doc in ordered),
        "channels": channels,
        "totals": _merge_totals(answered, merged_channels, len(channels)),
        "sources": sources,
        "workers": workers,
    }


def merge_metrics(texts: Mapping[int, bytes | None], *, count: int) -> bytes:
    """Every worker's Prometheus text exposition as one, each sample labelled `worker`.

    Parsed and written again with prometheus_client (no hand-made parser);
    a family present on several workers is one family with every worker's
    samples. `broadcaster_worker_up{worker}` says which workers answered.
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.samples import Sample

    families: dict[str, Metric] = {}
    for index, text in sorted(texts.items()):
        if text is None:
            continue
        worker = str(index)
        for family in text_string_to_metric_families(text.decode("utf-8")):
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
            merged.samples.extend(
                Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar)
                for s in family.samples
            )
    up = GaugeMetricFamily(
        "broadcaster_worker_up",
        "1 when the worker answered this scrape, 0 when it is down or did not answer in time.",
        labels=["worker"],
    )
    for index in range(count):
        up.add_metric([str(index)], 1.0 if texts.get(index) is not None else 0.0)
    families[up.name] = up

    class _Parsed:
        def collect(self) -> Iterable[Metric]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Parsed())
    return generate_latest(registry)
