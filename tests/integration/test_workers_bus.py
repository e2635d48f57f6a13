"""`serve --workers N` in one process: a BusServer and N `Broadcaster(worker=...)`.

Every worker listens on its own free loopback port here (the supervisor's
SO_REUSEPORT binding is not under test); real WebSocket clients talk to
each worker. What holds in one process must hold across workers: one seq
order for everyone, recovery, snapshots, strategies per subscriber, `block`
(a publisher waits for room on every worker), per-address limits, and the
workers' view of each other (`gather`, `workers_up`, a lost bus).
(History and `since` across workers also run in test_recovery.py and
test_channel_budget.py, whose `nodes` fixture includes workers.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from broadcaster.brokers.bus import BusBroker
from broadcaster.errors import BusUnavailable
from broadcaster.server.app import Broadcaster
from broadcaster.server.pipeline import MAX_IN_FLIGHT
from broadcaster.workers.bus import BusServer
from broadcaster.workers.identity import WorkerIdentity
from broadcaster.workers.link import BusLink
from tests.conftest import ConnectRaw
from tests.support.api_client import post_json
from tests.support.clients import JsonClient, open_client
from tests.support.raw_client import RawClient
from tests.support.redis_server import RedisServer, redis_toml
from tests.support.security import refused_handshake
from tests.support.servers import TEST_SERVER_TOML, wait_until
from tests.support.sse_client import StreamClient
from tests.support.workers import Workers

PAD = "x" * 1000

CHANNELS = """
[channels."news"]
history_size = 50

[channels."book"]
strategy = "conflate"
conflate_key = "symbol"
snapshot = true
queue_size = 8

[channels."oldest"]
strategy = "drop-oldest"
queue_size = 8

[channels."blocked"]
strategy = "block"
queue_size = 8
slow_consumer_timeout = 30.0

[channels."cut"]
strategy = "block"
queue_size = 8
slow_consumer_timeout = 0.3

[api]
enabled = true
port = 0
"""


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    started = Workers()
    yield started
    await started.stop()


async def _seqs(client: JsonClient, channel: str, count: int) -> list[int]:
    return [m["seq"] for m in await client.messages(channel, count)]


@pytest.mark.parametrize("count", [2, 3])
async def test_a_publish_on_any_worker_reaches_every_worker_in_one_order(
    workers: Workers, count: int
) -> None:
    """WebSocket op, HTTP API, Broadcaster.publish: one seq order on every worker, no gap."""
    servers = await workers.start(count, CHANNELS)
    subs = [await open_client(server.url) for server in servers]
    replies = [await sub.subscribe("prices") for sub in subs]
    assert {r["seq"] for r in replies} == {0}
    assert len({r["epoch"] for r in replies}) == 1, "one epoch for the whole server"
    pubs = [await open_client(server.url) for server in servers]
    sent = []
    for round_ in range(3):
        for index, pub in enumerate(pubs):
            sent.append(await pub.publish("prices", {"ws": index, "round": round_}))
        sent.append(await servers[round_ % count].publish("prices", {"app": round_}))
        reply = await post_json(
            servers[(round_ + 1) % count].api_url, {"channel": "prices", "data": {"http": round_}}
        )
        assert reply.status == 200, reply.body
        sent.append(reply.body["seq"])
    assert sent == list(range(1, len(sent) + 1)), "gap-free seqs in publish order"
    seen = [await sub.messages("prices", len(sent)) for sub in subs]
    for got in seen:
        assert [m["seq"] for m in got] == sent
        assert [m["data"] for m in got] == [m["data"] for m in seen[0]]


async def test_sys_stats_stays_each_workers_own(workers: Workers) -> None:
    """`$sys.stats` is published locally by each worker, never through the bus."""
    _, b = await workers.start(2)
    sub = await open_client(b.url)
    reply = await sub.subscribe("$sys.stats")
    got = await sub.messages("$sys.stats", 2)
    assert [m["seq"] for m in got] == [reply["seq"] + 1, reply["seq"] + 2]
    assert workers.bus is not None
    assert "$sys.stats" not in workers.bus.state.channels


async def test_compression_works_on_messages_that_came_through_the_bus(workers: Workers) -> None:
    """A worker builds the compressed frame from the bus's bytes as from a local publish."""
    a, b = await workers.start(2)
    book = {"bids": [[f"{189 - i / 100:.2f}", f"{i * 37 % 1000 / 7:.4f}"] for i in range(120)]}
    compressed = RawClient(b.port, rcvbuf=0, compression=True)
    plain = RawClient(b.port, rcvbuf=0)
    try:
        for client in (compressed, plain):
            await client.connect()
            await client.subscribe("books")
        assert compressed.deflate
        before = {id(c): c.bytes_received for c in (compressed, plain)}
        for _ in range(3):
            await a.publish("books", book)
        for client in (compressed, plain):
            await client.read_until(_got(3))
        wire = {id(c): c.bytes_received - before[id(c)] for c in (compressed, plain)}
        assert wire[id(compressed)] < 0.4 * wire[id(plain)]
        assert compressed.messages() == plain.messages()
        assert compressed.messages()[0]["data"] == book
    finally:
        compressed.close()
        plain.close()


