"""Property tests of the queue invariants, over random pushes, partial writes and drains.

A script is a list of steps an adapter could take: a publish (with or without
a conflation key), a flush that takes one, two or all queued frames and leaves
part of them in the transport, and the transport draining.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import Strategy
from tests.unit.support import Event, Rig


@dataclass(frozen=True)
class Push:
    key: str | None


@dataclass(frozen=True)
class Flush:
    budget: int
    """Write budget in bytes for this batch: 1 takes one frame, 10**6 takes everything."""
    unsent: float
    """Fraction of the batch's data bytes the transport keeps."""


@dataclass(frozen=True)
class Drained:
    pass


Step = Push | Flush | Drained

pushes = st.builds(Push, st.sampled_from([None, "A", "B", "C"]))
keyed_pushes = st.builds(Push, st.sampled_from(["A", "B", "C"]))
flushes = st.builds(Flush, st.sampled_from([1, 1, 100, 10**6]), st.sampled_from([0.0, 0.3, 1.0]))
full_writes = st.builds(Flush, st.sampled_from([1, 100, 10**6]), st.just(0.0))
drains = st.builds(Drained)


def bursts(
    push: st.SearchStrategy[Push], then: st.SearchStrategy[Step]
) -> st.SearchStrategy[list[Step]]:
    """Scripts made of bursts of publishes, each followed by a write or a drain."""
    burst = st.tuples(st.lists(push, max_size=7), then)
    return st.lists(burst, min_size=1, max_size=12).map(
        lambda groups: [step for pushed, after in groups for step in (*pushed, after)]
    )


scripts = bursts(pushes, st.one_of(flushes, flushes, drains))


@st.composite
def policies(draw: st.DrawFn, strategy: Strategy) -> ChannelPolicy:
    """Small queues with any valid watermarks, so that every transition is reached."""
    queue_size = draw(st.integers(1, 6))
    high = draw(st.integers(1, queue_size))
    low = draw(st.integers(0, high - 1))
    return ChannelPolicy(
        strategy=strategy,
        queue_size=queue_size,
        high_watermark=high,
        low_watermark=low,
        conflate_key="key" if strategy is Strategy.CONFLATE else None,
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
        outbox = self.rig.outbox
        if isinstance(step, Push):
            message = self.rig.publish(key=step.key)[0]
            self.published += 1
            if message.key is not None:
                self.last_published[message.key] = message.seq
        elif isinstance(step, Flush):
            outbox.budget = step.budget
            blocked = outbox.blocked
            self.received += self.rig.conn.take()
            if blocked:  # the transport still holds bytes: only control went out
                outbox.written(1)
            else:
                data = [f for f in self.rig.conn.last_frames if b'"event":"message"' in f]
                outbox.written(int(step.unsent * sum(len(f) for f in data)))
        elif outbox.blocked:
            outbox.transport_drained()

    def finish(self) -> None:
        """The client reads everything that is left."""
        self.rig.outbox.budget = 10**6
        self.received += self.rig.drain()

    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.received if e["event"] == "message"]

    def flow(self) -> list[Event]:
        return [e for e in self.received if e["event"].startswith("flow.")]


bounded = st.sampled_from([Strategy.DROP_OLDEST, Strategy.DROP_NEWEST, Strategy.CONFLATE])
ordered = st.sampled_from([Strategy.DROP_OLDEST, Strategy.DROP_NEWEST, Strategy.BLOCK])
any_strategy = st.sampled_from(list(Strategy))


@given(st.data(), bounded, scripts)
def test_queue_never_holds_more_than_its_size(
    data: st.DataObject, strategy: Strategy, script: list[Step]
) -> None:
    """Drop-oldest, drop-newest and conflate queues never hold more than queue_size messages."""
    policy = data.draw(policies(strategy))
    r = Run(Rig(policy))
    for step in script:
        r.step(step)
        assert len(r.rig.sub.items) <= policy.queue_size


@given(st.data(), bounded, bursts(pushes, full_writes))
def test_depth_never_exceeds_the_queue_size_when_the_transport_keeps_up(
    data: st.DataObject, strategy: Strategy, script: list[Step]
) -> None:
    """With a transport that takes every byte, depth never goes above queue_size."""
    policy = data.draw(policies(strategy))
    r = Run(Rig(policy))
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


