"""A channel's retained tail for `since` recovery, bounded by size and by age."""

from __future__ import annotations

import pytest

from broadcaster.core.history import History, Recovery
from tests.unit.support import make_message


def filled(size: int, ttl: float, seqs: range, *, created: float = 0.0) -> History:
    history = History(size, ttl)
    for seq in seqs:
        history.append(make_message("c", seq, created=created))
    return history


def seqs_of(recovery: Recovery) -> list[int]:
    return [m.seq for m in recovery.messages]


def test_negative_size_is_refused() -> None:
    """A history cannot be built with a negative size."""
    with pytest.raises(ValueError, match="history_size"):
        History(-1, 10.0)


def test_size_zero_keeps_nothing() -> None:
    """With history_size 0 nothing is retained."""
    history = filled(0, 10.0, range(1, 4))
    assert len(history) == 0
    assert history.oldest_seq(last_seq=3, now=0.0) == 4


def test_ring_keeps_the_last_size_messages() -> None:
    """Only the newest `history_size` messages are retained."""
    history = filled(3, 10.0, range(1, 11))
    assert len(history) == 3
    assert history.oldest_seq(last_seq=10, now=0.0) == 8


def test_since_within_history_recovers_the_rest_in_order() -> None:
    """A client that saw seq K gets every retained message after K, in order."""
    history = filled(5, 10.0, range(1, 6))
    recovery = history.since(2, last_seq=5, now=0.0)
    assert recovery.recovered
    assert seqs_of(recovery) == [3, 4, 5]


def test_since_just_before_the_oldest_recovers_everything() -> None:
    """History that reaches back exactly to K + 1 is enough."""
    history = filled(3, 10.0, range(1, 11))
    recovery = history.since(7, last_seq=10, now=0.0)
    assert recovery.recovered
    assert seqs_of(recovery) == [8, 9, 10]


def test_since_older_than_history_is_not_recovered() -> None:
    """A gap the history cannot fill is reported with the oldest retained seq."""
    history = filled(3, 10.0, range(1, 11))
    recovery = history.since(6, last_seq=10, now=0.0)
    assert recovery == Recovery(recovered=False, messages=[], oldest_seq=8)


def test_since_the_last_seq_is_recovered_with_nothing() -> None:
    """A client that missed nothing is told so."""
    history = filled(3, 10.0, range(1, 4))
    recovery = history.since(3, last_seq=3, now=0.0)
    assert recovery.recovered
    assert recovery.messages == []


def test_since_without_history_is_not_recovered() -> None:
    """A channel keeping no history cannot recover a gap: oldest_seq is LAST + 1."""
    history = History(0, 10.0)
    recovery = history.since(1, last_seq=5, now=0.0)
    assert recovery == Recovery(recovered=False, messages=[], oldest_seq=6)


def test_messages_older_than_ttl_are_forgotten() -> None:
    """Messages older than history_ttl can no longer be recovered."""
    history = History(10, 5.0)
    history.append(make_message("c", 1, created=0.0))
    history.append(make_message("c", 2, created=10.0))
    recovery = history.since(0, last_seq=2, now=12.0)
    assert recovery == Recovery(recovered=False, messages=[], oldest_seq=2)


def test_message_exactly_ttl_old_is_kept() -> None:
    """A message is recoverable for history_ttl seconds inclusive."""
    history = filled(10, 5.0, range(1, 3), created=0.0)
    recovery = history.since(0, last_seq=2, now=5.0)
    assert recovery.recovered
    assert seqs_of(recovery) == [1, 2]


def test_everything_expired_reports_last_plus_one() -> None:
    """When every message expired, oldest_seq is LAST + 1 and nothing is recovered."""
    history = filled(10, 5.0, range(1, 4), created=0.0)
    recovery = history.since(1, last_seq=3, now=100.0)
    assert recovery == Recovery(recovered=False, messages=[], oldest_seq=4)


def test_oldest_seq_expires_first() -> None:
    """`oldest_seq` reports what is still retained now, after expiry."""
    history = History(10, 5.0)
    history.append(make_message("c", 1, created=0.0))
    history.append(make_message("c", 2, created=4.0))
    assert history.oldest_seq(last_seq=2, now=8.0) == 2


def test_client_ahead_of_the_channel_is_not_recovered() -> None:
    """A `since` beyond the last seq (a restarted channel) is never reported as recovered."""
    history = filled(10, 5.0, range(1, 4))
    assert not history.since(9, last_seq=3, now=0.0).recovered


def test_client_ahead_gets_the_oldest_retained_seq() -> None:
    """When not recovered, oldest_seq is the oldest seq still retained (Recovery docstring)."""
    history = filled(10, 5.0, range(1, 4))
    assert history.since(9, last_seq=3, now=0.0).oldest_seq == 1
