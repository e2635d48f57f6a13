"""Ticker-grade delivery: conflate (latest per key), snapshot on subscribe, max_rate."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from broadcaster.core.strategies import DropReason
from tests.conftest import TOPOLOGIES, WIRES, ConnectRaw, StartServer
from tests.support.clients import open_client
from tests.support.http import http_get_json
from tests.support.servers import wait_until

# Every test both ways: clients reading plain frames, and clients that negotiated
# permessage-deflate with every message compressed (tests/conftest.py `wire`).
pytestmark = [
    pytest.mark.parametrize("wire", WIRES, indirect=True),
    pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True),
    pytest.mark.usefixtures("wire", "topology"),
]

CHANNELS = """
[channels."quotes"]
strategy = "conflate"
conflate_key = "symbol"
queue_size = 64
slow_consumer_timeout = 60.0

[channels."book"]
strategy = "conflate"
conflate_key = "symbol"
snapshot = true
max_rate = 20

[channels."plain"]
strategy = "drop-oldest"
"""

SYMBOLS = [f"S{i:02d}" for i in range(50)]


def is_rotation(seen: list[str], order: list[str]) -> bool:
    start = order.index(seen[0])
    return seen == order[start:] + order[:start]


async def test_stalled_client_on_conflate_channel_gets_latest_value_of_every_key(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """After a stall, one message per symbol arrives, each its last value, in first-seen order."""
    server = await serve(CHANNELS)
    stalled = await connect_raw(server.port)
    await stalled.subscribe("quotes")
    pad = "p" * 150
    for update in range(100):
        for symbol in SYMBOLS:
            await server.publish("quotes", {"symbol": symbol, "v": update, "pad": pad})
        await asyncio.sleep(0)  # let the writer run: the client's buffers fill, then the queue
    channel = server.hub.channels["quotes"]
    (sub,) = channel.subscriptions
    assert len(sub.items) == len(SYMBOLS), "the backlog holds exactly one entry per symbol"
    assert channel.counters.dropped[DropReason.CONFLATED] > 0

    total = len(SYMBOLS) * 100

    def every_latest_value_arrived(evs: list[dict[str, Any]]) -> bool:
        latest = {
            e["data"]["symbol"] for e in evs if e.get("event") == "message" and e["data"]["v"] == 99
        }
        return len(latest) == len(SYMBOLS)

    events = await stalled.read_until(every_latest_value_arrived)
    messages = [e for e in events if e.get("event") == "message"]
    tail = messages[-len(SYMBOLS) :]
    assert sorted(m["data"]["symbol"] for m in tail) == SYMBOLS, "each symbol exactly once"
    assert all(m["data"]["v"] == 99 for m in tail), "each one is the last published value"
    assert is_rotation([m["data"]["symbol"] for m in tail], SYMBOLS), "first-seen order"
    per_key: dict[str, list[int]] = {}
    for m in messages:
        per_key.setdefault(m["data"]["symbol"], []).append(m["seq"])
    assert all(seqs == sorted(seqs) for seqs in per_key.values()), "seq grows per key"

    # Then the live stream flows normally.
    for symbol in SYMBOLS:
        await server.publish("quotes", {"symbol": symbol, "v": 100})
    events = await stalled.read_until(lambda evs: any(e.get("seq") == total + 50 for e in evs))
    live = [e["seq"] for e in events if e.get("event") == "message" and e["seq"] > total]
    assert live == list(range(total + 1, total + 51))


async def test_snapshot_then_live_stream_without_gap_or_duplicate(serve: StartServer) -> None:
    """A late subscriber first gets the latest value of every key, then live from LAST + 1."""
    server = await serve(CHANNELS)
    for update in range(3):
        for symbol in SYMBOLS:
            await server.publish("book", {"symbol": symbol, "v": update})
    client = await open_client(server.url)
    reply = await client.subscribe("book")
    last = reply["seq"]
    assert last == 150
    assert reply["strategy"] == "conflate"
    snapshot = await client.messages("book", len(SYMBOLS))
    assert all(m.get("snapshot") is True for m in snapshot)
    assert [m["data"]["symbol"] for m in snapshot] == SYMBOLS
    assert all(m["data"]["v"] == 2 for m in snapshot)
    assert [m["seq"] for m in snapshot] == list(range(last - 49, last + 1)), "seq order, <= LAST"
    await server.publish("book", {"symbol": "S00", "v": 3})
    (live,) = await client.messages("book", 1)
    assert live["seq"] == last + 1
    assert "snapshot" not in live


async def test_snapshot_is_skipped_when_since_recovers(serve: StartServer) -> None:
    """A subscriber that asks for nothing new (since = LAST) gets no snapshot replay."""
    server = await serve(CHANNELS)
    await server.publish("book", {"symbol": "S00", "v": 1})
    first = await open_client(server.url)
    epoch = (await first.subscribe("book"))["epoch"]  # the bus's under workers
    client = await open_client(server.url)
    reply = await client.subscribe("book", since=1, epoch=epoch)
    assert reply["recovered"] is True
    await server.publish("book", {"symbol": "S00", "v": 2})
    (message,) = await client.messages("book", 1)
    assert message["seq"] == 2
    assert "snapshot" not in message


async def test_max_rate_caps_deliveries_and_the_last_one_is_the_latest(
    serve: StartServer,
) -> None:
    """A subscriber with max_rate 5 gets at most 5 messages a second, the newest each time."""
    server = await serve(CHANNELS)
    client = await open_client(server.url)
    reply = await client.subscribe("plain", max_rate=5)
    assert reply["max_rate"] == 5
    started = time.monotonic()
    seq = 0
    for i in range(150):  # about 1.5 seconds at 100 messages/s
        seq = await server.publish("plain", {"i": i})
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    received: list[dict[str, Any]] = []
    while not received or received[-1]["seq"] != seq:
        received += await client.messages("plain", 1, timeout=5)
    # One message may leave at once, then at most one per 0.2 s (+1 for the final wake).
    assert len(received) <= 2 + 5 * (time.monotonic() - started)
    assert len(received) < 150 / 4, "most messages were conflated away"
    assert received[-1]["data"] == {"i": 149}, "the last message is the latest"
    seqs = [m["seq"] for m in received]
    assert seqs == sorted(set(seqs))
    assert elapsed > 0


async def test_channel_max_rate_caps_what_a_subscriber_asks_for(serve: StartServer) -> None:
    """`subscribed` echoes the effective rate: the channel's cap when the client asks for more."""
    server = await serve(CHANNELS)
    client = await open_client(server.url)
    reply = await client.subscribe("book", max_rate=1000)
    assert reply["max_rate"] == 20


