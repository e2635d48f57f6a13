"""/stats in detail, its sort and limit parameters, and the same document on `$sys.stats`."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from broadcaster.server.app import Broadcaster
from broadcaster.server.session import ClientSession
from broadcaster.server.system import STATS_CHANNEL
from tests.conftest import ConnectRaw, StartServer
from tests.support.clients import open_client
from tests.support.http import http_get, http_get_json
from tests.support.raw_client import RawClient
from tests.support.servers import TEST_SERVER_TOML, wait_until

# The high watermark well below the queue size: a stalled subscriber stays
# above it even if the kernel takes a few more KB after publishing stops.
CHANNELS = """
[channels."q"]
strategy = "drop-oldest"
queue_size = 64
high_watermark = 16
low_watermark = 8
slow_consumer_timeout = 60.0
"""

PAD = "p" * 1000


def session_of(server: Broadcaster, raw: RawClient) -> ClientSession:
    host, port = raw.sock.getsockname()[:2]
    session = next(s for s in server.sessions.values() if s.remote == f"{host}:{port}")
    assert isinstance(session, ClientSession)
    return session


async def test_stats_document_has_server_channel_and_connection_detail(
    serve: StartServer,
) -> None:
    """Server (uptime, lag, broker), channel (counters, rates), connection (remote, subs)."""
    server = await serve(CHANNELS)
    client = await open_client(server.url)
    await client.subscribe("q")
    for i in range(5):
        await server.publish("q", i)
    await client.messages("q", 5)
    ticks = server.monitor.ticks
    await wait_until(lambda: server.monitor.ticks >= ticks + 2, what="two monitor ticks")

    status, stats = await http_get_json(server.port, "/stats")
    assert status == 200
    info = stats["server"]
    assert info["connections"] == 1
    assert info["uptime"] > 0
    assert info["loop_lag"] >= 0
    assert info["broker"] == {"kind": "memory", "up": True, "breaker": "closed", "detail": None}

    channel = stats["channels"]["q"]
    assert channel["label"] == "q"
    assert channel["subscribers"] == 1
    assert channel["last_seq"] == channel["published"] == channel["delivered"] == 5
    assert channel["dropped"] == {"queue_full": 0, "conflated": 0, "disconnected": 0}
    assert channel["dropped_total"] == 0
    assert channel["pauses"] == channel["slow_consumer_disconnects"] == 0
    assert channel["rates"]["window"] > 0
    assert set(channel["rates"]) == {"published", "delivered", "dropped", "window"}

    (conn,) = stats["connections"]
    assert conn["remote"].startswith("127.0.0.1:")
    assert conn["connected_at"] > 0
    assert conn["age"] > 0
    assert conn["depth"] == conn["dropped"] == 0
    assert conn["paused"] is False
    assert conn["closes_in"] is None
    assert conn["fill"] == 0
    (sub,) = conn["subscriptions"]
    assert sub["limit"] == 16
    assert sub["queue_size"] == 64
    assert sub["slow_consumer_timeout"] == 60.0
    assert sub["seconds_above"] == sub["lag"] == sub["bytes_queued"] == 0
    assert stats["summary"]["connections"] == stats["summary"]["shown"] == 1
    assert stats["totals"]["published"] == 5


async def test_stats_sort_limit_and_the_summary_of_every_connection(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """`top` limits the detail, never the summary; the stalled client leads every ranking."""
    server = await serve(CHANNELS)
    stalled = await connect_raw(server.port)
    await stalled.subscribe("q")
    healthy = [await open_client(server.url) for _ in range(3)]
    for client in healthy:
        await client.subscribe("q")
    stalled_sub = session_of(server, stalled).outbox.subscriptions["q"]
    for i in range(2_000):
        if stalled_sub.dropped:
            break
        await server.publish("q", {"i": i, "pad": PAD})
        await asyncio.sleep(0)
    assert stalled_sub.dropped > 0
    sessions = list(server.sessions.values())
    await wait_until(
        lambda: all(s.outbox.depth == 0 for s in sessions if s.outbox is not stalled_sub.outbox),
        what="the healthy clients to drain",
    )

    _, by_dropped = await http_get_json(server.port, "/stats?top=1&sort=dropped")
    (worst,) = by_dropped["connections"]
    assert worst["id"] == stalled_sub.outbox.id
    assert worst["dropped"] == stalled_sub.dropped
    assert worst["paused"] is True
    assert 0 < worst["closes_in"] <= 60.0
    assert worst["seconds_above"] >= 0
    assert worst["fill"] > 1.0
    assert worst["lag"] >= 0
    (sub,) = worst["subscriptions"]
    assert sub["depth"] > 16
    assert sub["bytes_queued"] > 0
    assert by_dropped["sort"] == "dropped"

    summary = by_dropped["summary"]
    assert summary["connections"] == 4
    assert summary["shown"] == 1
    assert summary["paused"] == 1
    assert summary["behind"] == 1
    histogram = summary["depth_histogram"]
    assert len(histogram["counts"]) == len(histogram["bounds"]) + 1
    assert sum(histogram["counts"]) == 4
    assert histogram["counts"][0] == 3, "three healthy connections at depth 0"

    _, by_depth = await http_get_json(server.port, "/stats?top=2&sort=depth")
    first, second = by_depth["connections"]
    assert first["id"] == stalled_sub.outbox.id
    assert first["depth"] > 16 > second["depth"]

    _, none = await http_get_json(server.port, "/stats?top=0")
    assert none["connections"] == []
    assert none["summary"]["connections"] == 4

    _, by_age = await http_get_json(server.port, "/stats?sort=age")
    ages = [c["age"] for c in by_age["connections"]]
    assert ages == sorted(ages, reverse=True)
    assert len(ages) == 4


async def test_sys_stats_delivers_the_stats_document_repeatedly(serve: StartServer) -> None:
    """A `$sys.stats` subscriber keeps getting the /stats document, itself included."""
    server = await serve(server_toml=TEST_SERVER_TOML + "strict_channels = true\n")
    watcher = await open_client(server.url)
    reply = await watcher.subscribe(STATS_CHANNEL)
    assert reply["strategy"] == "drop-oldest"
    documents: list[dict[str, Any]] = [
        m["data"] for m in await watcher.messages(STATS_CHANNEL, 3, timeout=10)
    ]
    uptimes = [d["server"]["uptime"] for d in documents]
    assert uptimes == sorted(uptimes)
    assert len(set(uptimes)) == 3
    for document in documents:
        assert {"server", "connections", "summary", "channels", "totals"} <= set(document)
        assert document["summary"]["connections"] == 1
        (me,) = document["connections"]
        assert me["subscriptions"][0]["channel"] == STATS_CHANNEL


async def test_sys_stats_costs_nothing_without_subscribers(serve: StartServer) -> None:
    """No subscriber, no document: the monitor only looks the channel up."""
    server = await serve()
    monitor = server.monitor
    await wait_until(lambda: monitor.ticks >= 2, what="two monitor ticks")
    assert monitor.stats_published == 0
    assert STATS_CHANNEL not in server.hub.channels

    watcher = await open_client(server.url)
    await watcher.subscribe(STATS_CHANNEL)
    await watcher.messages(STATS_CHANNEL, 1, timeout=10)
    await watcher.send({"op": "unsubscribe", "channel": STATS_CHANNEL, "id": "u"})
    await watcher.recv_event("unsubscribed")
    published = monitor.stats_published
    ticks = monitor.ticks
    await wait_until(lambda: monitor.ticks >= ticks + 2, what="two more monitor ticks")
    assert monitor.stats_published == published


async def test_pages_are_self_contained(serve: StartServer) -> None:
    """`/dashboard` and `/` are single HTML files: no external script, style or font."""
    server = await serve()
    for path, marker in (("/dashboard", b"$sys.stats"), ("/", b"tickers.demo")):
        status, headers, body = await http_get(server.port, path)
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        assert marker in body
        assert re.search(rb"""(src|href)=["']?(https?:)?//""", body) is None, path
        assert b"@import" not in body


