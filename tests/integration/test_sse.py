"""Server-Sent Events and NDJSON streams (`GET /sse`, `GET /stream` on the API port).

A stream subscriber is a subscription like a WebSocket one: the same
events, recovery, strategies, flow notices and slow-consumer cut. The
stalled readers are raw sockets with a small receive buffer that read
nothing until the test lets them (tests/support/sse_client.py); the test
config caps the server's send buffer at 4 KiB, so the server's own queue
soon holds the backlog and the channel's strategy decides what survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import pytest

from broadcaster.server.app import Broadcaster
from tests.conftest import StartProcess, StartServer
from tests.support.http import http_get_json
from tests.support.metrics import scrape
from tests.support.security import SECRET, hs256
from tests.support.servers import (
    TEST_SERVER_TOML,
    free_port,
    slow_consumer_disconnects,
    wait_until,
)
from tests.support.sse_client import StreamClient

API = """
[api]
enabled = true
port = 0
"""

CHANNELS = """
[channels."news"]
history_size = 100

[channels."oldest"]
strategy = "drop-oldest"
queue_size = 8

[channels."newest"]
strategy = "drop-newest"
queue_size = 8

[channels."latest"]
strategy = "conflate"
conflate_key = "symbol"
queue_size = 8

[channels."blocked"]
strategy = "block"
queue_size = 8
slow_consumer_timeout = 30.0

