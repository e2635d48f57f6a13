"""Several nodes sharing channels through a real redis-server.

In-process nodes (each a full server on its own port with its own broker,
reader and Redis connections) for most tests; one test runs three
`python -m broadcaster serve` processes, as the README's cluster does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from broadcaster.server.app import Broadcaster
from tests.conftest import ConnectRaw, StartProcess, StartServer
from tests.support.clients import JsonClient, open_client
from tests.support.http import http_get_json
from tests.support.redis_server import RedisServer, redis_toml
from tests.support.servers import TEST_SERVER_TOML, wait_until

CHANNELS_TOML = """
[channels."news"]
history_size = 1000
"""


async def _cluster(serve: StartServer, redis: RedisServer, count: int = 3) -> list[Broadcaster]:
    return [await serve(CHANNELS_TOML + redis_toml(redis.url)) for _ in range(count)]


async def test_publishes_on_any_node_reach_every_node_in_one_order(
    redis_server: RedisServer, serve: StartServer
) -> None:
    """Concurrent publishers on three nodes: every subscriber sees seq 1..N with the same data."""
    nodes = await _cluster(serve, redis_server)
    subscribers = [await open_client(node.url) for node in nodes for _ in range(2)]
    epochs = {(await sub.subscribe("news"))["epoch"] for sub in subscribers}
    assert len(epochs) == 1, "every node names the same seq history"
    per_publisher = 100
    publishers = [await open_client(node.url) for node in nodes]

    async def publish_all(index: int, client: JsonClient) -> list[int]:
        return [await client.publish("news", {"p": index, "n": n}) for n in range(per_publisher)]

    seqs = await asyncio.gather(*(publish_all(i, c) for i, c in enumerate(publishers)))
    total = per_publisher * len(publishers)
    assert sorted(s for one in seqs for s in one) == list(range(1, total + 1)), "gap-free, unique"
    for one in seqs:
        assert one == sorted(one), "a publisher's messages keep its order"
    streams = [await sub.messages("news", total) for sub in subscribers]
    reference = [(m["seq"], m["data"]) for m in streams[0]]
    assert [seq for seq, _ in reference] == list(range(1, total + 1))
    for stream in streams[1:]:
        assert [(m["seq"], m["data"]) for m in stream] == reference
    by_seq = dict(reference)
    for index, one in enumerate(seqs):
        assert [by_seq[s] for s in one] == [{"p": index, "n": n} for n in range(per_publisher)]


async def test_late_subscriber_on_another_node_starts_after_the_current_seq(
    redis_server: RedisServer, serve: StartServer
) -> None:
    a, b = await _cluster(serve, redis_server, 2)
    pub = await open_client(a.url)
    for n in range(7):
        await pub.publish("prices", n)
    sub = await open_client(b.url)
    assert (await sub.subscribe("prices"))["seq"] == 7
    await pub.publish("prices", 7)
    (message,) = await sub.messages("prices", 1)
    assert (message["seq"], message["data"]) == (8, 7)


async def test_client_moving_from_node_a_to_b_gets_exactly_what_it_missed(
    redis_server: RedisServer, serve: StartServer
) -> None:
    """Disconnect from A, publishes continue on C, reconnect to B with since + epoch."""
    a, b, c = await _cluster(serve, redis_server)
    client = await open_client(a.url)
    epoch = (await client.subscribe("news"))["epoch"]
    pub = await open_client(c.url)
    for n in range(10):
        await pub.publish("news", n)
    got = await client.messages("news", 10)
    last = got[-1]["seq"]
    await client.close()
    for n in range(10, 25):
        await pub.publish("news", n)
    moved = await open_client(b.url)
    reply = await moved.subscribe("news", since=last, epoch=epoch)
    assert (reply["recovered"], reply["seq"], reply["epoch"]) == (True, 25, epoch)
    await pub.publish("news", 25)
    again = await moved.messages("news", 16)
    assert [m["seq"] for m in again] == list(range(11, 27))
    assert [m["data"] for m in again] == list(range(10, 26))


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_three_server_processes_share_channels(
    redis_server: RedisServer, serve_process: StartProcess, tmp_path: Path
) -> None:
    """The README's cluster without nginx: publish on one process, subscribe on all three.

    Runs on one loop only: it starts three interpreters, and the loop under
    test is the servers' (uvloop, their default), not this test's.
    """
    config = (
        TEST_SERVER_TOML.replace("port = 0\n", "") + CHANNELS_TOML + redis_toml(redis_server.url)
    )
    procs = [await serve_process(config) for _ in range(3)]
    subs = [await open_client(proc.url) for proc in procs]
    for sub in subs:
        await sub.subscribe("news")
    pub = await open_client(procs[0].url)
    seqs = [await pub.publish("news", {"n": n}) for n in range(50)]
    assert seqs == list(range(1, 51))
    for sub in subs:
        got = await sub.messages("news", 50)
        assert [(m["seq"], m["data"]["n"]) for m in got] == [(s, s - 1) for s in range(1, 51)]


async def _try_publish(client: JsonClient, channel: str, data: Any) -> dict[str, Any]:
    """One publish with an id: the `published` reply or the `error` event, whichever comes."""
    op_id = f"try:{id(data)}:{len(client.seen)}"
    await client.send({"op": "publish", "channel": channel, "data": data, "id": op_id})
    while True:
        event = await client.recv()
        if event.get("id") == op_id and event["event"] in ("published", "error"):
            return event


async def _still_connected(client: JsonClient) -> None:
    await client.send({"op": "ping", "id": "alive"})
    await client.recv_event("pong", id="alive")


async def test_redis_outage_fails_publishes_fast_and_delivery_resumes(
    redis_server: RedisServer, serve: StartServer
) -> None:
    """Redis killed mid-stream and restarted: subscribers stay, publishes get `unavailable`,
    the breaker opens (status, /healthz, /stats) and closes, seq goes on where it was."""
    a, b = await _cluster(serve, redis_server, 2)
    sub_a, sub_b = await open_client(a.url), await open_client(b.url)
    for sub in (sub_a, sub_b):
        await sub.subscribe("news")
    pub = await open_client(a.url)
    for n in range(3):
        await pub.publish("news", n)
    for sub in (sub_a, sub_b):
        assert [m["seq"] for m in await sub.messages("news", 3)] == [1, 2, 3]

    redis_server.kill()
    failures: list[dict[str, Any]] = []

    async def breaker_open() -> bool:
        failures.append(await _try_publish(pub, "news", "lost"))
        return a.broker.status().breaker == "open"

    await wait_until(breaker_open, timeout=20, what="the breaker to open")
    assert all(f["event"] == "error" and f["code"] == "unavailable" for f in failures)
    assert all(f["retry_after"] > 0 for f in failures)
    refused = await _try_publish(pub, "news", "refused while open")
    assert (refused["event"], refused["code"]) == ("error", "unavailable")
    assert "circuit open" in refused["message"]
    await wait_until(lambda: not b.broker.status().up, what="node B to see Redis down")
    status, health = await http_get_json(a.port, "/healthz")
    assert (status, health["broker"]) == (200, "down")
    _, stats = await http_get_json(a.port, "/stats")
    assert stats["server"]["broker"]["up"] is False
    assert stats["server"]["broker"]["breaker"] in ("open", "half-open")
    for sub in (sub_a, sub_b):
        await _still_connected(sub)
    late = await open_client(a.url)
    reply = await late.subscribe("news")
    assert reply["seq"] == 3, "a channel this node reads can be subscribed to during an outage"
    await late.send({"op": "subscribe", "channel": "unread", "id": "u"})
    refused = await late.recv_event("error", id="u")
    assert (refused["code"], refused["retry_after"] > 0) == ("unavailable", True)

    await redis_server.restart()
    resumed: list[dict[str, Any]] = []

    async def publish_succeeds() -> bool:
        resumed.append(await _try_publish(pub, "news", "back"))
        return bool(resumed[-1]["event"] == "published")

    await wait_until(publish_succeeds, timeout=20, what="publishes to succeed again")
    assert resumed[-1]["seq"] == 4, "nothing during the outage took a seq"
    for sub in (sub_a, sub_b, late):
        (message,) = await sub.messages("news", 1, timeout=10)
        assert (message["seq"], message["data"]) == (4, "back")
    await wait_until(
        lambda: all(n.broker.status().breaker == "closed" and n.broker.status().up for n in (a, b)),
        what="both breakers to close",
    )
    _, health = await http_get_json(b.port, "/healthz")
    assert (health["broker"], health["breaker"]) == ("up", "closed")


async def test_messages_in_the_stream_before_an_outage_reach_every_node(
    redis_server: RedisServer, serve: StartServer
) -> None:
    """Redis killed right after a burst: after it returns, node B delivers the whole burst
    (its reader resumes from the last entry id it saw)."""
    a, b = await _cluster(serve, redis_server, 2)
    sub_b = await open_client(b.url)
    await sub_b.subscribe("news")
    pub = await open_client(a.url)
    total = 300
    for n in range(total - 1):
        await pub.send({"op": "publish", "channel": "news", "data": n})
    assert await pub.publish("news", total - 1) == total
    redis_server.kill()
    await redis_server.restart()
    got = await sub_b.messages("news", total, timeout=20)
    assert [m["seq"] for m in got] == list(range(1, total + 1))
    assert [m["data"] for m in got] == list(range(total))


async def test_a_lost_stream_starts_a_new_epoch(
    redis_server: RedisServer, serve: StartServer
) -> None:
    """Redis back empty: seq restarts from 1 under a new epoch; subscribers are told in-band
    (`subscribed` with `reset: true`), and old seqs are not recovered."""
    a, b = await _cluster(serve, redis_server, 2)
    sub_b = await open_client(b.url)
    old_epoch = (await sub_b.subscribe("news"))["epoch"]
    pub = await open_client(a.url)
    for n in range(3):
        await pub.publish("news", n)
    await sub_b.messages("news", 3)
    redis_server.kill()
    redis_server.wipe()
    await redis_server.restart()
    resumed: list[dict[str, Any]] = []

    async def publish_succeeds() -> bool:
        resumed.append(await _try_publish(pub, "news", "fresh"))
        return bool(resumed[-1]["event"] == "published")

    await wait_until(publish_succeeds, timeout=20, what="publishes to succeed again")
    assert resumed[-1]["seq"] == 1
    reset = await sub_b.recv_event("subscribed", timeout=10)
    assert reset["reset"] is True
    assert reset["seq"] == 0
    assert reset["epoch"] != old_epoch
    assert "id" not in reset
    (message,) = await sub_b.messages("news", 1)
    assert (message["seq"], message["data"]) == (1, "fresh")
    late = await open_client(a.url)
    reply = await late.subscribe("news", since=3, epoch=old_epoch)
    assert (reply["recovered"], reply["epoch"], reply["seq"]) == (False, reset["epoch"], 1)


BLOCK_TOML = """
[channels."orders"]
strategy = "block"
queue_size = 4
slow_consumer_timeout = 60.0
"""


async def test_block_holds_back_only_the_node_of_the_full_subscriber(
    redis_server: RedisServer, serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """A full `block` subscriber on B: publishes through A go on (A's subscribers have room)
    and A's subscribers get everything; B stops reading the stream (its local publishers
    wait, with flow.pause), then catches up without loss once the subscriber reads."""
    a, b = [await serve(BLOCK_TOML + redis_toml(redis_server.url)) for _ in range(2)]
    stalled = await connect_raw(b.port)
    await stalled.subscribe("orders")
    healthy_b = await open_client(b.url)
    await healthy_b.subscribe("orders")
    healthy_a = await open_client(a.url)
    await healthy_a.subscribe("orders")
    pub_a = await open_client(a.url)
    total = 300
    blob = "x" * 1000
    seqs = [await pub_a.publish("orders", {"n": n, "blob": blob}) for n in range(total)]
    assert seqs == list(range(1, total + 1)), "A's publishes never waited on B's subscriber"
    got_a = await healthy_a.messages("orders", total)
    assert [m["seq"] for m in got_a] == seqs

    orders_b = b.hub.channels["orders"]
    tail = b.broker.reader.tails["orders"]  # type: ignore[attr-defined]
    await wait_until(lambda: tail.paused, what="node B to stop reading the full channel")
    assert orders_b.last_seq < total, "B holds back: it delivered only what fits"
    pub_b = await open_client(b.url)
    await pub_b.send({"op": "publish", "channel": "orders", "data": {"n": "b"}, "id": "b"})
    pause = await pub_b.recv_event("flow.pause", channel="orders")
    assert pause["reason"] == "channel blocked"

    await stalled.read_until(lambda evs: len(stalled.messages("orders")) >= total + 1, timeout=30)
    got_stalled = stalled.messages("orders")
    assert [m["seq"] for m in got_stalled] == list(range(1, total + 2))
    await pub_b.recv_event("flow.resume", channel="orders")
    assert (await pub_b.recv_event("published", id="b"))["seq"] == total + 1
    got_b = await healthy_b.messages("orders", total + 1)
    assert [m["seq"] for m in got_b] == list(range(1, total + 2))


async def test_subscribers_joining_mid_stream_get_everything_after_their_seq(
    redis_server: RedisServer, serve: StartServer
) -> None:
    """Clients subscribing on a node that does not read the channel yet, concurrently and
    while another node publishes: each gets exactly the seqs after its `subscribed.seq`."""
    a, b = await _cluster(serve, redis_server, 2)
    total = 400
    pub = await open_client(a.url)

    async def publish_all() -> None:
        for n in range(total - 1):
            await pub.send({"op": "publish", "channel": "live", "data": n})
        await pub.publish("live", total - 1)

    publishing = asyncio.create_task(publish_all())
    joined: list[tuple[int, JsonClient]] = []
    for _ in range(4):
        clients = [await open_client(b.url) for _ in range(3)]
        replies = await asyncio.gather(*(c.subscribe("live") for c in clients))
        joined += [(r["seq"], c) for r, c in zip(replies, clients, strict=True)]
    await publishing
    for seq, client in joined:
        got = await client.messages("live", total - seq)
        assert [m["seq"] for m in got] == list(range(seq + 1, total + 1))
        assert [m["data"] for m in got] == list(range(seq, total))


async def test_a_node_starts_while_redis_is_down_and_joins_when_it_comes(
    serve: StartServer, tmp_path: Path
) -> None:
    """No Redis at start: the node serves (degraded), publishes get `unavailable`;
    once Redis listens, the node publishes and delivers without a restart."""
    redis = RedisServer(tmp_path / "late-redis")  # a port with nothing listening yet
    try:
        node = await serve(CHANNELS_TOML + redis_toml(redis.url))
        status, health = await http_get_json(node.port, "/healthz")
        assert (status, health["broker"]) == (200, "down")
        pub = await open_client(node.url)
        refused = await _try_publish(pub, "news", "too early")
        assert (refused["event"], refused["code"]) == ("error", "unavailable")
        await redis.restart()
        resumed: list[dict[str, Any]] = []

        async def publish_succeeds() -> bool:
            resumed.append(await _try_publish(pub, "news", "now"))
            return bool(resumed[-1]["event"] == "published")

        await wait_until(publish_succeeds, timeout=20, what="the node to reach Redis")
        assert resumed[-1]["seq"] == 1
        sub = await open_client(node.url)
        assert (await sub.subscribe("news"))["seq"] == 1
        await pub.publish("news", "live")
        (message,) = await sub.messages("news", 1)
        assert (message["seq"], message["data"]) == (2, "live")
        await node.stop()
    finally:
        redis.kill()


IDLE_TOML = TEST_SERVER_TOML + "idle_channel_ttl = 0.3\n"


async def test_a_channel_freed_on_one_node_resumes_from_redis_while_another_reads_it(
    redis_server: RedisServer, serve: StartServer
) -> None:
    """A node frees a channel its clients left; the cluster still uses it, so the seq
    history lives on in Redis: back on that node, same epoch, next seq, recoverable."""
    channel_toml = '[channels."news"]\nhistory_size = 10\nhistory_ttl = 0.3\n' + redis_toml(
        redis_server.url
    )
    node_a = await serve(channel_toml, server_toml=IDLE_TOML)
    node_b = await serve(channel_toml, server_toml=IDLE_TOML)
    client, publisher = await open_client(node_a.url), await open_client(node_a.url)
    other = await open_client(node_b.url)
    first = await client.subscribe("news")
    await other.subscribe("news")
    for i in range(3):
        assert await publisher.publish("news", i) == i + 1
    await client.messages("news", 3)
    await client.send({"op": "unsubscribe", "channel": "news", "id": "u"})
    await client.recv_event("unsubscribed", id="u")
    await wait_until(lambda: "news" not in node_a.hub.channels, what="'news' freed on node A")
    assert "news" not in node_a.broker.reader.tails  # type: ignore[attr-defined]
    assert await publisher.publish("news", 3) == 4  # while node A does not read it

    again = await client.subscribe("news", since=3, epoch=first["epoch"])
    assert (again["epoch"], again["seq"], again["recovered"]) == (first["epoch"], 4, True)
    assert [(m["seq"], m["data"]) for m in await client.messages("news", 1)] == [(4, 3)]


async def test_a_channel_nobody_uses_expires_in_redis_and_starts_a_new_epoch(
    redis_server: RedisServer, serve: StartServer
) -> None:
    """Unused channels do not pile up in Redis: their keys expire after idle_channel_ttl,
    while a channel with a subscriber keeps its keys however quiet it is."""
    node = await serve(redis_toml(redis_server.url), server_toml=IDLE_TOML)
    redis = redis_server.async_client()
    client, publisher = await open_client(node.url), await open_client(node.url)
    quiet = await client.subscribe("quiet")
    assert await publisher.publish("quiet", "once") == 1
    assert await publisher.publish("unused", "once") == 1
    keys = [b"test:meta:unused", b"test:stream:unused"]
    assert await redis.exists(*keys) == 2
    assert 0 < await redis.pttl(keys[0]) <= 300

    async def expired() -> bool:
        return await redis.exists(*keys) == 0

    await wait_until(expired, what="the unused channel's keys to expire")
    assert await redis.exists(b"test:meta:quiet", b"test:stream:quiet") == 2
    reply = await publisher.subscribe("unused")
    assert reply["seq"] == 0, "seq starts again from 1"
    assert await publisher.publish("quiet", "twice") == 2, "the quiet channel kept its seq"
    assert [m["data"] for m in await client.messages("quiet", 2)] == ["once", "twice"]
    assert quiet["epoch"] == (await publisher.subscribe("quiet"))["epoch"]
    await redis.aclose()
