"""``compare``: one scenario, several targets, interleaved rounds, medians and ratios.

The machine is shared and noisy, so a single run proves little and runs taken at
different times prove less. ``compare`` runs A B C, A B C, ... so that drift hits
every target alike, then reports each headline figure's median per target and its
ratio to the first target. BENCHMARKS.md figures come from here.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from loadtest.report import headline
from loadtest.runner import RunOptions, run_scenario
from loadtest.scenarios import Scenario
from loadtest.targets import TargetSpec

__all__ = ["compare", "render_compare"]


async def compare(
    scenario: Scenario, specs: list[TargetSpec], repeat: int, options: RunOptions
) -> dict[str, Any]:
    """Run ``repeat`` interleaved rounds; the document holds every run and the medians."""
    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    labels = _unique_labels(specs)
    runs: list[dict[str, Any]] = []
    for round_no in range(1, repeat + 1):
        for spec, label in zip(specs, labels, strict=True):
            result = await run_scenario(scenario, spec, dataclasses.replace(options, label=label))
            result["round"] = round_no
            result.pop("per_subscriber", None)  # keeps a multi-run document readable
            runs.append(result)
    medians: dict[str, dict[str, float | None]] = {}
    for label in labels:
        figures = [headline(r) for r in runs if r["target"]["label"] == label]
        medians[label] = {
            key: _median([f[key] for f in figures]) for key in (figures[0] if figures else {})
        }
    first = labels[0]
    ratios = {
        label: {
            key: _ratio(value, medians[first].get(key)) for key, value in medians[label].items()
        }
        for label in labels
    }
    return {
        "scenario": scenario.to_dict(),
        "targets": labels,
        "repeat": repeat,
        "order": "interleaved",
        "medians": medians,
        "ratios_to_first": ratios,
        "runs": runs,
    }


def _unique_labels(specs: list[TargetSpec]) -> list[str]:
    labels: list[str] = []
    for spec in specs:
        label = spec.label
        n = 2
        while label in labels:
            label = f"{spec.label}#{n}"
            n += 1
        labels.append(label)
    return labels


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return round(value / reference, 3)


def render_compare(doc: dict[str, Any]) -> str:
    """Medians side by side, then each target's ratio to the first."""
    labels: list[str] = doc["targets"]
    medians = doc["medians"]
    keys = [k for k in medians[labels[0]] if any(medians[lab][k] is not None for lab in labels)]
    header = ["metric (median)", *labels, *(f"{lab}/{labels[0]}" for lab in labels[1:])]
    rows = [header]
    for key in keys:
        row = [key]
        row += [_fmt(medians[lab][key]) for lab in labels]
        row += [_fmt_ratio(doc["ratios_to_first"][lab][key]) for lab in labels[1:]]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        f"{doc['scenario']['name']}: {doc['repeat']} interleaved round(s) of {', '.join(labels)}"
    ]
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(widths[j]) if j == 0 else cell.rjust(widths[j])
                for j, cell in enumerate(row)
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