async def test_sse_streams_and_last_event_id_work_across_workers(workers: Workers) -> None:
    """An SSE stream on worker 1 gets worker 0's publishes with `EPOCH:SEQ` ids; coming
    back on worker 0 with Last-Event-ID replays what it missed."""
    a, b = await workers.start(2, CHANNELS)
    assert a.api is not None
    assert b.api is not None
    first = StreamClient(b.api.port, "/sse?channel=news")
    again: StreamClient | None = None
    try:
        await first.connect()
        await first.read_until(lambda evs: bool(first.named("subscribed")))
        epoch = first.named("subscribed")[0]["epoch"]
        for i in range(3):
            await a.publish("news", i)
        await first.read_until(lambda evs: len(first.messages()) == 3)
        assert first.ids == [f"{epoch}:1", f"{epoch}:2", f"{epoch}:3"]
        first.close()
        for i in range(3, 5):
            await b.publish("news", i)
        again = StreamClient(
            a.api.port, "/sse?channel=news", headers={"Last-Event-ID": f"{epoch}:3"}
        )
        await again.connect()
        await again.read_until(lambda evs: len(again.messages()) == 2)
        assert again.named("subscribed")[0]["recovered"] is True
        assert [m["data"] for m in again.messages()] == [3, 4]
    finally:
        first.close()
        if again is not None:
            again.close()


async def test_concurrent_publishers_on_every_worker_share_one_order(workers: Workers) -> None:
    """Publishes racing on 3 workers: every subscriber sees the same gap-free sequence."""
    servers = await workers.start(3, CHANNELS)
    subs = [await open_client(server.url) for server in servers]
    for sub in subs:
        await sub.subscribe("race")
    per_worker = 40
    seqs = await asyncio.gather(
        *(
            server.publish("race", {"w": index, "i": i})
            for i in range(per_worker)
            for index, server in enumerate(servers)
        )
    )
    total = per_worker * len(servers)
    assert sorted(seqs) == list(range(1, total + 1))
    orders = [
        [(m["seq"], orjson.dumps(m["data"])) for m in await s.messages("race", total)] for s in subs
    ]
    assert orders[0] == orders[1] == orders[2]
    assert [seq for seq, _ in orders[0]] == list(range(1, total + 1))


async def test_since_recovers_across_workers_and_meets_the_live_stream(workers: Workers) -> None:
    """Missed on worker 0 while away, recovered on worker 2 with the same epoch, then live."""
    a, b, c = await workers.start(3, CHANNELS)
    first = await open_client(a.url)
    epoch = (await first.subscribe("news"))["epoch"]
    for i in range(4):
        await b.publish("news", i)
    assert await _seqs(first, "news", 4) == [1, 2, 3, 4]
    await first.close()
    for i in range(4, 10):
        await a.publish("news", i)
    again = await open_client(c.url)
    reply = await again.subscribe("news", since=4, epoch=epoch)
    assert (reply["recovered"], reply["seq"], reply["epoch"]) == (True, 10, epoch)
    await b.publish("news", 10)
    got = await again.messages("news", 7)
    assert [m["seq"] for m in got] == list(range(5, 12))
    assert [m["data"] for m in got] == list(range(4, 11))
    stale = await open_client(b.url)
    reply = await stale.subscribe("news", since=3, epoch="not-this-one")
    assert reply["recovered"] is False


