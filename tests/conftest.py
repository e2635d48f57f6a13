"""Fixtures: a real server on a free loopback port, real clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from broadcaster.server.app import Broadcaster
from tests.support.raw_client import RawClient
from tests.support.redis_server import RedisServer, redis_toml
from tests.support.servers import TEST_SERVER_TOML, ServerProcess, start_server
from tests.support.workers import Workers

StartServer = Callable[..., Awaitable[Broadcaster]]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on the standard loop and on uvloop: the same code on both."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


# The server config a `wire = "deflate"` test adds: every message is compressed
# (the default threshold would leave small test messages plain).
COMPRESS_EVERYTHING = "\n[defaults]\ncompression_min_size = 0\n"


@pytest.fixture
def wire(request: pytest.FixtureRequest) -> str:
    """How raw clients read: "plain" (no permessage-deflate offer, the default) or
    "deflate" (they negotiate it and the server compresses every message).

    A module runs its tests both ways with
    `pytestmark = pytest.mark.parametrize("wire", WIRES, indirect=True)` plus
    `pytest.mark.usefixtures("wire")`: strategies and flow rules must not
    depend on it.
    """
    return str(getattr(request, "param", "plain"))


WIRES = ["plain", "deflate"]


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> str:
    """Where the server under test runs: "process" (one process, the default) or
    "workers" (worker 0 of an in-process `serve --workers 2`, tests/support/workers.py:
    every message goes through the local bus and `BusBroker` before reaching the
    worker's subscribers, the other worker standing by).

    A module whose contract must hold under workers too runs both ways with
    `pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True)` and
    `pytest.mark.usefixtures("topology")`.
    """
    return str(getattr(request, "param", "process"))


TOPOLOGIES = ["process", "workers"]


StartProcess = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture
async def serve(wire: str, topology: str) -> AsyncIterator[StartServer]:
    """Start in-process servers (config TOML appended to the test [server] section)."""
    started: list[Broadcaster] = []
    worker_sets: list[Workers] = []

    async def start(extra_toml: str = "", server_toml: str = TEST_SERVER_TOML) -> Broadcaster:
        if wire == "deflate":
            assert "[defaults]" not in extra_toml, "wire=deflate sets [defaults] itself"
            extra_toml += COMPRESS_EVERYTHING
        if topology == "workers":
            workers = Workers()
            worker_sets.append(workers)
            return (await workers.start(2, extra_toml, server_toml))[0]
        server = await start_server(extra_toml, server_toml)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()
    for workers in worker_sets:
        await workers.stop()


@pytest.fixture
async def serve_process(tmp_path: Path) -> AsyncIterator[StartProcess]:
    """Start `python -m broadcaster serve` subprocesses; killed at teardown."""
    started: list[ServerProcess] = []

    async def start(config_text: str) -> ServerProcess:
        proc = ServerProcess(config_text, tmp_path / f"server{len(started)}")
        started.append(proc)
        return await proc.start()

    yield start
    for proc in started:
        proc.kill()


ConnectRaw = Callable[..., Awaitable[RawClient]]


@pytest.fixture
async def connect_raw(wire: str) -> AsyncIterator[ConnectRaw]:
    """Open raw-socket clients that read only when told (closed at teardown)."""
    opened: list[RawClient] = []

    async def connect(port: int, *, rcvbuf: int = 4096, subscribe: str | None = None) -> RawClient:
        """`subscribe`: subscribe to that channel first (then it reads nothing more)."""
        client = RawClient(port, rcvbuf=rcvbuf, compression=wire == "deflate")
        opened.append(client)
        await client.connect()
        assert client.deflate == (wire == "deflate"), "permessage-deflate as the wire asks"
        if subscribe is not None:
            await client.subscribe(subscribe)
        return client

    yield connect
    for client in opened:
        client.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port (killed at teardown)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


StartNodes = Callable[..., Awaitable[list[Broadcaster]]]


@pytest.fixture(params=["memory", "redis", "workers"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    """Both brokers, and in-process workers of `serve --workers` sharing a local bus
    (tests/support/workers.py), for tests whose behaviour must not depend on them."""
    kind: str = request.param
    return kind


@pytest.fixture
def cluster_redis(broker_kind: str, tmp_path: Path) -> Iterator[RedisServer | None]:
    """A redis-server when the broker is Redis (set up before, torn down after the servers)."""
    if broker_kind != "redis":
        yield None
        return
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
async def nodes(
    cluster_redis: RedisServer | None, serve: StartServer, broker_kind: str, wire: str
) -> AsyncIterator[StartNodes]:
    """Start `count` nodes of one cluster, for tests that hold for both brokers.

    Redis: `count` in-process servers sharing a real redis-server. Memory: one
    server standing for every node (there is only one process to talk to).
    Workers: `count` workers of one server, each on its own port, and their bus.
    """
    workers = Workers()

    async def start(extra_toml: str = "", count: int = 2) -> list[Broadcaster]:
        if broker_kind == "workers":
            if wire == "deflate":
                extra_toml += COMPRESS_EVERYTHING
            return await workers.start(count, extra_toml)
        if cluster_redis is None:
            return [await serve(extra_toml)] * count
        broker_toml = redis_toml(cluster_redis.url)
        return [await serve(extra_toml + "\n" + broker_toml) for _ in range(count)]

    yield start
    await workers.stop()
