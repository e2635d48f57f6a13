"""The last-value cache of snapshot channels."""

from __future__ import annotations

import pytest

from broadcaster.brokers.base import MessageFactory
from broadcaster.core import channel as channel_module
from broadcaster.core.channel import Channel
from broadcaster.core.message import Message
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import Strategy

SNAPSHOT = ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="symbol", snapshot=True)


def tick(ch: Channel, seq: int, symbol: str | None) -> Message:
    data = {"symbol": symbol} if symbol is not None else {"other": 1}
    msg = Message(
        channel=ch.name,
        seq=seq,
        payload=b"{}",
        frame=b"{}",
        created=0.0,
        key=ch.conflation_key(data),
    )
    ch.fan_out(msg)
    return msg


def test_snapshot_holds_the_newest_message_per_key_in_seq_order() -> None:
    """A new subscriber's snapshot is one message per key, the newest, ordered by seq."""
    ch = Channel("t", SNAPSHOT, epoch="e")
    tick(ch, 1, "A")
    tick(ch, 2, "B")
    tick(ch, 3, "A")
    tick(ch, 4, None)
    assert [(m.key, m.seq) for m in ch.snapshot()] == [("B", 2), ("A", 3)]


def test_channels_without_snapshot_keep_no_cache() -> None:
    """Only `snapshot = true` channels pay for the cache."""
    ch = Channel("t", ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="symbol"), epoch="e")
    tick(ch, 1, "A")
    assert ch.latest is None
    assert ch.snapshot() == []


def test_cache_forgets_the_least_recently_updated_key_beyond_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ever-new keys cannot grow the cache past SNAPSHOT_MAX_KEYS."""
    monkeypatch.setattr(channel_module, "SNAPSHOT_MAX_KEYS", 2)
    ch = Channel("t", SNAPSHOT, epoch="e")
    tick(ch, 1, "A")
    tick(ch, 2, "B")
    tick(ch, 3, "A")
    tick(ch, 4, "C")
    assert sorted(str(m.key) for m in ch.snapshot()) == ["A", "C"]


def test_snapshot_variant_is_flagged_and_built_once() -> None:
    """The snapshot copy carries `"snapshot": true` and is shared by every new subscriber."""
    factory = MessageFactory(lambda payload: b"F" + payload, lambda: 1.0)
    ch = Channel("t", SNAPSHOT, epoch="e")
    original = factory.build(ch, 7, {"symbol": "A", "p": 1})
    variant = factory.snapshot(original)
    assert variant is factory.snapshot(original)
    assert variant.payload == (
        b'{"event":"message","channel":"t","seq":7,"data":{"symbol":"A","p":1},"snapshot":true}'
    )
    assert variant.frame == b"F" + variant.payload
    assert (variant.seq, variant.key) == (7, "A")
