"""Every limit at the edge against a real server: status or close code, Retry-After, metric.

The per-address limits skip loopback by default (`exempt_networks`), so these
tests clear that list: the test clients are then limited like any address.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from broadcaster.server.app import Broadcaster
from tests.conftest import TOPOLOGIES, StartServer
from tests.support.clients import JsonClient, open_client
from tests.support.http import http_get_json
from tests.support.metrics import scrape
from tests.support.security import ADMIN_TOKEN, read_until_closed, refused_handshake
from tests.support.servers import wait_until

pytestmark = [
    pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True),
    pytest.mark.usefixtures("topology"),
]


async def refusals(server: Broadcaster, reason: str) -> float:
    return (await scrape(server.port)).value("broadcaster_refusals_total", reason=reason)


def limits(**values: object) -> str:
    """A [limits] table: loopback not exempt, and the given keys."""
    lines = ["[limits]", "exempt_networks = []"]
    lines += [f"{key} = {orjson.dumps(value).decode()}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


# --- origins -------------------------------------------------------------------


async def test_a_foreign_origin_gets_403_and_allowed_ones_get_in(serve: StartServer) -> None:
    """Cross-site WebSocket hijacking: only listed origins (and the server's own) connect."""
    server = await serve(
        server_toml="""
[server]
port = 0
allowed_origins = ["self", "https://app.example.com", "https://*.example.org"]
"""
    )
    own = f"http://127.0.0.1:{server.port}"
    for origin in (own, "https://app.example.com", "https://a.b.example.org", None):
        async with connect(server.url, origin=origin) as ws:  # type: ignore[arg-type]
            await ws.send('{"op": "ping", "id": 1}')
            assert orjson.loads(await ws.recv()) == {"event": "pong", "id": 1}
    for origin in ("https://evil.example", "https://app.example.com.evil.net", "null"):
        refused = await refused_handshake(server.url, origin=origin)
        assert refused.status == 403
        assert refused.body["error"] == "forbidden_origin"
    assert await refusals(server, "origin") == 3


async def test_no_origin_header_can_be_refused(serve: StartServer) -> None:
    """`allow_no_origin = false`: only browsers (which always send Origin) get in."""
    server = await serve(
        server_toml="""
[server]
port = 0
allow_no_origin = false
"""
    )
    refused = await refused_handshake(server.url)
    assert refused.status == 403
    async with connect(server.url, origin=f"http://127.0.0.1:{server.port}"):  # type: ignore[arg-type]
        pass
    assert await refusals(server, "origin") == 1


# --- per-address connection rate and count ----------------------------------------


async def test_over_the_connection_rate_gets_429_with_retry_after(serve: StartServer) -> None:
    """A token bucket per address: the burst gets in, the next handshake gets 429 with the
    whole seconds until a token is back."""
    server = await serve(limits(connection_rate=0.1, connection_burst=3))
    clients = [await open_client(server.url) for _ in range(3)]
    refused = await refused_handshake(server.url)
    assert refused.status == 429
    assert refused.body["error"] == "rate_limited"
    # 1 token at 0.1/s: about 10 s (minus what has refilled since the third handshake).
    assert refused.headers["Retry-After"] == "10"
    assert 9 < refused.body["retry_after"] <= 10
    assert await refusals(server, "connection_rate") == 1
    assert len(clients) == 3


async def test_over_the_connections_per_address_gets_429(serve: StartServer) -> None:
    """An address with `connections_per_ip` open connections is refused until one closes."""
    server = await serve(limits(connections_per_ip=2, retry_after=7))
    first = await open_client(server.url)
    await open_client(server.url)
    refused = await refused_handshake(server.url)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "7"
    assert await refusals(server, "ip_connections") == 1
    await first.close()
    await wait_until(lambda: server.admission.open == 1, what="the closed connection released")
    await open_client(server.url)


async def test_exempt_networks_skip_the_per_address_limits(serve: StartServer) -> None:
    """Loopback is exempt by default (a local proxy, the tests); server-wide limits still apply."""
    server = await serve("[limits]\nconnections_per_ip = 1\nconnection_rate = 0.1\n")
    clients = [await open_client(server.url) for _ in range(3)]
    assert len(server.sessions) == len(clients)
    assert await refusals(server, "ip_connections") == 0


# --- server-wide: max_connections and overload -------------------------------------


async def test_over_max_connections_gets_503(serve: StartServer) -> None:
    """`max_connections`: 503 with Retry-After; HTTP endpoints are not connections."""
    server = await serve("[limits]\nmax_connections = 2\nretry_after = 3\n")
    await open_client(server.url)
    await open_client(server.url)
    refused = await refused_handshake(server.url)
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "3"
    assert refused.body["error"] == "unavailable"
    status, _ = await http_get_json(server.port, "/healthz")
    assert status == 200
    assert await refusals(server, "connections") == 1


# The monitor never ticks in these (stats_interval is an hour): the test feeds lag readings.
QUIET_MONITOR = """
[server]
port = 0
stats_interval = 3600
"""


async def test_loop_lag_above_the_threshold_refuses_handshakes_with_503(
    serve: StartServer,
) -> None:
    """While the last lag reading is above max_loop_lag: 503 + Retry-After; below: welcome."""
    server = await serve(
        "[limits]\nmax_loop_lag = 0.5\nretry_after = 4\nshed_after = 0\n",
        server_toml=QUIET_MONITOR,
    )
    now = server.loop.time()
    server.lag_sampled(0.8, now)
    refused = await refused_handshake(server.url)
    assert (refused.status, refused.headers["Retry-After"]) == (503, "4")
    assert "overloaded" in refused.body["message"]
    server.lag_sampled(0.01, now + 0.5)
    await open_client(server.url)
    assert await refusals(server, "overload") == 1


async def test_sustained_lag_sheds_the_newest_connections_with_1013(serve: StartServer) -> None:
    """Lag above the threshold for shed_after: each reading closes shed_fraction of the
    connections (at least one), newest first, never the admin's."""
    server = await serve(
        f'[admin]\ntoken = "{ADMIN_TOKEN}"\n'
        "[limits]\nmax_loop_lag = 0.5\nshed_after = 1.0\nshed_fraction = 0.4\n",
        server_toml=QUIET_MONITOR,
    )
    oldest = [await open_client(server.url) for _ in range(2)]
    admin = await open_client(f"{server.url}?token={ADMIN_TOKEN}")  # newer than those two
    newest = [await open_client(server.url) for _ in range(2)]
    t0 = server.loop.time()
    server.lag_sampled(0.9, t0)
    assert server.shed == 0, "not yet sustained"
    server.lag_sampled(0.9, t0 + 1.2)  # 5 connections x 0.4 = 2 shed, the newest two
    for client in newest:
        with pytest.raises(ConnectionClosedError) as closed:
            await client.recv_event("never")
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "server overloaded")
    for client in [*oldest, admin]:
        await client.send({"op": "ping", "id": "alive"})
        await client.recv_event("pong", id="alive")
    server.lag_sampled(0.9, t0 + 1.4)  # 3 left x 0.4 -> at least one: the newest non-admin
    with pytest.raises(ConnectionClosedError):
        await oldest[1].recv_event("never")
    await admin.send({"op": "ping", "id": "still"})
    await admin.recv_event("pong", id="still")
    assert server.shed == 3
    assert (await scrape(server.port, ADMIN_TOKEN)).value(
        "broadcaster_refusals_total", reason="overload"
    ) == 3


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_a_really_stalled_loop_is_measured_and_shed(serve: StartServer) -> None:
    """The wiring, without injected readings: callbacks that block the loop make the monitor
    read lag above the threshold, and a connection is shed with 1013. (One loop: this stalls
    the loop on purpose, twice would only double the wait.)"""
    server = await serve(
        "[limits]\nmax_loop_lag = 0.03\nshed_after = 0.2\nshed_fraction = 1.0\n",
        server_toml="[server]\nport = 0\nstats_interval = 0.02\n",
    )
    client = await open_client(server.url)
    loop = asyncio.get_running_loop()
    stalls = 0

    def stall() -> None:
        nonlocal stalls
        stalls += 1
        time.sleep(0.1)  # blocks the loop: this is the overload being simulated
        if server.shed == 0 and stalls < 50:
            loop.call_soon(stall)

    loop.call_soon(stall)
    with pytest.raises(ConnectionClosedError) as closed:
        await client.recv_event("never", timeout=15)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1013
    assert server.shed == 1
    assert await refusals(server, "overload") == 1


