"""Idle channels are freed: names clients invent must not hold memory (or a max_channels slot).

A channel that keeps no messages (no history, no snapshot) is freed as soon
as nothing uses it: its last subscriber leaves or its last pin goes. One
that keeps messages is freed after `idle_ttl` seconds with no subscriber, no
publish and no pin, seen on two sweeps that far apart, and kept at least its
`history_ttl`. The same name used later is a new channel
at seq 0 under a new epoch, and the freed channel's counts stay in
`hub.retired` so totals never go backwards.
"""

from __future__ import annotations

from broadcaster.core.channel import Channel
from broadcaster.core.hub import RESTING_MAX, Hub
from broadcaster.core.policy import ChannelPolicy, PolicyTable
from broadcaster.core.strategies import Strategy
from tests.unit.support import Connection, make_message

TTL = 10.0
# Keeps messages, and for less than TTL: such a channel waits exactly TTL unused.
KEEPS = ChannelPolicy(history_size=1, history_ttl=1.0)


def idle_hub(table: PolicyTable | None = None, ttl: float = TTL) -> tuple[Hub, list[str]]:
    """A hub whose channels keep messages unless `table` says otherwise."""
    freed: list[str] = []
    hub = Hub(
        table or PolicyTable(KEEPS),
        epoch="e1",
        idle_ttl=ttl,
        on_channel_freed=lambda channel: freed.append(channel.name),
    )
    return hub, freed


def channel_of(hub: Hub, name: str) -> Channel:
    channel = hub.channel(name)
    assert channel is not None
    return channel


def publish(channel: Channel, count: int = 1) -> None:
    for _ in range(count):
        channel.fan_out(make_message(channel.name, channel.last_seq + 1))


def test_an_unused_channel_is_freed_after_the_idle_ttl() -> None:
    """Kept until idle_ttl after the sweep that first saw it unused, then freed and announced."""
    hub, freed = idle_hub()
    channel_of(hub, "c")
    assert hub.sweep_idle(100.0) == []  # first seen unused at 100
    assert hub.sweep_idle(100.0 + TTL - 0.1) == []
    assert "c" in hub.channels
    assert [c.name for c in hub.sweep_idle(100.0 + TTL)] == ["c"]
    assert "c" not in hub.channels
    assert freed == ["c"]
    assert hub.freed == 1


def test_a_look_exactly_one_ttl_later_frees_despite_float_rounding() -> None:
    """`start + ttl` is "one TTL later" even where `(start + ttl) - start` rounds below ttl.

    (1000.003 + 3600) - 1000.003 == 3599.9999999999995: an elapsed-time rule kept
    such a channel, and a caller sweeping at exactly `start + ttl` looped forever.
    """
    start, ttl = 1000.003, 3600.0
    assert (start + ttl) - start < ttl  # the rounding this test is about
    hub, freed = idle_hub(ttl=ttl)
    channel_of(hub, "c")
    assert hub.sweep_idle(start) == []
    assert [c.name for c in hub.sweep_idle(start + ttl)] == ["c"]
    assert freed == ["c"]


def test_a_freed_name_used_again_starts_at_seq_0_under_a_new_epoch() -> None:
    """Clients holding the old epoch must see the seq history changed, not a false gap."""
    hub, _ = idle_hub()
    old = channel_of(hub, "c")
    publish(old, 5)
    hub.sweep_idle(0.0)
    hub.sweep_idle(TTL)
    new = channel_of(hub, "c")
    assert new is not old
    assert (new.last_seq, old.epoch) == (0, "e1")
    assert new.epoch not in {old.epoch, ""}
    # A channel never freed before keeps the node's epoch; later ones get later epochs.
    channel_of(hub, "other")
    hub.sweep_idle(2 * TTL)
    hub.sweep_idle(3 * TTL)
    assert channel_of(hub, "c").epoch not in {old.epoch, new.epoch}


def test_a_channel_with_a_subscriber_is_kept_and_its_idle_time_starts_when_it_leaves() -> None:
    """Subscribed channels live on; the idle clock starts at the last unsubscribe."""
    hub, freed = idle_hub()
    conn = Connection(hub, 1)
    hub.subscribe(conn.outbox, channel_of(hub, "c"))
    hub.sweep_idle(0.0)
    hub.sweep_idle(5 * TTL)
    assert freed == []
    hub.unsubscribe(conn.outbox, "c")
    hub.sweep_idle(6 * TTL)  # first seen unused
    hub.sweep_idle(7 * TTL - 1)
    assert freed == []
    hub.sweep_idle(7 * TTL)
    assert freed == ["c"]


