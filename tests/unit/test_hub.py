"""The hub: channels by name, subscriptions, dropping connections and the slow-consumer sweep."""

from __future__ import annotations

import pytest

from broadcaster.core.channel import Channel
from broadcaster.core.hub import Hub
from broadcaster.core.outbox import Outbox
from broadcaster.core.policy import ChannelPolicy, PolicyTable
from broadcaster.core.strategies import DropReason, Strategy
from broadcaster.core.subscription import Subscription
from tests.unit.support import Connection, Rig, make_message


class ChannelLog:
    """Records the hub's channel callbacks."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    def created(self, channel: Channel) -> None:
        self.log.append(("created", channel.name))

    def active(self, channel: Channel) -> None:
        self.log.append(("active", channel.name))

    def idle(self, channel: Channel) -> None:
        self.log.append(("idle", channel.name))


def logged_hub(table: PolicyTable | None = None) -> tuple[Hub, ChannelLog]:
    log = ChannelLog()
    hub = Hub(
        table or PolicyTable(),
        epoch="e1",
        on_channel_created=log.created,
        on_channel_active=log.active,
        on_channel_idle=log.idle,
    )
    return hub, log


def channel_of(hub: Hub, name: str) -> Channel:
    channel = hub.channel(name)
    assert channel is not None
    return channel


# --- channels ----------------------------------------------------------------


def test_channel_is_created_once_on_first_use() -> None:
    """Asking twice for a channel gives the same channel, created (and announced) once."""
    hub, log = logged_hub()
    first = channel_of(hub, "tickers")
    assert channel_of(hub, "tickers") is first
    assert log.log == [("created", "tickers")]


def test_channel_gets_the_policy_its_name_resolves_to() -> None:
    """A channel takes the first [channels] entry matching its name."""
    orders = ChannelPolicy(strategy=Strategy.BLOCK)
    hub, _ = logged_hub(PolicyTable().with_entry("orders", orders))
    assert channel_of(hub, "orders").policy.strategy is Strategy.BLOCK
    assert channel_of(hub, "other").policy.strategy is Strategy.DROP_OLDEST


def test_channel_carries_the_hub_epoch() -> None:
    """Every channel of this node reports the node's seq epoch."""
    hub, _ = logged_hub()
    assert channel_of(hub, "c").epoch == "e1"
    assert channel_of(hub, "c").last_seq == 0


def test_strict_hub_refuses_unknown_channels() -> None:
    """With strict_channels, a name matching no entry gets no channel (unknown_channel)."""
    hub, log = logged_hub(PolicyTable(strict=True).with_entry("known", ChannelPolicy()))
    assert hub.channel("unknown") is None
    assert "unknown" not in hub.channels
    assert log.log == []
    assert hub.channel("known") is not None


# --- subscribing --------------------------------------------------------------


def test_subscribe_attaches_to_connection_and_channel() -> None:
    """A subscription is reachable from its connection and its channel."""
    hub, _ = logged_hub()
    conn = Connection(hub, 1)
    channel = channel_of(hub, "c")
    sub = hub.subscribe(conn.outbox, channel, now=3.0, max_rate=10.0)
    assert conn.outbox.subscriptions == {"c": sub}
    assert list(channel.subscriptions) == [sub]
    assert (sub.created, sub.max_rate) == (3.0, 10.0)


def test_first_subscriber_activates_the_channel_once() -> None:
    """The broker hears when a channel gets its first local subscriber, not for later ones."""
    hub, log = logged_hub()
    channel = channel_of(hub, "c")
    hub.subscribe(Connection(hub, 1).outbox, channel)
    hub.subscribe(Connection(hub, 2).outbox, channel)
    assert log.log == [("created", "c"), ("active", "c")]


def test_unsubscribe_detaches_and_frees_the_queue() -> None:
    """Unsubscribing stops delivery and frees what was queued (counted as disconnected)."""
    rig = Rig(ChannelPolicy(queue_size=8))
    rig.publish(3)
    sub = rig.hub.unsubscribe(rig.outbox, "c")
    assert sub is rig.sub
    assert not rig.channel.subscriptions
    assert rig.outbox.subscriptions == {}
    assert rig.channel.counters.dropped[DropReason.DISCONNECTED] == 3
    rig.publish(1)
    assert rig.sub.depth == 0


