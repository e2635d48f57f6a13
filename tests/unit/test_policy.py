"""Channel policies (validated when built) and the table resolving names to them."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from broadcaster.core.policy import DEFAULT_LABEL, ChannelPolicy, PolicyTable
from broadcaster.core.strategies import Strategy

# --- ChannelPolicy ---------------------------------------------------------------


def test_defaults_match_the_documented_config() -> None:
    """With no config, a channel behaves as docs/configuration.md's [defaults] says."""
    policy = ChannelPolicy()
    assert policy.strategy is Strategy.DROP_OLDEST
    assert (policy.queue_size, policy.high, policy.low) == (256, 256, 128)
    assert policy.slow_consumer_timeout == 5.0
    assert (policy.history_size, policy.history_ttl) == (0, 300.0)
    assert policy.label == DEFAULT_LABEL == "*"


def test_watermarks_follow_the_queue_size_when_unset() -> None:
    """High defaults to the queue size and low to half of it."""
    policy = ChannelPolicy(queue_size=10)
    assert (policy.high, policy.low) == (10, 5)


def test_explicit_watermarks_win() -> None:
    """Watermarks set in the config are used as given."""
    policy = ChannelPolicy(queue_size=10, high_watermark=8, low_watermark=3)
    assert (policy.high, policy.low) == (8, 3)


def test_queue_of_one_is_valid() -> None:
    """The smallest queue (one message) pauses at 1 and resumes at 0."""
    policy = ChannelPolicy(queue_size=1)
    assert (policy.high, policy.low) == (1, 0)


def test_valid_policy_has_no_problems() -> None:
    """A valid policy reports no problem."""
    assert (
        ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="s", snapshot=True).problems() == []
    )


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"queue_size": 0}, "queue_size"),
        ({"queue_size": -5}, "queue_size"),
        ({"queue_size": 10, "high_watermark": 11}, "high_watermark"),
        ({"queue_size": 10, "high_watermark": 0}, "high_watermark"),
        ({"queue_size": 10, "low_watermark": 10}, "low_watermark"),
        ({"queue_size": 10, "low_watermark": -1}, "low_watermark"),
        ({"queue_size": 10, "high_watermark": 4, "low_watermark": 4}, "low_watermark"),
        ({"slow_consumer_timeout": 0.0}, "slow_consumer_timeout"),
        ({"slow_consumer_timeout": math.nan}, "slow_consumer_timeout"),
        ({"history_size": -1}, "history_size"),
        ({"history_ttl": 0.0}, "history_ttl"),
        ({"strategy": Strategy.CONFLATE}, "conflate_key"),
        ({"strategy": Strategy.CONFLATE, "conflate_key": ""}, "conflate_key"),
        ({"conflate_fallback": Strategy.BLOCK}, "conflate_fallback"),
        ({"conflate_fallback": Strategy.CONFLATE}, "conflate_fallback"),
        ({"snapshot": True}, "snapshot"),
        ({"max_rate": 0.0}, "max_rate"),
        ({"max_rate": -1.0}, "max_rate"),
    ],
)
def test_invalid_policy_is_refused_naming_the_key(fields: dict[str, Any], key: str) -> None:
    """An impossible policy cannot be built, and the error names the offending key."""
    with pytest.raises(ValueError, match=rf"^{key}: expected "):
        ChannelPolicy(**fields)


def test_problems_lists_every_invalid_field() -> None:
    """Validation reports all problems at once, as (key, expectation) pairs."""
    policy = ChannelPolicy()
    broken = object.__new__(ChannelPolicy)
    for f in dataclasses.fields(ChannelPolicy):
        object.__setattr__(broken, f.name, getattr(policy, f.name))
    object.__setattr__(broken, "history_size", -1)
    object.__setattr__(broken, "max_rate", 0.0)
    assert [key for key, _ in broken.problems()] == ["history_size", "max_rate"]


def test_policy_is_immutable() -> None:
    """A running channel's policy cannot be changed behind its back."""
    policy = ChannelPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.queue_size = 1  # type: ignore[misc]


def test_label_does_not_affect_equality() -> None:
    """Two policies with the same settings are equal whatever [channels] key they came from."""
    assert ChannelPolicy(label="a") == ChannelPolicy(label="b")


# --- PolicyTable -------------------------------------------------------------------


BLOCK = ChannelPolicy(strategy=Strategy.BLOCK)
NEWEST = ChannelPolicy(strategy=Strategy.DROP_NEWEST)


def test_exact_name_matches() -> None:
    """A [channels] entry named exactly like the channel applies to it."""
    table = PolicyTable().with_entry("orders", BLOCK)
    assert table.resolve("orders") == BLOCK


def test_glob_pattern_matches() -> None:
    """A glob entry applies to every channel it matches."""
    table = PolicyTable().with_entry("tickers.*", BLOCK)
    assert table.resolve("tickers.demo") == BLOCK
    assert table.resolve("tickers.a.b") == BLOCK


def test_glob_is_case_sensitive() -> None:
    """Channel names are case-sensitive, including in patterns."""
    table = PolicyTable().with_entry("tickers.*", BLOCK)
    assert table.match("TICKERS.demo") is None


def test_first_matching_entry_wins() -> None:
    """Entries are tried in file order; the first match decides."""
    table = PolicyTable().with_entry("tickers.slow", NEWEST).with_entry("tickers.*", BLOCK)
    assert table.resolve("tickers.slow") == NEWEST
    assert table.resolve("tickers.fast") == BLOCK


def test_exact_name_with_glob_characters_matches_itself() -> None:
    """A channel literally named like a pattern still matches its own entry."""
    table = PolicyTable().with_entry("room[1]", BLOCK)
    assert table.resolve("room[1]") == BLOCK


def test_defaults_cover_unmatched_channels() -> None:
    """Channels matching no entry get [defaults]."""
    defaults = ChannelPolicy(queue_size=7)
    table = PolicyTable(defaults).with_entry("orders", BLOCK)
    assert table.resolve("other") is defaults


def test_strict_table_refuses_unmatched_channels() -> None:
    """With strict_channels, a name matching no entry resolves to nothing."""
    table = PolicyTable(strict=True).with_entry("orders", BLOCK)
    assert table.resolve("other") is None
    assert table.resolve("orders") == BLOCK


def test_with_entry_labels_the_policy_with_its_pattern() -> None:
    """The matched [channels] key becomes the metrics label."""
    table = PolicyTable().with_entry("tickers.*", BLOCK)
    resolved = table.resolve("tickers.x")
    assert resolved is not None
    assert resolved.label == "tickers.*"
    assert BLOCK.label == DEFAULT_LABEL


def test_with_entry_returns_a_new_table() -> None:
    """Tables are immutable: adding an entry leaves the original unchanged."""
    table = PolicyTable()
    table.with_entry("orders", BLOCK)
    assert table.entries == ()


def test_labels_are_bounded_by_the_config() -> None:
    """Metrics labels are the [channels] keys plus `*` for everything else."""
    table = PolicyTable().with_entry("orders", BLOCK).with_entry("tickers.*", NEWEST)
    assert table.labels() == ["orders", "tickers.*", "*"]
