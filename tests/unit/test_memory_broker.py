"""The in-memory broker: seq assignment, synchronous fan-out, history and recovery."""

from __future__ import annotations

import orjson
import pytest

from broadcaster.brokers.base import MessageFactory
from broadcaster.brokers.memory import MemoryBroker
from broadcaster.core.channel import Channel
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import Strategy
from broadcaster.errors import InvalidPublish
from tests.unit.support import Rig


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def framer(payload: bytes) -> bytes:
    return b"F:" + payload


def broker_for(clock: Clock) -> MemoryBroker:
    return MemoryBroker(MessageFactory(framer, clock), clock)


def channel(**fields: int | float) -> Channel:
    policy = ChannelPolicy(
        history_size=int(fields.get("history_size", 0)),
        history_ttl=float(fields.get("history_ttl", 300.0)),
    )
    return Channel("c", policy, epoch="e1")


async def publish_many(broker: MemoryBroker, target: Channel, count: int) -> list[int]:
    return [await broker.publish(target, {"n": i}) for i in range(count)]


async def test_start_and_stop() -> None:
    """The memory broker needs no connection: start and stop just work."""
    broker = broker_for(Clock())
    await broker.start()
    await broker.stop()
    assert broker.name == "memory"


async def test_seq_starts_at_one_and_grows_by_one() -> None:
    """Every publish gets the next seq of its channel, starting at 1."""
    broker = broker_for(Clock())
    target = channel()
    assert await publish_many(broker, target, 3) == [1, 2, 3]
    assert target.last_seq == 3


async def test_seqs_are_per_channel() -> None:
    """Each channel counts its own seqs."""
    broker = broker_for(Clock())
    a, b = channel(), Channel("b", ChannelPolicy(), epoch="e1")
    await broker.publish(a, 1)
    await broker.publish(a, 2)
    assert await broker.publish(b, 3) == 1


async def test_publish_fans_out_before_returning() -> None:
    """A publish reaches every local subscriber before the publisher hears its seq."""
    broker = broker_for(Clock())
    rig = Rig()
    seq = await broker.publish(rig.channel, {"price": 1.5})
    assert seq == 1
    assert rig.sub.depth == 1


async def test_published_message_is_encoded_once_with_its_frame() -> None:
    """The message carries its `message` event payload and that payload framed once."""
    clock = Clock()
    clock.now = 12.5
    broker = broker_for(clock)
    rig = Rig()
    await broker.publish(rig.channel, {"price": 1.5})
    message = rig.sub.items[0]
    assert orjson.loads(message.payload) == {
        "event": "message",
        "channel": "c",
        "seq": 1,
        "data": {"price": 1.5},
    }
    assert message.frame == b"F:" + message.payload
    assert message.created == 12.5


async def test_published_message_gets_its_conflation_key() -> None:
    """On a conflate channel the message's key is read from its data."""
    broker = broker_for(Clock())
    rig = Rig(ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="symbol"))
    rig.conn.take()
    rig.outbox.written(1)  # the transport is backed up: the queue conflates
    await broker.publish(rig.channel, {"symbol": "AAPL"})
    await broker.publish(rig.channel, {"symbol": "AAPL"})
    assert rig.sub.items[0].key == "AAPL"
    assert rig.queued_seqs() == [2]


async def test_data_that_is_not_json_is_refused_without_using_a_seq() -> None:
    """A publish that cannot be encoded is refused and leaves no gap in the seqs."""
    broker = broker_for(Clock())
    rig = Rig()
    with pytest.raises(InvalidPublish, match="not JSON"):
        await broker.publish(rig.channel, {"x": {1, 2}})
    assert rig.channel.last_seq == 0
    assert rig.sub.depth == 0
    assert await broker.publish(rig.channel, 1) == 1


async def test_no_history_without_history_size() -> None:
    """A channel with history_size 0 keeps nothing."""
    broker = broker_for(Clock())
    target = channel()
    await publish_many(broker, target, 3)
    assert broker.history_of(target) is None


