"""Clients subscribe, publish and receive over a real server on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import TOPOLOGIES, StartServer
from tests.support.clients import open_client

pytestmark = [
    pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True),
    pytest.mark.usefixtures("topology"),
]


async def test_subscriber_receives_published_messages_with_gap_free_seq(
    serve: StartServer,
) -> None:
    """A subscriber gets every message of its channel, in order, seq growing by exactly 1."""
    server = await serve()
    sub = await open_client(server.url)
    pub = await open_client(server.url)
    reply = await sub.subscribe("news")
    assert reply["seq"] == 0
    assert reply["strategy"] == "drop-oldest"
    assert reply["queue_size"] == 256
    assert isinstance(reply["epoch"], str)
    assert reply["epoch"]
    seqs = [await pub.publish("news", {"n": i}) for i in range(50)]
    assert seqs == list(range(1, 51))
    got = await sub.messages("news", 50)
    assert [m["seq"] for m in got] == list(range(1, 51))
    assert [m["data"] for m in got] == [{"n": i} for i in range(50)]


async def test_subscribed_reply_names_last_seq_and_only_later_messages_arrive(
    serve: StartServer,
) -> None:
    """A late subscriber is told the last seq and receives exactly the messages after it."""
    server = await serve()
    pub = await open_client(server.url)
    for i in range(5):
        await pub.publish("prices", i)
    sub = await open_client(server.url)
    reply = await sub.subscribe("prices")
    assert reply["seq"] == 5
    await pub.publish("prices", "six")
    (message,) = await sub.messages("prices", 1)
    assert message == {"event": "message", "channel": "prices", "seq": 6, "data": "six"}


async def test_channels_are_independent(serve: StartServer) -> None:
    """Each channel has its own seq and a subscriber only gets its channels."""
    server = await serve()
    sub = await open_client(server.url)
    pub = await open_client(server.url)
    await sub.subscribe("a")
    assert await pub.publish("b", 1) == 1
    assert await pub.publish("a", 1) == 1
    assert await pub.publish("a", 2) == 2
    assert await pub.publish("b", 2) == 2
    got = await sub.messages("a", 2)
    assert [(m["channel"], m["seq"]) for m in got] == [("a", 1), ("a", 2)]
    await sub.send({"op": "ping", "id": "p"})
    pong = await sub.recv()
    assert pong == {"event": "pong", "id": "p"}, "no message of channel b may arrive"


async def test_unsubscribe_stops_delivery(serve: StartServer) -> None:
    """After `unsubscribed`, no further message of that channel arrives."""
    server = await serve()
    sub = await open_client(server.url)
    pub = await open_client(server.url)
    await sub.subscribe("a")
    await pub.publish("a", 1)
    await sub.messages("a", 1)
    await sub.send({"op": "unsubscribe", "channel": "a", "id": 9})
    assert await sub.recv_event("unsubscribed") == {
        "event": "unsubscribed",
        "channel": "a",
        "id": 9,
    }
    await pub.publish("a", 2)
    await sub.send({"op": "ping", "id": 10})
    assert await sub.recv() == {"event": "pong", "id": 10}


async def test_unsubscribe_without_subscription_is_not_subscribed(serve: StartServer) -> None:
    """Unsubscribing from a channel one is not subscribed to answers `not_subscribed`."""
    server = await serve()
    client = await open_client(server.url)
    await client.send({"op": "unsubscribe", "channel": "nope", "id": 3})
    reply = await client.recv()
    assert reply["event"] == "error"
    assert reply["code"] == "not_subscribed"
    assert reply["id"] == 3


async def test_subscribing_twice_is_refused_and_keeps_the_first(serve: StartServer) -> None:
    """A second subscribe to the same channel errors and the stream continues unchanged."""
    server = await serve()
    client = await open_client(server.url)
    pub = await open_client(server.url)
    await client.subscribe("a")
    await client.send({"op": "subscribe", "channel": "a", "id": 2})
    error = await client.recv_event("error")
    assert error["code"] == "already_subscribed"
    assert error["id"] == 2
    await pub.publish("a", "x")
    (message,) = await client.messages("a", 1)
    assert message["seq"] == 1


async def test_publish_without_id_gets_no_reply(serve: StartServer) -> None:
    """A publish without an id is fire-and-forget: only the ping's pong comes back."""
    server = await serve()
    client = await open_client(server.url)
    await client.send({"op": "publish", "channel": "a", "data": 1})
    await client.send({"op": "ping", "id": 1})
    assert await client.recv() == {"event": "pong", "id": 1}