async def test_snapshot_made_on_one_worker_is_served_on_another(workers: Workers) -> None:
    """The newest message per key, published before anyone subscribed anywhere."""
    a, b = await workers.start(2, CHANNELS)
    for symbol, price in [("A", 1), ("B", 2), ("A", 3), ("C", 4), ("B", 5)]:
        await a.publish("book", {"symbol": symbol, "price": price})
    sub = await open_client(b.url)
    reply = await sub.subscribe("book")
    assert reply["seq"] == 5
    got = await sub.messages("book", 3)
    assert [(m["seq"], m["data"]["symbol"], m.get("snapshot")) for m in got] == [
        (3, "A", True),
        (4, "C", True),
        (5, "B", True),
    ]
    await a.publish("book", {"symbol": "C", "price": 6})
    (live,) = await sub.messages("book", 1)
    assert (live["seq"], "snapshot" in live) == (6, False)
    # The worker that has the channel prepared keeps its snapshot current itself.
    late = await open_client(b.url)
    await late.subscribe("book")
    snap = await late.messages("book", 3)
    assert [(m["seq"], m["data"]["symbol"]) for m in snap] == [(3, "A"), (5, "B"), (6, "C")]


async def test_strategies_apply_per_subscriber_whatever_the_worker(
    workers: Workers, connect_raw: ConnectRaw
) -> None:
    """A stalled subscriber on worker 1 loses the oldest; a reader on worker 0 gets all.

    Conflation too: a stalled conflate subscriber gets the newest per key.
    """
    a, b = await workers.start(2, CHANNELS)
    reader = await open_client(a.url)
    await reader.subscribe("oldest")
    stalled = await connect_raw(b.port, subscribe="oldest")
    conflated = await connect_raw(b.port, subscribe="book")
    total = 200
    for i in range(total):
        await a.publish("oldest", {"i": i, "pad": PAD})
        await a.publish("book", {"symbol": f"S{i % 4}", "i": i, "pad": PAD})
    assert await _seqs(reader, "oldest", total) == list(range(1, total + 1))
    events = await stalled.read_until(lambda evs: any(e.get("seq") == total for e in evs))
    seqs = [m["seq"] for m in stalled.messages("oldest")]
    assert seqs == sorted(set(seqs)), "drop-oldest kept the order"
    assert len(seqs) < total, "drop-oldest dropped"
    assert seqs[-1] == total, "the newest survived"
    assert any(e.get("event") == "flow.pause" for e in events)
    newest = {f"S{k}": total - 4 + k for k in range(4)}

    def last_per_key(events: list[dict[str, Any]]) -> dict[str, int]:
        return {
            e["data"]["symbol"]: e["data"]["i"]
            for e in events
            if e.get("event") == "message" and e["channel"] == "book"
        }

    await conflated.read_until(lambda evs: last_per_key(evs) == newest)
    book = conflated.messages("book")
    assert len(book) < total, "conflated under pressure"
    seqs = [m["seq"] for m in book]
    assert len(seqs) == len(set(seqs)), "no message twice"


def _remote_full(server: Broadcaster, channel: str) -> frozenset[int]:
    broker = server.broker
    assert isinstance(broker, BusBroker)
    return broker.remote_full(channel)


async def _flood(server: Broadcaster, channel: str, total: int) -> JsonClient:
    """A WebSocket publisher on `server` sending `total` publishes without waiting."""
    publisher = await open_client(server.url)
    for i in range(total):
        await publisher.send(
            {"op": "publish", "channel": channel, "data": {"i": i, "pad": PAD}, "id": i}
        )
    return publisher


def _acks(publisher: JsonClient) -> list[int]:
    return [e["seq"] for e in publisher.seen if e.get("event") == "published"]


def _got(total: int) -> Any:
    return lambda evs: any(e.get("seq") == total for e in evs)


async def test_block_waits_for_a_full_subscriber_on_another_worker(
    workers: Workers, connect_raw: ConnectRaw
) -> None:
    """A publisher on worker 0 waits while worker 1's subscriber is full; resumes as it reads."""
    a, b = await workers.start(2, CHANNELS)
    stalled = await connect_raw(b.port, subscribe="blocked")
    total = 100
    publisher = await _flood(a, "blocked", total)
    pause = await publisher.recv_event("flow.pause", channel="blocked")
    assert pause["reason"] == "channel blocked", "worker 0 waits for worker 1's subscriber"
    assert b.worker is not None
    assert _remote_full(a, "blocked") == {b.worker.index}
    await stalled.read_until(_got(total), timeout=20)
    seqs = [m["seq"] for m in stalled.messages("blocked")]
    assert seqs == list(range(1, total + 1)), "block never drops and never reorders"
    await publisher.recv_event("published", id=total - 1, timeout=10)
    assert _acks(publisher) == list(range(1, total + 1))
    names = [e.get("event") for e in publisher.seen]
    assert names.index("flow.pause") < names.index("flow.resume")


