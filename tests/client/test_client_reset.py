"""A channel whose seq history restarts (a new epoch) under the Python client.

Without the `reset` handling, the new epoch's seq 1, 2, ... looked like
duplicates of the old epoch's and were dropped in silence until they passed
the last old seq (0 of 397 messages after a Redis outage, issue 15).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broadcaster.client import Reset
from broadcaster.server.app import Broadcaster
from tests.conftest import StartServer
from tests.support.client_events import Recorder, quick_client, take
from tests.support.proxy import TcpProxy
from tests.support.redis_server import RedisServer, redis_toml
from tests.support.servers import TEST_SERVER_TOML, wait_until


@pytest.fixture
async def proxies() -> AsyncIterator[list[TcpProxy]]:
    opened: list[TcpProxy] = []
    yield opened
    for proxy in opened:
        await proxy.close()


async def test_flushall_while_subscribed_delivers_every_message_of_the_new_epoch(
    redis_server: RedisServer, serve: StartServer
) -> None:
    """Redis loses the stream mid-subscription: one `reset`, then seq 1..N of the new epoch."""
    server = await serve(redis_toml(redis_server.url))
    async with quick_client(server.url) as sub, quick_client(server.url) as pub:
        events = Recorder(sub)
        news = sub.subscribe("news")
        old_epoch = (await events.wait("subscribed")).epoch
        assert [await pub.publish("news", f"old {n}") for n in range(5)] == [1, 2, 3, 4, 5]
        assert [m.seq for m in await take(news, 5)] == [1, 2, 3, 4, 5]

        redis = redis_server.async_client()
        try:
            await redis.flushall()
        finally:
            await redis.aclose()
        published = [await pub.publish("news", f"new {n}") for n in range(7)]
        assert published == [1, 2, 3, 4, 5, 6, 7], "the lost stream starts again from 1"

        got = await take(news, 7)
        assert [(m.seq, m.data) for m in got] == [(n + 1, f"new {n}") for n in range(7)]
        (reset,) = events["reset"]
        assert reset.epoch != old_epoch
        # Nothing of the old epoch was lost to this client: it had all 5 (previous_seq 5).
        assert reset == Reset("news", old_epoch, reset.epoch, last_seq=5, missed=0, seq=0)
        assert events["gap"] == []
        assert len(news.inbox) == 0, "nothing more than the 7 new messages"


async def test_reconnect_into_a_channel_freed_while_away_reports_the_reset(
    serve: StartServer, proxies: list[TcpProxy]
) -> None:
    """Memory broker: the channel was freed after idle_channel_ttl and used again while the
    client was cut off; the resubscribe lands in a new epoch: one `reset` saying the new
    epoch's seq 1..2 came before it, then every later message, no gap."""
    server: Broadcaster = await serve(
        '[channels."news"]\nhistory_size = 10\nhistory_ttl = 0.3\n',
        server_toml=TEST_SERVER_TOML + "idle_channel_ttl = 0.2\n",
    )
    link = await TcpProxy(server.port).start()
    proxies.append(link)
    async with quick_client(link.url) as sub, quick_client(server.url) as pub:
        events = Recorder(sub)
        news = sub.subscribe("news")
        old_epoch = (await events.wait("subscribed")).epoch
        for n in range(3):
            await pub.publish("news", n)
        assert [m.seq for m in await take(news, 3)] == [1, 2, 3]

        link.refuse(True)
        link.cut()
        await events.wait("disconnected")
        await wait_until(lambda: "news" not in server.hub.channels, what="'news' freed")
        assert [await pub.publish("news", f"while away {n}") for n in range(2)] == [1, 2]
        link.refuse(False)

        again = await events.wait("subscribed", after=1)
        assert (again.recovered, again.seq) == (False, 2)
        assert events["reset"] == [Reset("news", old_epoch, again.epoch, 3, None, 2)]
        assert again.epoch != old_epoch
        for n in range(4):
            await pub.publish("news", f"after {n}")
        got = await take(news, 4)
        assert [(m.seq, m.data) for m in got] == [(n + 3, f"after {n}") for n in range(4)]
        assert events["gap"] == []
        assert len(events["reset"]) == 1


async def test_rate_capped_subscriber_gets_the_reset(
    redis_server: RedisServer, serve: StartServer
) -> None:
    """max_rate conflates data to the latest, never the reset notice: after FLUSHALL the
    subscriber gets one `reset` and then the new epoch's latest message."""
    server = await serve(redis_toml(redis_server.url))
    async with quick_client(server.url) as sub, quick_client(server.url) as pub:
        events = Recorder(sub)
        news = sub.subscribe("news", max_rate=20)
        old_epoch = (await events.wait("subscribed")).epoch
        assert await pub.publish("news", "old") == 1
        assert [m.seq for m in await take(news, 1)] == [1]

        redis = redis_server.async_client()
        try:
            await redis.flushall()
        finally:
            await redis.aclose()
        for n in range(3):
            await pub.publish("news", f"new {n}")

        seqs = []
        for _ in range(3):  # seqs grow: seq 3 comes within three messages
            (message,) = await take(news, 1)
            seqs.append(message.seq)
            if message.seq == 3:
                break
        assert message.data == "new 2", seqs
        await events.wait("reset")
        (reset,) = events["reset"]
        assert (reset.old_epoch, reset.last_seq, reset.seq) == (old_epoch, 1, 0)
        assert reset.epoch != old_epoch
