"""The Python client against a real server: subscribe, publish, errors, unsubscribe, close."""

from __future__ import annotations

import asyncio

import pytest

from broadcaster.client import ClientClosed, ConnectFailed, ServerError
from tests.conftest import StartServer
from tests.support.client_events import Recorder, quick_client, take
from tests.support.servers import TEST_SERVER_TOML, free_port, wait_until


async def test_subscribe_and_publish_round_trip(serve: StartServer) -> None:
    """Messages arrive with data, seq and channel; publish returns the server's seq."""
    server = await serve()
    async with quick_client(server.url) as sub, quick_client(server.url) as pub:
        events = Recorder(sub)
        news = sub.subscribe("news")
        reply = await events.wait("subscribed")
        assert (reply.channel, reply.seq, reply.strategy) == ("news", 0, "drop-oldest")
        assert [await pub.publish("news", {"n": i}) for i in range(3)] == [1, 2, 3]
        got = await take(news, 3)
        assert [(m.channel, m.seq, m.data, m.snapshot) for m in got] == [
            ("news", i + 1, {"n": i}, False) for i in range(3)
        ]


async def test_async_for_and_break_unsubscribes(serve: StartServer) -> None:
    """`async for` yields messages; leaving the loop releases the subscription."""
    server = await serve()
    async with quick_client(server.url) as sub, quick_client(server.url) as pub:
        events = Recorder(sub)
        stream = sub.subscribe("loop")
        await events.wait("subscribed")
        await pub.publish("loop", "a")
        await pub.publish("loop", "b")
        seen = []
        async for message in stream:
            seen.append(message.data)
            if len(seen) == 2:
                break
        assert seen == ["a", "b"]
        await wait_until(lambda: "loop" not in sub.channels, what="the subscription released")
        await wait_until(
            lambda: not any(s.outbox.subscriptions for s in server.sessions.values()),
            what="the server to drop the subscription",
        )


async def test_error_reply_raises_server_error_with_code(serve: StartServer) -> None:
    server = await serve()
    async with quick_client(server.url) as pub:
        with pytest.raises(ServerError) as raised:
            await pub.publish("$sys.stats", 1)
        assert raised.value.code == "forbidden"


async def test_refused_subscription_ends_its_iterator_with_the_error(
    serve: StartServer,
) -> None:
    strict = TEST_SERVER_TOML + "strict_channels = true\n"
    server = await serve('[channels."known"]\n', strict)
    async with quick_client(server.url) as sub:
        errors: list[Exception] = []
        sub.on("error", errors.append)
        stream = sub.subscribe("unknown")
        with pytest.raises(ServerError) as raised:
            await asyncio.wait_for(stream.get(), 10)
        assert raised.value.code == "unknown_channel"
        assert raised.value.channel == "unknown"
        assert errors == [raised.value]


async def test_two_iterators_on_one_channel_share_one_server_subscription(
    serve: StartServer,
) -> None:
    server = await serve()
    async with quick_client(server.url) as sub, quick_client(server.url) as pub:
        events = Recorder(sub)
        first = sub.subscribe("shared")
        second = sub.subscribe("shared")
        await events.wait("subscribed")
        await pub.publish("shared", 1)
        assert [m.data for m in await take(first, 1)] == [1]
        assert [m.data for m in await take(second, 1)] == [1]
        first.close()
        await pub.publish("shared", 2)
        assert [m.data for m in await take(second, 1)] == [2]
        assert len(events["subscribed"]) == 1


async def test_close_is_final(serve: StartServer) -> None:
    """close(): code 1000, no reconnect, iterators end, publishes raise `closed`."""
    server = await serve()
    client = quick_client(server.url)
    await client.start()
    events = Recorder(client)
    stream = client.subscribe("x")
    await events.wait("subscribed")
    await client.close()
    assert [(e.code, e.will_reconnect) for e in events["disconnected"]] == [(1000, False)]
    assert events["reconnecting"] == []
    assert [m async for m in stream] == []
    with pytest.raises(ClientClosed) as raised:
        await client.publish("x", 1)
    assert raised.value.code == "closed"


async def test_first_connection_failure_raises_connect_failed() -> None:
    with pytest.raises(ConnectFailed, match="cannot connect"):
        async with quick_client(f"ws://127.0.0.1:{free_port()}/ws"):
            pass
