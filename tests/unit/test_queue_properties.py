"""Property tests of the queue invariants, over random pushes, partial writes and drains."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import Strategy
from tests.unit.support import Event, Rig

KEYS = (None, "A", "B", "C")

# One step: ("push", key), ("flush", fraction of the batch's data bytes left unsent), ("drained",).
Step = tuple[str, object]

push = st.tuples(st.just("push"), st.sampled_from(KEYS))
flush = st.tuples(st.just("flush"), st.sampled_from([0.0, 0.0, 0.3, 1.0]))
drained = st.tuples(st.just("drained"), st.none())
steps = st.lists(st.one_of(push, push, flush, drained), max_size=60)


@st.composite
def policies(draw: st.DrawFn, strategy: Strategy) -> ChannelPolicy:
    """Small queues with any valid watermarks, so that every transition is reached."""
    queue_size = draw(st.integers(1, 6))
    high = draw(st.integers(1, queue_size))
    low = draw(st.integers(0, high - 1))
    conflate = strategy is Strategy.CONFLATE
    return ChannelPolicy(
        strategy=strategy,
        queue_size=queue_size,
        high_watermark=high,
        low_watermark=low,
        conflate_key="key" if conflate else None,
        conflate_fallback=draw(st.sampled_from([Strategy.DROP_OLDEST, Strategy.DROP_NEWEST])),
    )


@dataclass
class Run:
    """A rig driven like the adapter drives it, recording what the client received."""

    rig: Rig
    received: list[Event] = field(default_factory=list)
    published: int = 0
    last_published: dict[object, int] = field(default_factory=dict)

    def step(self, step: Step) -> None:
        kind, arg = step
        outbox = self.rig.outbox
        if kind == "push":
            message = self.rig.publish(key=arg if isinstance(arg, str) else None)[0]
            self.published += 1
            if message.key is not None:
                self.last_published[message.key] = message.seq
        elif kind == "flush":
            assert isinstance(arg, float)
            if outbox.blocked:  # the transport still holds bytes: only control goes out
                self.received += self.rig.conn.take()
                outbox.written(1)
            else:
                self.received += self.rig.conn.take()
                data = [f for f in self.rig.conn.last_frames if b'"event":"message"' in f]
                outbox.written(int(arg * sum(len(f) for f in data)))
        elif outbox.blocked:
            outbox.transport_drained()

    def finish(self) -> None:
        """The client reads everything that is left."""
        self.received += self.rig.drain()

    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.received if e["event"] == "message"]

    def flow(self) -> list[Event]:
        return [e for e in self.received if e["event"].startswith("flow.")]


def run(policy: ChannelPolicy, budget: int) -> Run:
    return Run(Rig(policy, budget=budget))


budgets = st.integers(1, 400)
bounded = st.sampled_from([Strategy.DROP_OLDEST, Strategy.DROP_NEWEST, Strategy.CONFLATE])
ordered = st.sampled_from([Strategy.DROP_OLDEST, Strategy.DROP_NEWEST, Strategy.BLOCK])
any_strategy = st.sampled_from(list(Strategy))


@given(st.data(), bounded, steps, budgets)
def test_queue_never_holds_more_than_its_size(
    data: st.DataObject, strategy: Strategy, script: list[Step], budget: int
) -> None:
    """Drop-oldest, drop-newest and conflate queues never hold more than queue_size messages."""
    policy = data.draw(policies(strategy))
    r = run(policy, budget)
    for step in script:
        r.step(step)
        assert len(r.rig.sub.items) <= policy.queue_size


@given(
    st.data(),
    bounded,
    st.lists(st.one_of(push, st.tuples(st.just("flush"), st.just(0.0)))),
    budgets,
)
def test_depth_never_exceeds_the_queue_size_when_the_transport_keeps_up(
    data: st.DataObject, strategy: Strategy, script: list[Step], budget: int
) -> None:
    """With a transport that takes every byte, depth never goes above queue_size."""
    policy = data.draw(policies(strategy))
    r = run(policy, budget)
    for step in script:
        r.step(step)
        assert r.rig.sub.depth <= policy.queue_size


@given(st.integers(1, 8), st.integers(0, 30))
def test_drop_oldest_keeps_exactly_the_newest_n_in_order(queue_size: int, count: int) -> None:
    """A drop-oldest subscriber that reads nothing holds exactly the newest queue_size messages."""
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_OLDEST, queue_size=queue_size))
    rig.publish(count)
    assert rig.queued_seqs() == list(range(max(1, count - queue_size + 1), count + 1))


@given(st.integers(1, 8), st.integers(0, 30))
def test_drop_newest_keeps_exactly_the_oldest_n_in_order(queue_size: int, count: int) -> None:
    """A drop-newest subscriber that reads nothing holds exactly the first queue_size messages."""
    rig = Rig(ChannelPolicy(strategy=Strategy.DROP_NEWEST, queue_size=queue_size))
    rig.publish(count)
    assert rig.queued_seqs() == list(range(1, min(count, queue_size) + 1))


@given(st.data(), ordered, steps, budgets)
def test_seqs_delivered_to_a_subscription_only_grow(
    data: st.DataObject, strategy: Strategy, script: list[Step], budget: int
) -> None:
    """A subscriber never sees a seq go backwards or repeat."""
    r = run(data.draw(policies(strategy)), budget)
    for step in script:
        r.step(step)
    r.finish()
    seqs = r.seqs()
    assert all(a < b for a, b in itertools.pairwise(seqs))


@given(st.data(), steps, budgets)
def test_conflate_seqs_only_grow_per_key(
    data: st.DataObject, script: list[Step], budget: int
) -> None:
    """On a conflate channel seqs grow per key and no seq is delivered twice."""
    r = run(data.draw(policies(Strategy.CONFLATE)), budget)
    for step in script:
        r.step(step)
    r.finish()
    per_key: dict[object, list[int]] = {}
    for event in r.received:
        if event["event"] == "message":
            per_key.setdefault(event["data"]["key"], []).append(event["seq"])
    for seqs in per_key.values():
        assert all(a < b for a, b in itertools.pairwise(seqs))
    assert len(r.seqs()) == len(set(r.seqs()))


@given(st.data(), st.integers(3, 6), steps, budgets)
def test_conflate_delivers_the_latest_value_of_every_key(
    data: st.DataObject, queue_size: int, script: list[Step], budget: int
) -> None:
    """With room for every key, the last message a subscriber gets per key is the latest."""
    policy = ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="key", queue_size=queue_size)
    r = run(policy, budget)
    for step in script:
        if step[0] != "push" or step[1] is not None:  # keyed messages only
            r.step(step)
    r.finish()
    last_delivered: dict[object, int] = {}
    for event in r.received:
        if event["event"] == "message":
            last_delivered[event["data"]["key"]] = event["seq"]
    assert last_delivered == r.last_published


@given(st.data(), any_strategy, steps, budgets)
def test_delivered_plus_dropped_equals_published(
    data: st.DataObject, strategy: Strategy, script: list[Step], budget: int
) -> None:
    """Every published message is delivered, dropped or still held: nothing vanishes."""
    r = run(data.draw(policies(strategy)), budget)
    sub = r.rig.sub
    for step in script:
        r.step(step)
        assert sub.delivered + sub.dropped + len(sub.items) == r.published
    r.finish()
    assert sub.delivered + sub.dropped == r.published
    assert len(r.seqs()) == sub.delivered


@given(st.data(), any_strategy, steps, budgets)
def test_pause_and_resume_strictly_alternate_starting_with_pause(
    data: st.DataObject, strategy: Strategy, script: list[Step], budget: int
) -> None:
    """Flow events alternate pause/resume, the pause at depth >= limit, one resume at the end."""
    policy = data.draw(policies(strategy))
    r = run(policy, budget)
    for step in script:
        r.step(step)
    r.finish()
    flow = r.flow()
    assert [e["event"] for e in flow] == ["flow.pause", "flow.resume"] * (len(flow) // 2)
    for pause in flow[::2]:
        assert pause["limit"] == policy.high
        assert pause["depth"] >= policy.high
    assert not r.rig.sub.flow.paused


@given(st.data(), ordered, steps, budgets)
def test_resumes_report_every_drop(
    data: st.DataObject, strategy: Strategy, script: list[Step], budget: int
) -> None:
    """Summed over the resumes, `dropped` accounts for every message the subscriber lost."""
    r = run(data.draw(policies(strategy)), budget)
    for step in script:
        r.step(step)
    r.finish()
    assert sum(e["dropped"] for e in r.flow() if e["event"] == "flow.resume") == r.rig.sub.dropped


@given(st.data(), steps, budgets)
def test_block_channel_room_matches_the_queue(
    data: st.DataObject, script: list[Step], budget: int
) -> None:
    """A block channel has room exactly when its subscriber's queue is below its size."""
    policy = data.draw(policies(Strategy.BLOCK))
    r = run(policy, budget)
    for step in script:
        if step[0] == "push" and not r.rig.channel.has_room():
            continue  # a publisher waits for room instead of publishing
        r.step(step)
        assert r.rig.channel.has_room() == (len(r.rig.sub.items) < policy.queue_size)
        assert len(r.rig.sub.items) <= policy.queue_size
