"""The Python client with the ticker-grade options: snapshots and max_rate."""

from __future__ import annotations

import asyncio

from tests.conftest import StartServer
from tests.support.client_events import Recorder, quick_client, take

BOOK = """
[channels."book"]
strategy = "conflate"
conflate_key = "symbol"
snapshot = true

[channels."plain"]
strategy = "drop-oldest"
"""


async def test_snapshot_messages_are_flagged_then_the_live_stream_follows(
    serve: StartServer,
) -> None:
    """A late subscriber gets the latest value per key flagged `snapshot`, then live ones."""
    server = await serve(BOOK)
    for symbol, price in [("A", 1), ("B", 2), ("A", 3)]:
        await server.publish("book", {"symbol": symbol, "price": price})
    async with quick_client(server.url) as client:
        events = Recorder(client)
        book = client.subscribe("book")
        await events.wait("subscribed")
        snapshot = await take(book, 2)
        assert [(m.seq, m.data["symbol"], m.snapshot) for m in snapshot] == [
            (2, "B", True),
            (3, "A", True),
        ]
        await server.publish("book", {"symbol": "B", "price": 4})
        (live,) = await take(book, 1)
        assert (live.seq, live.snapshot) == (4, False)
        assert not events["gap"], "snapshot seqs are not gaps"


async def test_max_rate_reaches_the_server_and_conflates_to_the_latest(
    serve: StartServer,
) -> None:
    """subscribe(max_rate=...) is honoured: a burst arrives as its latest message."""
    server = await serve(BOOK)
    async with quick_client(server.url) as client:
        events = Recorder(client)
        plain = client.subscribe("plain", max_rate=2)
        await events.wait("subscribed")
        (sub,) = server.hub.channels["plain"].subscriptions
        assert sub.max_rate == 2
        await server.publish("plain", 0)
        (first,) = await take(plain, 1)
        for i in range(1, 50):
            await server.publish("plain", i)
            await asyncio.sleep(0)
        (latest,) = await take(plain, 1)
        assert (first.data, latest.data) == (0, 49), "between sends only the latest is kept"
