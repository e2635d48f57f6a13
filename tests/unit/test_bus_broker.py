"""BusBroker against a link whose frames the test writes: the seam, publish, fullness.

The bus's replies are injected in the order the bus would write them; what
matters is what the worker's channel and subscribers see.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from broadcaster.brokers.base import MessageFactory
from broadcaster.brokers.bus import BusBroker
from broadcaster.core.channel import Channel
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import Strategy
from broadcaster.errors import BusUnavailable, InvalidPublish
from broadcaster.workers.identity import WorkerIdentity
from broadcaster.workers.link import BusLink


class ScriptedLink(BusLink):
    """A link that records what is sent and is fed frames by the test."""

    def __init__(self) -> None:
        super().__init__(WorkerIdentity(0, 2, Path("/nonexistent")), lambda: 0.0)
        self.sent: list[tuple[dict[str, Any], bytes]] = []

    @property
    def connected(self) -> bool:
        return True

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        self.sent.append((header, payload))

    def frame(self, header: dict[str, Any], payload: bytes = b"") -> None:
        self._handle(header, payload)


def framer(payload: bytes) -> bytes:
    return payload


async def rig(
    policy: ChannelPolicy | None = None,
) -> tuple[ScriptedLink, BusBroker, Channel, dict[str, Channel]]:
    link = ScriptedLink()
    held: dict[str, Channel] = {}
    broker = BusBroker(link, MessageFactory(framer, lambda: 0.0), lambda: 0.0, channels=held.get)
    await broker.start()
    channel = Channel("c", policy or ChannelPolicy(history_size=10), epoch="local")
    held["c"] = channel
    broker.channel_created(channel)
    return link, broker, channel, held


def data(seq: int) -> bytes:
    return orjson.dumps({"n": seq})


async def test_the_subscribe_reply_meets_the_live_stream_exactly() -> None:
    """Frames before the reply are covered by it; frames after it are delivered; recovery
    ends exactly at last_seq."""
    link, broker, channel, _ = await rig()
    preparing = asyncio.create_task(broker.prepare(channel))
    await asyncio.sleep(0)
    ((header, _),) = link.sent
    assert (header["t"], header["c"], header["h"]) == ("s", "c", 10)
    link.frame({"t": "m", "c": "c", "s": 5, "tm": 0.0}, data(5))  # written before the reply
    history = data(4) + data(5)
    link.frame(
        {
            "t": "S",
            "c": "c",
            "e": "tok",
            "s": 5,
            "hist": [[4, 0.0, len(data(4))], [5, 0.0, len(data(5))]],
            "snap": [],
        },
        history,
    )
    assert (channel.epoch, channel.last_seq) == ("tok", 5), "applied when read"
    link.frame({"t": "m", "c": "c", "s": 6, "tm": 0.0}, data(6))
    await preparing
    assert channel.last_seq == 6
    recovery = await broker.recover(channel, 3, "tok")
    assert recovery.recovered
    assert [m.seq for m in recovery.messages] == [4, 5, 6]
    assert orjson.loads(recovery.messages[-1].payload) == {
        "event": "message",
        "channel": "c",
        "seq": 6,
        "data": {"n": 6},
    }
    assert not (await broker.recover(channel, 3, "other")).recovered


async def test_publish_sends_the_data_once_and_returns_the_acked_seq() -> None:
    link, broker, channel, _ = await rig()
    publishing = asyncio.create_task(broker.publish(channel, {"price": 1.5}))
    await asyncio.sleep(0)
    ((header, payload),) = link.sent
    assert header["t"] == "p"
    assert payload == b'{"price":1.5}'
    link.frame({"t": "P", "i": header["i"], "s": 42, "e": "bus-epoch"})
    assert await publishing == 42


async def test_an_ack_gives_a_channel_not_delivered_here_the_bus_epoch_and_seq() -> None:
    """A worker that publishes to a channel it has no subscriber of shows the bus's epoch
    and last seq in /stats (what a subscriber elsewhere resumes with), not its own."""
    link, broker, channel, _ = await rig()
    assert channel.name not in broker._prepared
    publishing = asyncio.create_task(broker.publish(channel, 1))
    await asyncio.sleep(0)
    ((header, _),) = link.sent
    link.frame({"t": "P", "i": header["i"], "s": 42, "e": "bus-epoch"})
    assert await publishing == 42
    assert (channel.epoch, channel.last_seq) == ("bus-epoch", 42)


async def test_a_channel_freed_while_its_reply_is_pending_is_not_prepared() -> None:
    link, broker, channel, _ = await rig()
    preparing = asyncio.create_task(broker.prepare(channel))
    await asyncio.sleep(0)
    broker.channel_freed(channel)
    link.frame({"t": "S", "c": "c", "e": "tok", "s": 3, "hist": [], "snap": []})
    await preparing
    assert channel.last_seq == 0, "not applied"
    assert link.sent[-1][0] == {"t": "u", "c": "c"}, "the bus is told at once"


async def test_other_workers_fullness_counts_in_the_channel_and_in_later_ones() -> None:
    link, broker, channel, held = await rig(ChannelPolicy(strategy=Strategy.BLOCK))
    rooms: list[str] = []
    channel.on_room = lambda ch: rooms.append(ch.name)
    link.frame({"t": "F", "c": "c", "w": 1, "f": 1})
    assert not channel.has_room()
    later = Channel("c", channel.policy, epoch="local")
    broker.channel_created(later)
    assert (later.full_count, later.remote_full) == (1, 1)
    link.frame({"t": "F", "c": "c", "w": 1, "f": 0})
    assert channel.has_room()
    assert rooms == ["c"]
    channel.became_full()
    channel.room_freed()
    assert [h for h, _ in link.sent] == [{"t": "f", "c": "c", "f": 1}, {"t": "f", "c": "c", "f": 0}]
    assert held["c"] is channel


async def test_a_snapshot_reply_seeds_the_last_value_cache() -> None:
    policy = ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="k", snapshot=True)
    link, broker, channel, _ = await rig(policy)
    preparing = asyncio.create_task(broker.prepare(channel))
    await asyncio.sleep(0)
    a, b = orjson.dumps({"k": "a", "v": 1}), orjson.dumps({"k": "b", "v": 2})
    link.frame(
        {
            "t": "S",
            "c": "c",
            "e": "tok",
            "s": 7,
            "hist": [],
            "snap": [[6, 0.0, len(a)], [7, 0.0, len(b)]],
        },
        a + b,
    )
    await preparing
    assert [(m.seq, m.key) for m in channel.snapshot()] == [(6, "a"), (7, "b")]


async def test_publishes_and_prepares_waiting_on_a_lost_bus_are_answered_unavailable() -> None:
    link, broker, channel, _ = await rig()
    publishing = asyncio.create_task(broker.publish(channel, 1))
    other = Channel("d", channel.policy, epoch="local")
    preparing = asyncio.create_task(broker.prepare(other))
    await asyncio.sleep(0)
    link._connection_lost(None)
    assert link.lost.is_set()
    for waiting in (publishing, preparing):
        with pytest.raises(BusUnavailable) as raised:
            await waiting
        assert raised.value.code == "unavailable"


async def test_submit_sends_at_once_in_order_and_each_future_gets_its_own_seq() -> None:
    """Pipelined publishes: sent as submitted, no await; each ack resolves its own future."""
    link, broker, channel, _ = await rig()
    acks = [broker.submit(channel, {"n": n}) for n in range(3)]
    assert [orjson.loads(payload) for _, payload in link.sent] == [{"n": 0}, {"n": 1}, {"n": 2}]
    ids = [header["i"] for header, _ in link.sent]
    assert ids == sorted(ids), "the link carries them in submit order"
    assert not any(ack.done() for ack in acks)
    for request, seq in zip(ids, (7, 8, 9), strict=True):
        link.frame({"t": "P", "i": request, "s": seq, "e": "bus-epoch"})
    assert [await ack for ack in acks] == [7, 8, 9]


async def test_submit_refuses_data_that_is_not_json_before_sending() -> None:
    link, broker, channel, _ = await rig()
    with pytest.raises(InvalidPublish):
        broker.submit(channel, {1, 2})
    assert link.sent == []


async def test_a_lost_bus_fails_every_submitted_publish() -> None:
    link, broker, channel, _ = await rig()
    acks = [broker.submit(channel, n) for n in range(3)]
    link.frame({"t": "P", "i": link.sent[0][0]["i"], "s": 1, "e": "bus-epoch"})
    link._connection_lost(None)
    assert await acks[0] == 1
    for ack in acks[1:]:
        with pytest.raises(BusUnavailable):
            await ack
