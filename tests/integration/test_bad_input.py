"""Bad input gets PROTOCOL.md's error or close code and costs nobody else anything."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from tests.conftest import TOPOLOGIES, StartServer
from tests.support.clients import open_client

pytestmark = [
    pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True),
    pytest.mark.usefixtures("topology"),
]

BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("{not json", "invalid_json"),
    ('{"op": "publish", "channel": "a", "data": NaN}', "invalid_json"),
    ('{"op": "publish", "channel": "a", "data": Infinity}', "invalid_json"),
    ('{"op": "publish", "channel": "a", "data": "\\ud800"}', "invalid_json"),
    ("[1, 2, 3]", "invalid_message"),
    ('"just a string"', "invalid_message"),
    ("{}", "invalid_message"),
    ('{"op": 5}', "invalid_message"),
    ('{"op": "subscribe"}', "invalid_message"),
    ('{"op": "subscribe", "channel": 7}', "invalid_message"),
    ('{"op": "subscribe", "channel": ""}', "invalid_message"),
    ('{"op": "publish", "channel": "a"}', "invalid_message"),
    ('{"op": "subscribe", "channel": "a", "since": -1}', "invalid_message"),
    ('{"op": "subscrbe", "channel": "a"}', "unknown_op"),
    (b'{"op": "ping"}', "invalid_message"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_bad_frame_gets_error_and_connection_stays_open(
    serve: StartServer, frame: str | bytes, code: str
) -> None:
    """A malformed frame gets an `error` with a stable code; the connection keeps working."""
    server = await serve()
    client = await open_client(server.url)
    await client.ws.send(frame)
    error = await client.recv()
    assert error["event"] == "error"
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    await client.send({"op": "ping", "id": "still-open"})
    assert await client.recv() == {"event": "pong", "id": "still-open"}


async def test_error_echoes_the_id_of_an_op_that_parsed(serve: StartServer) -> None:
    """An error caused by an op carrying an id echoes that id."""
    server = await serve()
    client = await open_client(server.url)
    await client.send({"op": "subscrbe", "channel": "a", "id": 7})
    error = await client.recv()
    assert error == {
        "event": "error",
        "code": "unknown_op",
        "message": "unknown op 'subscrbe'; expected one of subscribe, unsubscribe, publish, "
        "ping, auth",
        "id": 7,
    }


async def test_oversized_frame_closes_with_1009_and_others_are_unaffected(
    serve: StartServer,
) -> None:
    """A frame above max_message_size closes that connection with 1009, nobody else's."""
    server = await serve(
        server_toml="""
[server]
port = 0
max_message_size = 1024
"""
    )
    bystander = await open_client(server.url)
    await bystander.subscribe("a")
    async with connect(server.url, max_size=None) as ws:
        await ws.send('{"op":"publish","channel":"a","data":"' + "z" * 2000 + '"}')
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
    publisher = await open_client(server.url)
    assert await publisher.publish("a", "small") == 1
    (message,) = await bystander.messages("a", 1)
    assert message["data"] == "small"


async def test_protocol_abuse_closes_with_1008(serve: StartServer) -> None:
    """More than 10 invalid frames within 10 s close the connection with 1008."""
    server = await serve()
    async with connect(server.url) as ws:
        for _ in range(11):
            await ws.send("garbage")
        codes: list[Any] = []

        async def read_all() -> None:
            while True:
                codes.append(await asyncio.wait_for(ws.recv(), 5))

        with pytest.raises(ConnectionClosedError) as closed:
            await read_all()
        assert len(codes) == 11, "every bad frame was answered before the close"
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008


async def test_other_error_codes_do_not_count_as_abuse(serve: StartServer) -> None:
    """Errors that are not malformed input (not_subscribed, forbidden) never close."""
    server = await serve()
    client = await open_client(server.url)
    for i in range(15):
        await client.send({"op": "unsubscribe", "channel": "x", "id": i})
        assert (await client.recv())["code"] == "not_subscribed"
    await client.send({"op": "ping", "id": "ok"})
    assert await client.recv() == {"event": "pong", "id": "ok"}


async def test_bad_input_storm_loses_nothing_for_a_well_behaved_subscriber(
    serve: StartServer,
) -> None:
    """While one client sends garbage of every kind, a subscriber receives every message."""
    server = await serve()
    subscriber = await open_client(server.url)
    await subscriber.subscribe("steady")
    publisher = await open_client(server.url)

    async def misbehave() -> None:
        for _ in range(5):
            async with connect(server.url, max_size=None) as ws:
                try:
                    for frame, _code in BAD_FRAMES:
                        await ws.send(frame)
                except ConnectionClosedError:
                    pass

    storm = asyncio.create_task(misbehave())
    seqs = [await publisher.publish("steady", {"n": i}) for i in range(100)]
    await storm
    got = await subscriber.messages("steady", 100)
    assert [m["seq"] for m in got] == seqs == list(range(1, 101))