async def test_block_resumes_when_the_full_subscriber_elsewhere_is_cut(
    workers: Workers, connect_raw: ConnectRaw
) -> None:
    """The stalled subscriber on worker 1 is cut with 4008; the waiting publisher goes on."""
    a, b = await workers.start(2, CHANNELS)
    stalled = await connect_raw(b.port, subscribe="cut")
    total = 100
    publisher = await _flood(a, "cut", total)
    await publisher.recv_event("flow.pause", channel="cut")
    await publisher.recv_event("published", id=total - 1, timeout=10)
    assert _acks(publisher) == list(range(1, total + 1))
    await stalled.read_to_end()
    assert stalled.close_code == 4008
    assert not _remote_full(a, "cut")


async def test_block_room_returns_when_the_last_full_worker_has_room(
    workers: Workers, connect_raw: ConnectRaw
) -> None:
    """Full on both workers: the publisher on worker 0 still waits when its own subscriber
    has read everything, and goes on once worker 1's reads too."""
    a, b = await workers.start(2, CHANNELS)
    stalled_b = await connect_raw(b.port, subscribe="blocked")
    stalled_a = await connect_raw(a.port, subscribe="blocked")
    total = 100
    publisher = await _flood(a, "blocked", total)
    await publisher.recv_event("flow.pause", channel="blocked")
    channel = a.hub.channels["blocked"]
    reading = asyncio.create_task(stalled_a.read_until(_got(total), timeout=20))
    await wait_until(
        lambda: channel.full_count == channel.remote_full == 1 and a.rooms.waiting(channel) == 1,
        what="worker 0 has room, worker 1 is full, the publisher waits",
    )
    await stalled_b.read_until(_got(total), timeout=20)
    await reading
    for stalled in (stalled_a, stalled_b):
        assert [m["seq"] for m in stalled.messages("blocked")] == list(range(1, total + 1))
    await publisher.recv_event("published", id=total - 1, timeout=10)


LIMITED = """
[limits]
exempt_networks = []
connections_per_ip = 2
"""


async def test_connections_per_ip_count_across_workers(workers: Workers) -> None:
    """Two open on workers 0 and 1: the third, on worker 2, is refused (429)."""
    a, b, c = await workers.start(3, LIMITED)
    first = await open_client(a.url)
    await open_client(b.url)
    await wait_until(lambda: c.admission.others is not None and c.admission.others.open == 2)
    refused = await refused_handshake(c.url)
    assert refused.status == 429
    await first.close()
    await wait_until(lambda: c.admission.others is not None and c.admission.others.open == 1)
    await open_client(c.url)


async def test_max_connections_count_across_workers(workers: Workers) -> None:
    a, b = await workers.start(2, "[limits]\nmax_connections = 2\n")
    await open_client(a.url)
    await open_client(a.url)
    await wait_until(lambda: b.admission.others is not None and b.admission.others.open == 2)
    assert (await refused_handshake(b.url)).status == 503


async def test_a_joining_worker_learns_what_the_others_hold(workers: Workers) -> None:
    (a,) = await workers.start(1, LIMITED)
    await open_client(a.url)
    await open_client(a.url)
    assert workers.bus is not None
    # A second worker of the same bus (as a restarted worker would be).
    workers.bus.workers = 2
    config = a.config
    late = Broadcaster(config, worker=WorkerIdentity(1, 2, workers.run_dir))
    await late.start()
    workers.servers.append(late)
    assert late.admission.others is not None
    await wait_until(lambda: late.admission.others is not None and late.admission.others.open == 2)
    assert (await refused_handshake(late.url)).status == 429


