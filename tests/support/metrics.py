"""Scrape a test server's /metrics and read samples by name and labels."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.support.http import http_get

__all__ = ["Scrape", "scrape"]


@dataclass(frozen=True)
class Scrape:
    """One parsed exposition: family names, and sample values by (name, labels)."""

    families: dict[str, str]
    """Family name -> type."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    whole: dict[tuple[str, frozenset[tuple[str, str]]], float]
    """Under `serve --workers`: every worker's samples summed without their `worker`
    label (PromQL's `sum without (worker)`), the whole server's figure."""

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with exactly these labels, or (under workers) the sum over
        the workers of the samples with these labels plus `worker` (KeyError if absent)."""
        key = (name, frozenset(labels.items()))
        if key in self.samples:
            return self.samples[key]
        return self.whole[key]

    def total(self, name: str, **labels: str) -> float:
        """The sum of every `name` sample whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    @property
    def sample_names(self) -> set[str]:
        return {name for name, _ in self.samples}


def parse(text: str) -> Scrape:
    families: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    whole: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
            if "worker" in sample.labels:
                rest = frozenset((k, v) for k, v in sample.labels.items() if k != "worker")
                whole[(sample.name, rest)] = whole.get((sample.name, rest), 0.0) + sample.value
    return Scrape(families, samples, whole)


async def scrape(port: int, token: str | None = None) -> Scrape:
    """GET /metrics (with `Authorization: Bearer token` when given) and parse it."""
    auth = {"Authorization": f"Bearer {token}"} if token else None
    status, headers, body = await http_get(port, "/metrics", auth)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(body.decode())
