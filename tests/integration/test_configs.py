"""configs/: the Grafana dashboard and the Prometheus files name only what the server exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import StartServer
from tests.support.metrics import Scrape, scrape

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METRIC = re.compile(r"\bbroadcaster_[a-z_]+\b")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
LE = re.compile(r'le="([^"]+)"')
# Added by Prometheus itself, not by the exporter.
TARGET_LABELS = {"instance", "job"}


def exprs(node: Any) -> Iterator[str]:
    """Every PromQL expression in a Grafana dashboard (targets and template queries)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from exprs(item)


def exported_labels(metrics: Scrape) -> set[str]:
    return {name for _, labels in metrics.samples for name, _ in labels}


def check_promql(text: str, metrics: Scrape) -> None:
    names = set(METRIC.findall(text))
    assert names, f"no broadcaster metric in {text!r}"
    assert names <= metrics.sample_names, f"not exported: {names - metrics.sample_names}"
    labels = exported_labels(metrics) | TARGET_LABELS
    for group in GROUPING.findall(text):
        used = {label.strip() for label in group.split(",") if label.strip()}
        assert used <= labels, f"unknown labels {used - labels} in {text!r}"
    for le in LE.findall(text):
        assert any(dict(ls).get("le") == le for _, ls in metrics.samples), f"no bucket le={le}"


async def test_grafana_dashboard_uses_only_exported_metrics_and_labels(serve: StartServer) -> None:
    """Every query of configs/grafana/broadcaster.json matches a live scrape."""
    server = await serve('[channels."orders"]\nstrategy = "block"\n')
    await server.publish("orders", 1)
    metrics = await scrape(server.port)
    dashboard = json.loads((CONFIGS / "grafana" / "broadcaster.json").read_text())
    assert dashboard["uid"] == "broadcaster"
    queries = list(exprs(dashboard))
    assert len(queries) >= 15
    for query in queries:
        check_promql(query, metrics)
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    exported = exported_labels(metrics) | TARGET_LABELS
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel["targets"]:
            assert set(LEGEND.findall(target.get("legendFormat", ""))) <= exported
    # The panels: rates, drop ratio, depth heatmap, disconnects, latency, loop lag.
    text = json.dumps(dashboard)
    for needed in (
        "broadcaster_messages_published_total",
        "broadcaster_messages_delivered_total",
        "broadcaster_messages_dropped_total",
        "broadcaster_queue_depth_bucket",
        "broadcaster_slow_consumer_disconnects_total",
        "broadcaster_delivery_latency_seconds_bucket",
        "broadcaster_event_loop_lag_seconds",
    ):
        assert needed in text
    assert any(p["type"] == "heatmap" for p in panels)


async def test_alert_rules_and_scrape_example_match_the_exporter(serve: StartServer) -> None:
    """configs/alerts.yml queries exported names and buckets; prometheus.yml loads it."""
    server = await serve()
    metrics = await scrape(server.port)
    rules = (CONFIGS / "alerts.yml").read_text()
    expressions = _yaml_exprs(rules)
    assert len(expressions) >= 5
    for expression in expressions:
        check_promql(expression, metrics)
    for alert in ("BroadcasterQueueDepthHigh", "BroadcasterDropRatioHigh"):
        assert f"alert: {alert}" in rules
    scrape_config = (CONFIGS / "prometheus.yml").read_text()
    assert "metrics_path: /metrics" in scrape_config
    assert '"127.0.0.1:8765"' in scrape_config
    assert "- alerts.yml" in scrape_config


def _yaml_exprs(text: str) -> list[str]:
    """The `expr:` values of a rule file: inline, or the indented block after `expr: |`.

    (A YAML parser would be one more test dependency for this one use.)
    """
    found: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("expr:"):
            continue
        value = stripped.removeprefix("expr:").strip()
        if value not in ("|", ">", "|-", ">-"):
            found.append(value)
            continue
        indent = len(line) - len(line.lstrip())
        block = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        found.append(" ".join(block))
    return found
