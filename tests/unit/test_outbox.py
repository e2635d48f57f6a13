"""The per-connection writer: joined batches, control first, the write budget, tail attribution."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from broadcaster.core.outbox import DEFAULT_WRITE_BUDGET, FramedOutbox, Outbox
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import Strategy
from tests.unit.support import Rig, data_seqs, make_message

PONG = orjson.dumps({"event": "pong"})


def two_channel_rig(budget: int = DEFAULT_WRITE_BUDGET) -> tuple[Rig, Rig]:
    """One connection subscribed to channels `a` then `b` of one hub."""
    a = Rig(ChannelPolicy(queue_size=16), name="a", budget=budget)
    return a, Rig(name="b", share=a)


# --- scheduling ---------------------------------------------------------------


def test_new_outbox_is_armed_and_idle() -> None:
    """A fresh connection has nothing to write and wakes the writer on its first message."""
    rig = Rig()
    assert rig.outbox.armed
    assert not rig.outbox.scheduled
    assert rig.conn.schedules == 0


def test_first_push_schedules_a_flush() -> None:
    """A message for an idle connection schedules exactly one flush."""
    rig = Rig()
    rig.publish(1)
    assert rig.conn.schedules == 1
    assert rig.outbox.scheduled


def test_control_schedules_once_with_data() -> None:
    """Replies and data of the same iteration share one scheduled flush."""
    rig = Rig()
    rig.outbox.send_control(PONG)
    rig.publish(3)
    assert rig.conn.schedules == 1


def test_flush_with_data_left_schedules_again() -> None:
    """Data left over by the budget is written in a later flush without a new push."""
    rig = Rig(budget=1)
    rig.publish(2)
    rig.flush()
    assert rig.conn.schedules == 2


def test_flush_of_everything_rearms() -> None:
    """After writing everything, the next message wakes the writer again."""
    rig = Rig()
    rig.publish(1)
    rig.flush()
    assert rig.outbox.armed
    assert not rig.outbox.scheduled
    rig.publish(1)
    assert rig.conn.schedules == 2


def test_blocked_outbox_is_not_armed() -> None:
    """While the transport holds bytes, pushes do not wake the writer."""
    rig = Rig()
    rig.publish(2)
    rig.conn.flush_holding(1)
    assert rig.outbox.blocked
    assert not rig.outbox.armed


def test_drained_transport_schedules_the_waiting_data() -> None:
    """Data that arrived while the transport was full is written once it drains."""
    rig = Rig()
    rig.publish(2)
    rig.conn.flush_holding(1)
    rig.publish(1)
    before = rig.conn.schedules
    rig.outbox.transport_drained()
    assert rig.conn.schedules == before + 1
    assert data_seqs(rig.flush()) == [3]


def test_drained_transport_without_data_rearms() -> None:
    """A drained transport with nothing to write leaves the writer armed for the next push."""
    rig = Rig()
    rig.publish(1)
    rig.conn.flush_holding(1)
    rig.outbox.transport_drained()
    assert rig.outbox.armed
    assert not rig.outbox.blocked
    assert not rig.outbox.scheduled


# --- batches --------------------------------------------------------------------


def test_control_frames_lead_the_batch() -> None:
    """Replies jump ahead of data queued before them."""
    rig = Rig()
    rig.publish(2)
    rig.outbox.send_control(PONG)
    assert [e["event"] for e in rig.flush()] == ["pong", "message", "message"]


def test_control_frames_keep_their_order() -> None:
    """Several control events are sent in the order they were produced."""
    rig = Rig()
    for i in range(3):
        rig.outbox.send_control(orjson.dumps({"event": "pong", "id": i}))
    assert [e["id"] for e in rig.flush()] == [0, 1, 2]


def test_control_is_sent_while_data_is_held_back() -> None:
    """A reply is written even while the transport still holds data."""
    rig = Rig()
    rig.publish(2)
    rig.conn.flush_holding(1)
    rig.publish(1)
    rig.outbox.send_control(PONG)
    assert [e["event"] for e in rig.flush()] == ["pong"]
    assert rig.sub.items


def test_control_goes_through_the_framer_and_data_does_not() -> None:
    """Control payloads are framed at send; data frames were framed once at publish."""
    framed: list[bytes] = []

    def framer(payload: bytes) -> bytes:
        framed.append(payload)
        return b"F" + payload

    outbox = Outbox(1, on_schedule=lambda _o: None, framer=framer)
    rig = Rig()
    rig.hub.unsubscribe(rig.outbox, "c")
    rig.hub.subscribe(outbox, rig.channel)
    outbox.send_control(PONG)
    message = rig.publish(1)[0]
    assert outbox.take_batch() == [b"F" + PONG, message.frame]
    assert framed == [PONG]


def test_framed_outbox_writes_its_transports_bytes_on_every_path() -> None:
    """A stream outbox takes each message's bytes from `frame_of`, control through the
    framer: alone (the one-message fast path) and in a batch (the general path)."""
    outbox = FramedOutbox(
        1,
        on_schedule=lambda _o: None,
        framer=lambda payload: b"C" + payload,
        frame_of=lambda message, channel: b"S%d@%b" % (message.seq, channel.name.encode()),
    )
    rig = Rig()
    rig.hub.unsubscribe(rig.outbox, "c")
    rig.hub.subscribe(outbox, rig.channel)
    rig.publish(1)
    assert outbox.take_batch() == [b"S1@c"]
    outbox.written(0)
    outbox.send_control(PONG)
    rig.publish(2)
    assert outbox.take_batch() == [b"C" + PONG, b"S2@c", b"S3@c"]


def test_batch_joins_all_subscriptions_in_subscription_order() -> None:
    """One write carries the data of every channel of the connection."""
    a, b = two_channel_rig()
    a.publish(2)
    b.publish(1)
    assert [(e["channel"], e["seq"]) for e in a.flush()] == [("a", 1), ("a", 2), ("b", 1)]


def test_batch_counts_deliveries() -> None:
    """Messages taken for the socket count as delivered, per subscription and per channel."""
    rig = Rig()
    rig.publish(3)
    rig.flush()
    assert rig.sub.delivered == 3
    assert rig.channel.counters.delivered == 3


def test_empty_batch_when_nothing_is_pending() -> None:
    """A flush with nothing to write writes nothing."""
    rig = Rig()
    assert rig.flush() == []


def test_has_data() -> None:
    """`has_data` tells whether any subscription still has queued messages."""
    rig = Rig()
    assert not rig.outbox.has_data()
    rig.publish(1)
    assert rig.outbox.has_data()


def test_outbox_depth_sums_its_subscriptions() -> None:
    """A connection's depth is everything held for it over all its subscriptions."""
    a, b = two_channel_rig()
    a.publish(2)
    b.publish(3)
    assert a.outbox.depth == 5


