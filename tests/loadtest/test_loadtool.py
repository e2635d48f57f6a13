"""The load tool is itself tested: its accounting, its stalled clients, its outputs.

Short real runs (a few hundred messages, a few subscribers, about a second) against
servers on free loopback ports check that every message is accounted for; nothing
here asserts a speed or a latency, so the tests hold on a busy machine.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from loadtest.accounting import SubscriberRecord, Timeline
from loadtest.cli import build_parser, scenario_from_args
from loadtest.histogram import Histogram, bucket_of, lower_bound_of
from loadtest.report import RESULT_FIELDS, check_accounting, headline
from loadtest.runner import RunOptions, run_scenario
from loadtest.scenarios import PRESETS, Scenario, get_scenario
from loadtest.stalled import TCP_ESTABLISHED, open_stalled, receive_queue_bytes, tcp_state
from loadtest.targets import TargetSpec, broadcaster_config, parse_target, start_target
from tests.conftest import StartServer
from tests.support.redis_server import RedisServer, redis_toml

ROOT = Path(__file__).resolve().parents[2]


def short(**changes: Any) -> Scenario:
    """A scenario small enough for the test suite: ~300 messages, a few subscribers, 1 s."""
    base = {
        "subscribers": 4,
        "processes": 2,
        "channels": 2,
        "publishers": 2,
        "rate": 150.0,
        "size": 200,
        "duration": 1.0,
        "drain": 5.0,
        "slow": 1,
        "slow_rate": 2000.0,
    }
    base.update(changes)
    return get_scenario("custom").override(**base)


# -- pure parts ---------------------------------------------------------------------------


def test_histogram_buckets_round_trip_and_bound_the_error() -> None:
    for value in [0, 1, 127, 128, 129, 255, 256, 1000, 65_535, 10**6, 10**9]:
        b = bucket_of(value)
        assert lower_bound_of(b) <= value < lower_bound_of(b + 1)
        assert lower_bound_of(b + 1) - lower_bound_of(b) <= max(1, value // 64 + 1)


def test_histogram_percentiles_merge_exactly() -> None:
    a, b = Histogram(), Histogram()
    for v in range(1, 101):
        (a if v % 2 else b).add(v)
    merged = Histogram.from_dict(orjson.loads(orjson.dumps(a.to_dict())))
    merged.merge(b)
    assert merged.count == 100
    assert merged.max_us == 100
    assert merged.percentile(50) == 50
    assert merged.percentile(99) == 99
    assert merged.mean() == pytest.approx(50.5)


def test_record_counts_gaps_duplicates_and_flow_events() -> None:
    record = SubscriberRecord(0, "c", "fast", Timeline(time.time_ns()))
    frames: list[dict[str, Any]] = [
        {"event": "subscribed", "channel": "c", "seq": 10, "strategy": "drop-oldest"},
        {"event": "message", "channel": "c", "seq": 11, "data": {"t": time.time_ns()}},
        {"event": "flow.pause", "channel": "c", "depth": 4, "limit": 4},
        {"event": "message", "channel": "c", "seq": 14, "data": {"t": time.time_ns()}},
        {"event": "flow.resume", "channel": "c", "dropped": 2},
        {"event": "message", "channel": "c", "seq": 14, "data": 1},
        {"event": "message", "channel": "c", "seq": 12, "data": 1},
        {"event": "message", "channel": "c", "seq": 15, "data": 1},
    ]
    for frame in frames:
        record.on_frame(orjson.dumps(frame))
    result = record.result()
    assert (result.base_seq, result.first_seq, result.last_seq) == (10, 11, 15)
    assert result.received == 5
    assert (result.gaps, result.gap_missed) == (1, 2)
    assert (result.duplicates, result.out_of_order) == (1, 1)
    assert (result.pauses, result.resumes, result.resume_dropped) == (1, 1, 2)
    assert result.strategy == "drop-oldest"
    assert sum(h.count for h in record.timeline.seconds.values()) == 2


def _sub(**fields: Any) -> dict[str, Any]:
    base = {
        "index": 0,
        "channel": "c",
        "kind": "fast",
        "strategy": "drop-oldest",
        "subscribed": True,
        "connected": True,
        "base_seq": 0,
        "received": 0,
        "last_seq": 0,
        "gap_missed": 0,
        "duplicates": 0,
        "out_of_order": 0,
    }
    base.update(fields)
    return base


def test_accounting_balances_gaps_and_tails_and_flags_the_rest() -> None:
    acked = {"c": list(range(1, 11))}
    final = {"c": 10}
    subs = [
        _sub(index=1, received=10, last_seq=10),
        _sub(index=2, received=7, last_seq=10, gap_missed=3),
        _sub(index=3, received=8, last_seq=8),  # two never arrived: tail, not a gap
        _sub(index=4, base_seq=5, received=5, last_seq=10),
        _sub(index=5, received=9, last_seq=10),  # one lost without a seq jump: wrong
        _sub(index=6, received=11, last_seq=10, duplicates=1),
        _sub(index=7, received=1, last_seq=1, connected=False),  # cut off: not checked
        _sub(index=8, received=3, last_seq=10, strategy="conflate"),
    ]
    report = check_accounting(subs, acked, final)
    assert report["checked"] == 6
    assert report["balanced"] == 4
    assert report["complete"] == 3
    assert report["skipped_conflate"] == 1
    assert sorted(m["index"] for m in report["mismatches"]) == [5, 6]

    blocked = check_accounting(subs[:2], acked, final, unacked={"c": 3})
    assert blocked["checked"] == 0
    assert blocked["indeterminate"] == 2
    assert blocked["unacked_by_channel"] == {"c": 3}


def test_cli_overrides_presets() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "run",
            "S1",
            "--server",
            "trivial",
            "--subscribers",
            "10",
            "--strategy",
            "drop-oldest,block",
            "--channels",
            "2",
        ]
    )
    scenario = scenario_from_args(args)
    assert scenario.rate is None
    assert scenario.subscribers == 10
    assert scenario.strategies == ("drop-oldest", "block")
    args = parser.parse_args(["run", "S2", "--url", "ws://127.0.0.1:1/ws", "--rate", "max"])
    assert scenario_from_args(args).rate is None
    args = parser.parse_args(["run", "custom", "--server", "trivial", "--idle"])
    idle = scenario_from_args(args)
    assert idle.idle
    assert idle.publishers == 0
    assert set(PRESETS) == {"S1", "S2", "S3", "S4", "F10k", "custom"}


def test_cli_compression_uses_the_websockets_client() -> None:
    """`--compression` picks the client that can negotiate it; picows cannot, and says so."""
    parser = build_parser()
    args = parser.parse_args(["run", "S2", "--server", "broadcaster", "--compression"])
    scenario = scenario_from_args(args)
    assert scenario.compression
    assert scenario.client == "websockets"
    args = parser.parse_args(
        ["run", "S2", "--server", "broadcaster", "--compression", "--client", "picows"]
    )
    with pytest.raises(ValueError, match="picows does not do permessage-deflate"):
        scenario_from_args(args)


def test_targets_parse_and_refuse_non_loopback() -> None:
    assert parse_target("trivial").command is not None
    spec = parse_target("mine=python -m something --port {port}")
    assert spec.label == "mine"
    assert spec.command is not None
    assert parse_target("ws://127.0.0.1:9/ws").url == "ws://127.0.0.1:9/ws"
    with pytest.raises(RuntimeError, match="loopback"):
        parse_target("ws://192.0.2.1:9/ws")
    with pytest.raises(RuntimeError, match="port"):
        parse_target("python -m server")


def test_broadcaster_config_carries_the_scenario() -> None:
    import tomllib

    scenario = short(strategies=("drop-newest", "block"), queue_size=64)
    config = tomllib.loads(broadcaster_config(scenario, 4321))
    assert config["server"] == {"host": "127.0.0.1", "port": 4321}
    assert config["defaults"]["queue_size"] == 64
    assert config["defaults"]["low_watermark"] == 32
    assert config["channels"]["load.1"]["strategy"] == "block"
    assert "sources" not in config


# -- real runs ----------------------------------------------------------------------------


async def test_short_scenario_accounts_for_every_message(target: TargetSpec) -> None:
    result = await run_scenario(short(), target)
    doc = orjson.loads(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS))
    assert set(RESULT_FIELDS) <= set(doc)

    published = doc["published"]["per_channel"]
    assert doc["published"]["total"] == sum(c["count"] for c in published.values()) > 0
    subs = doc["per_subscriber"]
    assert len(subs) == 4
    assert all(s["subscribed"] and s["connected"] for s in subs)
    for s in subs:
        channel_published = published[s["channel"]]["final_seq"] - s["base_seq"]
        assert s["received"] + s["gap_missed"] == channel_published, s
    assert doc["accounting"]["checked"] == 4
    assert doc["accounting"]["failed"] == 0
    assert doc["drops"]["gap_missed"] == sum(s["gap_missed"] for s in subs)
    assert doc["drops"]["gaps"] == sum(s["gaps"] for s in subs)
    by_strategy = doc["drops"]["by_strategy"]
    assert sum(row["gap_missed"] for row in by_strategy.values()) == doc["drops"]["gap_missed"]
    assert doc["deliveries"]["total"] == sum(s["received"] for s in subs)
    assert doc["latency_ms"]["count"] > 0
    assert doc["latency_ms"]["p50"] <= doc["latency_ms"]["p99"] <= doc["latency_ms"]["max"]
    assert doc["server"]["sampled"]
    assert doc["server"]["timeline"]
    # Server CPU per delivery compares across load clients (CPU percent does not).
    assert doc["server"]["cpu_us_per_delivery"] > 0
    assert headline(doc)["server_cpu_us_per_delivery"] == doc["server"]["cpu_us_per_delivery"]
    assert doc["stalled"]["count"] == 0


async def test_compression_runs_count_the_bytes_on_the_wire() -> None:
    """The same run with and without permessage-deflate: every message still accounted for,
    and the compressed subscribers' kernels received well under half the bytes."""
    per_delivery = {}
    for compression in (False, True):
        scenario = short(
            client="websockets",
            compression=compression,
            payload="json",
            size=4000,
            slow=0,
            channels=1,
            publishers=1,
            subscribers=2,
        )
        result = await run_scenario(scenario, parse_target("broadcaster"))
        doc = orjson.loads(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS))
        assert doc["accounting"]["failed"] == 0
        assert doc["deliveries"]["total"] > 0
        per_delivery[compression] = doc["deliveries"]["wire_bytes_per_delivery"]
    assert per_delivery[False] > 3800, "plain: the event's size and its framing"
    assert per_delivery[True] < 0.5 * per_delivery[False]