[channels."cut"]
strategy = "drop-oldest"
queue_size = 8
slow_consumer_timeout = 0.3
"""

PAD = "x" * 1000

OpenStream = Callable[..., Awaitable[StreamClient]]


@pytest.fixture
async def open_stream() -> AsyncIterator[OpenStream]:
    """Open stream clients (closed at teardown)."""
    opened: list[StreamClient] = []

    async def start(server: Broadcaster, target: str, **kwargs: Any) -> StreamClient:
        assert server.api is not None
        client = StreamClient(server.api.port, target, **kwargs)
        opened.append(client)
        return await client.connect()

    yield start
    for client in opened:
        client.close()


def subscribed(channel: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda evs: any(
        e.get("event") == "subscribed" and e.get("channel") == channel for e in evs
    )


def seq_runs(messages: list[dict[str, Any]]) -> tuple[int, int]:
    """(number of messages, total size of the seq gaps) for a strictly increasing stream."""
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs)), "seqs must strictly increase: no duplicate, no reordering"
    return len(seqs), sum(b - a - 1 for a, b in itertools.pairwise(seqs))


def flow(client: StreamClient, channel: str) -> list[dict[str, Any]]:
    return [
        e
        for e in client.events
        if e.get("event") in ("flow.pause", "flow.resume") and e.get("channel") == channel
    ]


# --- the stream and recovery ------------------------------------------------------


async def test_sse_streams_messages_with_epoch_seq_ids(
    serve: StartServer, open_stream: OpenStream
) -> None:
    """The same events as /ws, one per SSE event; messages carry `id: EPOCH:SEQ`."""
    server = await serve(API + CHANNELS)
    client = await open_stream(server, "/sse?channel=news&channel=other")
    assert client.status == 200
    assert client.response_headers["content-type"] == "text/event-stream"
    await client.read_until(lambda evs: subscribed("news")(evs) and subscribed("other")(evs))
    for i in range(3):
        await server.publish("news", {"i": i})
    await server.publish("other", "x")
    await client.read_until(lambda evs: len(client.messages()) == 4)
    assert [m["data"] for m in client.messages("news")] == [{"i": 0}, {"i": 1}, {"i": 2}]
    epoch = server.hub.epoch
    assert client.ids == [f"{epoch}:1", f"{epoch}:2", f"{epoch}:3", f"{epoch}:1"]
    assert client.retries[0] > 0, "a retry hint for the browser's reconnect"


async def test_last_event_id_replays_what_was_missed(
    serve: StartServer, open_stream: OpenStream
) -> None:
    """Reconnecting with Last-Event-ID gets the missed messages (`recovered: true`), then live."""
    server = await serve(API + CHANNELS)
    first = await open_stream(server, "/sse?channel=news")
    await first.read_until(subscribed("news"))
    for i in range(3):
        await server.publish("news", i)
    await first.read_until(lambda evs: len(first.messages()) == 3)
    last = first.last_id
    first.close()
    await wait_until(lambda: not server.sessions, what="the first stream to go")
    for i in range(3, 6):
        await server.publish("news", i)
    again = await open_stream(server, "/sse?channel=news", headers={"Last-Event-ID": str(last)})
    await again.read_until(lambda evs: len(again.messages()) == 3)
    (reply,) = again.named("subscribed")
    assert reply["recovered"] is True
    await server.publish("news", 6)
    await again.read_until(lambda evs: len(again.messages()) == 4)
    assert [m["data"] for m in again.messages()] == [3, 4, 5, 6]
    assert [m["seq"] for m in again.messages()] == [4, 5, 6, 7]


async def test_last_event_id_of_another_epoch_says_not_recovered(
    serve: StartServer, open_stream: OpenStream
) -> None:
    """An id from another server life cannot be resumed: `recovered: false` with `oldest_seq`."""
    server = await serve(API + CHANNELS)
    await server.publish("news", 0)
    client = await open_stream(server, "/sse?channel=news&last_event_id=" + quote("0ther:1"))
    await client.read_until(subscribed("news"))
    (reply,) = client.named("subscribed")
    assert reply["recovered"] is False
    assert "oldest_seq" in reply


async def test_last_event_id_with_several_channels_reports_a_gap(
    serve: StartServer, open_stream: OpenStream
) -> None:
    """One id cannot say where each of several channels was: every one says `recovered: false`."""
    server = await serve(API + CHANNELS)
    epoch = server.hub.epoch
    client = await open_stream(
        server, "/sse?channel=news&channel=other", headers={"Last-Event-ID": f"{epoch}:1"}
    )
    await client.read_until(lambda evs: len(client.named("subscribed")) == 2)
    assert [r["recovered"] for r in client.named("subscribed")] == [False, False]


async def test_ndjson_stream_sends_the_same_events_one_per_line(
    serve: StartServer, open_stream: OpenStream
) -> None:
    server = await serve(API + CHANNELS)
    client = await open_stream(server, "/stream?channel=news", ndjson=True)
    assert client.response_headers["content-type"] == "application/x-ndjson"
    await client.read_until(subscribed("news"))
    await server.publish("news", {"a": 1})
    (message,) = (await client.read_until(lambda evs: bool(client.messages())))[-1:]
    assert (message["event"], message["seq"], message["data"]) == ("message", 1, {"a": 1})


# --- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "headers", "status", "code", "says"),
    [
        ("/sse", {}, 400, "invalid_message", "?channel=NAME"),
        ("/sse?channel=news", {"Last-Event-ID": "yesterday"}, 400, "invalid_message", "EPOCH:SEQ"),
        ("/sse?channel=nope", {}, 404, "unknown_channel", "strict_channels"),
        ("/sse?channel=news&max_rate=0", {}, 400, "invalid_message", "max_rate"),
        ("/sse?channel=news", {"Origin": "https://evil.example"}, 403, "forbidden_origin", "evil"),
    ],
)
async def test_bad_stream_requests_get_a_clear_error(
    serve: StartServer,
    target: str,
    headers: dict[str, str],
    status: int,
    code: str,
    says: str,
) -> None:
    """Refused before the stream starts, with a JSON body that says what to send instead."""
    server = await serve(API + CHANNELS, server_toml=TEST_SERVER_TOML + "strict_channels = true\n")
    assert server.api is not None
    got, body = await http_get_json(server.api.port, target, headers)
    assert (got, body["error"]) == (status, code)
    assert says in body["message"]
    assert not server.sessions


# --- strategies over SSE --------------------------------------------------------------


async def test_drop_oldest_over_sse_pauses_then_delivers_the_newest(
    serve: StartServer, open_stream: OpenStream
) -> None:
    server = await serve(API + CHANNELS)
    stalled = await open_stream(server, "/sse?channel=oldest")
    await stalled.read_until(subscribed("oldest"))
    total = 300
    for i in range(total):
        await server.publish("oldest", {"i": i, "pad": PAD})
    await wait_until(lambda: server.hub.channels["oldest"].counters.pauses > 0, what="a pause")
    await stalled.read_until(
        lambda evs: (
            any(e.get("event") == "flow.resume" for e in evs)
            and any(e.get("seq") == total for e in evs)
        )
    )
    events = flow(stalled, "oldest")
    assert events[0]["event"] == "flow.pause"
    assert events[0]["limit"] == 8
    dropped = sum(e["dropped"] for e in events if e["event"] == "flow.resume")
    received, gaps = seq_runs(stalled.messages("oldest"))
    assert dropped == gaps > 0
    assert received + dropped == total
    assert stalled.messages()[-1]["seq"] == total, "the newest message survives"


async def test_drop_newest_over_sse_keeps_the_oldest(
    serve: StartServer, open_stream: OpenStream
) -> None:
    server = await serve(API + CHANNELS)
    stalled = await open_stream(server, "/sse?channel=newest")
    await stalled.read_until(subscribed("newest"))
    total = 300
    for i in range(total):
        await server.publish("newest", {"i": i, "pad": PAD})
    await wait_until(lambda: server.hub.channels["newest"].counters.pauses > 0, what="a pause")
    await stalled.read_until(lambda evs: any(e.get("event") == "flow.resume" for e in evs))
    await server.publish("newest", {"i": total, "pad": PAD})
    await stalled.read_until(lambda evs: any(e.get("seq") == total + 1 for e in evs))
    dropped = sum(e["dropped"] for e in flow(stalled, "newest") if e["event"] == "flow.resume")
    received, gaps = seq_runs(stalled.messages("newest"))
    assert dropped == gaps > 0
    assert received + dropped == total + 1
    seqs = [m["seq"] for m in stalled.messages("newest")]
    assert seqs[:3] == [1, 2, 3], "the oldest messages survive"


async def test_conflate_over_sse_delivers_the_latest_value_per_key(
    serve: StartServer, open_stream: OpenStream
) -> None:
    server = await serve(API + CHANNELS)
    stalled = await open_stream(server, "/sse?channel=latest")
    await stalled.read_until(subscribed("latest"))
    symbols = ["A", "B", "C"]
    rounds = 200
    for i in range(rounds):
        for symbol in symbols:
            await server.publish("latest", {"symbol": symbol, "i": i, "pad": PAD})
    await stalled.read_until(
        lambda evs: (
            {m["data"]["symbol"]: m["data"]["i"] for m in stalled.messages("latest")}
            == dict.fromkeys(symbols, rounds - 1)
        )
    )
    received = stalled.messages("latest")
    for symbol in symbols:
        values = [m["data"]["i"] for m in received if m["data"]["symbol"] == symbol]
        assert values == sorted(set(values)), "each key's values arrive in order, once"
    assert len(received) < rounds * len(symbols), "older values of a key were conflated away"


async def test_block_over_sse_holds_the_publisher_until_the_reader_reads(
    serve: StartServer, open_stream: OpenStream
) -> None:
    """A stalled SSE reader blocks a `block` publisher; reading lets it go, losing none."""
    server = await serve(API + CHANNELS)
    stalled = await open_stream(server, "/sse?channel=blocked")
    await stalled.read_until(subscribed("blocked"))
    total = 100
    published = 0

    async def publish_all() -> None:
        nonlocal published
        for i in range(total):
            await server.publish("blocked", {"i": i, "pad": PAD})
            published += 1

    task = asyncio.create_task(publish_all())
    await wait_until(lambda: server.rooms.waiting(server.hub.channels["blocked"]) > 0, what="block")
    assert published < total, "the publisher waits for the stalled reader"
    await stalled.read_until(lambda evs: len(stalled.messages("blocked")) == total, timeout=20)
    await asyncio.wait_for(task, 10)
    assert [m["seq"] for m in stalled.messages("blocked")] == list(range(1, total + 1))


# --- ending ---------------------------------------------------------------------------


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


async def test_stalled_sse_reader_is_cut_off_as_a_slow_consumer(
    serve: StartServer, open_stream: OpenStream
) -> None:
    """A reader that stops reading at the TCP level is cut after `slow_consumer_timeout`: its
    queue is freed at once, and since it cannot read its ending, the stream is reset."""
    server = await serve(API + CHANNELS)
    stalled = await open_stream(server, "/sse?channel=cut")
    await stalled.read_until(subscribed("cut"))
    (session,) = server.sessions.values()
    healthy = await open_stream(server, "/sse?channel=cut", rcvbuf=0)
    await healthy.read_until(subscribed("cut"))
    done = asyncio.Event()
    # The healthy reader reads all along (until cancelled: a read cancelled while
    # waiting has taken nothing from the socket).
    reading = asyncio.create_task(healthy.read_until(lambda evs: False, 30))
    publisher = asyncio.create_task(publish_until(server, "cut", done))
    await wait_until(lambda: slow_consumer_disconnects(server, "cut") == 1, what="the cut")
    done.set()
    sent = await publisher
    reading.cancel()
    assert len(server.sessions) == 1, "the server forgot the stalled reader at once"
    assert server.recent_slow_consumers[0]["channel"] == "cut"
    await wait_until(session.transport.is_closing, what="the stalled stream to be aborted")
    await stalled.read_to_end()
    assert stalled.reset, "the abort is a TCP reset: the reader learns it was cut off"
    await healthy.read_until(lambda evs: len(healthy.messages()) == sent)
    assert [m["seq"] for m in healthy.messages()] == list(range(1, sent + 1))


async def test_server_stop_ends_the_stream_with_a_retry_hint_and_1001(
    serve: StartServer, open_stream: OpenStream
) -> None:
    server = await serve(API + CHANNELS)
    client = await open_stream(server, "/sse?channel=news")
    await client.read_until(subscribed("news"))
    await server.publish("news", 1)
    await client.read_until(lambda evs: bool(client.messages()))
    await server.stop()
    await client.read_to_end()
    (end,) = client.named("close")
    assert (end["code"], end["reason"]) == (1001, "server shutting down")
    assert len(client.retries) == 2, "the ending carries its own retry hint"
    assert client.ended, "the response ends with its last chunk"


async def test_idle_stream_gets_heartbeats(serve: StartServer, open_stream: OpenStream) -> None:
    """Comment lines every ping_interval keep an idle stream open through proxies."""
    server = await serve(API + CHANNELS, server_toml=TEST_SERVER_TOML + "ping_interval = 0.1\n")
    client = await open_stream(server, "/sse?channel=news")
    await client.read_until(lambda evs: client.heartbeats >= 2)


# --- observability --------------------------------------------------------------------


async def test_stats_and_metrics_show_the_transport(
    serve: StartServer, open_stream: OpenStream
) -> None:
    server = await serve(API + CHANNELS)
    sse = await open_stream(server, "/sse?channel=news")
    nd = await open_stream(server, "/stream?channel=news", ndjson=True)
    await sse.read_until(subscribed("news"))
    await nd.read_until(subscribed("news"))
    status, stats = await http_get_json(server.port, "/stats")
    assert status == 200
    assert stats["summary"]["by_transport"] == {"sse": 1, "ndjson": 1}
    assert sorted(c["transport"] for c in stats["connections"]) == ["ndjson", "sse"]
    metrics = await scrape(server.port)
    assert metrics.value("broadcaster_connections_by_transport", transport="sse") == 1
    assert metrics.value("broadcaster_connections_by_transport", transport="ndjson") == 1
    assert metrics.value("broadcaster_connections_by_transport", transport="websocket") == 0


# --- auth ----------------------------------------------------------------------------

AUTH = f"""
[auth]
enabled = true
algorithms = ["HS256"]
secret = "{SECRET}"