async def test_publisher_receives_its_own_message_when_subscribed(serve: StartServer) -> None:
    """A client subscribed to a channel it publishes to gets its message like anyone else."""
    server = await serve()
    client = await open_client(server.url)
    await client.subscribe("echo")
    await client.send({"op": "publish", "channel": "echo", "data": {"hello": "world"}, "id": 1})
    # The reply and the message may come in either order (under workers the
    # message can be delivered before the bus's ack is answered).
    by_event: dict[str, dict[str, Any]] = {}
    while len(by_event) < 2:
        event = await client.recv()
        by_event[event["event"]] = event
    assert by_event["message"]["seq"] == by_event["published"]["seq"]
    assert by_event["message"]["data"] == {"hello": "world"}


async def test_many_subscribers_get_the_same_ordered_stream(serve: StartServer) -> None:
    """Twenty subscribers of one channel each receive all 200 messages in seq order."""
    server = await serve()
    subs = [await open_client(server.url) for _ in range(20)]
    for sub in subs:
        await sub.subscribe("fan")
    pub = await open_client(server.url)
    for i in range(200):
        await pub.send({"op": "publish", "channel": "fan", "data": i})
    results = await asyncio.gather(*(sub.messages("fan", 200) for sub in subs))
    for got in results:
        assert [m["seq"] for m in got] == list(range(1, 201))
        assert [m["data"] for m in got] == list(range(200))


async def test_server_publish_api_reaches_websocket_subscribers(serve: StartServer) -> None:
    """`await server.publish(...)` from application code reaches WebSocket subscribers."""
    server = await serve()
    sub = await open_client(server.url)
    await sub.subscribe("app")
    assert await server.publish("app", {"from": "python"}) == 1
    (message,) = await sub.messages("app", 1)
    assert message["data"] == {"from": "python"}


@pytest.mark.parametrize("name", ["$sys.stats", "$sys.anything"])
async def test_clients_cannot_publish_to_system_channels(serve: StartServer, name: str) -> None:
    """Channels starting with `$sys.` belong to the server: publishing is `forbidden`."""
    server = await serve()
    client = await open_client(server.url)
    await client.send({"op": "publish", "channel": name, "data": 1, "id": 1})
    reply = await client.recv()
    assert reply["event"] == "error"
    assert reply["code"] == "forbidden"
    assert reply["id"] == 1


async def test_strict_channels_refuse_unknown_channels(serve: StartServer) -> None:
    """With strict_channels, ops on an unconfigured channel get unknown_channel."""
    server = await serve(
        """
[channels."known.*"]
strategy = "drop-newest"
""",
        server_toml="""
[server]
port = 0
strict_channels = true
""",
    )
    client = await open_client(server.url)
    await client.send({"op": "subscribe", "channel": "other", "id": 1})
    assert (await client.recv())["code"] == "unknown_channel"
    await client.send({"op": "publish", "channel": "other", "data": 1, "id": 2})
    assert (await client.recv())["code"] == "unknown_channel"
    reply = await client.subscribe("known.x")
    assert reply["strategy"] == "drop-newest"


async def test_channel_config_matches_exact_names_and_globs_first_match_wins(
    serve: StartServer,
) -> None:
    """Per-channel settings come from the first matching [channels] entry, else [defaults]."""
    server = await serve(
        """
[defaults]
queue_size = 100

[channels."orders"]
strategy = "block"
queue_size = 10

[channels."tickers.*"]
strategy = "drop-newest"

[channels."tickers.special"]
strategy = "block"
"""
    )
    client = await open_client(server.url)
    orders = await client.subscribe("orders")
    assert (orders["strategy"], orders["queue_size"]) == ("block", 10)
    special = await client.subscribe("tickers.special")
    assert special["strategy"] == "drop-newest", "the earlier glob wins over the later exact name"
    other = await client.subscribe("misc")
    assert (other["strategy"], other["queue_size"]) == ("drop-oldest", 100)
