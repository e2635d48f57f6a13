"""What the client does after each kind of close: long backoff, no reconnect, Retry-After."""

from __future__ import annotations

import asyncio
import http
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from broadcaster.client import ClientClosed
from broadcaster.codes import CloseCode
from broadcaster.server.http import respond
from tests.conftest import StartServer
from tests.support.client_events import Recorder, quick_client


async def test_after_4008_one_reconnect_after_a_long_backoff(serve: StartServer) -> None:
    """A slow-consumer close: the client waits long (no storm), then reconnects once."""
    server = await serve()
    async with quick_client(server.url, long_delay=0.4, random=lambda: 0.5) as client:
        events = Recorder(client)
        client.subscribe("c")
        await events.wait("subscribed")
        (session,) = server.sessions.values()
        session.close(CloseCode.SLOW_CONSUMER, "slow consumer", flush=False)
        down = await events.wait("disconnected")
        assert (down.code, down.reason, down.will_reconnect) == (4008, "slow consumer", True)
        (step,) = events["reconnecting"]
        assert step.kind == "long"
        assert step.delay == pytest.approx(0.3), "long_delay/2 + random() * long_delay/2"
        await events.wait("subscribed", after=1)
        assert len(events["reconnecting"]) == 1, "one attempt, no storm"
        assert [c.reconnect for c in events["connected"]] == [True]


@pytest.mark.parametrize("code", [CloseCode.TRY_AGAIN_LATER, CloseCode.RATE_LIMITED])
async def test_overload_and_rate_limit_closes_wait_long(
    serve: StartServer, code: CloseCode
) -> None:
    server = await serve()
    async with quick_client(server.url, long_delay=0.2) as client:
        events = Recorder(client)
        await events.until(lambda: bool(server.sessions), what="the server session")
        (session,) = server.sessions.values()
        session.close(code, "go away for a while")
        step = await events.wait("reconnecting")
        assert (step.code, step.kind) == (code, "long")
        assert step.delay >= 0.1


async def test_policy_close_1008_is_final(serve: StartServer) -> None:
    """1008: no reconnect; iterators and held publishes fail with `closed`."""
    server = await serve()
    async with quick_client(server.url) as client:
        events = Recorder(client)
        stream = client.subscribe("c")
        await events.wait("subscribed")
        (session,) = server.sessions.values()
        session.close(CloseCode.POLICY_VIOLATION, "protocol abuse")
        down = await events.wait("disconnected")
        assert (down.code, down.will_reconnect) == (1008, False)
        with pytest.raises(ClientClosed):
            await asyncio.wait_for(stream.get(), 10)
        with pytest.raises(ClientClosed):
            await client.publish("c", 1)
        assert events["reconnecting"] == []
        assert not any(s.outbox.subscriptions for s in server.sessions.values())


class Refusing:
    """A WebSocket server that refuses every handshake with one HTTP status."""

    def __init__(self, status: http.HTTPStatus, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        self.requests = 0

    def process_request(self, connection: ServerConnection, request: Request) -> Response:
        self.requests += 1
        return respond(self.status, b"no\n", "text/plain", extra_headers=self.headers)


@pytest.fixture
async def refusing() -> AsyncIterator[tuple[Refusing, Server]]:
    refuser = Refusing(http.HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "0.3"})

    async def handler(ws: ServerConnection) -> None:  # never reached
        await ws.close()

    async with serve(handler, "127.0.0.1", 0, process_request=refuser.process_request) as server:
        yield refuser, server


async def test_http_503_waits_at_least_retry_after(refusing: tuple[Refusing, Server]) -> None:
    """A refused handshake with 503 + Retry-After: long backoff, never sooner than told."""
    refuser, server = refusing
    port = server.sockets[0].getsockname()[1]
    client = quick_client(f"ws://127.0.0.1:{port}/ws", fail_fast=False, long_delay=0.1)
    events = Recorder(client)
    await client.start()
    try:
        await events.until(lambda: len(events["reconnecting"]) >= 2, what="two refusals")
    finally:
        await client.close()
    for step in events["reconnecting"]:
        assert (step.kind, step.status, step.code) == ("long", 503, 1006)
        assert 0.3 <= step.delay < 0.35
    assert refuser.requests == len(events["reconnecting"])
