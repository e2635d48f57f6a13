"""The HTTP endpoints on the WebSocket port."""

from __future__ import annotations

import pytest

from tests.conftest import ConnectRaw, StartServer
from tests.support.clients import open_client
from tests.support.http import http_get, http_get_json
from tests.support.servers import wait_until


async def test_healthz_answers_200(serve: StartServer) -> None:
    """Liveness probes get 200 and a JSON status on the same port."""
    server = await serve()
    status, body = await http_get_json(server.port, "/healthz")
    assert status == 200
    assert body["status"] == "ok"


async def test_stats_lists_connections_with_subscription_depths(serve: StartServer) -> None:
    """/stats shows each connection's subscriptions with depth, limit, strategy and dropped."""
    server = await serve('[channels."q"]\nstrategy = "drop-newest"\nqueue_size = 32\n')
    client = await open_client(server.url)
    await client.subscribe("q")
    await client.publish("q", 1)
    await client.messages("q", 1)
    status, stats = await http_get_json(server.port, "/stats")
    assert status == 200
    (conn,) = stats["connections"]
    assert conn["depth"] == 0
    (sub,) = conn["subscriptions"]
    assert sub["channel"] == "q"
    assert sub["strategy"] == "drop-newest"
    assert sub["limit"] == 32
    assert sub["dropped"] == 0
    assert sub["depth"] == 0
    channel = stats["channels"]["q"]
    assert channel["subscribers"] == 1
    assert channel["last_seq"] == 1
    assert channel["published"] == 1
    assert channel["delivered"] == 1
    assert stats["server"]["connections"] == 1


async def test_stats_top_and_sort_list_the_worst_connections_first(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """`?top=N&sort=depth` returns the N deepest connections, deepest first."""
    server = await serve('[channels."q"]\nqueue_size = 64\n')
    stalled = await connect_raw(server.port)
    await stalled.subscribe("q")
    healthy = [await open_client(server.url) for _ in range(3)]
    for client in healthy:
        await client.subscribe("q")
    for i in range(40):
        await server.publish("q", {"i": i, "pad": "p" * 1000})
        for client in healthy:
            await client.messages("q", 1)

    def stalled_depth() -> int:
        return max(s.outbox.depth for s in server.sessions.values())

    await wait_until(lambda: stalled_depth() > 0, what="a backlog on the stalled client")
    status, stats = await http_get_json(server.port, "/stats?top=2&sort=depth")
    assert status == 200
    assert len(stats["connections"]) == 2
    first, second = stats["connections"]
    # The document's own numbers: the live depth may already differ (the
    # kernel can take a batch between the response and this line).
    assert first["id"] == min(server.sessions), "the stalled client connected first"
    assert first["depth"] > 0
    assert first["depth"] >= second["depth"]
    assert first["bytes_queued"] > 0
    status, by_age = await http_get_json(server.port, "/stats?top=1&sort=age")
    assert by_age["connections"][0]["id"] == first["id"], "the stalled client connected first"


@pytest.mark.parametrize("query", ["sort=size", "top=-1", "top=many"])
async def test_stats_rejects_bad_query_with_400(serve: StartServer, query: str) -> None:
    """A bad /stats query parameter is a 400 that says what is allowed."""
    server = await serve()
    status, body = await http_get_json(server.port, f"/stats?{query}")
    assert status == 400
    assert body["error"] == "invalid_query"


async def test_unknown_path_is_404_and_plain_get_on_ws_is_426(serve: StartServer) -> None:
    """Unknown pages are 404; /ws without an upgrade is 426 Upgrade Required."""
    server = await serve()
    status, _, _ = await http_get(server.port, "/nope")
    assert status == 404
    status, _, _ = await http_get(server.port, "/ws")
    assert status == 426


async def test_index_page_is_served(serve: StartServer) -> None:
    """`/` serves the live ticker page."""
    server = await serve()
    status, headers, body = await http_get(server.port, "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert b"tickers.demo" in body