def test_a_dropped_connection_leaves_its_channels_idle() -> None:
    """A connection going away counts like an unsubscribe for the idle clock."""
    hub, freed = idle_hub()
    conn = Connection(hub, 1)
    hub.subscribe(conn.outbox, channel_of(hub, "c"))
    hub.drop(conn.outbox)
    hub.sweep_idle(0.0)
    hub.sweep_idle(TTL)
    assert freed == ["c"]


def test_a_publish_restarts_the_idle_clock() -> None:
    """A channel published to without subscribers is in use (its seq and history matter)."""
    hub, freed = idle_hub()
    channel = channel_of(hub, "c")
    hub.sweep_idle(0.0)
    publish(channel)
    hub.sweep_idle(TTL)  # published since the last sweep: seen unused from here
    assert freed == []
    hub.sweep_idle(2 * TTL - 0.1)
    assert freed == []
    hub.sweep_idle(2 * TTL)
    assert freed == ["c"]


def test_a_pinned_channel_is_not_freed() -> None:
    """A subscribe waiting on the broker pins its channel, or it would attach to an orphan."""
    hub, freed = idle_hub()
    channel = channel_of(hub, "c")
    channel.pins += 1
    hub.sweep_idle(0.0)
    hub.sweep_idle(5 * TTL)
    assert freed == []
    channel.pins -= 1
    hub.sweep_idle(6 * TTL)  # the idle time starts after the pin
    assert freed == []
    hub.sweep_idle(7 * TTL)
    assert freed == ["c"]


def test_a_channel_with_history_is_kept_for_its_history_ttl() -> None:
    """Retained messages stay recoverable: the idle time is at least history_ttl."""
    kept = ChannelPolicy(history_size=10, history_ttl=3 * TTL)
    hub, freed = idle_hub(PolicyTable(KEEPS).with_entry("h", kept))
    publish(channel_of(hub, "h"))
    channel_of(hub, "plain")
    hub.sweep_idle(0.0)
    hub.sweep_idle(TTL)
    assert freed == ["plain"]
    hub.sweep_idle(3 * TTL - 0.1)
    assert freed == ["plain"]
    hub.sweep_idle(3 * TTL)
    assert freed == ["plain", "h"]


def test_idle_ttl_0_keeps_every_channel() -> None:
    """0 turns freeing off: channels live as long as the process."""
    hub, freed = idle_hub(ttl=0.0)
    channel_of(hub, "c")
    for now in (0.0, 1e6, 2e6):
        assert hub.sweep_idle(now) == []
    assert "c" in hub.channels
    assert freed == []


def test_freed_counters_are_kept_under_the_channel_label() -> None:
    """Published, delivered and dropped totals per label never go backwards."""
    hub, _ = idle_hub(PolicyTable(KEEPS).with_entry("news.*", KEEPS))
    for name in ("news.a", "news.b"):
        publish(channel_of(hub, name), 3)
    hub.sweep_idle(0.0)
    hub.sweep_idle(TTL)
    assert hub.channels == {}
    assert hub.retired["news.*"].published == 6


def test_one_sweep_looks_at_no_more_than_its_budget_and_all_are_reached() -> None:
    """A bounded share per call keeps the loop responsive; round-robin reaches every one."""
    hub, freed = idle_hub()
    for i in range(5):
        channel_of(hub, f"c{i}")
    for _ in range(3):  # 6 looks: every candidate stamped at 0
        hub.sweep_idle(0.0, budget=2)
    sizes: list[int] = []
    while len(freed) < 5 and len(sizes) < 10:
        sizes.append(len(hub.sweep_idle(TTL, budget=2)))
    assert max(sizes) <= 2
    assert sorted(freed) == [f"c{i}" for i in range(5)]


# --- channels that keep no messages: freed as soon as nothing uses them -----------


