"""PNG plots of one result document: latency, server CPU/RSS, and queue depth over time.

Plots read only the result document (the same one ``--json`` writes), so a saved
result can be re-plotted later. matplotlib is imported here and only here, with
the non-interactive Agg backend, because it is slow to import and needs no display.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["write_plots"]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def write_plots(result: dict[str, Any], directory: Path, prefix: str | None = None) -> list[Path]:
    """Write the plots this result has data for; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    name = _safe(prefix or f"{result['scenario']['name']}-{result['target']['label']}")
    title = f"{result['scenario']['name']} against {result['target']['label']}"
    written: list[Path] = []

    timeline = [p for p in result["latency_timeline"] if p["count"]]
    if timeline:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        t = [p["t"] + 0.5 for p in timeline]
        for key, style in (("p50", "-"), ("p99", "-"), ("max", ":")):
            ax.plot(t, [max(p[key], 1e-3) for p in timeline], style, marker=".", label=key)
        ax.set_yscale("log")
        ax.set_xlabel("seconds since publishing started")
        ax.set_ylabel("end-to-end latency (ms)")
        ax.set_title(f"{title}: latency per second (fast subscribers)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = directory / f"{name}-latency.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    usage = result["server"]["timeline"]
    if usage:
        fig, ax_cpu = plt.subplots(figsize=(9, 4.5))
        t = [p["t"] for p in usage]
        cpu = [p["cpu_percent"] if p["cpu_percent"] is not None else float("nan") for p in usage]
        ax_cpu.plot(t, cpu, color="tab:red", label="CPU %")
        ax_cpu.set_xlabel("seconds since publishing started")
        ax_cpu.set_ylabel("server CPU (% of one core)", color="tab:red")
        ax_rss = ax_cpu.twinx()
        ax_rss.plot(t, [p["rss_mb"] for p in usage], color="tab:blue", label="RSS MB")
        ax_rss.set_ylabel("server RSS (MB)", color="tab:blue")
        ax_cpu.axvline(0.0, color="grey", linestyle="--", linewidth=0.8)
        ax_cpu.set_title(f"{title}: server CPU and RSS")
        ax_cpu.grid(True, alpha=0.3)
        path = directory / f"{name}-server.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    depth = result["stats_endpoint"]["timeline"]
    if depth:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        t = [p["t"] for p in depth]
        ax.plot(t, [p["max_depth"] for p in depth], marker=".", label="max depth (one connection)")
        ax.plot(t, [p["total_depth"] for p in depth], marker=".", label="sum over top 100")
        ax.set_xlabel("seconds since publishing started")
        ax.set_ylabel("queued messages (GET /stats depth)")
        ax.set_title(f"{title}: queue depth")
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = directory / f"{name}-depth.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
