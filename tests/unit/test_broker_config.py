"""[broker] keys: defaults, types and ranges, with errors that name the key."""

from __future__ import annotations

import pytest

from broadcaster.config import load_config, parse_config
from broadcaster.errors import ConfigError


def test_redis_broker_keys() -> None:
    config = parse_config(
        """
[broker]
kind = "redis"
url = "redis://10.0.0.5:6380/2"
prefix = "app1:"
timeout = 2
breaker_threshold = 5
breaker_cooldown = 0.5
stream_maxlen = 500
""",
        source="t.toml",
    )
    broker = config.broker
    assert (broker.kind, broker.url, broker.prefix) == ("redis", "redis://10.0.0.5:6380/2", "app1:")
    assert (broker.timeout, broker.breaker_threshold, broker.breaker_cooldown) == (2.0, 5, 0.5)
    assert broker.stream_maxlen == 500


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("timeout = 0", "[broker] timeout"),
        ("breaker_cooldown = -1", "[broker] breaker_cooldown"),
        ("breaker_threshold = 0", "[broker] breaker_threshold"),
        ("stream_maxlen = 0", "[broker] stream_maxlen"),
        ('timeout = "1"', "[broker] timeout"),
        ('kind = "kafka"', "[broker] kind"),
    ],
)
def test_bad_broker_values_name_the_key(line: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(f"[broker]\n{line}\n", source="t.toml")
    assert error.value.key == key


def test_env_overrides_broker_keys() -> None:
    config = load_config(
        None,
        environ={"BROADCASTER_BROKER_KIND": "redis", "BROADCASTER_BROKER_TIMEOUT": "0.25"},
    )
    assert (config.broker.kind, config.broker.timeout) == ("redis", 0.25)
