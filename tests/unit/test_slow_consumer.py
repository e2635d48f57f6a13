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
