"""The local bus's pure parts: framing, per-channel state, fullness counts, shared admission."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.config import LimitsConfig
from broadcaster.core.channel import Channel
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import Strategy
from broadcaster.security.admission import Admission, RemoteHoldings, Ticket
from broadcaster.security.overload import Overload
from broadcaster.workers.channels import BusChannels, Spec
from broadcaster.workers.framing import MAX_HEADER, FrameDecoder, FrameError, encode

# --- framing ----------------------------------------------------------------------

FRAMES: list[tuple[dict[str, Any], bytes]] = [
    ({"t": "m", "c": "prices", "s": 1, "tm": 1.5}, b'{"p":1}'),
    ({"t": "P", "i": 7, "s": 1, "e": "epoch"}, b""),
    ({"t": "S", "c": "é", "hist": [[1, 0.0, 3]]}, b"abc" * 1000),
]


def test_frames_come_out_as_they_went_in() -> None:
    stream = b"".join(encode(header, payload) for header, payload in FRAMES)
    assert FrameDecoder().feed(stream) == FRAMES


@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=200))
def test_any_read_boundaries_give_the_same_frames(cuts: list[int]) -> None:
    """However the socket splits the stream, the frames are the same, in order."""
    stream = b"".join(encode(header, payload) for header, payload in FRAMES)
    decoder = FrameDecoder()
    got = []
    offset = 0
    for cut in cuts:
        got += decoder.feed(stream[offset : offset + cut])
        offset += cut
    got += decoder.feed(stream[offset:])
    assert got == FRAMES
    assert decoder.pending == 0


def test_a_frame_is_built_once_and_is_bytes() -> None:
    """The bus writes the same bytes object to every worker."""
    frame = encode({"t": "m"}, b"x")
    assert isinstance(frame, bytes)
    assert frame.endswith(b"x")


def test_a_length_beyond_the_limit_is_refused() -> None:
    bad = (MAX_HEADER + 1).to_bytes(4, "big") + (0).to_bytes(4, "big")
    with pytest.raises(FrameError):
        FrameDecoder().feed(bad)


def test_a_header_that_is_not_an_object_is_refused() -> None:
    head = orjson.dumps([1, 2])
    with pytest.raises(FrameError):
        FrameDecoder().feed(len(head).to_bytes(4, "big") + (0).to_bytes(4, "big") + head)


# --- the bus's per-channel state ------------------------------------------------

KEEPS = Spec(history_size=3, history_ttl=10.0, kept=5.0)
PLAIN = Spec(kept=5.0)


def test_seqs_are_per_channel_and_gap_free_whoever_publishes() -> None:
    state = BusChannels("tok")
    seqs = [state.publish("a", PLAIN, b"1", 0.0, 0.0).last_seq for _ in range(3)]
    assert seqs == [1, 2, 3]
    assert state.publish("b", PLAIN, b"1", 0.0, 0.0).last_seq == 1


def test_history_keeps_the_last_size_within_ttl() -> None:
    state = BusChannels("tok")
    for i in range(5):
        state.publish("a", KEEPS, str(i).encode(), float(i), now=float(i))
    channel = state.subscribe("a", 0, KEEPS, now=5.0)
    assert [(e.seq, e.data) for e in channel.retained(5.0)] == [(3, b"2"), (4, b"3"), (5, b"4")]
    assert [e.seq for e in channel.retained(13.5)] == [5], "older than history_ttl: gone"


def test_snapshot_keeps_the_newest_per_key_in_seq_order() -> None:
    spec = Spec(snapshot=True, kept=None)
    state = BusChannels("tok")
    for key, data in [("A", b"1"), ("B", b"2"), ("A", b"3")]:
        state.publish("s", spec, data, 0.0, 0.0, key=key.encode())
    channel = state.subscribe("s", 1, spec, 0.0)
    assert [(e.seq, e.data) for e in channel.snapshot()] == [(2, b"2"), (3, b"3")]


def test_interest_decides_who_gets_messages() -> None:
    state = BusChannels("tok")
    state.subscribe("a", 0, KEEPS, 0.0)
    state.subscribe("a", 2, KEEPS, 0.0)
    assert state.publish("a", KEEPS, b"1", 0.0, 0.0).interested == {0, 2}
    state.unsubscribe("a", 0, 1.0)
    state.worker_gone(2, 1.0)
    assert state.publish("a", KEEPS, b"2", 0.0, 1.0).interested == set()


def test_a_channel_that_keeps_nothing_rests_and_goes_on_from_its_seq() -> None:
    """As the hub: freed when nobody is interested, its epoch and seq remembered."""
    state = BusChannels("tok")
    state.subscribe("a", 0, PLAIN, 0.0)
    state.publish("a", PLAIN, b"1", 0.0, 0.0)
    state.unsubscribe("a", 0, 1.0)
    assert "a" not in state.channels
    assert state.resting["a"] == ("tok", 1)
    again = state.publish("a", PLAIN, b"2", 0.0, 2.0)
    assert (again.epoch, again.last_seq) == ("tok", 2)


def test_a_keeping_channel_is_freed_after_kept_unused_then_starts_a_new_epoch() -> None:
    state = BusChannels("tok")
    state.subscribe("h", 0, KEEPS, 0.0)
    state.publish("h", KEEPS, b"1", 0.0, 0.0)
    state.unsubscribe("h", 0, 1.0)
    assert state.sweep(5.9) == [], "not unused for 5 s yet"
    assert state.sweep(6.0) == ["h"]
    state.publish("other", PLAIN, b"x", 0.0, 6.0)  # freed at once: resting, one more free
    channel = state.subscribe("h", 1, KEEPS, 7.0)
    assert channel.epoch == "tok.2"
    assert channel.last_seq == 0
    assert channel.retained(7.0) == []


def test_a_publish_keeps_a_keeping_channel_alive() -> None:
    state = BusChannels("tok")
    state.publish("h", KEEPS, b"1", 0.0, 0.0)
    state.sweep(1.0)
    state.publish("h", KEEPS, b"2", 0.0, 4.0)
    assert state.sweep(6.0) == []
    assert state.sweep(9.0) == ["h"]


def test_with_idle_ttl_zero_nothing_is_ever_freed() -> None:
    state = BusChannels("tok")
    never = Spec()
    state.subscribe("a", 0, never, 0.0)
    state.unsubscribe("a", 0, 1.0)
    state.publish("b", Spec(history_size=1, history_ttl=1.0), b"1", 0.0, 0.0)
    assert state.sweep(1e9) == []
    assert set(state.channels) == {"a", "b"}


# --- block: local and remote fullness -----------------------------------------------


def blocking() -> tuple[Channel, list[tuple[bool, int]], list[str]]:
    channel = Channel("b", ChannelPolicy(strategy=Strategy.BLOCK), epoch="e")
    told: list[tuple[bool, int]] = []
    rooms: list[str] = []
    channel.on_local_full = lambda ch, full: told.append((full, ch.full_count))
    channel.on_room = lambda ch: rooms.append(ch.name)
    return channel, told, rooms


def test_local_fullness_is_reported_when_it_leaves_zero_and_returns() -> None:
    channel, told, rooms = blocking()
    channel.became_full()
    channel.became_full()
    channel.room_freed()
    assert told == [(True, 1)]
    channel.room_freed()
    assert told == [(True, 1), (False, 0)]
    assert rooms == ["b"]


def test_remote_fullness_blocks_and_the_last_full_worker_releases() -> None:
    channel, told, rooms = blocking()
    channel.remote_fullness(True)
    assert not channel.has_room()
    channel.became_full()
    assert told == [(True, 2)], "this worker's own fullness is still reported"
    channel.room_freed()
    assert told[-1] == (False, 1)
    assert not channel.has_room(), "another worker is still full"
    assert rooms == []
    channel.remote_fullness(False)
    assert channel.has_room()
    assert rooms == ["b"]


# --- admission across workers -----------------------------------------------------


def admission(**limits: object) -> Admission:
    config = LimitsConfig(exempt_networks=(), **limits)  # type: ignore[arg-type]
    return Admission(config, Overload(config.max_loop_lag, config.shed_after, config.shed_fraction))


def test_per_address_caps_count_what_other_workers_hold() -> None:
    local = admission(connections_per_ip=2)
    others = RemoteHoldings()
    sent: list[tuple[str | None, int]] = []
    local.share(others, lambda key, delta: sent.append((key, delta)))
    ticket = local.admit("203.0.113.7", 0.0)
    assert isinstance(ticket, Ticket)
    local.remote(others, "203.0.113.7", 1, 0.0, sync=False)
    refused = local.admit("203.0.113.7", 0.0)
    assert not isinstance(refused, Ticket)
    assert refused.reason == "ip_connections"
    assert isinstance(local.admit("198.51.100.1", 0.0), Ticket), "another address is fine"
    local.remote(others, "203.0.113.7", -1, 0.0, sync=False)
    assert isinstance(local.admit("203.0.113.7", 0.0), Ticket)
    ticket.release()
    assert sent == [
        ("203.0.113.7", 1),
        ("198.51.100.1", 1),
        ("203.0.113.7", 1),
        ("203.0.113.7", -1),
    ]


def test_max_connections_counts_every_worker() -> None:
    local = admission(max_connections=3)
    others = RemoteHoldings()
    local.share(others, None)
    local.remote(others, None, 2, 0.0, sync=True)
    assert isinstance(local.admit("203.0.113.7", 0.0), Ticket)
    refused = local.admit("203.0.113.8", 0.0)
    assert not isinstance(refused, Ticket)
    assert refused.reason == "connections"


def test_a_connection_admitted_elsewhere_takes_a_token_here() -> None:
    """connection_rate across workers: the bucket of an address is charged by every worker."""
    local = admission(connection_rate=1.0, connection_burst=2.0)
    others = RemoteHoldings()
    local.share(others, None)
    local.remote(others, "203.0.113.7", 1, 0.0, sync=False)
    local.remote(others, "203.0.113.7", 1, 0.0, sync=False)
    refused = local.admit("203.0.113.7", 0.0)
    assert not isinstance(refused, Ticket)
    assert refused.reason == "connection_rate"
    local.remote(others, "198.51.100.1", 5, 0.0, sync=True)
    assert isinstance(local.admit("198.51.100.1", 0.0), Ticket), (
        "a joining worker's sync is not new"
    )
