"""The circuit breaker's transitions, driven with explicit times."""

from __future__ import annotations

import pytest

from broadcaster.brokers.breaker import Breaker, BreakerState


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker = Breaker(threshold=3, cooldown=2.0)
    for now in (0.0, 0.1):
        breaker.failure(now)
        assert breaker.state is BreakerState.CLOSED
        assert breaker.allow(now)
    breaker.failure(0.2)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(0.3)
    assert breaker.retry_after(0.3) == pytest.approx(1.9)


def test_a_success_resets_the_count() -> None:
    breaker = Breaker(threshold=2, cooldown=1.0)
    breaker.failure(0.0)
    breaker.success()
    breaker.failure(0.1)
    assert breaker.state is BreakerState.CLOSED


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    breaker = Breaker(threshold=1, cooldown=1.0)
    breaker.failure(0.0)
    assert not breaker.allow(0.99)
    assert breaker.allow(1.0), "the first caller after the cool-down is the probe"
    assert breaker.state.value == "half-open"
    assert not breaker.allow(1.0), "only one probe at a time"
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow(1.1)


def test_a_failed_probe_opens_again_for_a_full_cooldown() -> None:
    breaker = Breaker(threshold=1, cooldown=1.0)
    breaker.failure(0.0)
    assert breaker.allow(1.5)
    breaker.failure(1.6)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(2.5)
    assert breaker.allow(2.6)


def test_a_cancelled_probe_frees_the_slot() -> None:
    breaker = Breaker(threshold=1, cooldown=1.0)
    breaker.failure(0.0)
    assert breaker.allow(1.0)
    breaker.release()
    assert breaker.allow(1.0)


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (1, 0.0)])
def test_rejects_nonsense(threshold: int, cooldown: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        Breaker(threshold=threshold, cooldown=cooldown)
