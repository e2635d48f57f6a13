"""Prometheus metrics: the names docs/metrics.md lists, read from the core's counters at scrape.

`Metrics` owns one `CollectorRegistry` per server (never the global one, so
two servers in one process never share series) and the refusal counters
other code increments through `Metrics.refused(reason)`. The collector reads
everything else from the server's plain integer counters when Prometheus
scrapes: the hot path pays nothing for metrics beyond those increments.
"""

from __future__ import annotations

from broadcaster.metrics.collector import BroadcasterCollector
from broadcaster.metrics.exporter import CONTENT_TYPE, REFUSAL_REASONS, Metrics

__all__ = ["CONTENT_TYPE", "REFUSAL_REASONS", "BroadcasterCollector", "Metrics"]
