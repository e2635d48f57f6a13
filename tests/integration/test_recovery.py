"""`subscribe` with `since`: history and recovery over WebSocket, on both brokers.

Each test runs against the memory broker (one server) and the Redis broker
(two nodes sharing a real redis-server: the client comes back on the other
node). The two must behave the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import StartNodes
from tests.support.clients import JsonClient, open_client
from tests.support.servers import wait_until

HISTORY_TOML = """
[channels."news"]
history_size = 100

[channels."short"]
history_size = 3

[channels."seam"]
history_size = 1000

[channels."fleeting"]
history_size = 100
history_ttl = 0.2
"""


async def _seqs(client: JsonClient, channel: str, count: int) -> list[int]:
    return [m["seq"] for m in await client.messages(channel, count)]


async def test_reconnect_with_since_gets_exactly_what_was_missed(nodes: StartNodes) -> None:
    """Missed messages first (`recovered: true`), then live ones: no gap, no duplicate."""
    a, b = await nodes(HISTORY_TOML)
    first = await open_client(a.url)
    reply = await first.subscribe("news")
    epoch = reply["epoch"]
    pub = await open_client(b.url)
    for i in range(5):
        await pub.publish("news", i)
    assert await _seqs(first, "news", 5) == [1, 2, 3, 4, 5]
    await first.close()
    for i in range(5, 12):
        await pub.publish("news", i)

    again = await open_client(b.url)
    reply = await again.subscribe("news", since=5, epoch=epoch)
    assert reply["recovered"] is True
    assert reply["epoch"] == epoch
    assert reply["seq"] == 12
    assert "oldest_seq" not in reply
    await pub.publish("news", 12)
    got = await again.messages("news", 8)
    assert [m["seq"] for m in got] == list(range(6, 14))
    assert [m["data"] for m in got] == list(range(5, 13))


async def test_since_the_last_seq_recovers_nothing_and_goes_live(nodes: StartNodes) -> None:
    a, b = await nodes(HISTORY_TOML)
    pub = await open_client(a.url)
    for i in range(3):
        await pub.publish("news", i)
    sub = await open_client(b.url)
    epoch = (await sub.subscribe("news"))["epoch"]
    await sub.send({"op": "unsubscribe", "channel": "news", "id": "u"})
    await sub.recv_event("unsubscribed")
    reply = await sub.subscribe("news", since=3, epoch=epoch)
    assert (reply["recovered"], reply["seq"]) == (True, 3)
    await pub.publish("news", 3)
    assert await _seqs(sub, "news", 1) == [4]


async def test_history_that_does_not_reach_back_says_so(nodes: StartNodes) -> None:
    """`recovered: false` with the oldest retained seq; live delivery starts after LAST."""
    a, b = await nodes(HISTORY_TOML)
    pub = await open_client(a.url)
    for i in range(10):
        await pub.publish("short", i)
    sub = await open_client(b.url)
    reply = await sub.subscribe("short", since=2)
    assert reply["recovered"] is False
    assert reply["oldest_seq"] == 8
    assert reply["seq"] == 10
    await pub.publish("short", 10)
    (message,) = await sub.messages("short", 1)
    assert message["seq"] == 11, "nothing recovered, the live stream starts after LAST"


async def test_another_epoch_is_not_recovered(nodes: StartNodes) -> None:
    a, b = await nodes(HISTORY_TOML)
    pub = await open_client(a.url)
    for i in range(4):
        await pub.publish("news", i)
    sub = await open_client(b.url)
    reply = await sub.subscribe("news", since=2, epoch="not-this-one")
    assert reply["recovered"] is False
    assert reply["oldest_seq"] == 1
    assert reply["epoch"] != "not-this-one"
    assert reply["seq"] == 4


async def test_without_history_nothing_is_recovered(nodes: StartNodes) -> None:
    a, b = await nodes(HISTORY_TOML)
    pub = await open_client(a.url)
    for i in range(4):
        await pub.publish("plain", i)
    sub = await open_client(b.url)
    reply = await sub.subscribe("plain", since=2)
    assert (reply["recovered"], reply["oldest_seq"], reply["seq"]) == (False, 5, 4)


async def test_expired_messages_are_not_recovered(nodes: StartNodes) -> None:
    """After history_ttl, the same `since` that recovered gets `recovered: false`."""
    a, b = await nodes(HISTORY_TOML)
    pub = await open_client(a.url)
    for i in range(3):
        await pub.publish("fleeting", i)
    sub = await open_client(b.url)
    replies: list[dict[str, Any]] = []

    async def recovered() -> bool:
        reply = await sub.subscribe("fleeting", since=1)
        replies.append(reply)
        await sub.send({"op": "unsubscribe", "channel": "fleeting", "id": "u"})
        await sub.recv_event("unsubscribed")
        return reply.get("oldest_seq") == 4

    await wait_until(recovered, timeout=10, what="history to expire")
    assert replies[-1]["recovered"] is False
    assert all(r["recovered"] or r["oldest_seq"] > 2 for r in replies)


async def test_recovery_seam_under_concurrent_publishing(nodes: StartNodes) -> None:
    """Clients resubscribing with `since` while publishes stream in see every seq once, in order."""
    a, b = await nodes(HISTORY_TOML)
    total = 300
    pub = await open_client(a.url)
    watcher = await open_client(a.url)
    epoch = (await watcher.subscribe("seam"))["epoch"]

    async def publish_all() -> None:
        for i in range(total):
            await pub.send({"op": "publish", "channel": "seam", "data": i})
        await pub.publish("seam", "end")

    publishing = asyncio.create_task(publish_all())
    resubscribers: list[tuple[int, JsonClient]] = []
    for _ in range(6):
        seen = await watcher.messages("seam", 20)
        since = seen[-1]["seq"] - 10
        client = await open_client(b.url)
        reply = await client.subscribe("seam", since=since, epoch=epoch)
        assert reply["recovered"] is True
        resubscribers.append((since, client))
    await publishing
    for since, client in resubscribers:
        got = await _seqs(client, "seam", total + 1 - since)
        assert got == list(range(since + 1, total + 2))