# --- per connection: subscriptions, channels, publish rate ---------------------------


async def test_over_max_subscriptions_gets_forbidden(serve: StartServer) -> None:
    """The subscribe beyond `max_subscriptions` is refused; the others stay."""
    server = await serve("[limits]\nmax_subscriptions = 2\n")
    client = await open_client(server.url)
    await client.subscribe("a")
    await client.subscribe("b")
    await client.send({"op": "subscribe", "channel": "c", "id": "c"})
    error = await client.recv_event("error", id="c")
    assert error["code"] == "forbidden"
    assert "max_subscriptions" in error["message"]
    await client.send({"op": "unsubscribe", "channel": "a", "id": "u"})
    await client.recv_event("unsubscribed", id="u")
    await client.subscribe("c")
    assert await refusals(server, "max_subscriptions") == 1


async def test_over_max_channels_a_new_channel_is_forbidden(serve: StartServer) -> None:
    """Past `max_channels` channels held at once, new names are refused,
    existing ones keep working (subscribe, WebSocket publish, in-process publish)."""
    server = await serve("[limits]\nmax_channels = 2\n")
    client = await open_client(server.url)
    await client.subscribe("one")
    # Subscribed, so held (one nobody reads and keeping nothing is freed at once).
    await client.subscribe("two")
    await client.send({"op": "subscribe", "channel": "three", "id": "s"})
    assert (await client.recv_event("error", id="s"))["code"] == "forbidden"
    await client.send({"op": "publish", "channel": "four", "data": 1, "id": "p"})
    error = await client.recv_event("error", id="p")
    assert (error["code"], "max_channels" in error["message"]) == ("forbidden", True)
    assert await client.publish("one", 2) == 1
    await client.subscribe("$sys.stats")  # stays reachable at the limit (the dashboard)
    assert await refusals(server, "max_channels") == 2
    assert "three" not in server.hub.channels


