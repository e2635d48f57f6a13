"""Reconnecting: a server restarted on the same port, a cut link with and without history,
a dead link found by the heartbeat."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from broadcaster.client import connect
from tests.conftest import StartServer
from tests.support.client_events import Recorder, quick_client, take
from tests.support.proxy import TcpProxy
from tests.support.servers import TEST_SERVER_TOML, free_port

HISTORY = """
[channels."hist"]
history_size = 100
"""


@pytest.fixture
async def proxies() -> AsyncIterator[list[TcpProxy]]:
    opened: list[TcpProxy] = []
    yield opened
    for proxy in opened:
        await proxy.close()


async def test_server_restart_backoff_growth_jitter_and_resubscribe(serve: StartServer) -> None:
    """Restarted mid-stream: delays grow with full jitter up to the cap; then resubscribe,
    a held publish goes out, and the new epoch is one `reset`, not mistaken for a gap."""
    port = free_port()
    server_toml = TEST_SERVER_TOML.replace("port = 0", f"port = {port}")
    server = await serve("", server_toml)
    rng = random.Random(2024)
    drawn: list[float] = []

    def jitter() -> float:
        drawn.append(rng.random())
        return drawn[-1]

    async with (
        connect(
            server.url, min_delay=0.005, max_delay=0.04, factor=2.0, ping_interval=0, random=jitter
        ) as sub,
        quick_client(server.url) as pub,
    ):
        events = Recorder(sub)
        ticks = sub.subscribe("ticks")
        old_epoch = (await events.wait("subscribed")).epoch
        assert [await pub.publish("ticks", i) for i in range(3)] == [1, 2, 3]
        assert [m.seq for m in await take(ticks, 3)] == [1, 2, 3]

        await server.stop()  # close 1001, then the port refuses connections
        down = await events.wait("disconnected")
        assert (down.code, down.reason, down.will_reconnect) == (1001, "server shutting down", True)
        await events.until(lambda: len(events["reconnecting"]) >= 6, what="six attempts")
        held = pub.publish("ticks", "while down")
        assert pub.queued == 1, "a publish made while disconnected is held"

        await serve("", server_toml)
        again = await events.wait("subscribed", after=1)
        assert again.recovered is False, "a new epoch cannot recover the old one"
        assert [(r.old_epoch, r.epoch, r.last_seq, r.missed, r.seq) for r in events["reset"]] == [
            (old_epoch, again.epoch, 3, None, again.seq)
        ], "the restart is reported once, with where each history stands"
        steps = events["reconnecting"]
        assert [s.attempt for s in steps[:6]] == [0, 1, 2, 3, 4, 5]
        caps = [min(0.04, 0.005 * 2**s.attempt) for s in steps]
        assert caps[:6] == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.04, 0.04])
        for step, cap, r in zip(steps, caps, drawn, strict=True):
            assert step.kind == "normal"
            assert step.delay == pytest.approx(r * cap)
            assert 0 <= step.delay < cap
        assert steps[0].code == 1001
        assert all(s.code == 1006 for s in steps[1:]), "failed attempts"

        assert await asyncio.wait_for(held, 10) >= 1
        seq = await pub.publish("ticks", "after")
        message = await asyncio.wait_for(ticks.get(), 10)
        while message.seq < seq:
            message = await asyncio.wait_for(ticks.get(), 10)
        assert message.data == "after"
        assert events["gap"] == [], "no false gap across epochs"


async def test_cut_link_recovers_from_history_and_reports_exact_gap_without(
    serve: StartServer, proxies: list[TcpProxy]
) -> None:
    """Resubscribe with since: replayed where the channel keeps history, one exact gap where not."""
    server = await serve(HISTORY)
    link = await TcpProxy(server.port).start()
    proxies.append(link)
    async with quick_client(link.url) as sub, quick_client(server.url) as pub:
        events = Recorder(sub)
        hist = sub.subscribe("hist")
        plain = sub.subscribe("plain")
        await events.until(lambda: len(events["subscribed"]) == 2, what="both subscribed")
        for i in (1, 2):
            await pub.publish("hist", i)
            await pub.publish("plain", i)
        assert [m.seq for m in await take(hist, 2)] == [1, 2]
        assert [m.seq for m in await take(plain, 2)] == [1, 2]

        link.refuse(True)
        link.cut()
        assert (await events.wait("disconnected")).code == 1006
        for i in range(3, 8):
            await pub.publish("hist", i)
            await pub.publish("plain", i)
        link.refuse(False)
        assert [m.seq for m in await take(hist, 5)] == [3, 4, 5, 6, 7]
        await events.wait("gap")
        assert [(g.channel, g.missed, g.from_seq, g.to_seq) for g in events["gap"]] == [
            ("plain", 5, 3, 7)
        ]
        replies = sorted((s.channel, s.recovered) for s in events["subscribed"][2:])
        assert replies == [("hist", True), ("plain", False)]
        await pub.publish("plain", 8)
        assert [m.seq for m in await take(plain, 1)] == [8]
        assert len(events["gap"]) == 1


async def test_dead_link_is_found_by_the_heartbeat_and_replaced(
    serve: StartServer, proxies: list[TcpProxy]
) -> None:
    server = await serve()
    link = await TcpProxy(server.port).start()
    proxies.append(link)
    async with quick_client(link.url, ping_interval=0.03, ping_timeout=0.06) as sub:
        events = Recorder(sub)
        link.freeze()
        down = await events.wait("disconnected")
        assert (down.code, down.reason, down.will_reconnect) == (1006, "ping timeout", True)
        assert (await events.wait("connected")).reconnect is True
        assert sub.connected