def test_unsubscribe_of_unknown_channel_returns_none() -> None:
    """Unsubscribing from a channel never subscribed is reported, not an error (not_subscribed)."""
    rig = Rig()
    assert rig.hub.unsubscribe(rig.outbox, "nope") is None
    assert list(rig.channel.subscriptions) == [rig.sub]


def test_last_unsubscribe_makes_the_channel_idle() -> None:
    """The broker hears when a channel loses its last local subscriber, and only then."""
    hub, log = logged_hub()
    channel = channel_of(hub, "c")
    one, two = Connection(hub, 1), Connection(hub, 2)
    hub.subscribe(one.outbox, channel)
    hub.subscribe(two.outbox, channel)
    hub.unsubscribe(one.outbox, "c")
    assert ("idle", "c") not in log.log
    hub.unsubscribe(two.outbox, "c")
    assert log.log[-1] == ("idle", "c")


def test_drop_frees_every_subscription_of_a_connection() -> None:
    """A closing connection leaves every channel and the hub's registry."""
    hub, log = logged_hub()
    conn = Connection(hub, 1)
    a, b = channel_of(hub, "a"), channel_of(hub, "b")
    hub.subscribe(conn.outbox, a)
    hub.subscribe(conn.outbox, b)
    hub.drop(conn.outbox)
    assert not a.subscriptions
    assert not b.subscriptions
    assert 1 not in hub.outboxes
    assert conn.outbox.closed
    assert ("idle", "a") in log.log
    assert ("idle", "b") in log.log


def test_detaching_newest_first_compares_no_subscriptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load shedding detaches the newest first: each detach must not scan the channel.

    With a list, `in` + `remove` compared every older subscription (quadratic:
    40,000 subscribers held the event loop for 15-20 s); a lookup by key
    compares none, so the count stays linear (here: zero).
    """
    comparisons = 0

    def counting_eq(self: Subscription, other: object) -> bool:
        nonlocal comparisons
        comparisons += 1
        return self is other

    hub = Hub(PolicyTable(), epoch="e1")
    channel = channel_of(hub, "c")
    outboxes: list[Outbox] = []
    for index in range(3_000):
        conn = Connection(hub, index)
        hub.subscribe(conn.outbox, channel)
        outboxes.append(conn.outbox)
    monkeypatch.setattr(Subscription, "__eq__", counting_eq)
    for outbox in reversed(outboxes):
        hub.drop(outbox)
    assert not channel.subscriptions
    assert comparisons <= len(outboxes)


def test_fan_out_keeps_attach_order_after_detaches() -> None:
    """Subscribers are served in attach order; detaching one keeps the others' order."""
    hub = Hub(PolicyTable(), epoch="e1")
    channel = channel_of(hub, "c")
    conns = [Connection(hub, index) for index in range(5)]
    subs = [hub.subscribe(conn.outbox, channel) for conn in conns]
    hub.drop(conns[4].outbox)
    hub.unsubscribe(conns[1].outbox, "c")
    again = hub.subscribe(conns[1].outbox, channel)
    assert list(channel.subscriptions) == [subs[0], subs[2], subs[3], again]
    channel.fan_out(make_message("c", 1))
    assert [len(sub.items) for sub in (subs[0], subs[2], subs[3], again)] == [1, 1, 1, 1]
    assert not subs[1].items
    assert not subs[4].items


# --- the slow-consumer sweep ----------------------------------------------------


def slow_rig(
    queue_size: int, *, high: int | None = None, low: int | None = None, budget: int = 1 << 16
) -> Rig:
    """A rig with a 5 s slow-consumer timeout."""
    policy = ChannelPolicy(
        queue_size=queue_size, high_watermark=high, low_watermark=low, slow_consumer_timeout=5.0
    )
    return Rig(policy, budget=budget)


def test_tick_spares_a_subscriber_below_its_high_watermark() -> None:
    """A subscriber with a backlog below the high watermark is never cut."""
    rig = slow_rig(4)
    rig.publish(3, created=0.0)
    assert rig.hub.tick(now=1000.0) == []


