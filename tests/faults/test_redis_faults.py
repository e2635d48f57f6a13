"""Redis and node faults under load, each checked by the oracle (tests/faults/oracle.py).

Two nodes share one Redis; a publisher on node A records every acknowledged
publish; two raw subscribers on each node record every event. Each drill
injects one fault while publishing, then the oracle checks that every
acknowledged publish reached every subscriber once, in order, or that the
subscriber was told (gap, or reset with `previous_seq`) exactly how many it
missed, and that no seq was given out twice under one epoch. The figures are
printed at the end of the run (conftest.pytest_terminal_summary).

Before the rollback fix, the drills whose Redis comes back with older data
(RDB, AOF everysec, lagging replica) lost every publish after the restart
that reused a seq: the readers skipped them as already delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from broadcaster.brokers.redis import RedisBroker
from broadcaster.server.app import Broadcaster
from tests.conftest import StartProcess, StartServer
from tests.faults.conftest import (
    AOF_ALWAYS,
    AOF_EVERYSEC,
    NO_PERSISTENCE,
    RDB_ONLY,
    FaultRedis,
    Publisher,
    Subscriber,
    record,
)
from tests.faults.oracle import Figures, check
from tests.support.http import http_get_json
from tests.support.metrics import scrape
from tests.support.proxy import TcpProxy
from tests.support.raw_client import RawClient
from tests.support.redis_server import redis_toml
from tests.support.servers import TEST_SERVER_TOML, wait_until

# One loop: the drills are slow-ish and the behaviour under test is Redis', not the loop's.
pytestmark = pytest.mark.asyncio(loop_factories=["uvloop"])

CHANNEL = "news"
NODE_TOML = f'[channels."{CHANNEL}"]\nhistory_size = 1000\n'
TOTAL = 90

Fault = Callable[[Publisher], Awaitable[None]]


async def _subscribers(nodes: dict[str, int]) -> list[Subscriber]:
    subs = []
    for node, port in nodes.items():
        for i in range(2):
            sub = Subscriber(f"{node}{i}", CHANNEL)
            await sub.open(port)
            subs.append(sub)
    return subs


async def _finish(
    name: str,
    pub: Publisher,
    subs: list[Subscriber],
    load: asyncio.Task[None],
    *,
    resets: int = 0,
) -> Figures:
    """Let the publisher finish, give every subscriber time to get the last ack, judge."""
    await load
    assert len(pub.acks) == TOTAL, f"only {len(pub.acks)} acks ({pub.refused} refused)"
    last = pub.acks[-1].data
    with contextlib.suppress(TimeoutError):
        await wait_until(lambda: all(s.has(last) for s in subs), timeout=20, what="last ack")
    figures = check(CHANNEL, pub.acks, {s.name: s.events for s in subs})
    record(name, figures)
    for sub in subs:
        notices = sub.resets()
        assert len(notices) == resets, (sub.name, notices)
        for notice in notices:
            # Told which history ended and how far it got: the count it missed is exact.
            assert notice["previous_epoch"] == sub.events[0]["epoch"]
            assert notice["previous_seq"] >= max(a.seq for a in pub.acks[:30])
    pub.close()
    for sub in subs:
        await sub.close()
    return figures


async def _redis_drill(
    name: str,
    serve: StartServer,
    url: str,
    fault: Fault,
    *,
    resets: int = 1,
    url_b: str | None = None,
) -> Figures:
    a = await serve(NODE_TOML + redis_toml(url))
    b = await serve(NODE_TOML + redis_toml(url_b or url))
    subs = await _subscribers({"a": a.port, "b": b.port})
    pub = await Publisher(CHANNEL, name).open(a.port)
    load = asyncio.create_task(pub.run(TOTAL))
    first_epoch = subs[0].events[0]["epoch"]
    await fault(pub)
    figures = await _finish(name, pub, subs, load, resets=resets)
    assert figures.problems == []
    assert figures.lost == 0
    assert figures.expected == 4 * TOTAL
    for node in (a, b):
        # A client that knew seq 45 of the first epoch: its history is gone after a
        # reset (never `recovered: true` for it), and intact otherwise.
        client = await RawClient(node.port, rcvbuf=0).connect()
        await client.send(
            {"op": "subscribe", "channel": CHANNEL, "id": "s", "since": 45, "epoch": first_epoch}
        )
        events = await client.read_until(lambda evs: any(e.get("id") == "s" for e in evs))
        client.close()
        reply = next(e for e in events if e.get("id") == "s")
        assert reply["recovered"] is (resets == 0), reply
    return figures


def _start(servers: list[FaultRedis], tmp_path: Path, persistence: list[str]) -> FaultRedis:
    server = FaultRedis(tmp_path / f"redis{len(servers)}", persistence).start()
    servers.append(server)
    return server


async def test_redis_killed_and_restarted_empty(
    serve: StartServer, fault_redis: list[FaultRedis], tmp_path: Path
) -> None:
    redis = _start(fault_redis, tmp_path, NO_PERSISTENCE)

    async def fault(pub: Publisher) -> None:
        pub.hold(30)
        await pub.until(30)
        redis.kill()
        pub.release(30)  # publishes meet the outage, then the empty Redis
        await redis.restart()

    await _redis_drill("redis kill -9, restart empty", serve, redis.url, fault)


async def test_redis_restarted_from_an_older_rdb_snapshot(
    serve: StartServer, fault_redis: list[FaultRedis], tmp_path: Path
) -> None:
    """SAVE at 30 acks, 30 more, kill -9, restart on the old dump: seq 31.. must not
    be given out again under the same epoch (it was: readers skipped 30 publishes)."""
    redis = _start(fault_redis, tmp_path, RDB_ONLY)

    async def fault(pub: Publisher) -> None:
        pub.hold(30)
        pub.hold(60)
        await pub.until(30)
        redis.client().save()
        pub.release(30)
        await pub.until(60)
        redis.kill()
        pub.release(60)
        await redis.restart()

    await _redis_drill("redis restart from older RDB", serve, redis.url, fault)


async def test_redis_with_aof_everysec_killed_right_after_publishes(
    serve: StartServer, fault_redis: list[FaultRedis], tmp_path: Path
) -> None:
    redis = _start(fault_redis, tmp_path, AOF_EVERYSEC)

    async def fault(pub: Publisher) -> None:
        pub.hold(45)
        await pub.until(45)
        redis.kill()
        pub.release(45)
        await redis.restart()

    await _redis_drill("redis AOF everysec kill -9", serve, redis.url, fault)


async def test_redis_with_aof_always_restarts_without_a_new_epoch(
    serve: StartServer, fault_redis: list[FaultRedis], tmp_path: Path
) -> None:
    """The one setting under which a restart loses nothing: seq goes on, no reset."""
    redis = _start(fault_redis, tmp_path, AOF_ALWAYS)

    async def fault(pub: Publisher) -> None:
        pub.hold(45)
        await pub.until(45)
        redis.kill()
        pub.release(45)
        await redis.restart()

    figures = await _redis_drill("redis AOF always kill -9", serve, redis.url, fault, resets=0)
    assert figures.delivered == figures.expected


async def test_redis_flushall(
    serve: StartServer, fault_redis: list[FaultRedis], tmp_path: Path
) -> None:
    redis = _start(fault_redis, tmp_path, NO_PERSISTENCE)

    async def fault(pub: Publisher) -> None:
        pub.hold(40)
        await pub.until(40)
        redis.client().flushall()
        pub.release(40)

    await _redis_drill("redis FLUSHALL", serve, redis.url, fault)


async def test_a_lagging_replica_promoted_behind_a_proxy(
    serve: StartServer, fault_redis: list[FaultRedis], tmp_path: Path
) -> None:
    """Each node reaches Redis through a TCP proxy (a VIP, HAProxy), and so does the
    replica its primary. After 30 acks the replica's link is frozen so it lags, and node
    B is cut off from Redis, so it does not read seqs 31-60 either; the primary dies
    after 60; the replica is promoted and the proxies point at it. Seqs 31.. must not
    be given out again under the same epoch, and B's subscribers must be told they
    missed exactly 30 (the reset's previous_seq)."""
    primary = _start(fault_redis, tmp_path, AOF_ALWAYS)
    link = await TcpProxy(primary.port).start()
    replica = FaultRedis(tmp_path / "replica", NO_PERSISTENCE, replicaof=link.port).start()
    fault_redis.append(replica)
    proxy_a = await TcpProxy(primary.port).start()
    proxy_b = await TcpProxy(primary.port).start()

    async def fault(pub: Publisher) -> None:
        pub.hold(30)
        pub.hold(60)
        await pub.until(30)
        replica_client = replica.client()
        primary_offset = primary.client().info("replication")["master_repl_offset"]

        def caught_up() -> bool:
            return bool(
                replica_client.info("replication")["slave_repl_offset"] >= primary_offset
            )

        await wait_until(caught_up, what="the replica to catch up")
        for proxy in (link, proxy_b):
            proxy.refuse(True)
            proxy.freeze()
        pub.release(30)
        await pub.until(60)  # 30 acks the replica and node B never get
        primary.kill()
        link.cut()
        replica_client.replicaof("NO", "ONE")
        for proxy in (proxy_a, proxy_b):
            proxy.target_port = replica.port
            proxy.refuse(False)
            proxy.cut()
        pub.release(60)

    try:
        figures = await _redis_drill(
            "replica promoted while lagging",
            serve,
            f"redis://127.0.0.1:{proxy_a.port}/0",
            fault,
            url_b=f"redis://127.0.0.1:{proxy_b.port}/0",
        )
    finally:
        for proxy in (link, proxy_a, proxy_b):
            await proxy.close()
    assert figures.reset == 2 * 30, "B's two subscribers were told they missed 31..60"


async def test_malformed_stream_entries_are_skipped_and_counted(
    serve: StartServer,
    fault_redis: list[FaultRedis],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Entries written straight into the channel's stream by something else: each node
    skips them (logged with channel and id, counted in /stats and /metrics) and goes on."""
    redis = _start(fault_redis, tmp_path, NO_PERSISTENCE)
    bad_ids: list[bytes | str] = []

    async def fault(pub: Publisher) -> None:
        pub.hold(30)
        await pub.until(30)
        client = redis.client()
        key = f"test:stream:{CHANNEL}"
        bad_ids.append(client.xadd(key, {"junk": "1"}))
        bad_ids.append(client.xadd(key, {"s": "x", "e": "e", "d": "1"}))
        bad_ids.append(client.xadd(key, {"s": "100000", "e": "e", "d": "{not json"}))
        pub.release(30)

    caplog.set_level(logging.WARNING, logger="broadcaster.redis")
    a, b = [await serve(NODE_TOML + redis_toml(redis.url)) for _ in range(2)]
    subs = await _subscribers({"a": a.port, "b": b.port})
    pub = await Publisher(CHANNEL, "bad").open(a.port)
    load = asyncio.create_task(pub.run(TOTAL))
    await fault(pub)
    figures = await _finish("malformed stream entries", pub, subs, load)
    assert (figures.problems, figures.delivered) == ([], figures.expected)
    for node in (a, b):
        status, health = await http_get_json(node.port, "/healthz")
        assert (status, health["reader"]) == (200, "running")
        _, stats = await http_get_json(node.port, "/stats")
        assert stats["server"]["broker"]["bad_entries"] == 3
        assert stats["server"]["broker"]["reader_restarts"] == 0
        metrics = await scrape(node.port)
        assert metrics.value("broadcaster_broker_bad_entries_total") == 3
    first = bad_ids[0].decode() if isinstance(bad_ids[0], bytes) else bad_ids[0]
    assert any(
        r.levelno == logging.WARNING and repr(CHANNEL) in r.getMessage() and first in r.getMessage()
        for r in caplog.records
    )


async def test_a_reader_that_dies_is_restarted_and_shown(
    serve: StartServer,
    fault_redis: list[FaultRedis],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected exception in node B's reader: logged with its traceback, counted,
    /healthz 503 `restarting` during the back-off, then delivery goes on from the cursor."""
    redis = _start(fault_redis, tmp_path, NO_PERSISTENCE)
    a, b = [await serve(NODE_TOML + redis_toml(redis.url)) for _ in range(2)]
    broker = b.broker
    assert isinstance(broker, RedisBroker)
    reader = broker.reader
    original = reader._deliver
    injected: list[bool] = []

    def deliver_or_die(key: bytes, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        if not injected:
            injected.append(True)
            raise RuntimeError("injected reader fault")
        original(key, entries)

    subs = await _subscribers({"a": a.port, "b": b.port})
    pub = await Publisher(CHANNEL, "crash").open(a.port)
    load = asyncio.create_task(pub.run(TOTAL))
    await pub.until(30)
    reader._restart_delay = 1.0
    monkeypatch.setattr(reader, "_deliver", deliver_or_die)

    async def restarting() -> bool:
        status, health = await http_get_json(b.port, "/healthz")
        return status == 503 and health["reader"] == "restarting"

    await wait_until(restarting, what="/healthz to show the reader restarting")
    await wait_until(lambda: reader.state == "running", what="the reader to run again")
    figures = await _finish("node reader crash", pub, subs, load)
    assert (figures.problems, figures.delivered) == ([], figures.expected)
    _, stats = await http_get_json(b.port, "/stats")
    assert stats["server"]["broker"]["reader_restarts"] == 1
    assert "injected reader fault" in stats["server"]["broker"]["last_error"]
    assert (await scrape(b.port)).value("broadcaster_broker_reader_restarts_total") == 1
    assert sum(1 for r in caplog.records if r.exc_info and "redis reader failed" in r.message) == 1
    await b.stop()  # stops cleanly after a crash
    assert b.broker.status().reader == "stopped"


@pytest.mark.parametrize("how", ["kill", "terminate"])
async def test_a_node_dies_under_load_and_its_subscribers_move(
    how: str,
    serve: StartServer,
    serve_process: StartProcess,
    fault_redis: list[FaultRedis],
    tmp_path: Path,
) -> None:
    """Node A (a process) is killed with SIGKILL or stopped with SIGTERM while B's
    publisher publishes: B's subscribers lose nothing; A's reconnect to B with `since`
    and get exactly what they missed (`recovered: true`)."""
    redis = _start(fault_redis, tmp_path, AOF_ALWAYS)
    config = NODE_TOML + redis_toml(redis.url)
    a = await serve_process(TEST_SERVER_TOML.replace("port = 0\n", "") + config)
    b: Broadcaster = await serve(config)
    subs = await _subscribers({"a": a.port, "b": b.port})
    pub = await Publisher(CHANNEL, f"node-{how}").open(b.port)
    load = asyncio.create_task(pub.run(TOTAL))
    await pub.until(40)
    a.kill() if how == "kill" else a.terminate()
    moved = [sub for sub in subs if sub.name.startswith("a")]
    for sub in moved:
        await asyncio.wait_for(sub.ended.wait(), 15)
        reply = await sub.open(b.port, resume=True)
        assert reply["recovered"] is True
    figures = await _finish(f"node {how} under load", pub, subs, load)
    assert (figures.problems, figures.delivered) == ([], figures.expected)


async def test_a_probe_that_raises_anything_counts_as_a_failure(
    serve: StartServer,
    fault_redis: list[FaultRedis],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis down, breaker open; the first probe raises an unexpected error: the breaker
    must open again and keep probing (it stayed half-open for ever), then close."""
    redis = _start(fault_redis, tmp_path, AOF_ALWAYS)
    node = await serve(NODE_TOML + redis_toml(redis.url))
    broker = node.broker
    assert isinstance(broker, RedisBroker)
    redis.kill()
    await wait_until(lambda: broker.status().breaker == "open", what="the breaker to open")
    real_ping = broker.client.ping
    raised: list[bool] = []

    async def odd_ping() -> bool:
        if not raised:
            raised.append(True)
            raise ValueError("a reply the client could not read")
        return bool(await real_ping())

    monkeypatch.setattr(broker.client, "ping", odd_ping)
    await redis.restart()
    await wait_until(lambda: bool(raised), what="the odd probe")
    await wait_until(
        lambda: broker.status().breaker == "closed" and broker.status().up,
        what="the breaker to close after the odd probe",
    )