# --- the frames shared by subscribers that keep up ---------------------------------


def test_subscribers_that_keep_up_get_the_same_run_of_messages() -> None:
    """Several messages per batch: every connection gets all of them, in order, and its
    deliveries are counted (the frames are taken once for all of them)."""
    rig = Rig()
    other = rig.add_connection(2)
    rig.publish(3)
    assert data_seqs(rig.flush()) == [1, 2, 3]
    assert data_seqs(other.flush()) == [1, 2, 3]
    assert rig.outbox.take_batch() == []
    assert rig.sub.delivered == 3
    assert rig.channel.counters.delivered == 6


def test_a_shared_run_comes_joined_and_anything_else_does_not() -> None:
    """`joined` is the batch's frames joined when the batch is a shared run (the adapter
    writes it as it is), and None for a batch the adapter must join itself."""
    rig = Rig()
    rig.publish(3)
    batch = rig.outbox.take_batch()
    assert rig.outbox.joined == b"".join(batch)
    rig.outbox.written(0)
    rig.outbox.send_control(PONG)
    rig.publish(2)
    batch = rig.outbox.take_batch()
    assert len(batch) == 3
    assert rig.outbox.joined is None


def test_a_later_subscriber_gets_only_its_own_run() -> None:
    """A connection that subscribed mid-burst holds a shorter run: it is not given
    the frames taken for the longer one."""
    rig = Rig()
    rig.publish(2)
    late = rig.add_connection(2)
    rig.publish(2)
    assert data_seqs(rig.flush()) == [1, 2, 3, 4]
    assert data_seqs(late.flush()) == [3, 4]


def test_a_queue_with_a_gap_is_not_given_the_shared_run() -> None:
    """A queue with the same first message and length as another's, but with a message
    dropped in between (drop-newest on a full queue), gets its own messages."""
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_NEWEST, queue_size=8))
    frame_size = len(make_message("c", 3).frame)
    behind = rig.add_connection(2, budget=6 * frame_size)
    rig.publish(2)
    rig.flush()
    behind.flush()
    rig.publish(6)  # 3..8
    rig.flush()
    rig.publish(2)  # 9, 10: `behind` holds 3..10, full
    rig.publish(1)  # 11: dropped for `behind`
    assert data_seqs(rig.flush()) == [9, 10, 11]
    # The budget leaves 9 and 10 queued; the transport keeps the last frame, so
    # the resume goes out alone, then the transport drains: no control pending.
    assert data_seqs(behind.flush(unsent=1)) == [3, 4, 5, 6, 7, 8]
    assert [e["event"] for e in behind.flush()] == ["flow.resume"]
    behind.outbox.transport_drained()
    rig.publish(1)  # 12
    assert data_seqs(behind.flush()) == [9, 10, 12]
    assert data_seqs(rig.flush()) == [12]