def test_tick_spares_a_subscriber_above_for_less_than_the_timeout() -> None:
    """Being behind for less than slow_consumer_timeout is tolerated."""
    rig = slow_rig(4)
    rig.publish(4, created=10.0)
    assert rig.hub.tick(now=15.0) == []
    assert not rig.outbox.closed


def test_tick_drops_a_subscriber_above_for_longer_than_the_timeout() -> None:
    """A subscriber at its high watermark for longer than the timeout is disconnected."""
    rig = slow_rig(4)
    rig.publish(4, created=10.0)
    assert rig.hub.tick(now=15.01) == [rig.outbox]
    assert rig.outbox.closed


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_drops_a_slow_consumer(strategy: Strategy) -> None:
    """The slow-consumer rule applies unchanged on every strategy, block included."""
    policy = ChannelPolicy(
        strategy=strategy,
        queue_size=3,
        slow_consumer_timeout=5.0,
        conflate_key="key" if strategy is Strategy.CONFLATE else None,
    )
    rig = Rig(policy)
    rig.publish_keys("A", "B", "C", created=1.0)
    assert rig.hub.tick(now=6.0) == []
    assert rig.hub.tick(now=6.5) == [rig.outbox]


def trickle_until_cut(rig: Rig, *, steps: int, full_every: int) -> int:
    """Every 0.1 s the subscriber reads its whole queue and the publisher refills it at once;
    at one tick in `full_every` it is still full. The step it was cut at, or -1."""
    for step in range(1, steps + 1):
        now = step * 0.1
        rig.drain()
        if step % full_every == 0:
            for _ in range(rig.channel.policy.queue_size):
                if rig.sub.full:
                    break
                rig.publish(1, created=now)
        if rig.hub.tick(now):
            return step
    return -1


def test_trickle_reader_holding_a_block_channel_is_cut() -> None:
    """It dips under the watermark every 0.1 s, restarting that clock, but keeps the
    publisher waiting nearly all the time: cut within a bound, counted on its channel."""
    rig = Rig(ChannelPolicy(strategy=Strategy.BLOCK, queue_size=4, slow_consumer_timeout=1.0))
    cut_at = trickle_until_cut(rig, steps=200, full_every=1)
    assert 0 < cut_at <= 15
    assert rig.outbox.closed
    assert rig.channel.counters.slow_consumer_disconnects == 1
    assert rig.channel.has_room()


def test_block_subscriber_full_a_third_of_the_time_is_kept() -> None:
    """Holding the publisher less than slow_consumer_share of the time is the block contract."""
    rig = Rig(ChannelPolicy(strategy=Strategy.BLOCK, queue_size=4, slow_consumer_timeout=1.0))
    assert trickle_until_cut(rig, steps=2_000, full_every=3) == -1
    assert not rig.outbox.closed


def test_slow_consumer_is_freed_at_once() -> None:
    """Everything held for a slow consumer is freed and counted as dropped (disconnected)."""
    rig = slow_rig(4)
    rig.publish(4, created=0.0)
    rig.hub.tick(now=6.0)
    assert rig.sub.depth == 0
    assert not rig.channel.subscriptions
    assert rig.channel.counters.dropped[DropReason.DISCONNECTED] == 4
    assert 1 not in rig.hub.outboxes


def test_slow_consumer_disconnect_is_counted_on_its_channel() -> None:
    """`slow_consumer_disconnects_total` counts the disconnect on the channel that was behind."""
    rig = slow_rig(4)
    rig.publish(4, created=0.0)
    rig.hub.tick(now=6.0)
    assert rig.channel.counters.slow_consumer_disconnects == 1


def test_slow_consumer_is_dropped_only_once() -> None:
    """A later tick does not report (or count) the same connection again."""
    rig = slow_rig(4)
    rig.publish(4, created=0.0)
    rig.hub.tick(now=6.0)
    assert rig.hub.tick(now=7.0) == []
    assert rig.channel.counters.slow_consumer_disconnects == 1


def test_timer_starts_when_the_high_watermark_is_reached() -> None:
    """The clock starts at the message that reached the watermark, not at earlier ones."""
    rig = slow_rig(4)
    rig.publish(3, created=0.0)
    rig.publish(1, created=100.0)
    assert rig.hub.tick(now=104.0) == []
    assert rig.hub.tick(now=105.5) == [rig.outbox]