# Channels published to without subscribers stay only when they keep messages.
KEEPS_MESSAGES = "[defaults]\nhistory_size = 1\n"


async def test_stats_channels_limit_lists_the_busiest_and_totals_cover_all(
    serve: StartServer,
) -> None:
    """With many channels `?channels=N` keeps the document small: the N with the most
    subscribers (then the most published) in detail; totals and rates count every channel."""
    server = await serve(KEEPS_MESSAGES)
    watchers = [await open_client(server.url) for _ in range(3)]
    for count, client in enumerate(watchers, start=1):
        for name in ("big", "mid", "small")[:count]:
            await client.subscribe(name)  # big: 3 subscribers, mid: 2, small: 1
    for i in range(20):
        await server.publish(f"quiet{i}", i)

    status, doc = await http_get_json(server.port, "/stats?channels=2")
    assert status == 200
    assert list(doc["channels"]) == ["big", "mid"]
    totals = doc["totals"]
    assert (totals["channels"], totals["channels_shown"], totals["published"]) == (23, 2, 20)
    assert totals["rates"]["published"] > 0
    assert totals["rates"]["window"] > 0

    _, everything = await http_get_json(server.port, "/stats")
    assert len(everything["channels"]) == 23

    for bad in ("channels=x", "channels=-1"):
        status, error = await http_get_json(server.port, f"/stats?{bad}")
        assert (status, error["error"]) == (400, "invalid_query")
        assert "channels" in error["message"]


async def test_sys_stats_lists_at_most_the_busiest_100_channels(serve: StartServer) -> None:
    """The dashboard's feed stays small however many channels exist; totals count them all."""
    server = await serve(KEEPS_MESSAGES)
    for i in range(150):
        await server.publish(f"c{i}", i)
    watcher = await open_client(server.url)
    await watcher.subscribe("$sys.stats")
    [document] = await watcher.messages("$sys.stats", 1)
    doc = document["data"]
    assert len(doc["channels"]) == 100
    assert "$sys.stats" in doc["channels"], "the channel with a subscriber ranks first"
    assert doc["totals"]["channels"] == 151
