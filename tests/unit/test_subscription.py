"""A subscription's queue: the fast path, each strategy on a full queue, preload and discard."""

from __future__ import annotations

import pytest

from broadcaster.core.message import Message
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import DropReason, Strategy
from tests.unit.support import Rig, data_seqs, flow_events, make_message


def conflate_rig(
    queue_size: int = 8, fallback: Strategy = Strategy.DROP_OLDEST, *, pressure: bool = True
) -> Rig:
    # Without pressure the connection is writable (the adapter can write at once).
    """A rig whose channel conflates on `data.key`; by default its transport is backed up.

    Conflation happens only under pressure (the transport holds unsent bytes):
    `squeeze` puts the connection there, `rig.drain()` lets it read everything.
    """
    policy = ChannelPolicy(
        strategy=Strategy.CONFLATE,
        conflate_key="key",
        conflate_fallback=fallback,
        queue_size=queue_size,
    )
    rig = Rig(policy, writable=not pressure)
    if pressure:
        squeeze(rig)
    return rig


def squeeze(rig: Rig) -> None:
    """The transport kept bytes of the last write: the connection is under pressure."""
    rig.conn.take()
    rig.outbox.written(1)


# --- the fast path ----------------------------------------------------------


@pytest.mark.parametrize("strategy", [Strategy.DROP_OLDEST, Strategy.DROP_NEWEST, Strategy.BLOCK])
def test_queue_keeps_everything_until_full(strategy: Strategy) -> None:
    """A subscriber with room loses nothing, whatever the strategy."""
    rig = Rig(ChannelPolicy(strategy=strategy, queue_size=4))
    rig.publish(4)
    assert rig.queued_seqs() == [1, 2, 3, 4]
    assert rig.sub.dropped == 0


def test_conflate_queue_keeps_distinct_keys_until_full() -> None:
    """A conflate subscriber with room keeps one slot per distinct key."""
    rig = conflate_rig(queue_size=4)
    rig.publish_keys("A", "B", "C", "D")
    assert rig.queued_seqs() == [1, 2, 3, 4]
    assert rig.sub.dropped == 0


def test_depth_is_queued_plus_in_transport() -> None:
    """Depth counts messages still in the transport as well as those queued."""
    rig = Rig(ChannelPolicy(queue_size=8))
    rig.publish(5)
    rig.conn.flush_holding(2)
    rig.publish(3)
    assert rig.sub.depth == 5


def test_messages_in_the_transport_bring_the_pause_forward() -> None:
    """The fast path's one comparison counts the transport's tail: with two
    messages held there, the third queued message reaches a watermark of 5."""
    rig = Rig(ChannelPolicy(queue_size=8, high_watermark=5, low_watermark=1))
    rig.publish(4)
    rig.conn.flush_holding(2)
    rig.publish(2)
    assert not rig.sub.flow.paused
    rig.publish(1)
    assert rig.sub.flow.paused
    assert rig.sub.depth == 5


def test_a_resumed_subscriber_pauses_again_at_the_watermark() -> None:
    """After a resume the watermark is armed again, counting what the transport
    still holds: resumed at depth 1 (in the transport), two more messages pause."""
    rig = Rig(ChannelPolicy(queue_size=8, high_watermark=3, low_watermark=1))
    rig.publish(3)
    events = rig.conn.flush_holding(1)
    assert not rig.sub.flow.paused
    assert rig.sub.depth == 1
    rig.publish(1)
    assert not rig.sub.flow.paused
    rig.publish(1)
    assert rig.sub.flow.paused
    events += rig.drain()
    assert [e["event"] for e in flow_events(events)] == [
        "flow.pause",
        "flow.resume",
        "flow.pause",
        "flow.resume",
    ]


def test_repr_shows_channel_connection_depth_and_pause() -> None:
    """Logs show which subscription is how far behind."""
    rig = Rig(ChannelPolicy(queue_size=2))
    rig.publish(2)
    assert repr(rig.sub) == "Subscription(channel='c', outbox=1, depth=2, paused=True)"