def test_recovered_messages_are_not_taken_as_the_shared_run() -> None:
    """A preloaded queue (recovered messages) that starts with the same message as
    another's run, and is as long, is taken as it is."""
    rig = Rig()
    sent = rig.publish(3)
    assert data_seqs(rig.flush()) == [1, 2, 3]
    late = rig.add_connection(2)
    late_sub = late.outbox.subscriptions["c"]
    third = make_message("c", 3, pad=5)  # another object for seq 3 (e.g. a snapshot)
    late_sub.preload([sent[0], sent[1], third], 0.0)
    events = late.flush()
    assert data_seqs(events) == [1, 2, 3]
    assert events[2]["data"]["pad"] == "xxxxx"


# --- the write budget ---------------------------------------------------------------


def test_budget_stops_after_the_frame_that_exhausts_it() -> None:
    """A batch takes data frames until their bytes reach the budget, then stops."""
    rig = Rig()
    frame_size = len(rig.message().frame)
    rig.seq = 0
    rig.outbox.budget = 2 * frame_size + 1
    rig.publish(5)
    assert data_seqs(rig.flush()) == [1, 2, 3]
    assert data_seqs(rig.flush()) == [4, 5]


def test_budget_exactly_reached_stops_the_batch() -> None:
    """A budget of exactly two frames yields two frames."""
    rig = Rig()
    frame_size = len(rig.message().frame)
    rig.seq = 0
    rig.outbox.budget = 2 * frame_size
    rig.publish(5)
    assert data_seqs(rig.flush()) == [1, 2]


def test_frame_larger_than_the_budget_is_still_written() -> None:
    """A single message bigger than the budget is not stuck forever."""
    rig = Rig(budget=10)
    rig.publish(1, pad=1000)
    assert data_seqs(rig.flush()) == [1]


def test_budget_is_shared_by_the_subscriptions_of_a_batch() -> None:
    """When the first channel uses up the budget, the next one waits for the next batch."""
    a, b = two_channel_rig(budget=1)
    a.publish(1)
    b.publish(1)
    assert [e["channel"] for e in a.flush()] == ["a"]
    assert [e["channel"] for e in a.flush()] == ["b"]


def test_control_frames_do_not_use_the_budget() -> None:
    """Replies never push data out of a batch."""
    rig = Rig()
    frame_size = len(rig.message().frame)
    rig.seq = 0
    rig.outbox.budget = frame_size
    rig.outbox.send_control(orjson.dumps({"event": "pong", "pad": "x" * 1000}))
    rig.publish(1)
    assert [e["event"] for e in rig.flush()] == ["pong", "message"]


@settings(max_examples=200, deadline=None)
@given(
    pads=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=20),
    budget=st.integers(min_value=1, max_value=3000),
    queue_size=st.integers(min_value=1, max_value=8),
    preload=st.booleans(),
)
def test_each_batch_takes_frames_until_the_budget_is_reached(
    pads: list[int], budget: int, queue_size: int, preload: bool
) -> None:
    """Whatever the frame sizes: a batch takes frames in order until their bytes reach
    the budget or `queue_size` frames are taken, and every message arrives once.
    Recovered messages (`preload`) may exceed the queue size: then the size binds."""
    rig = Rig(ChannelPolicy(queue_size=queue_size if preload else 64), budget=budget)
    messages = [rig.message(pad=pad) for pad in pads]
    if preload:
        rig.sub.preload(messages, 0.0)
    else:
        for message in messages:
            rig.channel.fan_out(message)
    sizes = {message.seq: len(message.frame) for message in messages}
    seen: list[int] = []
    for _ in range(len(pads)):
        queued = rig.queued_seqs()
        if not queued:
            break
        taken = data_seqs(rig.flush())
        expected: list[int] = []
        used = 0
        for seq in queued[: rig.sub.queue_size]:
            if expected and used >= budget:
                break
            expected.append(seq)
            used += sizes[seq]
        assert taken == expected
        seen += taken
    assert seen == sorted(sizes)
    assert rig.sub.delivered == len(seen)


def test_default_budget_is_tens_of_kilobytes() -> None:
    """The per-batch data budget keeps the server's write buffer small (tens of KB)."""
    assert 16 * 1024 <= DEFAULT_WRITE_BUDGET <= 128 * 1024


# --- tail attribution ---------------------------------------------------------------


