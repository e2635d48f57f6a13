"""The custom collector: the metric families of docs/metrics.md, built from the server's state.

Per channel the core keeps plain integers (`ChannelCounters`) and bucket
counts (`core.histogram.Buckets`). Here they are summed per `channel` label,
the `[channels]` key that matched (or `*`), so the number of series is
bounded by the config whatever channel names clients invent. The queue-depth
histogram is a snapshot: each scrape counts the subscriptions at each depth
now (read its buckets as they are; a `rate()` over them means nothing).

Every label the config can produce is exported from the first scrape on,
with zeros, so ratios and alerts never see a series appear out of nowhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from broadcaster.core.channel import ChannelCounters
from broadcaster.core.histogram import DEPTH_BUCKETS, Buckets
from broadcaster.core.outbox import SAMPLE_EVERY
from broadcaster.core.strategies import DropReason, Strategy

if TYPE_CHECKING:
    from broadcaster.core.hub import Hub
    from broadcaster.server.app import Broadcaster

__all__ = ["BREAKER_STATES", "METRIC_NAMES", "BroadcasterCollector"]

# broadcaster_breaker_state's values.
BREAKER_STATES: dict[str, int] = {"closed": 0, "half-open": 1, "open": 2}

# Family names as declared (counters without `_total`, which the exposition adds).
METRIC_NAMES: tuple[str, ...] = (
    "broadcaster_connections",
    "broadcaster_connections_by_transport",
    "broadcaster_subscriptions",
    "broadcaster_messages_published",
    "broadcaster_messages_delivered",
    "broadcaster_messages_dropped",
    "broadcaster_flow_pauses",
    "broadcaster_slow_consumer_disconnects",
    "broadcaster_compression_saved_bytes",
    "broadcaster_queue_depth",
    "broadcaster_publish_blocked_seconds",
    "broadcaster_delivery_latency_seconds",
    "broadcaster_event_loop_lag_seconds",
    "broadcaster_refusals",
    "broadcaster_broker_up",
    "broadcaster_breaker_state",
    "broadcaster_loop_errors",
    "broadcaster_broker_reader_restarts",
    "broadcaster_broker_bad_entries",
    "broadcaster_broker_epoch_resets",
)


class _LabelTotals(ChannelCounters):
    """Everything exported for one `channel` label: its channels' counters summed
    (`absorb`), plus what only exists now (subscriptions, a depth histogram)."""

    __slots__ = ("depth", "strategy", "subscriptions")

    def __init__(self, strategy: str) -> None:
        super().__init__()
        self.strategy = strategy
        self.subscriptions = 0
        self.depth = Buckets(DEPTH_BUCKETS)


def _by_label(hub: Hub) -> dict[str, _LabelTotals]:
    """Sum every channel's counters into its label, freed channels' (`hub.retired`) included.

    Counters must never go backwards, or Prometheus reads a reset: a channel
    the hub frees leaves its counts in `retired` under the same label.
    """
    totals: dict[str, _LabelTotals] = {}
    policies = hub.policies
    for _pattern, policy in policies.entries:
        totals.setdefault(policy.label, _LabelTotals(policy.strategy.value))
    if not policies.strict:
        totals.setdefault(policies.defaults.label, _LabelTotals(policies.defaults.strategy.value))
    for label, counters in hub.retired.items():
        totals[label].absorb(counters)  # every label comes from the table, as above
    for channel in hub.channels.values():
        policy = channel.policy
        agg = totals.get(policy.label)
        if agg is None:
            agg = totals[policy.label] = _LabelTotals(policy.strategy.value)
        agg.subscriptions += len(channel.subscriptions)
        agg.absorb(channel.counters)
        depth = agg.depth
        for sub in channel.subscriptions:
            depth.observe(len(sub.items) + sub.in_transport)
    return totals


def _histogram(name: str, doc: str, values: Iterable[tuple[str, Buckets]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["channel"])
    for label, buckets in values:
        family.add_metric(
            [label],
            [(_le(bound), count) for bound, count in buckets.cumulative()],
            buckets.sum,
        )
    return family


def _le(bound: float) -> str:
    """An `le` label value as Prometheus clients write it ("0.005", "4.0", "+Inf")."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _by_transport(app: Broadcaster) -> dict[str, int]:
    counts = dict.fromkeys(("websocket", "sse", "ndjson"), 0)
    for session in app.sessions.values():
        counts[session.transport_name] = counts.get(session.transport_name, 0) + 1
    return counts