async def test_conflate_subscriber_that_keeps_up_gets_every_message(
    serve: StartServer,
) -> None:
    """No backlog, no conflation: a reading subscriber of a conflate channel loses nothing."""
    server = await serve(CHANNELS)
    client = await open_client(server.url)
    await client.subscribe("quotes")
    seqs = []
    for i in range(200):
        seqs.append(await server.publish("quotes", {"symbol": "S00", "v": i}))
        await client.messages("quotes", 1)
    channel = server.hub.channels["quotes"]
    assert channel.counters.dropped[DropReason.CONFLATED] == 0
    await wait_until(lambda: channel.counters.delivered == 200, what="all delivered")


async def test_stats_show_each_subscriptions_rate_cap(serve: StartServer) -> None:
    """/stats lists the effective max_rate of a capped subscription (null without one)."""
    server = await serve(CHANNELS)
    capped = await open_client(server.url)
    await capped.subscribe("book", max_rate=1000)
    plain = await open_client(server.url)
    await plain.subscribe("plain")
    status, stats = await http_get_json(server.port, "/stats")
    assert status == 200
    rates = {
        c["subscriptions"][0]["channel"]: c["subscriptions"][0]["max_rate"]
        for c in stats["connections"]
    }
    assert rates == {"book": 20, "plain": None}
