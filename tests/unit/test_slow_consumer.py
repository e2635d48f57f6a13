"""The slow-consumer rule on its own: time is a number passed in."""

from __future__ import annotations

import math

import pytest

from broadcaster.core.slow_consumer import SlowConsumerRule


@pytest.mark.parametrize("timeout", [0.0, -1.0, math.nan])
def test_timeout_must_be_positive(timeout: float) -> None:
    """A zero, negative or NaN timeout is refused."""
    with pytest.raises(ValueError, match="slow_consumer_timeout"):
        SlowConsumerRule(timeout)


def test_not_expired_while_never_above() -> None:
    """A subscriber that never reached its high watermark is never slow."""
    rule = SlowConsumerRule(5.0)
    assert not rule.expired(1e9)
    assert rule.deadline() is None
    assert rule.seconds_above(1e9) == 0.0


def test_not_expired_at_exactly_the_timeout() -> None:
    """Being above for exactly the timeout is still allowed."""
    rule = SlowConsumerRule(5.0)
    rule.entered(10.0)
    assert not rule.expired(15.0)


def test_expired_just_after_the_timeout() -> None:
    """Being above for longer than the timeout marks a slow consumer."""
    rule = SlowConsumerRule(5.0)
    rule.entered(10.0)
    assert rule.expired(15.001)


def test_entering_again_keeps_the_first_time() -> None:
    """Further rises while above do not restart the clock."""
    rule = SlowConsumerRule(5.0)
    rule.entered(10.0)
    rule.entered(14.0)
    assert rule.deadline() == 15.0
    assert rule.expired(15.5)


def test_leaving_resets_the_clock() -> None:
    """Falling below the high watermark forgets the time spent above."""
    rule = SlowConsumerRule(5.0)
    rule.entered(10.0)
    rule.left()
    assert not rule.expired(100.0)
    rule.entered(100.0)
    assert rule.deadline() == 105.0


def test_seconds_above_counts_from_entry() -> None:
    """/stats shows how long a subscriber has been at or above its watermark."""
    rule = SlowConsumerRule(5.0)
    rule.entered(10.0)
    assert rule.seconds_above(12.5) == 2.5


def test_seconds_above_is_never_negative() -> None:
    """A clock reading earlier than the entry shows zero, not a negative duration."""
    rule = SlowConsumerRule(5.0)
    rule.entered(10.0)
    assert rule.seconds_above(9.0) == 0.0


# --- holding a block channel's publishers (the leaky bucket) ---------------------


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5, math.nan])
def test_share_must_be_a_fraction(share: float) -> None:
    """slow_consumer_share is a fraction of the time: > 0 and <= 1."""
    with pytest.raises(ValueError, match="slow_consumer_share"):
        SlowConsumerRule(5.0, share)


def blocked_every(
    rule: SlowConsumerRule, step: float, steps: int, blocking: int, every: int
) -> int:
    """Report `blocking` steps out of each `every` as spent blocking; the step it expired, or -1."""
    for index in range(1, steps + 1):
        if index % every < blocking:
            rule.blocked(index * step, step)
        if rule.expired(index * step):
            return index
    return -1


def test_blocking_without_a_break_expires_after_the_timeout() -> None:
    """Holding publishers all the time is cut like staying above the watermark: after timeout."""
    rule = SlowConsumerRule(5.0, 0.5)
    for index in range(1, 50):
        rule.blocked(index * 0.1, 0.1)
        assert not rule.expired(index * 0.1)
    rule.blocked(5.0, 0.1)
    rule.blocked(5.1, 0.1)
    assert rule.expired(5.1)


def test_trickle_reader_that_blocks_most_of_the_time_expires() -> None:
    """Blocking 9 ticks in 10 never stays above the watermark, yet is cut within a bound."""
    rule = SlowConsumerRule(5.0, 0.5)
    expired_at = blocked_every(rule, 0.1, 1_000, blocking=9, every=10)
    # The level grows at 0.9 - 0.5 = 0.4 s per second up to (1 - 0.5) * 5 = 2.5 s.
    assert 55 <= expired_at <= 70


def test_blocking_less_than_the_share_never_expires() -> None:
    """A subscriber that holds publishers 4 ticks in 10 (share 0.5) is never cut."""
    rule = SlowConsumerRule(5.0, 0.5)
    assert blocked_every(rule, 0.1, 10_000, blocking=4, every=10) == -1


def test_share_of_one_leaves_only_the_watermark_rule() -> None:
    """slow_consumer_share = 1: blocking all the time without staying above is never cut."""
    rule = SlowConsumerRule(5.0, 1.0)
    assert blocked_every(rule, 0.1, 10_000, blocking=1, every=1) == -1


def test_budget_drains_while_not_blocking() -> None:
    """After a stretch of blocking, time without blocking gives the budget back."""
    rule = SlowConsumerRule(5.0, 0.5)
    for index in range(1, 41):
        rule.blocked(index * 0.1, 0.1)  # 4 s of blocking: level 2.0 of 2.5
    rule.blocked(100.0, 0.1)  # a long pause, then blocking again
    assert rule.blocking < 0.1
    assert not rule.expired(100.0)
