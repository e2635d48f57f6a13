"""Sources end to end: file, stdin (via the CLI), Redis stream and pub/sub (a real redis-server).

Each feeds a channel that real WebSocket clients read; a `block` channel
holds its source back (the source's position stays put until room returns);
a source that fails is restarted and /stats counts it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from broadcaster.errors import ChannelBlocked
from broadcaster.server.app import Broadcaster
from broadcaster.sources.base import SourceState
from tests.conftest import ConnectRaw, StartServer
from tests.support.clients import JsonClient, open_client
from tests.support.http import http_get_json
from tests.support.raw_client import RawClient
from tests.support.redis_server import RedisServer
from tests.support.servers import free_port, wait_until

PAD = "p" * 1000

BLOCKED = """
[channels."orders"]
strategy = "block"
queue_size = 8
slow_consumer_timeout = 30.0
"""

StartRedis = Callable[..., Awaitable[RedisServer]]


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[StartRedis]:
    """Start real redis-servers on free loopback ports; stopped at teardown."""
    started: list[RedisServer] = []

    async def start(port: int | None = None) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", port)
        started.append(server)
        await server.restart()
        return server

    yield start
    for server in started:
        await server.stop()


def state_of(server: Broadcaster, name: str) -> SourceState:
    (state,) = [s for s in server.sources.states if s.name == name]
    return state


async def source_stats(server: Broadcaster, name: str) -> dict[str, Any]:
    status, stats = await http_get_json(server.port, "/stats")
    assert status == 200
    (entry,) = [s for s in stats["sources"] if s["name"] == name]
    return dict(entry)


async def round_trip(client: JsonClient) -> None:
    """One request through the server's loop: everything ready before it has run."""
    await client.send({"op": "ping", "id": "rt"})
    await client.recv_event("pong", id="rt")


def data_of(events: list[dict[str, Any]], channel: str) -> list[Any]:
    return [e["data"] for e in events if e.get("event") == "message" and e["channel"] == channel]


