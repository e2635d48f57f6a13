"""One connection inventing channel names cannot lock everyone else out of new channels.

Before: subscribing and unsubscribing invented names filled `max_channels` in
seconds, and for `idle_channel_ttl` every other client and the HTTP API got
`forbidden` on any new channel. Now a channel that keeps no messages is freed
as soon as its last subscriber leaves, and creating channels costs tokens of
the connection's budget: the abuser gets `rate_limited`, the crowd nothing.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import StartNodes, StartServer
from tests.support.api_client import post_json
from tests.support.clients import JsonClient, open_client

CONFIG = """
[limits]
max_channels = 50
new_channel_rate = 1
new_channel_burst = 20

[api]
enabled = true
port = 0
"""


async def subscribe_and_leave(client: JsonClient, name: str) -> dict[str, Any]:
    """Subscribe to `name` and, if that worked, unsubscribe; the subscribe's reply."""
    await client.send({"op": "subscribe", "channel": name, "id": name})
    for _ in range(10):  # the reply: `subscribed` or `error`, with our id
        reply = await client.recv()
        if reply.get("id") == name:
            break
    if reply["event"] == "subscribed":
        await client.send({"op": "unsubscribe", "channel": name, "id": "u"})
        await client.recv_event("unsubscribed", id="u")
    return reply


async def test_channel_inventor_is_refused_and_others_still_create_channels(
    serve: StartServer,
) -> None:
    """The abuser loops until refused (rate_limited, counted); another client and the
    HTTP API can still create new channels, and the abuser's names hold no slot."""
    server = await serve(CONFIG)
    abuser = await open_client(server.url)
    refusal: dict[str, Any] | None = None
    created = 0
    for i in range(200):
        reply = await subscribe_and_leave(abuser, f"junk.{i}")
        if reply["event"] == "error":
            refusal = reply
            break
        created += 1
    assert refusal is not None, "the abuser was never refused"
    assert refusal["code"] == "rate_limited"
    assert refusal["retry_after"] > 0
    assert "new_channel_rate" in refusal["message"]
    assert created == 20
    assert server.metrics.refusals["new_channel_rate"] == 1
    assert not any(name.startswith("junk.") for name in server.hub.channels)

    other = await open_client(server.url)
    assert (await other.subscribe("fresh"))["event"] == "subscribed"
    published = await post_json(server.api_url, {"channel": "fresh.http", "data": 1})
    assert (published.status, published.body) == (200, {"seq": 1})


async def test_publishing_to_new_channels_without_history_costs_no_budget(
    serve: StartServer,
) -> None:
    """A publish to a channel nobody reads and that keeps nothing leaves no channel behind,
    so a backend fanning out to many per-user names over WebSocket is never refused."""
    server = await serve(CONFIG)
    publisher = await open_client(server.url)
    for i in range(60):  # more than the burst (20) and more than max_channels (50)
        assert await publisher.publish(f"user.{i}", i) == 1
    assert not any(name.startswith("user.") for name in server.hub.channels)


async def test_a_channel_freed_at_once_is_read_again_when_subscribed_again(
    nodes: StartNodes,
) -> None:
    """Freed with its last subscriber (a Redis node stops reading its stream): a new
    subscriber later receives what is published, on both brokers."""
    subscriber_node, publisher_node = await nodes()
    client = await open_client(subscriber_node.url)
    publisher = await open_client(publisher_node.url)
    for round_ in range(3):
        subscribed = await client.subscribe("again")
        seq = await publisher.publish("again", round_)
        [message] = await client.messages("again", 1)
        assert (message["seq"], message["data"]) == (seq, round_)
        assert message["seq"] == subscribed["seq"] + 1
        await client.send({"op": "unsubscribe", "channel": "again", "id": f"u{round_}"})
        await client.recv_event("unsubscribed", id=f"u{round_}")
        assert "again" not in subscriber_node.hub.channels
