"""The one-server view of several workers: /stats and /metrics merged from hand-made snapshots."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broadcaster.workers.view import down_workers, merge_metrics, merge_stats


def connection(id_: int, depth: int, age: float, dropped: int = 0) -> dict[str, Any]:
    return {"id": id_, "remote": "127.0.0.1", "depth": depth, "age": age, "dropped": dropped}


def channel(name: str, subscribers: int, published: int, delivered: int) -> dict[str, Any]:
    return {
        "name": name,
        "label": "*",
        "strategy": "drop-oldest",
        "subscribers": subscribers,
        "last_seq": published,
        "epoch": "e1",
        "published": published,
        "delivered": delivered,
        "dropped": {"oldest": 1},
        "pauses": 0,
        "slow_consumer_disconnects": 0,
        "dropped_total": 1,
        "compression": {"mode": "off", "plain_bytes": 10, "wire_bytes": 5, "ratio": 0.5},
        "rates": {"published": 2.0, "delivered": 4.0, "dropped": 0.0, "window": 1.0},
    }


def worker_doc(
    index: int,
    connections: list[dict[str, Any]],
    channels: list[dict[str, Any]],
    *,
    freed_published: int = 0,
) -> dict[str, Any]:
    delivered = sum(c["delivered"] for c in channels)
    return {
        "server": {
            "started_at": 100.0 + index,
            "uptime": 10.0 - index,
            "connections": len(connections),
            "loop_lag": 0.001 * (index + 1),
            "broker": {"name": "bus"},
            "epoch": "e1",
            "loops": {"sweep": {"state": "running", "errors": index, "last_error": None}},
        },
        "sort": "depth",
        "connections": connections,
        "summary": {
            "connections": len(connections),
            "shown": len(connections),
            "by_transport": {"websocket": len(connections)},
            "paused": 1,
            "behind": 0,
            "depth_histogram": {"bounds": [0, 10], "counts": [len(connections), 0, 0]},
        },
        "recent_slow_consumers": [{"id": 9, "at": 50.0 + index}],
        "refusals": {"origin": index, "admin": 1},
        "admission": {"open": len(connections), "addresses": 1, "overloaded": False, "shed": 0},
        "channels": {c["name"]: c for c in channels},
        "totals": {
            "published": sum(c["published"] for c in channels) + freed_published,
            "delivered": delivered,
            "dropped": len(channels),
            "pauses": 0,
            "slow_consumer_disconnects": 0,
            "compression_saved_bytes": 5,
            "channels": len(channels),
            "channels_shown": len(channels),
            "channels_freed": 0,
            "rates": {"published": 2.0, "delivered": 4.0, "dropped": 0.0, "window": 1.0},
        },
        "sources": [{"name": "demo"}] if index == 0 else [],
        "worker": {"index": index, "pid": 1000 + index, "restarts": index},
    }


def two_workers() -> dict[int, dict[str, Any] | None]:
    return {
        0: worker_doc(
            0,
            [connection(1, depth=5, age=3.0), connection(2, depth=0, age=9.0)],
            [channel("prices", 2, 10, 20), channel("news", 1, 4, 4)],
            freed_published=3,
        ),
        1: worker_doc(1, [connection(1, depth=7, age=1.0)], [channel("prices", 1, 10, 10)]),
    }


def test_every_connection_of_every_worker_with_its_worker() -> None:
    """Connections from all workers, each marked with its worker, worst first."""
    merged = merge_stats(two_workers(), count=2)
    shown = [(c["worker"], c["id"], c["depth"]) for c in merged["connections"]]
    assert shown == [(1, 1, 7), (0, 1, 5), (0, 2, 0)]
    assert merged["summary"]["connections"] == merged["server"]["connections"] == 3


def test_top_is_the_worst_across_workers() -> None:
    """`top=2` keeps the 2 worst of the whole server, whatever worker holds them."""
    merged = merge_stats(two_workers(), count=2, top=2)
    assert [c["depth"] for c in merged["connections"]] == [7, 5]
    assert merged["summary"]["shown"] == 2
    assert merged["summary"]["connections"] == 3


def test_ties_go_to_the_older_connection() -> None:
    """Equal depth: the older connection (larger age) comes first, as in one process."""
    docs = {
        0: worker_doc(0, [connection(1, depth=1, age=2.0)], []),
        1: worker_doc(1, [connection(1, depth=1, age=8.0)], []),
    }
    merged = merge_stats(docs, count=2, sort="depth")
    assert [c["worker"] for c in merged["connections"]] == [1, 0]


def test_a_channel_on_several_workers_is_one_entry() -> None:
    """Per-subscriber counters add up; a message is counted published once."""
    merged = merge_stats(two_workers(), count=2)
    prices = merged["channels"]["prices"]
    assert prices["subscribers"] == 3
    assert prices["delivered"] == 30
    assert prices["published"] == prices["last_seq"] == 10
    assert prices["dropped"] == {"oldest": 2}
    assert prices["compression"]["plain_bytes"] == 20
    assert prices["compression"]["ratio"] == 0.5
    assert prices["rates"]["delivered"] == 8.0
    assert prices["rates"]["published"] == 2.0
    assert prices["workers"] == [0, 1]
    assert set(merged["channels"]) == {"prices", "news"}


def test_totals_add_up() -> None:
    """Totals equal the sum of the workers' entries, and of the merged channels."""
    merged = merge_stats(two_workers(), count=2)
    totals = merged["totals"]
    assert totals["delivered"] == sum(w["delivered"] for w in merged["workers"]) == 34
    assert totals["delivered"] == sum(c["delivered"] for c in merged["channels"].values())
    # prices 10 + news 4, plus 3 on a channel worker 0 has since freed.
    assert totals["published"] == 17
    assert totals["channels"] == 2
    assert totals["channels_shown"] == 2
    assert merged["summary"]["depth_histogram"]["counts"] == [3, 0, 0]
    assert merged["refusals"] == {"origin": 1, "admin": 2}
    assert merged["admission"]["open"] == 3


