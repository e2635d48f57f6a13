"""Token buckets with explicit times: rate, burst, the wait to report, bounded memory."""

from __future__ import annotations

import pytest

from broadcaster.core.token_bucket import TokenBucket, TokenBuckets


def test_a_new_bucket_allows_a_burst_then_refuses_with_the_exact_wait() -> None:
    """Full at start: `burst` takes succeed at once; the next waits 1/rate seconds."""
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)


def test_tokens_refill_at_the_rate_and_never_above_burst() -> None:
    """After t seconds, rate*t tokens are back, capped at burst."""
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    for _ in range(3):
        bucket.take(0.0)
    assert bucket.take(0.5) == 0.0, "one token back after half a second"
    assert bucket.take(0.5) > 0
    assert not bucket.full(1.0)
    assert bucket.full(100.0)
    assert [bucket.take(100.0) for _ in range(4)][-1] > 0, "an hour idle still banks only 3"


def test_a_refused_take_costs_nothing() -> None:
    """A refused request does not eat into the tokens the next one will have."""
    bucket = TokenBucket(rate=1.0, burst=1, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.2) == pytest.approx(0.8)
    assert bucket.take(0.6) == pytest.approx(0.4)
    assert bucket.take(1.0) == 0.0


def test_a_cost_takes_that_many_tokens() -> None:
    """A batch of n messages takes n tokens, or none."""
    bucket = TokenBucket(rate=10.0, burst=5, now=0.0)
    assert bucket.take(0.0, cost=4) == 0.0
    assert bucket.take(0.0, cost=2) == pytest.approx(0.1)
    assert bucket.take(0.0, cost=1) == 0.0


def test_time_going_backwards_is_ignored() -> None:
    """A clock that steps back never adds or removes tokens."""
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    bucket.take(10.0)
    assert bucket.take(5.0) > 0
    assert bucket.take(11.0) == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0), (1, 0.5)])
def test_invalid_settings_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="expected"):
        TokenBucket(rate, burst, 0.0)
    with pytest.raises(ValueError, match="expected"):
        TokenBuckets(rate, burst)


def test_each_key_has_its_own_bucket() -> None:
    """One publisher over its rate does not slow another."""
    buckets = TokenBuckets(rate=1.0, burst=1)
    assert buckets.take("a", 0.0) == 0.0
    assert buckets.take("a", 0.0) > 0
    assert buckets.take("b", 0.0) == 0.0


def test_memory_is_bounded_and_full_buckets_go_first() -> None:
    """Past max_keys, refilled buckets are forgotten first (they equal new ones), then the LRU."""
    buckets = TokenBuckets(rate=1.0, burst=2, max_keys=8)
    buckets.take("busy", 0.0, cost=2)
    for i in range(7):
        buckets.take(f"idle{i}", 0.0)
    assert len(buckets) == 8
    # At t=10 every idle bucket has refilled; "busy" keeps spending and is never full.
    for t in range(1, 11):
        buckets.take("busy", float(t), cost=1)
    buckets.take("new", 10.0)
    assert len(buckets) <= 8
    assert buckets.take("busy", 10.0) > 0, "the busy publisher kept its (empty) bucket"


def test_least_recently_used_go_when_none_is_full() -> None:
    """With every bucket in use, the least recently used make room; the count stays bounded."""
    buckets = TokenBuckets(rate=0.001, burst=1, max_keys=8)
    for i in range(100):
        buckets.take(i, 0.0)
        assert len(buckets) <= 8
    assert buckets.take(99, 0.0) > 0, "the most recent publisher is still remembered"