def test_unsent_tail_counts_into_depth() -> None:
    """Messages whose bytes the transport still holds count in the subscription's depth."""
    rig = Rig()
    rig.publish(5)
    rig.conn.flush_holding(2)
    assert rig.sub.in_transport == 2
    assert rig.sub.depth == 2


def test_partly_sent_frame_counts_as_held() -> None:
    """A message of which even one byte is unsent is still held by the server."""
    rig = Rig()
    rig.publish(3)
    rig.conn.take()
    rig.outbox.written(1)
    assert rig.sub.in_transport == 1


def test_unsent_tail_is_attributed_across_subscriptions() -> None:
    """The unsent tail is charged, message by message, to the channels it came from."""
    a, b = two_channel_rig()
    a.publish(3)
    b.publish(2)
    a.conn.flush_holding(3)  # b's two messages and a's last one
    assert (a.sub.in_transport, b.sub.in_transport) == (1, 2)


def test_unsent_control_bytes_are_not_charged_to_data() -> None:
    """Unsent bytes beyond the data frames (control events) add nothing to any depth."""
    rig = Rig()
    rig.publish(2)
    rig.outbox.send_control(PONG)
    rig.conn.take()
    rig.outbox.written(sum(len(f) for f in rig.conn.last_frames))
    assert rig.sub.in_transport == 2


def test_fully_sent_batch_leaves_nothing_in_transport() -> None:
    """A transport that took everything holds nothing against the client."""
    rig = Rig()
    rig.publish(3)
    rig.flush(0)
    assert rig.sub.depth == 0
    assert not rig.outbox.blocked


def test_no_data_written_while_blocked() -> None:
    """Data waits while the transport still holds bytes (hot path rule 4)."""
    rig = Rig()
    rig.publish(2)
    rig.conn.flush_holding(1)
    rig.publish(2)
    rig.outbox.schedule()
    assert rig.flush() == []
    assert rig.sub.depth == 3


def test_transport_drained_clears_the_tail() -> None:
    """Once the transport's buffer is empty, nothing is held in it any more."""
    rig = Rig()
    rig.publish(3)
    rig.conn.flush_holding(3)
    rig.outbox.transport_drained()
    assert rig.sub.in_transport == 0
    assert rig.sub.depth == 0


def test_tail_keeps_a_subscriber_paused_until_drained() -> None:
    """The resume waits until the bytes really left: the transport's tail counts."""
    rig = Rig(ChannelPolicy(queue_size=4, low_watermark=1))
    rig.publish(4)
    rig.conn.flush_holding(3)  # depth 3 > low
    assert rig.sub.flow.paused
    rig.outbox.transport_drained()
    assert not rig.sub.flow.paused
    assert [e["event"] for e in rig.flush()] == ["flow.resume"]


def test_depth_with_the_transport_tail_stays_within_the_queue_size() -> None:
    """PROTOCOL.md: depth (queued + not yet in the kernel) is bounded by the queue size."""
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_OLDEST, queue_size=4))
    rig.publish(4)
    rig.conn.flush_holding(4)  # the client stopped reading: all four sit in the transport
    rig.publish(4)
    assert rig.sub.depth <= 4


# --- closing ------------------------------------------------------------------


def test_close_returns_the_subscriptions_and_stops_writing() -> None:
    """A closed outbox hands back its subscriptions and writes nothing more."""
    rig = Rig()
    rig.outbox.send_control(PONG)
    subs = rig.outbox.close()
    assert subs == [rig.sub]
    assert rig.outbox.subscriptions == {}
    assert rig.outbox.take_batch() == []


def test_closed_outbox_ignores_control_and_transport_events() -> None:
    """After close, replies are dropped and late transport callbacks change nothing."""
    rig = Rig()
    rig.publish(2)
    rig.conn.take()
    rig.outbox.close()
    rig.outbox.send_control(PONG)
    rig.outbox.written(100)
    rig.outbox.transport_drained()
    assert rig.outbox.control == []
    assert not rig.outbox.blocked
    assert rig.conn.schedules == 1


# --- conflation and the writer ----------------------------------------------------------


def test_conflate_push_between_take_and_written_is_not_duplicated() -> None:
    """A key updated between a batch being taken and written is delivered once, newest."""
    rig = Rig(
        ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="key", queue_size=8),
        writable=True,
    )
    rig.publish_keys("A", "B")
    rig.conn.take()  # queue now empty, write not yet reported
    rig.publish_keys("A", "A")  # seqs 3 and 4, not conflated: no pressure
    rig.outbox.written(1)  # now the transport kept bytes: pressure from here on
    rig.publish_keys("A")  # seq 5 replaces 4 in its slot
    seqs = data_seqs(rig.drain())
    assert seqs == [3, 5]
    assert rig.sub.delivered + rig.sub.dropped == 5
