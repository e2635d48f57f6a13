"""max_rate: one message per interval per subscription, the latest in between."""

from __future__ import annotations

from broadcaster.core.channel import Channel
from broadcaster.core.hub import Hub
from broadcaster.core.message import Message
from broadcaster.core.outbox import Outbox
from broadcaster.core.policy import ChannelPolicy, PolicyTable
from broadcaster.core.strategies import DropReason, Strategy


def message(seq: int, key: str | None = None, created: float = 0.0) -> Message:
    payload = f'{{"seq":{seq}}}'.encode()
    return Message(channel="c", seq=seq, payload=payload, frame=payload, created=created, key=key)


def setup(policy: ChannelPolicy, max_rate: float) -> tuple[Channel, Outbox, list[Outbox]]:
    scheduled: list[Outbox] = []
    hub = Hub(PolicyTable(defaults=policy), epoch="e")
    channel = hub.channel("c")
    assert channel is not None
    outbox = Outbox(1, on_schedule=scheduled.append)
    hub.subscribe(outbox, channel, max_rate=max_rate)
    return channel, outbox, scheduled


def flush(outbox: Outbox, now: float) -> list[bytes]:
    batch = outbox.take_batch(now)
    outbox.written(0)
    return batch


def test_rate_capped_subscription_sends_one_message_per_interval() -> None:
    """With max_rate 5, a second message waits 0.2 s and wake_at says when."""
    channel, outbox, _ = setup(ChannelPolicy(), max_rate=5)
    channel.fan_out(message(1, created=0.0))
    assert flush(outbox, 0.0) == [b'{"seq":1}']
    channel.fan_out(message(2, created=0.05))
    assert flush(outbox, 0.05) == []
    assert outbox.wake_at == 0.2
    assert flush(outbox, 0.2) == [b'{"seq":2}']


def test_rate_capped_subscription_keeps_only_the_latest_between_sends() -> None:
    """Messages published between two sends conflate to the newest one, counted as dropped."""
    channel, outbox, _ = setup(ChannelPolicy(), max_rate=5)
    channel.fan_out(message(1))
    flush(outbox, 0.0)
    for seq in range(2, 10):
        channel.fan_out(message(seq, created=0.1))
    assert flush(outbox, 0.2) == [b'{"seq":9}']
    assert channel.counters.dropped[DropReason.CONFLATED] == 7


def test_pushes_before_the_due_time_do_not_schedule_a_flush() -> None:
    """A rate-capped subscriber that is not due waits for its timer, not for every push."""
    channel, outbox, scheduled = setup(ChannelPolicy(), max_rate=1)
    channel.fan_out(message(1, created=0.0))
    flush(outbox, 0.0)
    channel.fan_out(message(2, created=0.1))
    flush(outbox, 0.1)
    scheduled.clear()
    channel.fan_out(message(3, created=0.2))
    assert scheduled == []


def test_rate_capped_conflate_channel_sends_the_oldest_key_with_its_newest_value() -> None:
    """On a conflate channel each send is one key, in first-seen order, with its latest value."""
    policy = ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="symbol")
    channel, outbox, _ = setup(policy, max_rate=10)
    channel.fan_out(message(1, key="A"))
    assert flush(outbox, 0.0) == [b'{"seq":1}']
    for seq, key in [(2, "A"), (3, "B"), (4, "A"), (5, "C"), (6, "B")]:
        channel.fan_out(message(seq, key=key, created=0.01))
    sent = [flush(outbox, t) for t in (0.1, 0.25, 0.4)]
    assert sent == [[b'{"seq":4}'], [b'{"seq":6}'], [b'{"seq":5}']]


def reset_notice() -> Message:
    """The in-band `subscribed` with `reset: true` a broker queues when a stream was lost."""
    payload = b'{"event":"subscribed","channel":"c","seq":0,"epoch":"e2","reset":true}'
    return Message(channel="c", seq=0, payload=payload, frame=payload, created=0.0)


def test_a_reset_notice_is_never_replaced_by_the_rate_cap() -> None:
    """Between two sends the latest message replaces the pending one, never a notice queued
    before it: the client must learn that seq starts again from 1 (issue 15)."""
    channel, outbox, _ = setup(ChannelPolicy(), max_rate=5)
    channel.fan_out(message(7, created=0.0))
    assert flush(outbox, 0.0) == [b'{"seq":7}']
    notice = reset_notice()
    (sub,) = channel.subscriptions
    sub.notice(notice)
    for seq in (1, 2, 3):  # the new epoch, all within the interval
        channel.fan_out(message(seq, created=0.05))
    assert flush(outbox, 0.05) == []
    assert flush(outbox, 0.2) == [notice.frame]
    assert flush(outbox, 0.3) == []
    assert flush(outbox, 0.4) == [b'{"seq":3}']
    assert channel.counters.dropped[DropReason.CONFLATED] == 2, "seq 1 and 2 of the new epoch"


def test_a_notice_keeps_older_data_on_its_side_of_the_reset() -> None:
    """Data queued before the notice is not replaced by data after it (another epoch)."""
    channel, outbox, _ = setup(ChannelPolicy(), max_rate=5)
    channel.fan_out(message(7, created=0.0))
    flush(outbox, 0.0)
    channel.fan_out(message(8, created=0.05))
    notice = reset_notice()
    (sub,) = channel.subscriptions
    sub.notice(notice)
    channel.fan_out(message(1, created=0.06))
    channel.fan_out(message(2, created=0.07))
    sent = [flush(outbox, t) for t in (0.25, 0.5, 0.75, 1.0)]
    assert sent == [[b'{"seq":8}'], [notice.frame], [b'{"seq":2}'], []]