def test_only_some_channels_listed_gives_the_largest_worker_total() -> None:
    """When a worker listed only its busiest channels, `published` is a lower bound."""
    docs = two_workers()
    doc = docs[0]
    assert doc is not None
    doc["totals"]["channels"] = 5
    merged = merge_stats(docs, count=2, max_channels=1)
    assert merged["totals"]["published"] == 17
    assert list(merged["channels"]) == ["prices"]
    assert merged["totals"]["channels_shown"] == 1


def test_workers_section_says_who_is_up() -> None:
    """Each worker's index, pid, connections; a worker that did not answer is `up: false`."""
    docs = two_workers()
    docs[2] = None
    merged = merge_stats(docs, count=3)
    assert [(w["index"], w["up"], w["pid"], w["connections"]) for w in merged["workers"]] == [
        (0, True, 1000, 2),
        (1, True, 1001, 1),
        (2, False, None, None),
    ]
    assert merged["server"]["workers"] == 3


def test_server_section_merges_loops_and_lag() -> None:
    """The oldest start, the worst lag, a loop's errors from every worker."""
    merged = merge_stats(two_workers(), count=2)
    server = merged["server"]
    assert server["started_at"] == 100.0
    assert server["loop_lag"] == 0.002
    assert server["loops"]["sweep"] == {"state": "running", "errors": 1, "last_error": None}


def test_recent_slow_consumers_newest_first_with_worker() -> None:
    merged = merge_stats(two_workers(), count=2)
    assert [(s["worker"], s["at"]) for s in merged["recent_slow_consumers"]] == [
        (1, 51.0),
        (0, 50.0),
    ]
    assert merged["sources"] == [{"name": "demo", "worker": 0}]


def test_bad_sort_and_nobody_answering_are_refused() -> None:
    with pytest.raises(ValueError, match="sort"):
        merge_stats(two_workers(), count=2, sort="name")
    with pytest.raises(ValueError, match="no worker"):
        merge_stats({0: None}, count=1)


def test_down_workers() -> None:
    assert down_workers(3, frozenset({0, 2})) == [1]
    assert down_workers(2, frozenset({0, 1})) == []


EXPOSITION = b"""# HELP broadcaster_connections Open client connections.
# TYPE broadcaster_connections gauge
broadcaster_connections 3.0
# HELP broadcaster_messages_delivered_total Messages handed to sockets.
# TYPE broadcaster_messages_delivered_total counter
broadcaster_messages_delivered_total{channel="*"} 7.0
# HELP broadcaster_queue_depth Depth.
# TYPE broadcaster_queue_depth histogram
broadcaster_queue_depth_bucket{le="1.0"} 1.0
broadcaster_queue_depth_bucket{le="+Inf"} 2.0
broadcaster_queue_depth_count 2.0
broadcaster_queue_depth_sum 3.0
"""


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_metrics_every_sample_gets_its_worker_label() -> None:
    """Each worker's samples appear once, labelled with the worker; nothing is summed."""
    merged = samples(merge_metrics({0: EXPOSITION, 1: EXPOSITION, 2: None}, count=3))
    for worker in ("0", "1"):
        assert merged[("broadcaster_connections", (("worker", worker),))] == 3.0
        key = ("broadcaster_messages_delivered_total", (("channel", "*"), ("worker", worker)))
        assert merged[key] == 7.0
        assert merged[("broadcaster_queue_depth_bucket", (("le", "+Inf"), ("worker", worker)))] == 2
    assert merged[("broadcaster_worker_up", (("worker", "2"),))] == 0.0
    assert merged[("broadcaster_worker_up", (("worker", "0"),))] == 1.0
    assert not any(dict(labels).get("worker") == "2" for name, labels in merged if "up" not in name)


def test_metrics_families_are_written_once() -> None:
    """One HELP/TYPE per family, whatever the number of workers (a valid exposition)."""
    text = merge_metrics({0: EXPOSITION, 1: EXPOSITION}, count=2).decode()
    assert text.count("# TYPE broadcaster_connections gauge") == 1
    assert text.count("# TYPE broadcaster_queue_depth histogram") == 1