[channels."private.*"]
subscribe = "token"
"""


async def test_stream_token_rules_are_those_of_ws(
    serve: StartServer, open_stream: OpenStream
) -> None:
    """No token for a token channel: 403; a bad token: 401; a valid one streams until it
    expires, then the stream ends with `close` 1008 "token expired"."""
    server = await serve(API + AUTH)
    assert server.api is not None
    status, body = await http_get_json(server.api.port, "/sse?channel=private.a")
    assert (status, body["error"]) == (403, "forbidden")
    status, body = await http_get_json(
        server.api.port, "/sse?channel=private.a&token=" + hs256(ttl=-5)
    )
    assert (status, body["error"]) == (401, "unauthorized")
    assert "expired" in body["message"]
    client = await open_stream(
        server, "/sse?channel=private.a&token=" + hs256(ttl=0.5, subscribe=["private.*"])
    )
    await client.read_until(subscribed("private.a"))
    await server.publish("private.a", 1)
    await client.read_to_end()
    assert [m["data"] for m in client.messages()] == [1]
    (error,) = client.named("error")
    assert error["code"] == "unauthorized"
    (end,) = client.named("close")
    assert (end["code"], end["reason"]) == (1008, "token expired")
    assert client.retries[-1] == 60_000, "a policy close: come back much later, if at all"


async def test_streams_count_against_the_admission_limits_of_ws(
    serve: StartServer, open_stream: OpenStream
) -> None:
    """One more stream than `max_connections` is refused 503 + Retry-After, as on /ws, and
    the place is given back when the stream ends."""
    server = await serve(API + CHANNELS + "\n[limits]\nmax_connections = 1\n")
    assert server.api is not None
    first = await open_stream(server, "/sse?channel=news")
    await first.read_until(subscribed("news"))
    status, body = await http_get_json(server.api.port, "/sse?channel=news")
    assert (status, body["error"]) == (503, "unavailable")
    assert body["retry_after"] > 0
    first.close()
    await wait_until(lambda: server.admission.open == 0, what="the place to be given back")
    again = await open_stream(server, "/stream?channel=news", ndjson=True)
    await again.read_until(subscribed("news"))


async def test_sigterm_ends_streams_with_1001_and_a_retry_hint(serve_process: StartProcess) -> None:
    """`broadcaster serve` on SIGTERM: each stream gets `retry:` and `close` 1001, then its
    last chunk (a clean end, not a reset), and the process exits 0."""
    api_port = free_port()
    proc = await serve_process(
        TEST_SERVER_TOML.replace("port = 0", "")
        + CHANNELS
        + f'\n[api]\nenabled = true\nhost = "127.0.0.1"\nport = {api_port}\n'
    )

    def api_listening() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", api_port), 0.2):
            return True
        return False

    await wait_until(api_listening, what="the API port")
    client = StreamClient(api_port, "/sse?channel=news")
    try:
        await client.connect()
        await client.read_until(subscribed("news"))
        proc.terminate()
        await client.read_to_end()
        (end,) = client.named("close")
        assert (end["code"], end["reason"]) == (1001, "server shutting down")
        assert client.retries[-1] == 2000
        assert client.ended, "the last chunk arrived"
        assert not client.reset
        code, _output = await proc.wait_exit()
        assert code == 0
    finally:
        client.close()
