"""Gap accounting per channel, without a socket."""

from __future__ import annotations

from broadcaster.client.tracking import Gap, SeqTracker


def reply(seq: int, epoch: str = "e1", **extra: object) -> dict[str, object]:
    return {"channel": "c", "seq": seq, "epoch": epoch, "strategy": "drop-oldest", **extra}


def test_jumps_are_gaps_of_the_exact_size_and_duplicates_are_not_delivered() -> None:
    t = SeqTracker()
    assert t.resume_from() is None
    assert t.subscribed(reply(10), None) is None
    assert t.message("c", 11) == (True, None)
    assert t.message("c", 15) == (True, Gap("c", 3, 12, 14))
    assert t.message("c", 15) == (False, None)
    assert t.message("c", 2) == (False, None)
    assert t.resume_from() == (15, "e1")


def test_resubscribe_recovered_unrecovered_and_new_epoch() -> None:
    t = SeqTracker()
    t.subscribed(reply(15), None)
    # History reached back: nothing missed, the replay follows.
    assert t.subscribed(reply(20, recovered=True), 15) is None
    assert t.message("c", 16) == (True, None)
    # It did not: everything up to the reply's seq is one gap.
    assert t.subscribed(reply(30, recovered=False, oldest_seq=25), 16) == Gap("c", 14, 17, 30)
    assert t.message("c", 31) == (True, None)
    # A new epoch: the channel restarted from 1; no false gap, no false duplicate.
    assert t.subscribed(reply(2, "e2", recovered=False), 31) is None
    assert t.message("c", 3) == (True, None)
    assert t.resume_from() == (3, "e2")


def test_nothing_missed_on_resubscribe_is_no_gap() -> None:
    t = SeqTracker()
    t.subscribed(reply(5), None)
    assert t.subscribed(reply(5, recovered=False), 5) is None


def test_conflate_channels_skip_channel_wide_detection() -> None:
    t = SeqTracker()
    t.subscribed({**reply(5), "strategy": "conflate"}, None)
    assert t.message("c", 3, snapshot=True) == (True, None)
    assert t.message("c", 9) == (True, None)
    assert t.message("c", 7) == (True, None)
    assert t.seq == 9


def test_starting_from_a_known_seq() -> None:
    t = SeqTracker(7, "e1")
    assert t.resume_from() == (7, "e1")
    no_epoch = SeqTracker(7)
    assert no_epoch.resume_from() == (7, None)
    assert no_epoch.subscribed(reply(9, "x", recovered=False), 7) == Gap("c", 2, 8, 9)