@given(st.data(), ordered, scripts)
def test_seqs_delivered_to_a_subscription_only_grow(
    data: st.DataObject, strategy: Strategy, script: list[Step]
) -> None:
    """A subscriber never sees a seq go backwards or repeat."""
    r = Run(Rig(data.draw(policies(strategy))))
    for step in script:
        r.step(step)
    r.finish()
    assert all(a < b for a, b in itertools.pairwise(r.seqs()))


@given(st.data(), scripts)
def test_conflate_seqs_only_grow_per_key(data: st.DataObject, script: list[Step]) -> None:
    """On a conflate channel seqs grow per key and no seq is delivered twice."""
    r = Run(Rig(data.draw(policies(Strategy.CONFLATE))))
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


@given(st.integers(3, 6), bursts(keyed_pushes, st.one_of(flushes, drains)))
def test_conflate_delivers_the_latest_value_of_every_key(
    queue_size: int, script: list[Step]
) -> None:
    """With room for every key, the last message a subscriber gets per key is the latest."""
    policy = ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="key", queue_size=queue_size)
    r = Run(Rig(policy))
    for step in script:
        r.step(step)
    r.finish()
    last_delivered: dict[object, int] = {}
    for event in r.received:
        if event["event"] == "message":
            last_delivered[event["data"]["key"]] = event["seq"]
    assert last_delivered == r.last_published


@given(st.data(), any_strategy, scripts)
def test_delivered_plus_dropped_equals_published(
    data: st.DataObject, strategy: Strategy, script: list[Step]
) -> None:
    """Every published message is delivered, dropped or still held: nothing vanishes."""
    r = Run(Rig(data.draw(policies(strategy))))
    sub = r.rig.sub
    for step in script:
        r.step(step)
        assert sub.delivered + sub.dropped + len(sub.items) + sub.in_transport == r.published
    r.finish()
    assert sub.delivered + sub.dropped == r.published
    assert len(r.seqs()) == sub.delivered


@given(st.data(), any_strategy, scripts)
def test_pause_and_resume_strictly_alternate_starting_with_pause(
    data: st.DataObject, strategy: Strategy, script: list[Step]
) -> None:
    """Flow events alternate pause/resume, each pause at depth >= limit, resumed at the end."""
    policy = data.draw(policies(strategy))
    r = Run(Rig(policy))
    for step in script:
        r.step(step)
    r.finish()
    flow = r.flow()
    assert [e["event"] for e in flow] == ["flow.pause", "flow.resume"] * (len(flow) // 2)
    for pause in flow[::2]:
        assert pause["limit"] == policy.high
        assert pause["depth"] >= policy.high
    assert not r.rig.sub.flow.paused


@given(st.data(), any_strategy, scripts)
def test_flow_state_follows_the_watermarks(
    data: st.DataObject, strategy: Strategy, script: list[Step]
) -> None:
    """A subscriber at or above high is paused; one at or below low is not."""
    policy = data.draw(policies(strategy))
    r = Run(Rig(policy))
    sub = r.rig.sub
    for step in script:
        r.step(step)
        if sub.depth >= policy.high:
            assert sub.flow.paused
        if sub.depth <= policy.low:
            assert not sub.flow.paused


@given(st.data(), ordered, scripts)
def test_resumes_report_every_drop(
    data: st.DataObject, strategy: Strategy, script: list[Step]
) -> None:
    """Summed over the resumes, `dropped` accounts for every message the subscriber lost."""
    r = Run(Rig(data.draw(policies(strategy))))
    for step in script:
        r.step(step)
    r.finish()
    assert sum(e["dropped"] for e in r.flow() if e["event"] == "flow.resume") == r.rig.sub.dropped


@given(st.data(), scripts)
def test_block_channel_room_matches_the_queue(data: st.DataObject, script: list[Step]) -> None:
    """A block channel has room exactly when its subscriber's depth is below its size."""
    policy = data.draw(policies(Strategy.BLOCK))
    r = Run(Rig(policy))
    for step in script:
        if isinstance(step, Push) and not r.rig.channel.has_room():
            continue  # a publisher waits for room instead of publishing
        r.step(step)
        assert r.rig.channel.has_room() == (r.rig.sub.depth < policy.queue_size)
        assert len(r.rig.sub.items) <= policy.queue_size
