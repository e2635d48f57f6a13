"""GET /metrics: the names docs/metrics.md lists, and values that follow what the server did."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

from broadcaster.metrics.collector import METRIC_NAMES
from tests.conftest import ConnectRaw, StartServer
from tests.support.clients import open_client
from tests.support.http import http_get_json
from tests.support.metrics import scrape
from tests.support.servers import TEST_SERVER_TOML, slow_consumer_disconnects, wait_until

CHANNELS = """
[channels."news.*"]
queue_size = 16

[channels."live"]
strategy = "drop-oldest"
queue_size = 8
slow_consumer_timeout = 0.3

[channels."deep"]
strategy = "drop-oldest"
queue_size = 64
high_watermark = 16
low_watermark = 8
slow_consumer_timeout = 60.0

[channels."orders"]
strategy = "block"
queue_size = 8
slow_consumer_timeout = 0.3
"""

PAD = "y" * 1000


async def test_every_design_metric_is_exported(serve: StartServer) -> None:
    """All of docs/metrics.md's families are declared, counters with `_total`."""
    server = await serve(CHANNELS)
    metrics = await scrape(server.port)
    assert set(METRIC_NAMES) <= set(metrics.families)
    names = metrics.sample_names
    for counter in (
        "broadcaster_messages_published_total",
        "broadcaster_messages_delivered_total",
        "broadcaster_messages_dropped_total",
        "broadcaster_flow_pauses_total",
        "broadcaster_slow_consumer_disconnects_total",
        "broadcaster_refusals_total",
    ):
        assert counter in names
    # Every configured label is there from the start, with zeros.
    for label in ("news.*", "live", "deep", "orders", "*"):
        assert metrics.value("broadcaster_messages_published_total", channel=label) == 0
    assert metrics.value("broadcaster_broker_up") == 1
    assert metrics.value("broadcaster_breaker_state") == 0
    assert metrics.value("broadcaster_event_loop_lag_seconds") >= 0


async def test_publishes_and_deliveries_are_counted_by_channel_label(serve: StartServer) -> None:
    """Counters sum the channels of one [channels] key; unmatched channels share `*`."""
    server = await serve(CHANNELS)
    client = await open_client(server.url)
    await client.subscribe("news.a")
    await client.subscribe("misc")
    for i in range(3):
        await server.publish("news.a", i)
    await server.publish("news.b", "nobody listens")
    await server.publish("misc", "x")
    await client.messages("news.a", 3)
    await client.messages("misc", 1)

    metrics = await scrape(server.port)
    assert metrics.value("broadcaster_connections") == 1
    assert metrics.value("broadcaster_subscriptions", channel="news.*") == 1
    assert metrics.value("broadcaster_subscriptions", channel="*") == 1
    assert metrics.value("broadcaster_messages_published_total", channel="news.*") == 4
    assert metrics.value("broadcaster_messages_published_total", channel="*") == 1
    assert metrics.value("broadcaster_messages_delivered_total", channel="news.*") == 3
    assert metrics.value("broadcaster_messages_delivered_total", channel="*") == 1
    # The first data batch of a connection is always a latency sample.
    samples = metrics.total("broadcaster_delivery_latency_seconds_count")
    assert samples >= 1
    assert metrics.total("broadcaster_delivery_latency_seconds_bucket", le="+Inf") == samples
    assert metrics.value("broadcaster_queue_depth_count", channel="news.*") == 1