async def flood(client: JsonClient, count: int) -> list[dict[str, object]]:
    """Send `count` publishes at once, then read every reply (bounded)."""
    for i in range(count):
        await client.send({"op": "publish", "channel": "x", "data": i, "id": i})
    return [await client.recv() for _ in range(count)]


async def test_over_the_publish_rate_gets_rate_limited_with_retry_after(
    serve: StartServer,
) -> None:
    """A token bucket per connection: the burst is published, the rest refused with
    `rate_limited` and `retry_after` (seconds until a token is back); nothing is lost."""
    server = await serve(
        "[limits]\npublish_rate = 0.5\npublish_burst = 3\nrate_limit_strikes = 10\n"
    )
    subscriber = await open_client(server.url)
    await subscriber.subscribe("x")
    client = await open_client(server.url)
    replies = await flood(client, 5)
    assert [r["event"] for r in replies] == ["published"] * 3 + ["error"] * 2
    for refused in replies[3:]:
        assert refused["code"] == "rate_limited"
        retry_after = refused["retry_after"]
        assert isinstance(retry_after, float)
        assert 1.9 < retry_after <= 2.0  # one token at 0.5/s
    assert [m["data"] for m in await subscriber.messages("x", 3)] == [0, 1, 2]
    await client.send({"op": "ping", "id": "open"})
    await client.recv_event("pong", id="open")
    assert await refusals(server, "publish_rate") == 2


async def test_a_client_that_keeps_going_is_closed_with_4029(serve: StartServer) -> None:
    """After `rate_limit_strikes` refusals within the window, the next closes 4029;
    every refusal before it was answered (the warnings)."""
    server = await serve(
        "[limits]\npublish_rate = 0.1\npublish_burst = 1\n"
        "rate_limit_strikes = 3\nrate_limit_window = 60\n"
    )
    async with connect(server.url) as ws:
        for i in range(6):
            op = {"op": "publish", "channel": "x", "data": i, "id": i}
            await ws.send(orjson.dumps(op).decode())
        got, code, reason = await read_until_closed(ws)
    assert [e.get("code", e["event"]) for e in got] == ["published"] + ["rate_limited"] * 4
    assert code == 4029
    assert "rate limited" in reason
    assert await refusals(server, "publish_rate") == 4
    assert await refusals(server, "rate_limit") == 1


async def test_refusals_are_in_stats(serve: StartServer) -> None:
    """/stats has a refusals section (the same numbers as the metric) and the admission state."""
    server = await serve(limits(connections_per_ip=1))
    await open_client(server.url)
    await refused_handshake(server.url)
    status, document = await http_get_json(server.port, "/stats")
    assert status == 200
    assert document["refusals"]["ip_connections"] == 1
    assert document["admission"] == {"open": 1, "addresses": 1, "overloaded": False, "shed": 0}