class BroadcasterCollector(Collector):
    """Reads one server's state when its registry is collected."""

    def __init__(self, app: Broadcaster, refusals: Mapping[str, int]) -> None:
        self._app = app
        self._refusals = refusals

    def describe(self) -> Iterable[Metric]:
        """The families without samples: lets the registry refuse a name clash at start."""
        return [
            *self._families({}, connections=0, lag=0.0, up=None, breaker=None, loop_errors={}),
            *self._broker_counters(),
        ]

    def _broker_counters(self) -> Iterator[Metric]:
        """The broker reader's fault counters (zero for a broker without a reader)."""
        status = self._app.broker.status() if self._app.started else None
        for name, doc, attr in (
            (
                "broadcaster_broker_reader_restarts",
                "Times the broker reader died of an unexpected error and was restarted.",
                "reader_restarts",
            ),
            (
                "broadcaster_broker_bad_entries",
                "Stream entries skipped because they are not broadcaster messages.",
                "bad_entries",
            ),
            (
                "broadcaster_broker_epoch_resets",
                "Channel seq histories this node saw replaced (lost or rolled back in Redis).",
                "epoch_resets",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=getattr(status, attr, 0))

    def collect(self) -> Iterable[Metric]:
        app = self._app
        if not app.started:
            return [
                *self._families({}, connections=0, lag=0.0, up=None, breaker=None, loop_errors={}),
                *self._broker_counters(),
            ]
        status = app.broker.status()
        return [
            *self._families(
                _by_label(app.hub),
                connections=len(app.sessions),
                by_transport=_by_transport(app),
                lag=app.monitor.loop_lag,
                up=status.up,
                breaker=BREAKER_STATES.get(status.breaker, BREAKER_STATES["open"]),
                loop_errors={name: guard.errors for name, guard in app.loops.guards.items()},
            ),
            *self._broker_counters(),
        ]

    def _families(
        self,
        totals: Mapping[str, _LabelTotals],
        *,
        connections: int,
        by_transport: Mapping[str, int] | None = None,
        lag: float,
        up: bool | None,
        breaker: int | None,
        loop_errors: Mapping[str, int],
    ) -> Iterator[Metric]:
        items = sorted(totals.items())
        by_transport = by_transport or {}
        yield GaugeMetricFamily(
            "broadcaster_connections",
            "Open client connections (WebSocket, SSE and NDJSON streams).",
            value=connections,
        )
        family = GaugeMetricFamily(
            "broadcaster_connections_by_transport",
            "Open client connections by transport (websocket, sse, ndjson).",
            labels=["transport"],
        )
        for kind, count in sorted(by_transport.items()):
            family.add_metric([kind], count)
        yield family
        family = GaugeMetricFamily(
            "broadcaster_subscriptions", "Current subscriptions.", labels=["channel"]
        )
        for label, agg in items:
            family.add_metric([label], agg.subscriptions)
        yield family
        for name, doc, attr in (
            ("broadcaster_messages_published", "Messages published.", "published"),
            ("broadcaster_messages_delivered", "Messages handed to sockets.", "delivered"),
            ("broadcaster_flow_pauses", "flow.pause events sent.", "pauses"),
            (
                "broadcaster_slow_consumer_disconnects",
                "Connections closed with 4008 (slow consumer).",
                "slow_consumer_disconnects",
            ),
            (
                "broadcaster_compression_saved_bytes",
                "Bytes permessage-deflate kept off the wire (plain minus sent, "
                "over frames for subscribers that negotiated it).",
                "deflate_saved",
            ),
        ):
            counter = CounterMetricFamily(name, doc, labels=["channel"])
            for label, agg in items:
                counter.add_metric([label], getattr(agg, attr))
            yield counter
        dropped = CounterMetricFamily(
            "broadcaster_messages_dropped",
            "Messages a subscriber did not get, by strategy and reason.",
            labels=["channel", "strategy", "reason"],
        )
        for label, agg in items:
            for reason, n in agg.dropped.items():
                if reason is DropReason.CONFLATED and agg.strategy != Strategy.CONFLATE:
                    continue  # only conflate channels conflate
                dropped.add_metric([label, agg.strategy, reason.value], n)
        yield dropped
        yield _histogram(
            "broadcaster_queue_depth",
            "Subscriptions by queue depth in messages, counted at scrape (a snapshot).",
            ((label, agg.depth) for label, agg in items),
        )
        yield _histogram(
            "broadcaster_publish_blocked_seconds",
            "Time publishes on block channels waited for room (publishes that waited).",
            ((label, agg.blocked) for label, agg in items),
        )
        yield _histogram(
            "broadcaster_delivery_latency_seconds",
            "Publish to socket write, sampled: the first message of every "
            f"{SAMPLE_EVERY}th batch per connection.",
            ((label, agg.latency) for label, agg in items),
        )
        yield GaugeMetricFamily(
            "broadcaster_event_loop_lag_seconds",
            "How late the monitor's last periodic wake-up ran.",
            value=lag,
        )
        refusals = CounterMetricFamily(
            "broadcaster_refusals", "Handshakes and ops refused, by reason.", labels=["reason"]
        )
        for refusal, count in self._refusals.items():
            refusals.add_metric([refusal], count)
        yield refusals
        broker_up = GaugeMetricFamily("broadcaster_broker_up", "1 when the broker is reachable.")
        breaker_state = GaugeMetricFamily(
            "broadcaster_breaker_state", "Broker circuit breaker: 0 closed, 1 half-open, 2 open."
        )
        if up is not None and breaker is not None:
            broker_up.add_metric([], 1 if up else 0)
            breaker_state.add_metric([], breaker)
        yield broker_up
        yield breaker_state
        errors = CounterMetricFamily(
            "broadcaster_loop_errors",
            "Failed iterations of a background loop, which went on (server/loops.py).",
            labels=["loop"],
        )
        for loop, count in sorted(loop_errors.items()):
            errors.add_metric([loop], count)
        yield errors
