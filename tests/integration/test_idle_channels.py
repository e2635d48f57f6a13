"""Idle channels are freed on a real server, and a name used again starts a new epoch.

Without this, every channel name a client ever used would hold memory and,
with `[limits] max_channels`, one slot for the life of the process: enough
made-up names and nobody could open a new channel again.
"""

from __future__ import annotations

from broadcaster.server.app import Broadcaster
from tests.conftest import StartServer
from tests.support.clients import open_client
from tests.support.http import http_get_json
from tests.support.metrics import scrape
from tests.support.servers import TEST_SERVER_TOML, wait_until

IDLE_SERVER_TOML = TEST_SERVER_TOML + "idle_channel_ttl = 0.2\n"


def freed(server: Broadcaster, *names: str) -> bool:
    return not any(name in server.hub.channels for name in names)


async def test_names_freed_when_idle_give_max_channels_slots_back(serve: StartServer) -> None:
    """At max_channels a new name is forbidden; once the old ones are idle it is accepted
    (channels keeping messages: the others are freed as soon as nothing uses them)."""
    server = await serve(
        "[limits]\nmax_channels = 2\n[defaults]\nhistory_size = 1\nhistory_ttl = 0.1\n",
        server_toml=IDLE_SERVER_TOML,
    )
    client = await open_client(server.url)
    await client.subscribe("one")
    assert await client.publish("two", 1) == 1
    await client.send({"op": "subscribe", "channel": "three", "id": "s"})
    assert (await client.recv_event("error", id="s"))["code"] == "forbidden"
    await wait_until(lambda: freed(server, "two"), what="'two' freed")
    assert "one" in server.hub.channels, "a channel with a subscriber is never freed"
    assert (await client.subscribe("three"))["event"] == "subscribed"
    await client.send({"op": "unsubscribe", "channel": "one", "id": "u"})
    await client.recv_event("unsubscribed", id="u")
    await wait_until(lambda: freed(server, "one"), what="'one' freed")
    assert await client.publish("four", 1) == 1


async def test_a_name_used_again_starts_at_seq_1_under_a_new_epoch(serve: StartServer) -> None:
    """A subscriber holding the old epoch sees the history changed: no false gap or duplicate;
    recovery from the old epoch says recovered: false."""
    server = await serve(
        '[channels."news"]\nhistory_size = 10\nhistory_ttl = 0.3\n', server_toml=IDLE_SERVER_TOML
    )
    client, publisher = await open_client(server.url), await open_client(server.url)
    first = await client.subscribe("news")
    for i in range(3):
        await publisher.publish("news", i)
    await client.messages("news", 3)
    await client.send({"op": "unsubscribe", "channel": "news", "id": "u"})
    await client.recv_event("unsubscribed", id="u")
    await wait_until(lambda: freed(server, "news"), what="'news' freed")

    again = await client.subscribe("news", since=3, epoch=first["epoch"])
    assert again["epoch"] != first["epoch"]
    assert (again["seq"], again["recovered"], again["oldest_seq"]) == (0, False, 1)
    assert await publisher.publish("news", "new") == 1
    [message] = await client.messages("news", 1)
    assert (message["seq"], message["data"]) == (1, "new")


async def test_totals_and_metrics_never_go_backwards_when_channels_are_freed(
    serve: StartServer,
) -> None:
    """Prometheus would read a counter reset; /stats' totals would shrink."""
    server = await serve(server_toml=IDLE_SERVER_TOML)
    client = await open_client(server.url)
    for name in ("a", "b", "c"):
        assert await client.publish(name, 1) == 1
    await wait_until(lambda: freed(server, "a", "b", "c"), what="channels freed")
    status, stats = await http_get_json(server.port, "/stats")
    assert status == 200
    assert stats["totals"]["published"] == 3
    assert stats["totals"]["channels_freed"] >= 3
    assert set(stats["channels"]) & {"a", "b", "c"} == set()
    metrics = await scrape(server.port)
    assert metrics.value("broadcaster_messages_published_total", channel="*") == 3
