"""Faults injected into each background loop: the loop goes on, and the failure is seen.

Each test makes one iteration of a named loop raise (server/faults.py) on
a real server on a loopback port, then checks that what the loop is for
still happens afterwards, and that the failure is counted in /stats and
/metrics and logged once with its traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from broadcaster.config import parse_config
from broadcaster.server.app import Broadcaster
from broadcaster.server.faults import FaultInjector
from tests.conftest import ConnectRaw
from tests.support.clients import open_client
from tests.support.http import http_get_json
from tests.support.metrics import scrape
from tests.support.servers import server_config, slow_consumer_disconnects, wait_until

StartFaulty = Callable[..., Awaitable[tuple[Broadcaster, FaultInjector]]]

CHANNELS = """
[channels."live"]
strategy = "drop-oldest"
queue_size = 8
slow_consumer_timeout = 0.3
"""

PAD = "y" * 1000


@pytest.fixture
async def faulty() -> AsyncIterator[StartFaulty]:
    """Start in-process servers with a fault injector (stopped at teardown)."""
    started: list[Broadcaster] = []

    async def start(extra_toml: str = CHANNELS) -> tuple[Broadcaster, FaultInjector]:
        faults = FaultInjector()
        config = parse_config(server_config(extra_toml), source="<test config>")
        server = Broadcaster(config, fault_hook=faults)
        started.append(server)
        await server.start()
        return server, faults

    yield start
    for server in started:
        await server.stop()


async def fault_fired(faults: FaultInjector, loop: str) -> None:
    await wait_until(lambda: faults.armed(loop) == 0, what=f"the fault in {loop!r} to fire")


async def loop_stats(server: Broadcaster, loop: str) -> dict[str, object]:
    status, stats = await http_get_json(server.port, "/stats?top=0&channels=0")
    assert status == 200
    entry: dict[str, object] = stats["server"]["loops"][loop]
    return entry


def loop_failures_logged(caplog: pytest.LogCaptureFixture, loop: str) -> int:
    """Log records about failures of `loop` that carry a traceback."""
    return sum(
        1
        for r in caplog.records
        if r.name == "broadcaster.loops" and repr(loop) in r.getMessage() and r.exc_info
    )


async def publish_until(server: Broadcaster, channel: str, done: asyncio.Event) -> None:
    """Publish 1 KB messages, yielding between them, until `done` is set (bounded count)."""
    for i in range(20_000):
        if done.is_set():
            return
        await server.publish(channel, {"i": i, "pad": PAD})
        await asyncio.sleep(0.001)


async def test_sweep_still_cuts_off_a_slow_consumer_after_a_failed_iteration(
    faulty: StartFaulty, connect_raw: ConnectRaw, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed sweep iteration does not end the sweep: slow consumers are still closed (4008)."""
    server, faults = await faulty()
    faults.arm("sweep")
    await fault_fired(faults, "sweep")

    stalled = await connect_raw(server.port, subscribe="live")
    done = asyncio.Event()
    publisher = asyncio.create_task(publish_until(server, "live", done))
    try:
        await wait_until(
            lambda: slow_consumer_disconnects(server, "live") == 1,
            what="the slow-consumer close after the failed sweep",
        )
    finally:
        done.set()
        await publisher
    stalled.close()

    loop = await loop_stats(server, "sweep")
    assert loop["errors"] == 1
    assert loop["state"] == "running"
    assert "InjectedFault" in str(loop["last_error"])
    metrics = await scrape(server.port)
    assert metrics.value("broadcaster_loop_errors_total", loop="sweep") == 1
    assert loop_failures_logged(caplog, "sweep") == 1


async def test_flush_still_writes_the_connections_pending_after_a_failed_one(
    faulty: StartFaulty,
) -> None:
    """One connection's failed flush does not strand the others: every subscriber still gets
    this message and the next ones."""
    server, faults = await faulty()
    first = await open_client(server.url)
    second = await open_client(server.url)
    try:
        await first.subscribe("live")
        await second.subscribe("live")
        faults.arm("flush")
        await server.publish("live", {"n": 1})
        await fault_fired(faults, "flush")
        await server.publish("live", {"n": 2})
        for client in (first, second):
            received = await client.messages("live", 2)
            assert [m["data"]["n"] for m in received] == [1, 2]
    finally:
        await first.close()
        await second.close()
    loop = await loop_stats(server, "flush")
    assert (loop["errors"], loop["state"]) == (1, "running")
    metrics = await scrape(server.port)
    assert metrics.value("broadcaster_loop_errors_total", loop="flush") == 1


async def test_keepalive_still_closes_a_silent_client_after_a_failed_iteration(
    faulty: StartFaulty, connect_raw: ConnectRaw
) -> None:
    """A failed keepalive iteration does not end the keepalive: a client that never
    answers pings is still closed."""
    server, faults = await faulty("ping_interval = 0.2  # appended to [server]\n")
    faults.arm("keepalive")
    await fault_fired(faults, "keepalive")
    silent = await connect_raw(server.port)
    await wait_until(lambda: len(server.sessions) == 1, what="the silent client's session")
    await wait_until(lambda: not server.sessions, what="the keepalive to close the silent client")
    silent.close()
    loop = await loop_stats(server, "keepalive")
    assert (loop["errors"], loop["state"]) == (1, "running")
    metrics = await scrape(server.port)
    assert metrics.value("broadcaster_loop_errors_total", loop="keepalive") == 1


@pytest.mark.parametrize("loop", ["monitor", "stats"])
async def test_sys_stats_keeps_coming_after_a_failed_monitor_step(
    faulty: StartFaulty, loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed lag reading or $sys.stats document does not end the monitor: the dashboard
    keeps getting documents, and they show the failure."""
    server, faults = await faulty()
    viewer = await open_client(server.url)
    try:
        await viewer.subscribe("$sys.stats")
        for _ in range(3):
            faults.arm(loop)
        await fault_fired(faults, loop)
        # A document built after the third failure: the loop went on, and says so.
        for _ in range(100):
            (document,) = await viewer.messages("$sys.stats", 1)
            entry = document["data"]["server"]["loops"][loop]
            if entry["errors"] == 3:
                break
        assert entry == {
            "state": "running",
            "errors": 3,
            "last_error": f"InjectedFault: fault injected into {loop!r}",
        }
    finally:
        await viewer.close()
    metrics = await scrape(server.port)
    assert metrics.value("broadcaster_loop_errors_total", loop=loop) == 3
    assert loop_failures_logged(caplog, loop) == 1, "logged once, then counted"


async def test_a_loop_that_stops_makes_healthz_answer_503_naming_it(
    faulty: StartFaulty, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop ended by a stray cancellation is reported: /healthz 503 names it, /stats says
    stopped."""
    server, faults = await faulty()
    status, health = await http_get_json(server.port, "/healthz")
    assert (status, health["status"]) == (200, "ok")
    faults.arm("sweep", asyncio.CancelledError())
    await fault_fired(faults, "sweep")
    await wait_until(lambda: server.loops.stopped() == ["sweep"], what="the sweep to stop")

    status, health = await http_get_json(server.port, "/healthz")
    assert status == 503
    assert health["status"] == "failing"
    assert health["stopped_loops"] == ["sweep"]
    loop = await loop_stats(server, "sweep")
    assert loop["state"] == "stopped"
    assert any(
        r.name == "broadcaster.loops" and "'sweep' was cancelled" in r.getMessage()
        for r in caplog.records
    )