async def test_stalled_clients_in_a_scenario_stop_reading() -> None:
    result = await run_scenario(
        short(subscribers=2, slow=0, channels=1, publishers=1, stalled=2, size=2048),
        parse_target("baseline-queue"),
    )
    stalled = result["stalled"]
    assert stalled["count"] == 2
    assert stalled["subscribed"] == 2
    assert stalled["closed"] == 0  # a baseline never cuts anyone off
    for client in stalled["clients"]:
        assert client["tcp_state"] == "ESTABLISHED"
        assert client["receive_queue_bytes"] > 0  # data arrived, nobody read it
    assert result["accounting"]["failed"] == 0


async def test_stalled_socket_really_stops_reading() -> None:
    """The kernel holds unread data for the stalled client and TCP holds back the rest."""
    scenario = short()
    async with start_target(parse_target("trivial"), scenario) as target:
        [client] = await open_stalled(target.url, ["s"], 1, rcvbuf=4096, wait_s=10.0)
        assert client.error is None
        assert client.subscribed
        assert client.sock is not None
        count, size = 100, 2048
        async with connect(target.url, compression=None) as publisher:
            for i in range(count):
                frame = {"op": "publish", "channel": "s", "id": i, "data": "x" * size}
                await publisher.send(orjson.dumps(frame).decode())
            for _ in range(count):
                await asyncio.wait_for(publisher.recv(), 10.0)
        queued = 0
        for _ in range(100):  # bounded: at most ~5 s
            queued = receive_queue_bytes(client.sock)
            if queued > 0:
                break
            await asyncio.sleep(0.05)
        assert queued > 0
        assert queued < count * size  # the rest is held back by TCP flow control
        assert tcp_state(client.sock) == TCP_ESTABLISHED
        assert client.check() is False
        client.close()