def file_source(path: Path, channel: str, **options: Any) -> str:
    lines = [f'[sources.feed]\nkind = "file"\nchannel = "{channel}"\npath = "{path}"']
    lines += [f"{key} = {value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


# --- file ------------------------------------------------------------------------------


async def test_file_source_publishes_every_line_and_skips_bad_ones(
    serve: StartServer, tmp_path: Path
) -> None:
    """A file of JSON lines reaches subscribers in order; bad lines are counted, not fatal."""
    path = tmp_path / "prices.jsonl"
    path.write_text('{"p": 1}\n\nnot json\n{"p": 2}\n[3]')  # last line has no newline
    server = await serve('[channels."feed"]\nhistory_size = 100\n' + file_source(path, "feed"))
    await wait_until(lambda: state_of(server, "feed").state == "finished", what="file read")
    client = await open_client(server.url)
    reply = await client.subscribe("feed", since=0)
    assert reply["recovered"] is True
    assert [m["data"] for m in await client.messages("feed", 3)] == [{"p": 1}, {"p": 2}, [3]]
    stats = await source_stats(server, "feed")
    assert (stats["kind"], stats["state"], stats["published"], stats["skipped"]) == (
        "file",
        "finished",
        3,
        1,
    )
    assert stats["position"] == path.stat().st_size
    assert "line 3 is not strict JSON" in stats["last_skipped"]


async def test_file_source_follows_appends_truncation_and_replacement(
    serve: StartServer, tmp_path: Path
) -> None:
    """With follow, appended lines stream out; a truncated or replaced file is read anew."""
    path = tmp_path / "live.jsonl"
    path.write_text('"old"\n')
    server = await serve(
        file_source(path, "live", follow="true", start='"end"', poll_interval=0.02)
    )
    client = await open_client(server.url)
    await client.subscribe("live")
    await wait_until(lambda: state_of(server, "feed").state == "running", what="source running")
    with path.open("a") as f:
        f.write('"one"\n"tw')
        f.flush()
        assert data_of(await client.messages("live", 1), "live") == ["one"]
        f.write('o"\n')
    assert data_of(await client.messages("live", 1), "live") == ["two"]
    # Truncation shows as a file shorter than what was read (as for `tail -F`).
    path.write_text('"t"\n')
    assert data_of(await client.messages("live", 1), "live") == ["t"]
    replacement = tmp_path / "new.jsonl"
    replacement.write_text('"new file"\n')
    replacement.replace(path)
    assert data_of(await client.messages("live", 1), "live") == ["new file"]
    assert [e.get("data") for e in client.seen if e.get("data") == "old"] == [], "start = end"


async def stall_block_channel(server: Broadcaster, connect_raw: ConnectRaw) -> RawClient:
    """A TCP-stalled subscriber on `orders`, subscribed before the source publishes there."""
    stalled = await connect_raw(server.port)
    await stalled.subscribe("orders")
    return stalled


async def fill_until_blocked(server: Broadcaster) -> None:
    """Publish into `orders` until a publish found no room for a whole 0.3 s.

    The kernel may take a few more bytes from a stalled socket a moment after
    the queue first fills; after this the channel has stayed full.
    """
    for i in range(1000):
        try:
            await server.publish("orders", {"filler": i, "pad": PAD}, block_timeout=0.3)
        except ChannelBlocked:
            return
    raise AssertionError("the block channel never filled up")


def source_items(events: list[dict[str, Any]]) -> list[Any]:
    return [d["i"] for d in data_of(events, "orders") if "i" in d]


async def test_blocked_channel_stops_the_file_source_until_room_returns(
    serve: StartServer, connect_raw: ConnectRaw, tmp_path: Path
) -> None:
    """While a block channel is full the source does not read on: its position stays put."""
    path = tmp_path / "orders.jsonl"
    path.write_text("")
    server = await serve(BLOCKED + file_source(path, "orders", follow="true", poll_interval=0.02))
    stalled = await stall_block_channel(server, connect_raw)
    healthy = await open_client(server.url)
    state = state_of(server, "feed")
    path.write_text('{"i": "first"}\n')
    await wait_until(lambda: state.published == 1, what="the first line")
    held = state.position
    assert held == path.stat().st_size
    await fill_until_blocked(server)

    total = 200
    with path.open("a") as f:
        f.write("".join(f'{{"i": {i}, "pad": "{PAD}"}}\n' for i in range(total)))
    await wait_until(lambda: state.state == "blocked", what="the source to block")
    for _ in range(3):
        await round_trip(healthy)
        assert (state.state, state.position, state.published) == ("blocked", held, 1)
    stats = await source_stats(server, "feed")
    assert (stats["state"], stats["position"], stats["published"]) == ("blocked", held, 1)

    events = await stalled.read_until(lambda evs: len(source_items(evs)) == total + 1)
    assert source_items(events) == ["first", *range(total)]
    seqs = [e["seq"] for e in events if e.get("event") == "message"]
    assert seqs == list(range(1, len(seqs) + 1)), "nothing lost, nothing reordered"
    await wait_until(lambda: state.position == path.stat().st_size, what="the end of the file")
    assert state.state == "running"


async def test_failing_source_is_restarted_and_counted_in_stats(
    serve: StartServer, tmp_path: Path
) -> None:
    """A file that is missing fails the source; it restarts with backoff and /stats counts it."""
    path = tmp_path / "late.jsonl"
    server = await serve(
        '[channels."late"]\nhistory_size = 10\n' + file_source(path, "late", follow="true")
    )
    state = state_of(server, "feed")
    await wait_until(lambda: state.restarts >= 2, what="two restarts")
    stats = await source_stats(server, "feed")
    assert stats["restarts"] >= 2
    assert stats["state"] in ("backoff", "running")
    assert "FileNotFoundError" in stats["last_error"]
    path.write_text('{"finally": true}\n')
    await wait_until(lambda: state.published == 1, timeout=15, what="the source to recover")
    client = await open_client(server.url)
    await client.subscribe("late", since=0)
    assert data_of(await client.messages("late", 1), "late") == [{"finally": True}]


# --- stdin, through the command line ----------------------------------------------------


async def test_cli_stdin_source_feeds_a_channel(tmp_path: Path) -> None:
    """`broadcaster serve --source stdin:tickers.raw` publishes the JSON lines piped in."""
    port = free_port()
    config = tmp_path / "server.toml"
    config.write_text('[server]\nhost = "127.0.0.1"\nshutdown_timeout = 1.0\n')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broadcaster",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--source",
            "stdin:tickers.raw",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.stdin is not None
    try:

        async def listening() -> bool:
            try:
                return (await http_get_json(port, "/healthz"))[0] == 200
            except OSError:
                return False

        await wait_until(listening, timeout=20, what="the server")
        client = await open_client(f"ws://127.0.0.1:{port}/ws")
        await client.subscribe("tickers.raw")
        proc.stdin.write(b'{"symbol": "AAPL", "price": 1}\nbad\n{"symbol": "MSFT", "price": 2}\n')
        proc.stdin.flush()
        got = await client.messages("tickers.raw", 2)
        assert [m["data"]["symbol"] for m in got] == ["AAPL", "MSFT"]
        proc.stdin.close()

        async def finished() -> bool:
            stats = (await http_get_json(port, "/stats"))[1]
            return bool(stats["sources"][0]["state"] == "finished")

        await wait_until(finished, what="the stdin source to finish at EOF")
        (entry,) = (await http_get_json(port, "/stats"))[1]["sources"]
        assert (entry["kind"], entry["published"], entry["skipped"]) == ("stdin", 2, 1)
        await client.close()
    finally:
        proc.terminate()
        code = await asyncio.to_thread(proc.wait, 15)
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
    assert code == 0, stderr
    assert "Traceback" not in stderr


# --- Redis -----------------------------------------------------------------------------


def stream_source(redis: RedisServer, channel: str, **options: Any) -> str:
    lines = [
        f'[sources.stream]\nkind = "redis_stream"\nchannel = "{channel}"\nurl = "{redis.url}"',
        'stream = "prices"',
    ]
    lines += [f"{key} = {value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


async def xread_waiting(redis: RedisServer) -> bool:
    """Whether a client is blocked in XREAD (the source has caught up and waits for entries)."""
    client = redis.async_client()
    try:
        listing = await client.client_list()
    finally:
        await client.aclose()
    return any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in listing)


async def xadd(r: Redis, fields: dict[str, bytes]) -> str:
    """XADD to the `prices` stream; the new entry's id."""
    entry_id: Any = await r.xadd("prices", fields)  # type: ignore[arg-type]
    return str(entry_id.decode())


async def newest_id(r: Redis) -> str:
    entries: Any = await r.xrevrange("prices", count=1)
    return str(entries[0][0].decode())


async def test_redis_stream_source_fans_out_a_stream(
    serve: StartServer, redis_server: StartRedis
) -> None:
    """Entries XADDed to a stream reach WebSocket clients; start = "$" skips older entries."""
    redis = await redis_server()
    r = redis.async_client()
    try:
        await xadd(r, {"data": b'{"old": true}'})
        server = await serve(stream_source(redis, "prices.live"))
        client = await open_client(server.url)
        await client.subscribe("prices.live")
        await wait_until(lambda: xread_waiting(redis), what="the source to wait in XREAD")
        ids = [await xadd(r, {"data": f'{{"n": {n}}}'.encode()}) for n in range(3)]
        await xadd(r, {"other": b"1"})
        await xadd(r, {"data": b"{nope"})
        last = await xadd(r, {"data": b'{"n": "last"}'})
        got = await client.messages("prices.live", 4)
        assert [m["data"] for m in got] == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": "last"}]
        stats = await source_stats(server, "stream")
        assert (stats["kind"], stats["published"], stats["skipped"]) == ("redis_stream", 4, 2)
        assert stats["position"] == last
        assert ids[0] < stats["position"]
    finally:
        await r.aclose()


async def test_redis_stream_source_can_start_from_the_beginning(
    serve: StartServer, redis_server: StartRedis
) -> None:
    """start = "0" publishes every retained entry, in stream order."""
    redis = await redis_server()
    r = redis.async_client()
    try:
        for n in range(5):
            await xadd(r, {"data": str(n).encode()})
        server = await serve(
            '[channels."all"]\nhistory_size = 10\n' + stream_source(redis, "all", start='"0"')
        )
        await wait_until(lambda: state_of(server, "stream").published == 5, what="5 published")
        client = await open_client(server.url)
        await client.subscribe("all", since=0)
        assert data_of(await client.messages("all", 5), "all") == [0, 1, 2, 3, 4]
    finally:
        await r.aclose()


async def test_blocked_channel_stops_the_stream_source_until_room_returns(
    serve: StartServer, redis_server: StartRedis, connect_raw: ConnectRaw
) -> None:
    """A full block channel holds the stream source: its stream position does not advance."""
    redis = await redis_server()
    r = redis.async_client()
    try:
        server = await serve(BLOCKED + stream_source(redis, "orders", count=10))
        stalled = await stall_block_channel(server, connect_raw)
        healthy = await open_client(server.url)
        state = state_of(server, "stream")
        await wait_until(lambda: xread_waiting(redis), what="the source to wait in XREAD")
        held = await xadd(r, {"data": b'{"i": "first"}'})
        await wait_until(lambda: state.position == held, what="the first entry")
        await fill_until_blocked(server)

        total = 100
        for i in range(total):
            await xadd(r, {"data": f'{{"i": {i}, "pad": "{PAD}"}}'.encode()})
        await wait_until(lambda: state.state == "blocked", what="the source to block")
        for _ in range(3):
            await round_trip(healthy)
            assert (state.state, state.position, state.published) == ("blocked", held, 1)
        assert not await xread_waiting(redis), "no XREAD while blocked"
        assert (await source_stats(server, "stream"))["position"] == held

        events = await stalled.read_until(lambda evs: len(source_items(evs)) == total + 1)
        assert source_items(events) == ["first", *range(total)]
        newest = await newest_id(r)
        await wait_until(lambda: state.position == newest, what="the end of the stream")
    finally:
        await r.aclose()


async def test_stream_source_restarts_when_redis_is_down_and_resumes_when_it_is_back(
    serve: StartServer, redis_server: StartRedis
) -> None:
    """Redis unreachable: the source fails, backs off, restarts (counted); Redis up: it feeds."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = await serve(
        f'[sources.stream]\nkind = "redis_stream"\nchannel = "back"\nurl = "{url}"\n'
        'stream = "prices"\n'
    )
    state = state_of(server, "stream")
    await wait_until(lambda: state.restarts >= 1, what="a restart")
    stats = await source_stats(server, "stream")
    assert stats["restarts"] >= 1
    assert "Connect" in stats["last_error"]
    redis = await redis_server(port)
    await wait_until(lambda: xread_waiting(redis), timeout=15, what="the source to reconnect")
    assert state.state == "running"
    client = await open_client(server.url)
    await client.subscribe("back")
    r = redis.async_client()
    try:
        await xadd(r, {"data": b'"hello again"'})
    finally:
        await r.aclose()
    assert data_of(await client.messages("back", 1), "back") == ["hello again"]


async def test_redis_pubsub_source_fans_out_a_channel_and_a_pattern(
    serve: StartServer, redis_server: StartRedis
) -> None:
    """Messages PUBLISHed on a Redis channel (or matching a pattern) reach WebSocket clients."""
    redis = await redis_server()
    server = await serve(
        f'[sources.alerts]\nkind = "redis_pubsub"\nchannel = "alerts"\nurl = "{redis.url}"\n'
        'redis_channel = "alerts"\n'
        f'[sources.many]\nkind = "redis_pubsub"\nchannel = "many"\nurl = "{redis.url}"\n'
        'redis_pattern = "many.*"\n'
    )
    client = await open_client(server.url)
    await client.subscribe("alerts")
    await client.subscribe("many")
    r = redis.async_client()
    try:

        async def subscribed() -> bool:
            numsub = dict(await r.pubsub_numsub("alerts"))
            return bool(numsub.get(b"alerts")) and int(await r.pubsub_numpat()) == 1

        await wait_until(subscribed, what="the sources to subscribe")
        await r.publish("alerts", b'{"level": "high"}')
        await r.publish("alerts", b"not json")
        await r.publish("alerts", b'{"level": "low"}')
        await r.publish("many.a", b"1")
        await r.publish("many.b", b"2")
    finally:
        await r.aclose()
    assert data_of(await client.messages("alerts", 2), "alerts") == [
        {"level": "high"},
        {"level": "low"},
    ]
    assert data_of(await client.messages("many", 2), "many") == [1, 2]
    stats = await source_stats(server, "alerts")
    assert (stats["kind"], stats["published"], stats["skipped"], stats["position"]) == (
        "redis_pubsub",
        2,
        1,
        3,
    )


def test_cli_refuses_a_bad_source_spec() -> None:
    """A `--source` of no known kind exits 2 and names the specs it accepts."""
    result = subprocess.run(
        [sys.executable, "-m", "broadcaster", "serve", "--source", "kafka:prices"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--source" in result.stderr
    assert "stdin:CHANNEL, file:PATH:CHANNEL or demo_ticker:CHANNEL" in result.stderr
    assert "Traceback" not in result.stderr