# --- each strategy on a full queue -------------------------------------------


def test_drop_oldest_full_queue_keeps_the_newest() -> None:
    """On a full drop-oldest queue the oldest message makes room for the new one."""
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_OLDEST, queue_size=4))
    rig.publish(6)
    assert rig.queued_seqs() == [3, 4, 5, 6]
    assert rig.sub.dropped == 2


def test_drop_newest_full_queue_keeps_the_head() -> None:
    """On a full drop-newest queue new messages are discarded."""
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_NEWEST, queue_size=4))
    rig.publish(6)
    assert rig.queued_seqs() == [1, 2, 3, 4]
    assert rig.sub.dropped == 2


def test_block_full_queue_keeps_everything() -> None:
    """A block queue pushed beyond its size (a source that cannot wait) loses nothing."""
    rig = Rig(ChannelPolicy(strategy=Strategy.BLOCK, queue_size=4))
    rig.publish(6)
    assert rig.queued_seqs() == [1, 2, 3, 4, 5, 6]
    assert rig.sub.dropped == 0


@pytest.mark.parametrize(
    ("strategy", "reason"),
    [(Strategy.DROP_OLDEST, DropReason.QUEUE_FULL), (Strategy.DROP_NEWEST, DropReason.QUEUE_FULL)],
)
def test_full_queue_drops_are_counted_on_the_channel(
    strategy: Strategy, reason: DropReason
) -> None:
    """`messages_dropped_total{reason="queue_full"}` counts every drop of a full queue."""
    rig = Rig(ChannelPolicy(strategy=strategy, queue_size=2))
    rig.publish(5)
    assert rig.channel.counters.dropped[reason] == 3
    assert rig.channel.counters.dropped_total == 3


def test_conflate_replacements_count_as_conflated_drops() -> None:
    """Each replaced message counts as dropped with reason `conflated`."""
    rig = conflate_rig()
    rig.publish_keys("A", "A", "A")
    assert rig.sub.dropped == 2
    assert rig.channel.counters.dropped[DropReason.CONFLATED] == 2
    assert rig.channel.counters.dropped[DropReason.QUEUE_FULL] == 0


def test_conflate_delivers_the_newer_seq_in_the_first_slot() -> None:
    """A key that updates often keeps its place: first-seen order, newest data."""
    rig = conflate_rig()
    rig.publish_keys("A", "B", "A", "C", "A")
    events = rig.drain()
    assert [(e["data"]["key"], e["seq"]) for e in events] == [("A", 5), ("B", 2), ("C", 4)]


def test_conflate_without_backlog_does_not_conflate() -> None:
    """A subscriber whose socket takes bytes gets every message, bursts of one key included."""
    rig = conflate_rig(pressure=False)
    rig.publish_keys("A", "A", "A")
    assert data_seqs(rig.flush()) == [1, 2, 3]
    rig.publish_keys("A")
    assert data_seqs(rig.flush()) == [4]
    assert rig.sub.dropped == 0


def test_conflate_starts_under_pressure_and_stops_when_the_transport_drains() -> None:
    """Conflation switches on when the transport backs up and off when it has drained."""
    rig = conflate_rig(pressure=False)
    squeeze(rig)
    rig.publish_keys("A", "A")
    assert data_seqs(rig.drain()) == [2]
    rig.publish_keys("A", "A")
    assert data_seqs(rig.flush()) == [3, 4]


def test_conflate_reindexes_after_the_queue_emptied() -> None:
    """Conflation works again on a new backlog after the queue was emptied."""
    rig = conflate_rig()
    rig.publish_keys("A", "A")
    rig.drain()
    squeeze(rig)
    rig.publish_keys("B", "B")
    assert data_seqs(rig.drain()) == [4]