def test_cli_compare_writes_json_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    plots = tmp_path / "plots"
    argv = [
        sys.executable,
        "-m",
        "loadtest",
        "compare",
        "custom",
        "--target",
        "trivial",
        "--target",
        "qb=baseline-queue",
        "--repeat",
        "1",
        "--subscribers",
        "3",
        "--processes",
        "1",
        "--rate",
        "max",
        "--duration",
        "1",
        "--json",
        str(out),
        "--plots",
        str(plots),
    ]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "deliveries_per_s" in proc.stdout
    assert "qb/trivial" in proc.stdout
    doc = orjson.loads(out.read_bytes())
    assert doc["targets"] == ["trivial", "qb"]
    assert [r["target"]["label"] for r in doc["runs"]] == ["trivial", "qb"]
    assert doc["ratios_to_first"]["trivial"]["deliveries_per_s"] == 1.0
    for run in doc["runs"]:
        assert run["accounting"]["failed"] == 0
        assert run["accounting"]["checked"] == 3
    assert sorted(p.name for p in plots.iterdir()) == [
        "qb-r1-latency.png",
        "qb-r1-server.png",
        "trivial-r1-latency.png",
        "trivial-r1-server.png",
    ]


async def test_tool_drives_a_cluster_publishing_on_one_node_subscribing_on_all(
    redis_server: RedisServer, serve: StartServer
) -> None:
    """With --subscribe-url, subscribers spread over every node and see one gap-free stream."""
    nodes = [await serve(redis_toml(redis_server.url)) for _ in range(3)]
    urls = tuple(node.url for node in nodes)
    result = await run_scenario(
        short(subscribers=6, processes=3),
        parse_target(urls[0]),
        RunOptions(subscribe_urls=urls[1:]),
    )
    subs = result["per_subscriber"]
    assert len(subs) == 6
    assert all(s["subscribed"] and s["connected"] for s in subs)
    assert result["accounting"]["failed"] == 0
    assert result["drops"]["gap_missed"] == 0
    for node in nodes:
        # Channels freed when their subscribers left keep their counts in `retired`.
        delivered = sum(ch.counters.delivered for ch in node.hub.channels.values()) + sum(
            counters.delivered for counters in node.hub.retired.values()
        )
        assert delivered > 0, "every node had subscribers and delivered to them"


def test_channels_bench_times_stats_and_frees_every_channel() -> None:
    """The many-channels bench BENCHMARKS.md quotes runs end to end and frees all it made."""
    argv = [sys.executable, "-m", "loadtest.channels_bench", "--channels", "4500", "--rounds", "1"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "4,500 channels" in proc.stdout
    assert "/stats document, the 100 busiest channels:" in proc.stdout
    # 2,000 per call: 3 calls see every channel unused, 3 more free them all.
    assert "6 calls saw and freed 4,500 channels" in proc.stdout
