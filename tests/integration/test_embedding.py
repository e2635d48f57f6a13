"""Embedding: the broadcaster inside an asyncio application, started and stopped with it."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
from pathlib import Path
from types import ModuleType

import uvicorn

from broadcaster import Broadcaster, Config
from tests.support.api_client import post_json
from tests.support.clients import open_client
from tests.support.servers import wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "starlette_app.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("starlette_app_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def other_tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


def test_config_build_validates_like_a_file() -> None:
    """Config.build takes one dict per TOML section and checks it the same way."""
    config = Config.build(
        server={"port": 0}, channels={"orders": {"strategy": "block", "queue_size": 4}}
    )
    policy = config.policies.resolve("orders")
    assert policy is not None
    assert (policy.strategy.value, policy.queue_size) == ("block", 4)
    assert config.source == "<Config.build>"


async def test_embedded_server_starts_publishes_and_stops_without_leftover_tasks() -> None:
    """`async with Broadcaster(config)` publishes to WebSocket clients and leaves no task."""
    before = other_tasks()
    config = Config.build(
        server={"port": 0, "shutdown_timeout": 1.0},
        api={"enabled": True, "port": 0},
        sources={"demo_ticker": {"channel": "tickers.demo", "rate": 50}},
    )
    async with Broadcaster(config) as server:
        client = await open_client(server.url)
        await client.subscribe("news")
        assert await server.publish("news", {"headline": "hello"}) == 1
        (message,) = await client.messages("news", 1)
        assert message["data"] == {"headline": "hello"}
        await client.close()
    assert other_tasks() == before, "stop() ended every task the server started"


async def test_starlette_example_publishes_through_the_python_api() -> None:
    """The example web app's endpoint publishes; a WebSocket client receives; nothing leaks."""
    before = other_tasks()
    example = load_example()
    config = Config.build(
        server={"port": 0, "shutdown_timeout": 1.0},
        channels={"orders": {"strategy": "block"}},
    )
    app = example.create_app(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    serving = asyncio.create_task(web.serve(sockets=[sock]))
    try:
        await wait_until(lambda: web.started, what="the web app to serve")
        broadcaster: Broadcaster = app.state.broadcaster
        client = await open_client(broadcaster.url)
        await client.subscribe("orders")
        reply = await post_json(f"http://127.0.0.1:{port}/orders", {"item": "book", "qty": 1})
        assert (reply.status, reply.body) == (201, {"seq": 1})
        (message,) = await client.messages("orders", 1)
        assert message["data"] == {"item": "book", "qty": 1}
        await client.close()
    finally:
        web.should_exit = True
        await serving
        sock.close()
    assert other_tasks() == before, "the app's shutdown stopped the broadcaster completely"


async def test_a_failed_start_releases_what_it_started() -> None:
    """If the API port is taken, start() raises and leaves no task and no bound port behind."""
    before = other_tasks()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        api_port = taken.getsockname()[1]
        server = Broadcaster(
            Config.build(server={"port": 0}, api={"enabled": True, "port": api_port})
        )
        try:
            await server.start()
        except OSError:
            pass
        else:
            await server.stop()
            raise AssertionError("binding a taken API port must fail")
    assert other_tasks() == before
    assert server.api is None