def test_conflate_keyless_messages_follow_drop_oldest_by_default() -> None:
    """Messages without the key field are evicted oldest-first on a full conflate queue."""
    rig = conflate_rig(queue_size=2)
    rig.publish(4)
    assert rig.queued_seqs() == [3, 4]
    assert rig.channel.counters.dropped[DropReason.QUEUE_FULL] == 2


def test_conflate_keyless_messages_follow_drop_newest_when_configured() -> None:
    """With conflate_fallback drop-newest, keyless arrivals on a full queue are discarded."""
    rig = conflate_rig(queue_size=2, fallback=Strategy.DROP_NEWEST)
    rig.publish(4)
    assert rig.queued_seqs() == [1, 2]


def test_conflate_queue_never_exceeds_its_size_with_many_keys() -> None:
    """A conflate queue holds at most queue_size slots however many keys arrive."""
    rig = conflate_rig(queue_size=3)
    rig.publish_keys("A", "B", "C", "D", "E", "A")
    assert len(rig.sub.items) == 3
    assert rig.queued_seqs() == [4, 5, 6]


# --- preload (recovery and snapshots) ----------------------------------------


def test_preload_queues_recovered_messages_ahead_of_live_ones() -> None:
    """Recovered messages are delivered first, then the live stream, in seq order."""
    rig = Rig(ChannelPolicy(queue_size=8))
    rig.sub.preload([make_message("c", 1), make_message("c", 2)], 0.0)
    rig.seq = 2
    rig.publish(1)
    assert data_seqs(rig.flush()) == [1, 2, 3]


def test_preload_is_exempt_from_the_strategy() -> None:
    """Recovered messages are what the client asked for: none is dropped, even beyond the size."""
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_NEWEST, queue_size=2))
    rig.sub.preload([make_message("c", seq) for seq in range(1, 6)], 0.0)
    assert rig.queued_seqs() == [1, 2, 3, 4, 5]
    assert rig.sub.dropped == 0


def test_preload_reaching_the_high_watermark_pauses() -> None:
    """The watermarks see the depth a preload creates."""
    rig = Rig(ChannelPolicy(queue_size=4))
    rig.sub.preload([make_message("c", seq) for seq in range(1, 5)], 0.0)
    assert flow_events(rig.flush())[0]["event"] == "flow.pause"


def test_preload_of_nothing_schedules_nothing() -> None:
    """An empty recovery does not wake the writer."""
    rig = Rig()
    rig.sub.preload([], 0.0)
    assert rig.conn.schedules == 0


def test_preload_filling_a_block_queue_closes_the_channel() -> None:
    """A block channel has no room while a preloaded queue is full."""
    rig = Rig(ChannelPolicy(strategy=Strategy.BLOCK, queue_size=2))
    rig.sub.preload([make_message("c", 1), make_message("c", 2)], 0.0)
    assert not rig.channel.has_room()


def test_conflate_preload_then_live_keeps_per_key_order() -> None:
    """After a recovery with repeated keys, a live update never arrives before an older seq."""
    rig = conflate_rig()
    recovered = [make_message("c", seq, key=key) for seq, key in ((1, "A"), (2, "B"), (3, "A"))]
    rig.sub.preload(recovered, 0.0)
    rig.seq = 3
    rig.publish_keys("A")
    events = rig.drain()
    seqs_of_a = [e["seq"] for e in events if e["data"]["key"] == "A"]
    assert seqs_of_a == sorted(seqs_of_a)
    assert len(set(seqs_of_a)) == len(seqs_of_a)


def test_conflate_never_conflates_preloaded_messages() -> None:
    """Recovered or snapshot messages are neither dropped nor conflated (`preload` docstring)."""
    rig = conflate_rig()
    rig.sub.preload([make_message("c", 1, key="A")], 0.0)
    rig.seq = 1
    rig.publish_keys("A")
    assert data_seqs(rig.drain()) == [1, 2]
    assert rig.sub.dropped == 0


# --- in-band events (a stream reset) -----------------------------------------