async def test_gather_asks_every_worker_and_says_none_for_one_that_is_down(
    workers: Workers,
) -> None:
    servers = await workers.start(3)
    for index, server in enumerate(servers):
        assert server.link is not None

        async def answer(what: str, index: int = index) -> bytes:
            return f"{what} from {index}".encode()

        server.link.on_gather(answer)
    link = servers[1].link
    assert link is not None
    assert link.workers_up() == {0, 1, 2}
    assert await link.gather("stats") == {
        0: b"stats from 0",
        1: b"stats from 1",
        2: b"stats from 2",
    }
    await servers[2].stop()
    await wait_until(lambda: link.workers_up() == {0, 1})
    assert await link.gather("stats") == {0: b"stats from 0", 1: b"stats from 1", 2: None}


async def test_gather_gives_none_for_a_worker_that_does_not_answer_in_time(
    workers: Workers,
) -> None:
    a, b = await workers.start(2)
    assert a.link is not None
    assert b.link is not None
    never = asyncio.Event()

    async def slow(what: str) -> bytes:
        await never.wait()
        return b""

    async def quick(what: str) -> bytes:
        return b"ok"

    a.link.on_gather(quick)
    b.link.on_gather(slow)
    assert await a.link.gather("stats", timeout=0.2) == {0: b"ok", 1: None}


async def test_a_worker_whose_bus_is_gone_stops_itself(workers: Workers) -> None:
    a, b = await workers.start(2)
    client = await open_client(b.url)
    assert workers.bus is not None
    await workers.bus.stop()
    await wait_until(lambda: a.phase.value == "stopped" and b.phase.value == "stopped")
    assert a.bus_lost
    assert b.bus_lost
    with pytest.raises(ConnectionClosed) as closed:
        await client.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001, "closed as a stopping server closes"


