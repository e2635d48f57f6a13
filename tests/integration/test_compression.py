"""permessage-deflate end to end: negotiation, compressed fan-out, inbound bound, /stats.

Raw clients negotiate with websockets' own client extension and count the
bytes that reach their socket: what a browser on a metered network pays.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from websockets.asyncio.client import connect

from broadcaster.client import connect as client_connect
from tests.conftest import ConnectRaw, StartServer
from tests.support.http import http_get_json
from tests.support.metrics import scrape
from tests.support.raw_client import RawClient
from tests.support.servers import wait_until

# A 120-level order book event (about 5 KB of JSON): what compression is for.
BOOK: dict[str, Any] = {
    "symbol": "AAPL",
    "bids": [[f"{189 - i / 100:.2f}", f"{(i * 37) % 1000 / 7:.4f}"] for i in range(120)],
    "asks": [[f"{189 + i / 100:.2f}", f"{(i * 53) % 1000 / 7:.4f}"] for i in range(120)],
}


def message_events(client: RawClient) -> list[dict[str, Any]]:
    return [e for e in client.events if e.get("event") == "message"]


async def test_offer_is_answered_without_context_takeover_either_way(serve: StartServer) -> None:
    """A client's usual offer gets server_ and client_no_context_takeover: no zlib state is
    kept for it between messages, and /stats shows the connection compressed."""
    server = await serve()
    async with connect(server.url) as ws:
        assert ws.response is not None
        answer = ws.response.headers["Sec-WebSocket-Extensions"]
        assert answer == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        )
        _, stats = await http_get_json(server.port, "/stats")
        (entry,) = stats["connections"]
        assert entry["compression"] == "permessage-deflate"


async def test_large_messages_arrive_compressed_small_ones_and_plain_clients_plain(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """On one channel, a client that negotiated deflate receives the order book in well
    under half the bytes; a client that did not gets it plain; both read the same events."""
    server = await serve()
    compressed = RawClient(server.port, rcvbuf=0, compression=True)
    plain = RawClient(server.port, rcvbuf=0)
    try:
        for client in (compressed, plain):
            await client.connect()
            await client.subscribe("books")
        assert compressed.deflate
        assert not plain.deflate
        before = {id(c): c.bytes_received for c in (compressed, plain)}
        for _ in range(5):
            await server.publish("books", BOOK)
        for client in (compressed, plain):
            await client.read_until(lambda evs: len([e for e in evs if "seq" in e]) >= 6)
        wire = {id(c): c.bytes_received - before[id(c)] for c in (compressed, plain)}
        assert wire[id(compressed)] < 0.4 * wire[id(plain)]
        assert message_events(compressed) == message_events(plain)
        assert message_events(compressed)[0]["data"] == BOOK

        _, stats = await http_get_json(server.port, "/stats")
        channel = stats["channels"]["books"]["compression"]
        assert channel["mode"] == "deflate"
        assert channel["ratio"] < 0.4
        by_remote = {c["compression"]: c["bytes_sent"] for c in stats["connections"]}
        assert by_remote["permessage-deflate"] < 0.4 * by_remote[None]
        assert stats["totals"]["compression_saved_bytes"] > 5 * 3000
        metrics = await scrape(server.port)
        saved = metrics.value("broadcaster_compression_saved_bytes_total", channel="*")
        assert saved == stats["totals"]["compression_saved_bytes"]
    finally:
        compressed.close()
        plain.close()


async def test_ticker_sized_messages_go_plain_to_compressing_clients(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """Under compression_min_size (1024 B by default) a message is not worth compressing
    alone: it is sent plain, and costs no zlib work."""
    server = await serve()
    client = RawClient(server.port, rcvbuf=0, compression=True)
    try:
        await client.connect()
        await client.subscribe("tickers.demo")
        await server.publish("tickers.demo", {"symbol": "AAPL", "price": 189.5, "change": 0.1})
        await client.read_until(lambda evs: len(message_events(client)) == 1)
        assert server.hub.channels["tickers.demo"].counters.deflate_saved == 0
    finally:
        client.close()


async def test_compression_off_in_the_config_negotiates_nothing(serve: StartServer) -> None:
    """With every channel off, the offer is declined: frames are plain for everyone."""
    server = await serve('[defaults]\ncompression = "off"\n')
    async with connect(server.url) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


async def test_deflate_bomb_gets_1009_and_nothing_else(serve: StartServer) -> None:
    """A compressed frame that inflates past max_message_size closes that connection with
    1009 and is counted, though its bytes on the wire are far below the limit."""
    server = await serve()
    bomber = RawClient(server.port, compression=True)
    await bomber.connect()
    try:
        bomber.protocol.send_text(b'{"op":"publish","channel":"a","data":"' + b"0" * 20_000_000)
        sent = 0
        loop = asyncio.get_running_loop()
        for data in bomber.protocol.data_to_send():
            sent += len(data)
            await loop.sock_sendall(bomber.sock, data)
        assert sent < server.config.server.max_message_size, "small on the wire"
        await bomber.read_to_end()
        assert bomber.close_code == 1009
    finally:
        bomber.close()
    await wait_until(
        lambda: server.metrics.refusals.get("message_size") == 1,
        what="the 1009 to be counted as a message_size refusal",
    )
    async with connect(server.url) as ws:  # the server is unaffected
        await ws.send(orjson.dumps({"op": "ping", "id": 1}).decode())
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["event"] == "pong"


async def test_compressed_publish_within_the_limit_is_accepted(serve: StartServer) -> None:
    """A client may compress its own frames: the server inflates and handles them as usual."""
    server = await serve()
    async with connect(server.url) as publisher, connect(server.url, compression=None) as reader:
        await reader.send(orjson.dumps({"op": "subscribe", "channel": "books", "id": 1}).decode())
        await asyncio.wait_for(reader.recv(), 5)
        await publisher.send(
            orjson.dumps({"op": "publish", "channel": "books", "data": BOOK}).decode()
        )
        event = orjson.loads(await asyncio.wait_for(reader.recv(), 5))
        assert event["data"] == BOOK


async def test_python_client_offers_compression_unless_told_not_to(serve: StartServer) -> None:
    """broadcaster.client negotiates permessage-deflate by default; compression=False does not."""
    server = await serve()
    for offer in (True, False):
        async with client_connect(server.url, compression=offer) as client:
            sub = client.subscribe("books")
            await wait_until(
                lambda: (
                    "books" in server.hub.channels
                    and bool(server.hub.channels["books"].subscriptions)
                ),
                what="the subscription",
            )
            await server.publish("books", BOOK)
            message = await asyncio.wait_for(sub.get(), 5)
            assert message.data == BOOK
            (session,) = server.sessions.values()
            assert session.outbox.deflate is offer
        await wait_until(lambda: not server.sessions, what="the client to disconnect")
