"""A client that stays behind is cut off (close 4008) and cannot hurt anyone else."""

from __future__ import annotations

import asyncio

import pytest

from broadcaster.server.app import Broadcaster
from broadcaster.server.session import ClientSession
from tests.conftest import TOPOLOGIES, WIRES, ConnectRaw, StartServer
from tests.support.clients import open_client
from tests.support.servers import slow_consumer_disconnects, wait_until

# Every test both ways: clients reading plain frames, and clients that negotiated
# permessage-deflate with every message compressed (tests/conftest.py `wire`).
pytestmark = [
    pytest.mark.parametrize("wire", WIRES, indirect=True),
    pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True),
    pytest.mark.usefixtures("wire", "topology"),
]

CHANNELS = """
[channels."live"]
strategy = "drop-oldest"
queue_size = 8
slow_consumer_timeout = 0.3

[channels."orders"]
strategy = "block"
queue_size = 8
slow_consumer_timeout = 0.3
"""

PAD = "y" * 1000


async def publish_until(server: Broadcaster, channel: str, done: asyncio.Event) -> int:
    """Publish 1 KB messages, yielding between them, until `done` is set (bounded count)."""
    sent = 0
    for i in range(20_000):
        if done.is_set():
            break
        await server.publish(channel, {"i": i, "pad": PAD})
        sent += 1
        await asyncio.sleep(0.001)
    return sent


async def test_stalled_subscriber_is_closed_with_4008_and_healthy_one_gets_everything(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """Behind for longer than slow_consumer_timeout: close 4008; a healthy peer loses nothing."""
    server = await serve(CHANNELS)
    stalled = await connect_raw(server.port)
    await stalled.subscribe("live")
    healthy = await open_client(server.url)
    await healthy.subscribe("live")

    done = asyncio.Event()
    publisher = asyncio.create_task(publish_until(server, "live", done))
    await wait_until(
        lambda: slow_consumer_disconnects(server, "live") == 1, what="the slow-consumer close"
    )
    done.set()
    sent = await publisher

    # Everything the server held for the stalled client was freed at once.
    assert all(len(s.outbox.subscriptions) == 0 for s in server.sessions.values() if s.closing)
    assert all(sub.outbox.id != 1 for sub in server.hub.channels["live"].subscriptions)

    await stalled.read_to_end()
    assert stalled.close_code == 4008
    assert stalled.close_reason == "slow consumer"

    got = await healthy.messages("live", sent, timeout=10)
    assert [m["seq"] for m in got] == list(range(1, sent + 1))


async def test_client_that_never_reads_again_is_aborted(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """A slow consumer that cannot read its close frame is aborted: the server forgets it."""
    server = await serve(CHANNELS)
    stalled = await connect_raw(server.port)
    await stalled.subscribe("live")
    (session,) = server.sessions.values()
    assert isinstance(session, ClientSession)
    ws = session.ws
    done = asyncio.Event()
    publisher = asyncio.create_task(publish_until(server, "live", done))
    await wait_until(
        lambda: slow_consumer_disconnects(server, "live") == 1, what="the slow-consumer close"
    )
    done.set()
    await publisher
    assert not server.sessions, "the server forgot the client at once"
    await wait_until(ws.connection_lost_waiter.done, what="the TCP connection to be aborted")
    await stalled.read_to_end()
    assert stalled.reset, "the abort is a TCP reset: the client learns it was cut off"


async def test_block_channel_is_unblocked_when_the_slow_consumer_is_cut_off(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """A stalled subscriber blocks a block channel only until its slow-consumer timeout."""
    server = await serve(CHANNELS)
    stalled = await connect_raw(server.port)
    await stalled.subscribe("orders")
    healthy = await open_client(server.url)
    await healthy.subscribe("orders")
    total = 200
    for i in range(total):
        # Paced by the healthy reader; blocks while the stalled queue is full.
        await server.publish("orders", {"i": i, "pad": PAD})
        await healthy.messages("orders", 1, timeout=10)
    assert slow_consumer_disconnects(server, "orders") == 1, "the stalled subscriber was cut off"
    assert server.hub.channels["orders"].has_room()
    assert len(server.hub.channels["orders"].subscriptions) == 1


TRICKLE = """
[channels."orders"]
strategy = "block"
queue_size = 8
slow_consumer_timeout = 1.0
slow_consumer_share = 0.5
"""


async def test_trickle_reader_on_a_block_channel_is_cut_and_publishing_resumes(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """A client that reads a little every 100 ms dips under the watermark often enough to
    restart that clock, yet holds the publisher nearly all the time: it is cut with 4008."""
    server = await serve(TRICKLE)
    trickle = await connect_raw(server.port)
    await trickle.subscribe("orders")
    healthy = await open_client(server.url)
    await healthy.subscribe("orders")

    cut = asyncio.Event()

    async def read_a_little() -> None:
        for _ in range(300):  # at most ~30 s; the cut comes after ~2 s
            await asyncio.sleep(0.1)
            if not await trickle.read_once(timeout=5.0):
                return

    reader = asyncio.create_task(read_a_little())
    publisher = asyncio.create_task(publish_until(server, "orders", cut))
    try:
        await wait_until(
            lambda: slow_consumer_disconnects(server, "orders") == 1,
            timeout=30.0,
            what="the trickle reader to be cut off",
        )
    finally:
        cut.set()
        sent = await publisher
        await reader
    await trickle.read_to_end()
    assert trickle.close_code == 4008
    assert trickle.close_reason == "slow consumer"

    # The healthy subscriber got everything, and the channel no longer waits on anyone.
    got = await healthy.messages("orders", sent, timeout=10)
    assert [m["seq"] for m in got] == list(range(1, sent + 1))
    assert server.hub.channels["orders"].has_room()
    for i in range(20):
        await server.publish("orders", {"after": i}, block_timeout=0)