def test_timer_resets_when_depth_falls_below_the_high_watermark() -> None:
    """A subscriber that catches up below its high watermark starts a fresh clock next time."""
    rig = slow_rig(8, high=4, low=1, budget=1)
    rig.publish(4, created=0.0)
    rig.flush()  # pause + one message: depth 3 < high
    rig.publish(1, created=50.0)  # depth 4 again
    assert rig.hub.tick(now=54.0) == []
    assert rig.hub.tick(now=55.5) == [rig.outbox]


def test_timer_keeps_running_while_depth_stays_at_high() -> None:
    """Reading a little while staying at or above the watermark does not restart the clock."""
    rig = slow_rig(8, high=4, low=1, budget=1)
    rig.publish(6, created=0.0)
    rig.flush()  # depth 5, still >= 4
    rig.publish(1, created=4.0)
    assert rig.hub.tick(now=5.5) == [rig.outbox]


def test_messages_in_the_transport_keep_the_timer_running() -> None:
    """A client that stops reading at the TCP level is still a slow consumer."""
    rig = slow_rig(4)
    rig.publish(4, created=0.0)
    rig.conn.flush_holding(4)  # everything left the queue but sits in the transport
    assert rig.sub.depth == 4
    assert rig.hub.tick(now=5.5) == [rig.outbox]


def test_transport_drained_below_high_stops_the_timer() -> None:
    """Once the transport hands its bytes to the kernel, a caught-up subscriber is safe."""
    rig = slow_rig(4)
    rig.publish(4, created=0.0)
    rig.conn.flush_holding(4)
    rig.outbox.transport_drained()
    assert rig.hub.tick(now=100.0) == []
    assert rig.hub.behind == set()


def test_tick_leaves_other_connections_alone() -> None:
    """Only the slow connection is dropped; a fast one on the same channel keeps its queue."""
    rig = slow_rig(4)
    fast = rig.add_connection(2)
    rig.publish(4, created=0.0)
    fast.flush()
    rig.publish(1, created=0.0)
    assert rig.hub.tick(now=6.0) == [rig.outbox]
    assert not fast.outbox.closed
    assert fast.outbox.depth == 1


def test_connection_behind_on_two_channels_is_dropped_once() -> None:
    """A connection slow on several channels is reported and counted once."""
    hub = Hub(PolicyTable(ChannelPolicy(queue_size=2)), epoch="e1")
    conn = Connection(hub, 1)
    a, b = channel_of(hub, "a"), channel_of(hub, "b")
    hub.subscribe(conn.outbox, a)
    hub.subscribe(conn.outbox, b)
    for seq in (1, 2):
        a.fan_out(make_message("a", seq))
        b.fan_out(make_message("b", seq))
    assert hub.tick(now=6.0) == [conn.outbox]
    assert a.counters.slow_consumer_disconnects + b.counters.slow_consumer_disconnects == 1


def test_dropping_a_slow_subscriber_unblocks_a_block_channel() -> None:
    """A block channel is never blocked longer than its timeout by one client."""
    rig = Rig(ChannelPolicy(strategy=Strategy.BLOCK, queue_size=2, slow_consumer_timeout=1.0))
    woken: list[Channel] = []
    rig.channel.on_room = woken.append
    rig.publish(2, created=0.0)
    assert not rig.channel.has_room()
    rig.hub.tick(now=1.5)
    assert rig.channel.has_room()
    assert woken == [rig.channel]


def test_recovered_backlog_starts_the_timer_at_subscribe_time() -> None:
    """Old recovered messages do not make a client that just subscribed look slow at once."""
    hub = Hub(PolicyTable(ChannelPolicy(queue_size=4, slow_consumer_timeout=5.0)), epoch="e1")
    conn = Connection(hub, 1)
    sub = hub.subscribe(conn.outbox, channel_of(hub, "c"), now=100.0)
    # Subscribed at t=100 with `since`; the four recovered messages were published at t=0.
    sub.preload([make_message("c", seq, created=0.0) for seq in range(1, 5)], now=100.0)
    assert hub.tick(now=100.5) == []
