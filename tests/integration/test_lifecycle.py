"""start() and stop() as an embedding application uses them: nothing leaks, nothing hangs."""

from __future__ import annotations

import asyncio
import socket

import pytest

from broadcaster.config import parse_config
from broadcaster.errors import BrokerUnavailable, ChannelBlocked
from broadcaster.server.app import Broadcaster
from tests.conftest import ConnectRaw, StartServer
from tests.support.redis_server import RedisServer, redis_toml
from tests.support.servers import TEST_SERVER_TOML, free_port, server_config, wait_until

BLOCK_CHANNEL = """
[channels."orders"]
strategy = "block"
queue_size = 2
slow_consumer_timeout = 60.0
"""


def other_tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


def redis_clients(redis: RedisServer) -> int:
    """Connections redis-server has open, this check's own one excluded."""
    client = redis.client()
    try:
        return int(client.info("clients")["connected_clients"]) - 1
    finally:
        client.close()


async def test_start_with_the_port_taken_raises_and_leaves_nothing_running(
    redis_server: RedisServer,
) -> None:
    """A start that fails (port in use) stops the broker it had started: no task, no Redis
    connection left; stop() returns at once, and start() works once the port is free."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server_toml = TEST_SERVER_TOML.replace("port = 0", f"port = {port}")
        config = parse_config(
            server_config(redis_toml(redis_server.url), server_toml), source="<test config>"
        )
        server = Broadcaster(config)
        with pytest.raises(OSError, match="address already in use"):
            await server.start()
        assert other_tasks() == set(), "the broker's tasks were stopped"
        await wait_until(lambda: redis_clients(redis_server) == 0, what="the broker to disconnect")
        assert not server.started
        await asyncio.wait_for(server.stop(), 10)
    # The port is free again: the same server starts, and stops, normally.
    await server.start()
    try:
        assert server.port == port
    finally:
        await asyncio.wait_for(server.stop(), 10)
    assert other_tasks() == set()


async def test_stop_without_start_returns() -> None:
    """stop() on a server that never started returns (an application's cleanup path)."""
    server = Broadcaster(parse_config(server_config(), source="<test config>"))
    await asyncio.wait_for(server.stop(), 10)


async def test_stop_twice_and_concurrently_returns(serve: StartServer) -> None:
    """stop() is idempotent: called twice at once and again afterwards, each call returns."""
    server = await serve()
    await asyncio.wait_for(asyncio.gather(server.stop(), server.stop()), 10)
    await asyncio.wait_for(server.stop(), 10)
    assert other_tasks() == set()


async def test_publishers_waiting_on_a_block_channel_are_refused_when_the_server_stops(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """A publish waiting for room when the server stops fails with `unavailable` saying the
    server is stopping, not with a bare CancelledError."""
    server = await serve(BLOCK_CHANNEL)
    await connect_raw(server.port, subscribe="orders")  # never reads again
    # Until no room appears for a while: the socket and the queue are full.
    for i in range(200):
        try:
            await server.publish("orders", {"i": i, "pad": "z" * 20_000}, block_timeout=0.2)
        except ChannelBlocked:
            break
    else:
        pytest.fail("the channel never blocked")
    waiting = [asyncio.create_task(server.publish("orders", {"w": w})) for w in range(2)]
    await wait_until(lambda: server.rooms.waiting(server.hub.channels["orders"]) == 2)
    await server.stop()
    for task in waiting:
        with pytest.raises(BrokerUnavailable, match="the server is stopping"):
            await task


async def test_start_with_the_api_port_taken_closes_the_websocket_port_again() -> None:
    """A start that fails at its last steps (the HTTP API's port in use) also closes the
    WebSocket port it had bound and stops its loops: the port can be bound again at once."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        api_port = taken.getsockname()[1]
        ws_port = free_port()
        server_toml = TEST_SERVER_TOML.replace("port = 0", f"port = {ws_port}")
        api_toml = f"[api]\nenabled = true\nport = {api_port}\n"
        config = parse_config(server_config(api_toml, server_toml), source="<test config>")
        server = Broadcaster(config)
        with pytest.raises(OSError, match="address already in use"):
            await server.start()
    assert other_tasks() == set(), "the loops and the WebSocket server's tasks were stopped"
    with socket.socket() as again:
        again.bind(("127.0.0.1", ws_port))  # raises if the WebSocket port were still bound
    await asyncio.wait_for(server.stop(), 10)
