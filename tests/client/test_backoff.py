"""The reconnect policy, as pure functions of a seeded random source."""

from __future__ import annotations

import random
from typing import Any

import pytest

from broadcaster.client.backoff import (
    Backoff,
    close_policy,
    http_policy,
    parse_retry_after,
)
from broadcaster.codes import CLOSE_CODES


def test_normal_backoff_is_full_jitter_over_a_doubling_window_with_a_cap() -> None:
    """Attempt n waits exactly random() * min(max_delay, min_delay * factor**n)."""
    expected_rng = random.Random(42)
    backoff = Backoff(0.1, 1.0, 2.0, random=random.Random(42).random)
    steps = [backoff.next() for _ in range(8)]
    assert [s.attempt for s in steps] == list(range(8))
    caps = [backoff.cap(s.attempt) for s in steps]
    assert caps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])
    for step, cap in zip(steps, caps, strict=True):
        assert step.kind == "normal"
        assert step.delay == expected_rng.random() * cap
        assert 0 <= step.delay < cap
    backoff.reset()
    assert backoff.next().attempt == 0, "a connection that opened starts the window again"


def test_jitter_spreads_clients_over_the_whole_window() -> None:
    """Many clients at the same attempt do not retry in step (full jitter, not equal jitter)."""
    rng = random.Random(1)
    delays = [Backoff(1.0, 60.0, random=rng.random).next() for _ in range(1000)]
    values = sorted(s.delay for s in delays)
    assert values[0] < 0.01
    assert values[-1] > 0.99
    assert len({round(v, 3) for v in values}) > 500


def test_the_cap_holds_for_huge_attempt_numbers() -> None:
    backoff = Backoff(0.5, 20.0, random=lambda: 0.999)
    backoff.attempt = 10_000
    assert backoff.next().delay == pytest.approx(20.0 * 0.999)


def test_long_backoff_never_comes_back_sooner_than_half_or_retry_after() -> None:
    """After 4008/1013/4029 or HTTP 503: at least long_delay/2 (or Retry-After), jittered."""
    low = Backoff(0.01, 0.1, long_delay=30.0, random=lambda: 0.0)
    assert low.next("long").delay == 15.0
    high = Backoff(0.01, 0.1, long_delay=30.0, random=lambda: 0.999)
    assert 15.0 <= high.next("long").delay < 30.0
    told = Backoff(0.01, 0.1, long_delay=30.0, random=lambda: 0.5)
    step = told.next("long", retry_after=120.0)
    assert step.kind == "long"
    assert step.delay == 127.5, "Retry-After is the floor; jitter still spreads clients"
    assert told.next().attempt == 1, "a long wait counts as an attempt"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"min_delay": 2.0, "max_delay": 1.0}, "min_delay"),
        ({"factor": 0.5}, "factor"),
        ({"long_delay": -1.0}, "long_delay"),
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Backoff(**kwargs)


def test_close_codes_follow_the_server_table() -> None:
    """Reconnect decisions come from broadcaster/codes.py; unknown codes retry normally."""
    for code, info in CLOSE_CODES.items():
        assert close_policy(int(code)) == info.backoff
    assert close_policy(1000) == "none"
    assert close_policy(1008) == "none"
    assert [close_policy(c) for c in (4008, 1013, 4029)] == ["long"] * 3
    assert [close_policy(c) for c in (1001, 1006, 1011, 4000)] == ["normal"] * 4


def test_refused_handshakes() -> None:
    assert http_policy(503) == "long"
    assert http_policy(429) == "long"
    assert http_policy(401) == "none"
    assert http_policy(403) == "none"
    assert http_policy(500) == "normal"


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    now = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
    assert parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now=now) == 30.0
