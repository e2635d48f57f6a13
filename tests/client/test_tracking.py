"""Gap and reset accounting per channel, without a socket."""

from __future__ import annotations

from broadcaster.client.tracking import Gap, Reset, SeqTracker


def reply(seq: int, epoch: str = "e1", **extra: object) -> dict[str, object]:
    return {"channel": "c", "seq": seq, "epoch": epoch, "strategy": "drop-oldest", **extra}


def test_jumps_are_gaps_of_the_exact_size_and_duplicates_are_not_delivered() -> None:
    t = SeqTracker()
    assert t.resume_from() is None
    assert t.subscribed(reply(10), None) == (None, None)
    assert t.message("c", 11) == (True, None)
    assert t.message("c", 15) == (True, Gap("c", 3, 12, 14))
    assert t.message("c", 15) == (False, None)
    assert t.message("c", 2) == (False, None)
    assert t.resume_from() == (15, "e1")


def test_resubscribe_recovered_unrecovered_and_new_epoch() -> None:
    t = SeqTracker()
    t.subscribed(reply(15), None)
    # History reached back: nothing missed, the replay follows.
    assert t.subscribed(reply(20, recovered=True), 15) == (None, None)
    assert t.message("c", 16) == (True, None)
    # It did not: everything up to the reply's seq is one gap.
    assert t.subscribed(reply(30, recovered=False, oldest_seq=25), 16) == (
        Gap("c", 14, 17, 30),
        None,
    )
    assert t.message("c", 31) == (True, None)
    # A new epoch: the channel restarted from 1; no false gap, no false duplicate, one reset
    # saying where the old history ended for us and where the new one starts.
    gap, reset = t.subscribed(reply(2, "e2", recovered=False), 31)
    assert gap is None
    assert reset == Reset("c", old_epoch="e1", epoch="e2", last_seq=31, missed=None, seq=2)
    assert t.message("c", 3) == (True, None)
    assert t.resume_from() == (3, "e2")


def test_in_band_reset_delivers_the_new_epoch_from_seq_1() -> None:
    """`subscribed` with `reset: true`: seq 1, 2, ... of the new epoch are new, not duplicates."""
    t = SeqTracker()
    t.subscribed(reply(0), None)
    for seq in range(1, 6):
        assert t.message("c", seq) == (True, None)
    notice = reply(0, "e2", reset=True)
    assert t.reset(notice) == Reset("c", "e1", "e2", last_seq=5, missed=None, seq=0)
    assert [t.message("c", seq) for seq in (1, 2, 3)] == [(True, None)] * 3
    assert t.message("c", 5) == (True, Gap("c", 1, 4, 4))
    assert t.resume_from() == (5, "e2")


def test_a_reply_in_the_tracked_epoch_is_no_reset() -> None:
    t = SeqTracker(4, "e1")
    assert t.subscribed(reply(9, recovered=True), 4) == (None, None)


def test_a_reset_naming_the_replaced_epoch_counts_what_was_missed() -> None:
    """previous_epoch/previous_seq of the followed epoch give the exact loss; else unknown."""
    t = SeqTracker()
    t.subscribed(reply(0), None)
    for seq in range(1, 6):
        t.message("c", seq)
    notice = {**reply(0, "e2", reset=True), "previous_epoch": "e1", "previous_seq": 9}
    assert t.reset(notice).missed == 4  # seqs 6..9 of e1 never arrived
    other = {**reply(0, "e3", reset=True), "previous_epoch": "elsewhere", "previous_seq": 9}
    assert t.reset(other).missed is None  # not the epoch this client followed


def test_nothing_missed_on_resubscribe_is_no_gap() -> None:
    t = SeqTracker()
    t.subscribed(reply(5), None)
    assert t.subscribed(reply(5, recovered=False), 5) == (None, None)


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
    assert no_epoch.subscribed(reply(9, "x", recovered=False), 7) == (Gap("c", 2, 8, 9), None)
    known = SeqTracker(7, "old")
    assert known.subscribed(reply(9, "x", recovered=False), 7) == (
        None,
        Reset("c", "old", "x", last_seq=7, missed=None, seq=9),
    )