async def test_drops_pauses_and_a_slow_consumer_disconnect_are_counted(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """A stalled subscriber: queue_full drops and a pause, then 4008 and what it still held."""
    server = await serve(CHANNELS)
    stalled = await connect_raw(server.port, subscribe="live")
    before = await scrape(server.port)
    assert before.value("broadcaster_slow_consumer_disconnects_total", channel="live") == 0

    for i in range(20_000):
        if slow_consumer_disconnects(server, "live"):
            break
        await server.publish("live", {"i": i, "pad": PAD})
        await asyncio.sleep(0.001)
    assert slow_consumer_disconnects(server, "live") == 1

    metrics = await scrape(server.port)
    labels = {"channel": "live", "strategy": "drop-oldest"}
    assert metrics.value("broadcaster_messages_dropped_total", reason="queue_full", **labels) > 0
    assert metrics.value("broadcaster_messages_dropped_total", reason="disconnected", **labels) > 0
    assert metrics.value("broadcaster_flow_pauses_total", channel="live") >= 1
    assert metrics.value("broadcaster_slow_consumer_disconnects_total", channel="live") == 1
    assert metrics.value("broadcaster_subscriptions", channel="live") == 0

    _, stats = await http_get_json(server.port, "/stats")
    (gone,) = stats["recent_slow_consumers"]
    assert gone["channel"] == "live"
    assert gone["depth"] >= gone["limit"] == 8
    await stalled.read_to_end()
    assert stalled.close_code == 4008 or stalled.reset or stalled.eof


async def test_queue_depth_histogram_counts_subscriptions_by_depth(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """broadcaster_queue_depth is a snapshot: one healthy subscriber at 0, one stalled deep."""
    server = await serve(CHANNELS)
    await connect_raw(server.port, subscribe="deep")
    healthy = await open_client(server.url)
    await healthy.subscribe("deep")
    stalled_sub = next(
        s.outbox.subscriptions["deep"] for s in server.sessions.values() if s.id == 1
    )
    healthy_sub = next(
        s.outbox.subscriptions["deep"] for s in server.sessions.values() if s.id == 2
    )
    for i in range(2_000):
        if stalled_sub.dropped:
            break
        await server.publish("deep", {"i": i, "pad": PAD})
        await asyncio.sleep(0)
    assert stalled_sub.dropped, "the stalled queue filled up (64)"
    await wait_until(lambda: healthy_sub.depth == 0, what="the healthy subscriber to drain")

    # The kernel may still take a few KB from the stalled queue, never half of it.
    metrics = await scrape(server.port)
    assert metrics.value("broadcaster_queue_depth_count", channel="deep") == 2
    assert metrics.value("broadcaster_queue_depth_sum", channel="deep") > 32
    assert metrics.value("broadcaster_queue_depth_bucket", channel="deep", le="0.0") == 1
    assert metrics.value("broadcaster_queue_depth_bucket", channel="deep", le="32.0") == 1
    assert metrics.value("broadcaster_queue_depth_bucket", channel="deep", le="+Inf") == 2
    assert metrics.value("broadcaster_flow_pauses_total", channel="deep") == 1


async def test_time_publishes_wait_on_a_block_channel_is_observed(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """A publish that waits for room lands in broadcaster_publish_blocked_seconds."""
    server = await serve(CHANNELS)
    await connect_raw(server.port, subscribe="orders")
    for i in range(2_000):
        if slow_consumer_disconnects(server, "orders"):
            break
        # Waits for room once the stalled queue is full, until the sweeper cuts it off.
        await server.publish("orders", {"i": i, "pad": PAD})
    assert slow_consumer_disconnects(server, "orders") == 1
    metrics = await scrape(server.port)
    assert metrics.value("broadcaster_publish_blocked_seconds_count", channel="orders") >= 1
    assert metrics.value("broadcaster_publish_blocked_seconds_sum", channel="orders") > 0
    assert metrics.value("broadcaster_publish_blocked_seconds_count", channel="live") == 0


async def read_forever(ws: ClientConnection) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), 5)


STRICT = (
    TEST_SERVER_TOML
    + """max_message_size = 1024
strict_channels = true
"""
)


async def test_refusals_are_counted_by_reason(serve: StartServer) -> None:
    """unknown_channel, forbidden ($sys.), abuse (1008) and message_size (1009) are refusals."""
    server = await serve('[channels."known"]\n', server_toml=STRICT)
    client = await open_client(server.url)
    await client.send({"op": "subscribe", "channel": "unknown", "id": 1})
    assert (await client.recv_event("error"))["code"] == "unknown_channel"
    await client.send({"op": "publish", "channel": "unknown", "data": 1, "id": 2})
    assert (await client.recv_event("error"))["code"] == "unknown_channel"
    await client.send({"op": "publish", "channel": "$sys.stats", "data": 1, "id": 3})
    assert (await client.recv_event("error"))["code"] == "forbidden"

    async with connect(server.url) as ws:
        for _ in range(11):
            await ws.send("garbage")
        with pytest.raises(ConnectionClosedError):
            await read_forever(ws)
    async with connect(server.url, max_size=None) as ws:
        await ws.send('{"op":"publish","channel":"known","data":"' + "z" * 2000 + '"}')
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 5)

    async def counted() -> bool:
        metrics = await scrape(server.port)
        return metrics.value("broadcaster_refusals_total", reason="message_size") == 1

    await wait_until(counted, what="the 1009 close to be counted")
    metrics = await scrape(server.port)
    assert metrics.value("broadcaster_refusals_total", reason="unknown_channel") == 2
    assert metrics.value("broadcaster_refusals_total", reason="forbidden") == 1
    assert metrics.value("broadcaster_refusals_total", reason="abuse") == 1
    assert metrics.value("broadcaster_refusals_total", reason="origin") == 0


async def test_unknown_refusal_reason_is_a_programming_error(serve: StartServer) -> None:
    """refused() takes only the fixed reasons, so the label stays bounded."""
    server = await serve()
    server.metrics.refused("token")
    with pytest.raises(ValueError, match="REFUSAL_REASONS"):
        server.metrics.refused("made-up")
    metrics = await scrape(server.port)
    assert metrics.value("broadcaster_refusals_total", reason="token") == 1


async def test_two_servers_in_one_process_keep_separate_metrics(serve: StartServer) -> None:
    """Each server has its own registry: nothing global is shared."""
    first = await serve()
    second = await serve()
    await first.publish("a", 1)
    await first.publish("a", 2)
    await second.publish("a", 1)
    one, two = await scrape(first.port), await scrape(second.port)
    assert one.value("broadcaster_messages_published_total", channel="*") == 2
    assert two.value("broadcaster_messages_published_total", channel="*") == 1
