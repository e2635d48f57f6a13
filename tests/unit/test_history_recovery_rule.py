"""History ring buffer and the recovery rule both brokers apply."""

from __future__ import annotations

from broadcaster.core.history import History, reaches_back
from broadcaster.core.message import Message


def _msg(seq: int, created: float = 0.0) -> Message:
    return Message(channel="c", seq=seq, payload=b"", frame=b"", created=created)


def test_reaches_back_rule() -> None:
    """Both brokers decide `recovered` and `oldest_seq` by the same rule."""
    assert reaches_back(5, last_seq=10, oldest_retained=6) == (True, 6)
    assert reaches_back(5, last_seq=10, oldest_retained=3) == (True, 3)
    assert reaches_back(5, last_seq=10, oldest_retained=7) == (False, 7)
    assert reaches_back(5, last_seq=10, oldest_retained=None) == (False, 11)
    assert reaches_back(10, last_seq=10, oldest_retained=None) == (True, 11)
    assert reaches_back(12, last_seq=10, oldest_retained=4) == (False, 4), "client ahead"


def test_since_returns_the_missed_tail() -> None:
    """A client behind by three messages gets exactly those three."""
    history = History(5, ttl=10.0)
    for seq in range(1, 11):
        history.append(_msg(seq))
    recovery = history.since(7, last_seq=10, now=0.0)
    assert recovery.recovered
    assert [m.seq for m in recovery.messages] == [8, 9, 10]


def test_since_older_than_the_ring_is_not_recovered() -> None:
    """History that no longer reaches back is reported, not papered over."""
    history = History(5, ttl=10.0)
    for seq in range(1, 11):
        history.append(_msg(seq))
    recovery = history.since(4, last_seq=10, now=0.0)
    assert not recovery.recovered
    assert recovery.oldest_seq == 6
    assert recovery.messages == []


def test_expired_messages_are_not_recoverable() -> None:
    """Messages older than history_ttl are not recovered."""
    history = History(5, ttl=10.0)
    history.append(_msg(1, created=0.0))
    history.append(_msg(2, created=5.0))
    assert history.since(0, last_seq=2, now=12.0).oldest_seq == 2
    assert not history.since(0, last_seq=2, now=12.0).recovered
    assert history.since(1, last_seq=2, now=12.0).recovered
    assert history.oldest_seq(last_seq=2, now=20.0) == 3


def test_size_zero_keeps_nothing() -> None:
    """history_size 0 retains nothing."""
    history = History(0, ttl=10.0)
    history.append(_msg(1))
    assert len(history) == 0
    assert not history.since(0, last_seq=1, now=0.0).recovered