async def test_history_keeps_the_last_messages() -> None:
    """With history_size N, the last N messages are retained."""
    broker = broker_for(Clock())
    target = channel(history_size=2)
    await publish_many(broker, target, 5)
    history = broker.history_of(target)
    assert history is not None
    assert len(history) == 2


async def test_recover_within_history() -> None:
    """`since` within the history recovers every later message, in order."""
    broker = broker_for(Clock())
    target = channel(history_size=10)
    await publish_many(broker, target, 5)
    recovery = await broker.recover(target, 2, "e1")
    assert recovery.recovered
    assert [m.seq for m in recovery.messages] == [3, 4, 5]


async def test_recover_without_epoch_skips_the_epoch_check() -> None:
    """A client that never knew an epoch still recovers from history."""
    broker = broker_for(Clock())
    target = channel(history_size=10)
    await publish_many(broker, target, 3)
    recovery = await broker.recover(target, 1, None)
    assert recovery.recovered
    assert [m.seq for m in recovery.messages] == [2, 3]


async def test_recover_with_another_epoch_is_refused() -> None:
    """A client from an older seq history resyncs: not recovered, oldest retained seq."""
    broker = broker_for(Clock())
    target = channel(history_size=2)
    await publish_many(broker, target, 5)
    recovery = await broker.recover(target, 4, "an-older-epoch")
    assert not recovery.recovered
    assert recovery.messages == []
    assert recovery.oldest_seq == 4


async def test_recover_with_another_epoch_and_no_history() -> None:
    """Without history, a stale epoch gets oldest_seq LAST + 1."""
    broker = broker_for(Clock())
    target = channel()
    await publish_many(broker, target, 3)
    recovery = await broker.recover(target, 1, "old")
    assert (recovery.recovered, recovery.oldest_seq) == (False, 4)


async def test_recover_beyond_history_is_refused() -> None:
    """A gap older than the history is reported with the oldest retained seq."""
    broker = broker_for(Clock())
    target = channel(history_size=2)
    await publish_many(broker, target, 5)
    recovery = await broker.recover(target, 1, "e1")
    assert (recovery.recovered, recovery.oldest_seq) == (False, 4)


async def test_recover_respects_the_ttl() -> None:
    """Messages older than history_ttl are not recovered."""
    clock = Clock()
    broker = broker_for(clock)
    target = channel(history_size=10, history_ttl=5.0)
    await broker.publish(target, "old")
    clock.now = 10.0
    await broker.publish(target, "new")
    recovery = await broker.recover(target, 0, "e1")
    assert (recovery.recovered, recovery.oldest_seq) == (False, 2)
    recovery = await broker.recover(target, 1, "e1")
    assert recovery.recovered
    assert [m.seq for m in recovery.messages] == [2]


async def test_recover_up_to_date_client() -> None:
    """A client that saw the last seq is recovered with nothing to send."""
    broker = broker_for(Clock())
    target = channel(history_size=10)
    await publish_many(broker, target, 3)
    recovery = await broker.recover(target, 3, "e1")
    assert recovery.recovered
    assert recovery.messages == []


async def test_recover_without_history_is_refused() -> None:
    """A channel without history cannot fill a gap: oldest_seq is LAST + 1."""
    broker = broker_for(Clock())
    target = channel()
    await publish_many(broker, target, 3)
    recovery = await broker.recover(target, 1, "e1")
    assert (recovery.recovered, recovery.oldest_seq) == (False, 4)


async def test_idle_channel_keeps_its_history() -> None:
    """A channel whose last local subscriber left can still serve a reconnecting client."""
    broker = broker_for(Clock())
    target = channel(history_size=10)
    broker.channel_active(target)
    await publish_many(broker, target, 3)
    broker.channel_idle(target)
    recovery = await broker.recover(target, 1, "e1")
    assert [m.seq for m in recovery.messages] == [2, 3]


async def test_stop_forgets_history() -> None:
    """Stopping the broker frees its history."""
    broker = broker_for(Clock())
    target = channel(history_size=10)
    await publish_many(broker, target, 3)
    await broker.stop()
    assert broker.history_of(target) is None