def reset_notice() -> Message:
    """What a broker queues when Redis lost the channel's stream: seq starts again from 1."""
    payload = b'{"event":"subscribed","channel":"c","seq":0,"epoch":"e2","reset":true}'
    return Message(channel="c", seq=0, payload=payload, frame=payload, created=0.0)


def test_a_full_drop_oldest_queue_evicts_data_around_a_notice_never_the_notice() -> None:
    """Without the notice the client takes the new epoch's seq 1, 2... for duplicates."""
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_OLDEST, queue_size=3))
    rig.publish(2)
    rig.sub.notice(reset_notice())
    rig.seq = 0
    rig.publish(4)  # seq 1..4 of the new epoch
    events = [e for e in rig.drain() if e["event"] in ("message", "subscribed")]
    assert [(e["event"], e["seq"]) for e in events] == [
        ("subscribed", 0),
        ("message", 3),
        ("message", 4),
    ]
    assert rig.sub.dropped == 4


def test_a_queue_holding_only_notices_drops_the_new_message() -> None:
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_OLDEST, queue_size=1))
    rig.sub.notice(reset_notice())
    rig.publish(1)
    assert [e["event"] for e in rig.drain() if e["event"] != "flow.resume"] == [
        "flow.pause",
        "subscribed",
    ]
    assert rig.sub.dropped == 1


def test_conflation_never_crosses_a_notice() -> None:
    """A key queued before the reset is not replaced by the same key of the new epoch (which
    would deliver new-epoch data before the notice); after it, conflation goes on."""
    rig = conflate_rig()
    rig.publish_keys("A", "B", "A")
    rig.sub.notice(reset_notice())
    rig.seq = 0
    rig.publish_keys("A", "A", "B")
    events = [e for e in rig.drain() if e["event"] in ("message", "subscribed")]
    assert [(e["event"], e["seq"], e.get("data", {}).get("key")) for e in events] == [
        ("message", 3, "A"),
        ("message", 2, "B"),
        ("subscribed", 0, None),
        ("message", 2, "A"),
        ("message", 3, "B"),
    ]


# --- discard ----------------------------------------------------------------


def test_discard_reports_and_counts_what_was_lost() -> None:
    """Messages still queued when a subscription ends count as dropped (`disconnected`)."""
    rig = Rig(ChannelPolicy(queue_size=8))
    rig.publish(3)
    assert rig.sub.discard() == 3
    assert rig.sub.depth == 0
    assert rig.sub.dropped == 3
    assert rig.channel.counters.dropped[DropReason.DISCONNECTED] == 3


def test_discard_forgets_messages_in_the_transport() -> None:
    """A discarded subscription holds nothing, not even messages attributed to the transport."""
    rig = Rig(ChannelPolicy(queue_size=8))
    rig.publish(3)
    rig.conn.flush_holding(2)
    rig.sub.discard()
    assert rig.sub.depth == 0


def test_discard_of_an_empty_queue_counts_nothing() -> None:
    """Ending an idle subscription drops nothing."""
    rig = Rig()
    assert rig.sub.discard() == 0
    assert rig.channel.counters.dropped_total == 0


def test_discard_of_a_full_block_queue_gives_the_room_back() -> None:
    """A full subscriber leaving a block channel unblocks its publishers."""
    rig = Rig(ChannelPolicy(strategy=Strategy.BLOCK, queue_size=2))
    rig.publish(2)
    assert not rig.channel.has_room()
    rig.sub.discard()
    assert rig.channel.has_room()


# --- waking the writer ------------------------------------------------------


def test_pushes_schedule_one_flush() -> None:
    """Many messages in one loop iteration cost one write: the outbox is scheduled once."""
    rig = Rig()
    rig.publish(10)
    assert rig.conn.schedules == 1


def test_push_while_transport_blocked_does_not_schedule() -> None:
    """Data waits for the transport to drain instead of waking the writer."""
    rig = Rig()
    rig.publish(1)
    rig.conn.flush_holding(1)
    schedules = rig.conn.schedules
    rig.publish(1)
    assert rig.conn.schedules == schedules
