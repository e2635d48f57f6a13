"""Watermark flow control: pause at high, resume at low, alternating, starting with a pause."""

from __future__ import annotations

import pytest

from broadcaster.core.flow_control import FlowControl
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import Strategy
from tests.unit.support import Rig, flow_events


class Calls:
    """Records the callbacks FlowControl fires, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []

    def pause(self, depth: int) -> None:
        self.log.append(("pause", depth))

    def resume(self, depth: int) -> None:
        self.log.append(("resume", depth))


def flow(high: int = 8, low: int = 4) -> tuple[FlowControl, Calls]:
    calls = Calls()
    return FlowControl(high=high, low=low, on_pause=calls.pause, on_resume=calls.resume), calls


# --- FlowControl on its own -------------------------------------------------


@pytest.mark.parametrize(("high", "low"), [(4, 4), (4, 5), (4, -1), (0, 0)])
def test_impossible_watermarks_are_refused(high: int, low: int) -> None:
    """A flow state with low >= high or a negative low cannot be built."""
    with pytest.raises(ValueError, match="watermarks"):
        flow(high, low)


def test_no_pause_below_high() -> None:
    """Depth below the high watermark does not pause."""
    fc, calls = flow()
    fc.depth_rose(7)
    assert calls.log == []
    assert not fc.paused


def test_pause_exactly_at_high() -> None:
    """Reaching the high watermark pauses, reporting the depth."""
    fc, calls = flow()
    fc.depth_rose(8)
    assert calls.log == [("pause", 8)]
    assert fc.paused


def test_pause_fires_once_per_crossing() -> None:
    """Staying above the high watermark does not repeat the pause."""
    fc, calls = flow()
    fc.depth_rose(8)
    fc.depth_rose(9)
    fc.depth_rose(12)
    assert calls.log == [("pause", 8)]


def test_no_resume_above_low() -> None:
    """A paused subscriber is not resumed before it falls to the low watermark."""
    fc, calls = flow()
    fc.depth_rose(8)
    fc.depth_fell(5)
    assert calls.log == [("pause", 8)]
    assert fc.paused


def test_resume_exactly_at_low() -> None:
    """Falling to the low watermark resumes, reporting the depth."""
    fc, calls = flow()
    fc.depth_rose(8)
    fc.depth_fell(4)
    assert calls.log == [("pause", 8), ("resume", 4)]
    assert not fc.paused


def test_resume_fires_once_per_crossing() -> None:
    """Staying below the low watermark does not repeat the resume."""
    fc, calls = flow()
    fc.depth_rose(8)
    fc.depth_fell(4)
    fc.depth_fell(0)
    assert calls.log == [("pause", 8), ("resume", 4)]


def test_never_resumes_before_a_pause() -> None:
    """The alternation starts with a pause: a fall without a pause fires nothing."""
    fc, calls = flow()
    fc.depth_fell(0)
    assert calls.log == []


def test_pauses_again_on_the_next_crossing() -> None:
    """After a resume, reaching the high watermark again pauses again."""
    fc, calls = flow()
    fc.depth_rose(8)
    fc.depth_fell(4)
    fc.depth_rose(8)
    assert calls.log == [("pause", 8), ("resume", 4), ("pause", 8)]


def test_thresholds_follow_the_state() -> None:
    """`pause_at` / `resume_at` are what the hot path compares against."""
    fc, _ = flow()
    assert (fc.pause_at, fc.resume_at) == (8, -1)
    fc.depth_rose(8)
    assert fc.resume_at == 4
    assert fc.pause_at > 10**9
    fc.depth_fell(4)
    assert (fc.pause_at, fc.resume_at) == (8, -1)


# --- through a subscription --------------------------------------------------


def test_pause_event_reports_reason_depth_and_limit() -> None:
    """`flow.pause` tells the client why, how deep it is and the limit it hit."""
    rig = Rig(ChannelPolicy(queue_size=8, high_watermark=6, low_watermark=2))
    rig.publish(6)
    assert flow_events(rig.flush()) == [
        {"event": "flow.pause", "reason": "buffer full", "channel": "c", "depth": 6, "limit": 6}
    ]


def test_no_pause_one_below_the_high_watermark() -> None:
    """A subscriber one message short of the high watermark is not paused."""
    rig = Rig(ChannelPolicy(queue_size=8, high_watermark=6, low_watermark=2))
    rig.publish(5)
    assert flow_events(rig.flush()) == []


def test_high_watermark_defaults_to_the_queue_size() -> None:
    """Without explicit watermarks the pause comes when the queue is full."""
    rig = Rig(ChannelPolicy(queue_size=4))
    rig.publish(3)
    assert not rig.sub.flow.paused
    rig.publish(1)
    assert rig.sub.flow.paused


def strategy_policy(strategy: Strategy) -> ChannelPolicy:
    """A 4-message queue pausing at 3 and resuming at 1, conflating on `data.key`."""
    return ChannelPolicy(
        strategy=strategy,
        queue_size=4,
        high_watermark=3,
        low_watermark=1,
        conflate_key="key" if strategy is Strategy.CONFLATE else None,
    )


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_pauses_at_high(strategy: Strategy) -> None:
    """Flow control is the same on every strategy: the message reaching high pauses."""
    rig = Rig(strategy_policy(strategy))
    rig.publish_keys("A", "B")
    assert not rig.sub.flow.paused
    rig.publish_keys("C")
    assert [e["event"] for e in flow_events(rig.flush())] == ["flow.pause"]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_resumes_at_low(strategy: Strategy) -> None:
    """Flow control is the same on every strategy: reading down to low resumes."""
    rig = Rig(strategy_policy(strategy), budget=1)
    rig.publish_keys("A", "B", "C")
    rig.flush()  # pause + A: depth 2
    assert rig.sub.flow.paused
    events = rig.flush()  # B: depth 1
    assert [e["event"] for e in flow_events(events)] == []
    assert [e["event"] for e in flow_events(rig.flush())] == ["flow.resume"]


def test_pause_counted_on_the_channel() -> None:
    """`flow_pauses_total` counts every pause."""
    rig = Rig(ChannelPolicy(queue_size=4))
    rig.publish(4)
    assert rig.channel.counters.pauses == 1


def test_resume_when_depth_falls_to_low() -> None:
    """A paused client that reads down to the low watermark gets `flow.resume`."""
    rig = Rig(ChannelPolicy(queue_size=4, low_watermark=1))
    rig.publish(4)
    rig.flush()
    assert flow_events(rig.flush()) == [{"event": "flow.resume", "channel": "c", "dropped": 0}]


def test_no_resume_while_depth_stays_above_low() -> None:
    """Reading only part of the backlog does not resume the client."""
    rig = Rig(ChannelPolicy(queue_size=4, low_watermark=1), budget=1)
    rig.publish(4)
    events = rig.flush()  # pause + one message: depth 3
    events += rig.flush()  # one more: depth 2, still above low
    assert [e["event"] for e in flow_events(events)] == ["flow.pause"]


def test_resume_reports_the_drops_since_the_pause() -> None:
    """`flow.resume.dropped` says how many messages were lost while paused."""
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_OLDEST, queue_size=4))
    rig.publish(4 + 17)
    rig.flush()
    assert flow_events(rig.flush()) == [{"event": "flow.resume", "channel": "c", "dropped": 17}]


def test_resume_drop_count_starts_afresh_for_each_pause() -> None:
    """A second pause/resume pair reports only its own drops."""
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_NEWEST, queue_size=2))
    rig.publish(5)  # pause, 3 dropped
    rig.drain()
    rig.publish(3)  # pause, 1 dropped
    resumes = [e for e in flow_events(rig.drain()) if e["event"] == "flow.resume"]
    assert resumes == [{"event": "flow.resume", "channel": "c", "dropped": 1}]


def test_block_resume_reports_zero_dropped() -> None:
    """Flow control applies on block channels too, and they never drop."""
    rig = Rig(ChannelPolicy(strategy=Strategy.BLOCK, queue_size=2))
    rig.publish(3)
    assert [(e["event"], e.get("dropped")) for e in flow_events(rig.drain())] == [
        ("flow.pause", None),
        ("flow.resume", 0),
    ]


def test_conflate_resume_counts_replaced_messages() -> None:
    """Each message conflated away while paused counts in `flow.resume.dropped`."""
    policy = ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="key", queue_size=2)
    rig = Rig(policy)
    rig.publish_keys("A", "B", "A", "A", "B")
    resumes = [e for e in flow_events(rig.drain()) if e["event"] == "flow.resume"]
    assert resumes == [{"event": "flow.resume", "channel": "c", "dropped": 3}]


def test_conflate_resume_ignores_replacements_before_the_pause() -> None:
    """`dropped` counts drops since the pause, not conflations from before it."""
    policy = ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="key", queue_size=4)
    rig = Rig(policy)
    rig.publish_keys("A", "A", "A")  # two replacements, depth 1: no pause
    rig.drain()
    rig.publish_keys("A", "B", "C", "D")  # depth 4: pause, nothing dropped since
    resumes = [e for e in flow_events(rig.drain()) if e["event"] == "flow.resume"]
    assert resumes == [{"event": "flow.resume", "channel": "c", "dropped": 0}]


def test_one_pause_while_oscillating_between_the_watermarks() -> None:
    """Falling below high but not to low, then rising again, sends no second pause."""
    rig = Rig(ChannelPolicy(queue_size=8, high_watermark=6, low_watermark=2), budget=1)
    rig.publish(6)  # pause at 6
    events = rig.flush() + rig.flush()  # depth 4
    rig.publish(2)  # back to 6
    events += rig.drain()
    assert [e["event"] for e in flow_events(events)] == ["flow.pause", "flow.resume"]


def test_control_events_lead_the_batch() -> None:
    """`flow.pause` jumps ahead of the data queued before it."""
    rig = Rig(ChannelPolicy(queue_size=4))
    rig.publish(4)
    events = rig.flush()
    assert events[0]["event"] == "flow.pause"
    assert [e["event"] for e in events[1:]] == ["message"] * 4


def test_resume_is_sent_while_data_is_held_back() -> None:
    """`flow.resume` is written even while the transport still holds data back."""
    rig = Rig(ChannelPolicy(queue_size=4, low_watermark=1))
    rig.publish(4)
    rig.conn.flush_holding(1)  # one message still in the transport: depth 1, resume
    rig.publish(1)
    assert [e["event"] for e in rig.flush()] == ["flow.resume"]
