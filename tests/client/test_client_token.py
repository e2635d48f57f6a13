"""The Python client's `token` option against a server with auth on."""

from __future__ import annotations

import io

import pytest

from broadcaster.client import ClientClosed, ServerError, connect
from broadcaster.client import commands as cli
from tests.conftest import StartServer
from tests.support.client_events import Recorder, quick_client, take
from tests.support.security import SECRET, hs256

AUTH = f"""
[auth]
enabled = true
secret = "{SECRET}"

[defaults]
subscribe = "token"
publish = "token"
"""


async def test_a_token_is_sent_before_the_subscribes(serve: StartServer) -> None:
    """The `auth` op goes first, so a subscription made before connecting is granted."""
    server = await serve(AUTH)
    token = hs256(subscribe=["news"], publish=["news"])
    client = quick_client(server.url, token=token, fail_fast=False)
    events = Recorder(client)
    news = client.subscribe("news")  # before the connection exists
    async with client:
        await events.wait("subscribed")
        assert await client.publish("news", "hello") == 1
        (message,) = await take(news, 1)
        assert message.data == "hello"
    assert [e.channel for e in events["subscribed"]] == ["news"]


async def test_without_the_token_the_channel_is_refused(serve: StartServer) -> None:
    """The same subscription without a token ends with `forbidden`."""
    server = await serve(AUTH)
    async with quick_client(server.url) as client:
        news = client.subscribe("news")
        with pytest.raises(ServerError, match="needs a token") as raised:
            await take(news, 1)
        assert raised.value.code == "forbidden"


async def test_a_static_token_that_expires_ends_the_client(serve: StartServer) -> None:
    """Close 1008 "token expired" is final with a fixed token: nothing could fix it."""
    server = await serve(AUTH)
    async with quick_client(server.url, token=hs256(ttl=0.3, subscribe=["news"])) as client:
        events = Recorder(client)
        news = client.subscribe("news")
        with pytest.raises(ClientClosed):
            await take(news, 1)
        closed = await events.wait("disconnected")
        assert (closed.code, closed.reason, closed.will_reconnect) == (
            1008,
            "token expired",
            False,
        )


async def test_a_token_function_reconnects_with_a_fresh_token(serve: StartServer) -> None:
    """With a function, 1008 "token expired" reconnects; the function gives the next token,
    and the subscription resumes on the new connection."""
    server = await serve(AUTH)
    issued: list[str] = []

    async def fresh() -> str:
        # The first token lives 0.3 s, the next ones an hour.
        token = hs256(ttl=0.3 if not issued else 3600, subscribe=["news"])
        issued.append(token)
        return token

    async with (
        quick_client(server.url, token=fresh) as client,
        quick_client(server.url, token=hs256(publish=["news"])) as publisher,
    ):
        events = Recorder(client)
        news = client.subscribe("news")
        closed = await events.wait("disconnected")
        assert (closed.code, closed.reason, closed.will_reconnect) == (1008, "token expired", True)
        await events.wait("subscribed", after=1)
        assert len(issued) == 2
        assert await publisher.publish("news", "after refresh") == 1
        (message,) = await take(news, 1)
        assert message.data == "after refresh"


async def test_the_cli_reads_broadcaster_token(
    serve: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`broadcaster pub` sends BROADCASTER_TOKEN (an environment variable, never a flag)."""
    server = await serve(AUTH)
    out, err = io.StringIO(), io.StringIO()
    assert await cli.pub(server.url, "news", {"a": 1}, out=out, err=err) == 1
    assert "forbidden" in err.getvalue()
    monkeypatch.setenv("BROADCASTER_TOKEN", hs256(publish=["news"]))
    out, err = io.StringIO(), io.StringIO()
    assert await cli.pub(server.url, "news", {"a": 1}, out=out, err=err) == 0
    assert out.getvalue().strip() == "1"


async def test_a_failing_token_function_is_retried(serve: StartServer) -> None:
    """An exception from the token function is a failed attempt (backoff), not a crash."""
    server = await serve(AUTH)
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("identity provider down")
        return hs256(subscribe=["news"])

    client = connect(server.url, token=flaky, fail_fast=False, min_delay=0.01, max_delay=0.05)
    events = Recorder(client)
    async with client:
        client.subscribe("news")
        await events.wait("subscribed")
    assert calls == 2
    assert events["reconnecting"][0].code == 1006
