"""Prometheus metrics: the names docs/metrics.md lists, read from the core's counters at scrape.

`Metrics` owns one `CollectorRegistry` per server (never the global one, so
two servers in one process never share series) and the refusal counters
other code increments through `Metrics.refused(reason)`. The collector reads
everything else from the server's plain integer counters when Prometheus
scrapes: the hot path pays nothing for metrics beyond those increments.
prometheus-client itself is imported at the first scrape (or when the
application passes its own registry), not at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broadcaster.metrics.exporter import CONTENT_TYPE, REFUSAL_REASONS, Metrics

if TYPE_CHECKING:
    from broadcaster.metrics.collector import BroadcasterCollector


def __getattr__(name: str) -> Any:
    if name == "BroadcasterCollector":
        from broadcaster.metrics.collector import BroadcasterCollector

        return BroadcasterCollector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CONTENT_TYPE", "REFUSAL_REASONS", "BroadcasterCollector", "Metrics"]