async def test_a_worker_that_stops_reading_the_bus_is_cut_and_the_others_go_on(
    workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that does not read its bus connection cannot make the bus buffer without
    bound: past `WRITE_LIMIT` the bus drops it (that worker stops, its clients get 1001,
    the supervisor would restart it) and every other worker keeps delivering."""
    monkeypatch.setattr("broadcaster.workers.bus.WRITE_LIMIT", 64 * 1024)
    a, b = await workers.start(2)
    bus = workers.bus
    assert bus is not None
    on_a = await open_client(a.url)
    on_b = await open_client(b.url)
    await on_a.subscribe("prices")
    await on_b.subscribe("prices")
    stalled = b.link._transport if b.link is not None else None
    assert stalled is not None
    stalled.pause_reading()
    total = 2_000
    pad = "x" * 1_000
    for i in range(total):
        await a.publish("prices", {"i": i, "pad": pad})
    await wait_until(lambda: bus.connected() == frozenset({0}), what="the bus to drop worker 1")
    stalled.resume_reading()  # the stuck worker comes back to its connection: it is gone
    await wait_until(lambda: b.phase.value == "stopped", what="worker 1 to stop itself")
    assert b.bus_lost
    closed = await _read_to_close(on_b)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1001
    assert await _seqs(on_a, "prices", total) == list(range(1, total + 1))
    assert await a.publish("prices", {"i": total}) == total + 1


async def test_a_worker_that_dies_leaves_nothing_held_for_the_others(
    workers: Workers, connect_raw: ConnectRaw
) -> None:
    """Its full block subscriber and its admitted connections stop counting elsewhere;
    its clients come back on another worker and recover what they missed."""
    a, b = await workers.start(2, CHANNELS)
    stalled = await connect_raw(b.port, subscribe="blocked")
    news = await open_client(b.url)
    epoch = (await news.subscribe("news"))["epoch"]
    await a.publish("news", 0)
    await news.messages("news", 1)
    publisher = await _flood(a, "blocked", 100)
    await publisher.recv_event("flow.pause", channel="blocked")
    assert a.admission.others is not None
    assert a.admission.others.open == 2
    assert b.link is not None
    b.link._abort()  # the connection to the bus dies as with the worker's process
    await wait_until(lambda: b.phase.value == "stopped", what="worker 1 stopped itself")
    await wait_until(lambda: not _remote_full(a, "blocked"), what="its fullness cleared")
    await publisher.recv_event("published", id=99, timeout=10)
    assert a.admission.others.open == 0
    await a.publish("news", 1)
    back = await open_client(a.url)
    reply = await back.subscribe("news", since=1, epoch=epoch)
    assert (reply["recovered"], reply["seq"]) == (True, 2)
    assert [m["data"] for m in await back.messages("news", 1)] == [1]
    stalled.close()


async def test_with_the_redis_broker_workers_share_channels_through_redis(
    workers: Workers, redis_server: RedisServer
) -> None:
    """`[broker] kind = "redis"`: Redis carries the channels, the bus the limits and gather."""
    a, b = await workers.start(2, LIMITED + "\n" + redis_toml(redis_server.url))
    assert (a.broker.name, b.broker.name) == ("redis", "redis")
    sub = await open_client(b.url)
    await sub.subscribe("prices")
    assert await a.publish("prices", {"p": 1}) == 1
    assert [m["data"] for m in await sub.messages("prices", 1)] == [{"p": 1}]
    await open_client(a.url)
    await wait_until(lambda: b.admission.others is not None and b.admission.others.open == 1)
    assert (await refused_handshake(b.url)).status == 429
    assert a.link is not None
    assert set(await a.link.gather("nothing")) == {0, 1}


async def test_a_worker_without_a_bus_does_not_start(workers: Workers) -> None:
    link = BusLink(WorkerIdentity(0, 1, workers.run_dir), asyncio.get_running_loop().time)
    with pytest.raises(BusUnavailable):
        await link.start()


async def test_a_name_used_again_after_being_freed_everywhere_starts_a_new_epoch(
    workers: Workers,
) -> None:
    """As in one process: freed after idle_channel_ttl unused, a new epoch at seq 0."""
    a, b = await workers.start(
        2,
        '[channels."brief"]\nhistory_size = 5\nhistory_ttl = 0.1\n',
        server_toml=TEST_SERVER_TOML + "idle_channel_ttl = 0.2\n",
    )
    sub = await open_client(b.url)
    first = await sub.subscribe("brief")
    await a.publish("brief", 1)
    await sub.messages("brief", 1)
    await sub.send({"op": "unsubscribe", "channel": "brief", "id": "u"})
    await sub.recv_event("unsubscribed")
    bus = workers.bus
    assert bus is not None
    await wait_until(lambda: "brief" not in bus.state.channels, what="the bus freed it")
    again = await sub.subscribe("brief")
    assert again["epoch"] != first["epoch"]
    assert again["seq"] == 0
    # A channel that keeps nothing goes on from its seq when used again (resting).
    await a.publish("plain", 1)
    await a.publish("plain", 2)
    assert (await sub.subscribe("plain"))["seq"] == 2


PIPELINED = """
[channels."prices"]
strategy = "drop-oldest"
queue_size = 1000
history_size = 10

[channels."kept"]
history_size = 10

[channels."readonly"]
publish = "none"

[limits]
new_channel_rate = 0.001
new_channel_burst = 1
"""


def _replies(client: JsonClient) -> list[dict[str, Any]]:
    """The replies a client got (published, error, pong), in the order they came."""
    return [e for e in client.seen if e.get("event") in ("published", "error", "pong")]


async def test_one_connections_publishes_are_pipelined_in_op_order(workers: Workers) -> None:
    """More publishes than may be in flight, sent without waiting, errors and other ops
    in the middle: the subscriber on the other worker gets them in op order, gap-free,
    and the publisher's replies come in op order with increasing seqs."""
    a, b = await workers.start(2, PIPELINED)
    sub = await open_client(b.url)
    await sub.subscribe("prices")
    publisher = await open_client(a.url)
    total = 3 * MAX_IN_FLIGHT
    # What is in the middle (by op index): each answered in its place.
    middle: dict[int, tuple[dict[str, Any] | str, str]] = {
        10: ({"op": "publish", "channel": "$sys.mine", "data": 1}, "forbidden"),
        70: ({"op": "publish", "channel": "readonly", "data": 1}, "forbidden"),
        71: ({"op": "ping"}, "pong"),
        90: ("this is not JSON", "invalid_json"),
        91: ({"op": "publish", "channel": "kept", "data": 1}, "rate_limited"),
        150: ({"op": "publish", "data": 1}, "invalid_message"),
    }
    expected: list[tuple[Any, str]] = []
    for i in range(total + len(middle)):
        extra = middle.get(i)
        if extra is None:
            await publisher.send({"op": "publish", "channel": "prices", "data": {"i": i}, "id": i})
            expected.append((i, "published"))
            continue
        op, outcome = extra
        if isinstance(op, str):
            await publisher.ws.send(op)
            expected.append((None, "error"))  # a frame that is not JSON has no id
        else:
            await publisher.send({**op, "id": i})
            expected.append((i, "pong" if outcome == "pong" else "error"))
    got = await sub.messages("prices", total, timeout=20)
    assert [m["seq"] for m in got] == list(range(1, total + 1)), "gap-free"
    assert [m["data"]["i"] for m in got] == [i for i, kind in expected if kind == "published"]
    while len(_replies(publisher)) < len(expected):
        await publisher.recv(timeout=10)
    replies = _replies(publisher)
    assert [(r.get("id"), r["event"]) for r in replies] == expected, "replies in op order"
    assert [r["seq"] for r in replies if r["event"] == "published"] == list(range(1, total + 1))
    codes = [(r.get("id"), r["code"]) for r in replies if r["event"] == "error"]
    assert codes == [
        (None if isinstance(op, str) else i, outcome)
        for i, (op, outcome) in middle.items()
        if outcome != "pong"
    ]
    # An op after the publishes sees them all: the subscribe comes after the last ack.
    assert (await publisher.subscribe("prices"))["seq"] == total


async def test_a_lost_bus_fails_every_publish_in_flight_and_nothing_hangs(
    workers: Workers,
) -> None:
    """The bus stops reading worker 0 (its publishes stay in flight, up to the bound),
    then dies: each publish in flight is answered `unavailable`, in op order, and the
    worker closes the connection as a stopping server does."""
    a, _ = await workers.start(2, PIPELINED)
    publisher = await open_client(a.url)
    await publisher.publish("prices", {"i": -1})
    bus = workers.bus
    assert bus is not None
    _bus_end_of(bus, 0).pause_reading()
    total = MAX_IN_FLIGHT + 20
    for i in range(total):
        await publisher.send({"op": "publish", "channel": "prices", "data": {"i": i}, "id": i})
    (session,) = a.sessions.values()
    await wait_until(
        lambda: session.publishes_in_flight == MAX_IN_FLIGHT,
        what="the connection holds as many publishes in flight as allowed",
    )
    await bus.stop()
    closed = await _read_to_close(publisher)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1001
    replies = [r for r in _replies(publisher) if isinstance(r.get("id"), int)]
    assert len(replies) >= MAX_IN_FLIGHT, "every publish in flight is answered"
    assert [r["id"] for r in replies] == list(range(len(replies))), "in op order"
    assert {(r["event"], r.get("code")) for r in replies} == {("error", "unavailable")}


async def _read_to_close(client: JsonClient) -> ConnectionClosed:
    """Read every event until the connection closes (bounded); how it closed."""
    for _ in range(10_000):
        try:
            await client.recv(timeout=10)
        except ConnectionClosed as closed:
            return closed
    raise AssertionError("the connection stayed open")


def _bus_end_of(bus: BusServer, worker: int) -> asyncio.Transport:
    """The bus's side of a worker's connection (to stop reading it, as a busy bus would)."""
    transport = bus._conns[worker].transport
    assert transport is not None
    return transport


async def test_pipelined_publishes_hold_no_channel_slots_for_each_other(workers: Workers) -> None:
    """Channels that keep nothing are freed once published; publishes in flight must not
    make `max_channels` refuse what one-at-a-time publishing would have accepted."""
    a, _ = await workers.start(2, "[limits]\nmax_channels = 2\n")
    publisher = await open_client(a.url)
    total = 10
    for i in range(total):
        await publisher.send({"op": "publish", "channel": f"t{i}", "data": i, "id": i})
    replies = [await publisher.recv() for _ in range(total)]
    assert [(r["event"], r["id"]) for r in replies] == [("published", i) for i in range(total)]
    assert all(r["seq"] == 1 for r in replies)


RATE_LIMITED = """
[limits]
publish_rate = 0.001
publish_burst = 5
rate_limit_strikes = 2
"""


async def test_pipelined_publishes_over_the_rate_are_refused_in_their_place(
    workers: Workers,
) -> None:
    """The burst goes to the bus; the refusals come after its replies, then close 4029."""
    a, _ = await workers.start(2, RATE_LIMITED)
    publisher = await open_client(a.url)
    for i in range(8):
        await publisher.send({"op": "publish", "channel": "prices", "data": i, "id": i})
    closed = await _read_to_close(publisher)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 4029
    replies = [(r["id"], r["event"], r.get("seq", r.get("code"))) for r in _replies(publisher)]
    published = [(i, "published", i + 1) for i in range(5)]
    assert replies == [*published, *((i, "error", "rate_limited") for i in range(5, 8))]