def test_last_unsubscribe_frees_a_channel_that_keeps_no_messages_at_once() -> None:
    """Subscribing to invented names and leaving must not hold max_channels slots for
    idle_ttl: nothing in such a channel is of use to a later subscriber."""
    hub, freed = idle_hub(PolicyTable())
    one, two = Connection(hub, 1), Connection(hub, 2)
    channel = channel_of(hub, "c")
    hub.subscribe(one.outbox, channel)
    hub.subscribe(two.outbox, channel)
    hub.unsubscribe(one.outbox, "c")
    assert freed == []
    hub.drop(two.outbox)
    assert freed == ["c"]
    assert "c" not in hub.channels
    assert hub.retired["*"].published == 0


def test_a_channel_keeping_a_snapshot_waits_for_the_idle_ttl() -> None:
    """A snapshot is kept for later subscribers, like history: no early free."""
    snapshot = ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="k", snapshot=True)
    hub, freed = idle_hub(PolicyTable(snapshot))
    conn = Connection(hub, 1)
    hub.subscribe(conn.outbox, channel_of(hub, "c"))
    hub.unsubscribe(conn.outbox, "c")
    assert freed == []
    hub.sweep_idle(0.0)
    hub.sweep_idle(TTL)
    assert freed == ["c"]


def test_the_last_unpin_frees_a_channel_that_keeps_no_messages() -> None:
    """A publish to a channel nobody subscribes to (it pins the channel while the broker
    takes it) leaves no channel behind; a pin held elsewhere keeps it."""
    hub, freed = idle_hub(PolicyTable())
    channel = channel_of(hub, "c")
    hub.pin(channel)
    hub.pin(channel)
    publish(channel)
    hub.unpin(channel)
    assert freed == []
    hub.unpin(channel)
    assert freed == ["c"]
    assert hub.retired["*"].published == 1


def test_unpin_keeps_a_channel_that_got_a_subscriber_meanwhile() -> None:
    """The subscribe pin: the subscriber attaches before the pin goes, so it is never
    attached to a freed (orphan) channel."""
    hub, freed = idle_hub(PolicyTable())
    channel = channel_of(hub, "c")
    hub.pin(channel)
    hub.subscribe(Connection(hub, 1).outbox, channel)
    hub.unpin(channel)
    assert freed == []
    assert hub.channels["c"] is channel


def test_a_pinned_channel_outlives_its_last_subscriber() -> None:
    """Another subscribe still waiting on the broker holds the channel when the last
    subscriber leaves; its unpin frees it if it did not attach after all."""
    hub, freed = idle_hub(PolicyTable())
    conn = Connection(hub, 1)
    channel = channel_of(hub, "c")
    hub.subscribe(conn.outbox, channel)
    hub.pin(channel)
    hub.unsubscribe(conn.outbox, "c")
    assert freed == []
    hub.unpin(channel)
    assert freed == ["c"]


def test_idle_ttl_0_never_frees_early_either() -> None:
    """0 turns freeing off, the early free included."""
    hub, freed = idle_hub(PolicyTable(), ttl=0.0)
    conn = Connection(hub, 1)
    hub.subscribe(conn.outbox, channel_of(hub, "c"))
    hub.unsubscribe(conn.outbox, "c")
    hub.pin(hub.channels["c"])
    hub.unpin(hub.channels["c"])
    assert freed == []


def test_a_channel_freed_early_goes_on_from_its_seq_and_epoch() -> None:
    """Freeing early is invisible to clients: the same name used again continues its seq
    under the same epoch (a publisher's seqs still grow by 1, a returning subscriber
    sees no false gap)."""
    hub, freed = idle_hub(PolicyTable())
    channel = channel_of(hub, "c")
    hub.pin(channel)
    publish(channel, 3)
    hub.unpin(channel)
    assert freed == ["c"]
    again = channel_of(hub, "c")
    assert again is not channel
    assert (again.epoch, again.last_seq) == (channel.epoch, 3)
    assert "c" not in hub.resting


def test_resting_seqs_are_bounded_oldest_forgotten_first() -> None:
    """An abuser inventing names cannot grow the remembered seqs without bound; a forgotten
    name starts at seq 0 under a new epoch, like any freed channel."""
    hub, _ = idle_hub(PolicyTable())
    for index in range(RESTING_MAX + 1):
        channel = channel_of(hub, f"c{index}")
        hub.pin(channel)
        publish(channel)
        hub.unpin(channel)
    assert len(hub.resting) == RESTING_MAX
    forgotten, kept = channel_of(hub, "c0"), channel_of(hub, "c1")
    assert (forgotten.last_seq, kept.last_seq) == (0, 1)
    assert forgotten.epoch != kept.epoch
