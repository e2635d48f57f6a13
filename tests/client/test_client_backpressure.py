"""A consumer that really falls behind (its client stops reading the socket), on a
drop-oldest channel (gap detection) and a block channel (a well-behaved publisher)."""

from __future__ import annotations

import asyncio

from broadcaster.client import Pause, Subscription
from broadcaster.server.app import Broadcaster
from tests.conftest import StartServer
from tests.support.client_events import Recorder, quick_client

CHANNELS = """
[channels."oldest"]
strategy = "drop-oldest"
queue_size = 8
slow_consumer_timeout = 30.0

[channels."orders"]
strategy = "block"
queue_size = 8
slow_consumer_timeout = 30.0
"""
PAD = "x" * 1000
BATCH = 100
MAX_BATCHES = 60


def dropped(server: Broadcaster, channel: str) -> int:
    ch = server.hub.channels.get(channel)
    return 0 if ch is None else sum(sub.dropped for sub in ch.subscriptions)


async def drain_until(sub: Subscription, seq: int, timeout: float = 10.0) -> list[int]:
    """Read `sub` until a message with `seq` (or a later one) arrived; the seqs read."""
    seqs: list[int] = []
    while not seqs or seqs[-1] < seq:
        seqs.append((await asyncio.wait_for(sub.get(), timeout)).seq)
    return seqs


async def test_consumer_that_falls_behind_gets_gaps_with_the_exact_missed_count(
    serve: StartServer,
) -> None:
    """Not iterating stalls the socket; the server drops; the client counts every miss."""
    server = await serve(CHANNELS)
    async with quick_client(server.url, max_queue=1) as sub:
        events = Recorder(sub)
        stream = sub.subscribe("oldest")
        await events.wait("subscribed")
        total = 0
        for _ in range(MAX_BATCHES):
            for _ in range(BATCH):
                total = await server.publish("oldest", {"pad": PAD})
            if dropped(server, "oldest"):
                break
        assert dropped(server, "oldest"), "the stalled client's queue overflowed"

        seqs = await drain_until(stream, total)
        await events.wait("resume")
        missed = sum(g.missed for g in events["gap"])
        assert missed > 0
        assert missed == total - len(seqs), "every missing seq is accounted for, exactly"
        assert missed == sum(r.dropped for r in events["resume"]) == dropped(server, "oldest")
        assert seqs == sorted(set(seqs))
        assert seqs[-1] == total, "drop-oldest keeps the newest"
        assert all(g.to_seq - g.from_seq + 1 == g.missed for g in events["gap"])
        assert events["pause"][0].reason == "buffer full"


async def test_publisher_on_a_blocked_channel_holds_publishes_and_loses_none(
    serve: StartServer,
) -> None:
    """flow.pause "channel blocked": later publishes wait in the client; all land after resume."""
    server = await serve(CHANNELS)
    async with (
        quick_client(server.url, max_queue=1) as sub,
        quick_client(server.url) as pub,
    ):
        sub_events = Recorder(sub)
        stream = sub.subscribe("orders")
        await sub_events.wait("subscribed")
        events = Recorder(pub)
        acks: list[asyncio.Future[int]] = []
        held_at_pause: list[int] = []

        def publish() -> None:
            acks.append(pub.publish("orders", {"n": len(acks), "pad": PAD}))

        paused: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_pause(pause: Pause) -> None:
            # While the server has this publisher paused, new publishes stay in the client.
            if pause.reason == "channel blocked" and not held_at_pause:
                paused.set_result(0)
                before = pub.queued
                for _ in range(20):
                    publish()
                held_at_pause.append(pub.queued - before)

        pub.on("pause", on_pause)
        for _ in range(MAX_BATCHES):
            for _ in range(BATCH):
                publish()
            # Either this batch went through, or the server paused us on the way.
            await asyncio.wait([acks[-1], paused], timeout=10, return_when=asyncio.FIRST_COMPLETED)
            if paused.done():
                break
        pause = await events.wait("pause")
        assert (pause.channel, pause.reason) == ("orders", "channel blocked")
        assert held_at_pause == [20]

        got = await drain_until(stream, len(acks), timeout=20)
        resume = await events.wait("resume")
        assert resume.dropped == 0
        seqs = [await asyncio.wait_for(ack, 20) for ack in acks]
        assert seqs == list(range(1, len(acks) + 1)), "every publish accepted once, in order"
        assert got == seqs, "the subscriber got every message: block loses nothing"
        assert sub_events["gap"] == []
