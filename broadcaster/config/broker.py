"""`[broker]`: where channels are shared (this process only, or Redis) and how Redis is guarded.

`BrokerConfig` says what each key means; `BROKER_KEYS` is what the file, the
environment and the flags may set; `broker_config` checks the values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broadcaster.config.tables import KeyTypes
from broadcaster.errors import ConfigError

__all__ = ["BROKER_KEYS", "BROKER_KINDS", "BrokerConfig", "broker_config"]


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerConfig:
    """`[broker]`: where channels are shared."""

    kind: str = "memory"
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "broadcaster:"
    """Prefix of every Redis key (streams, counters, wake-up keys): one prefix per cluster."""
    timeout: float = 1.0
    """Seconds one Redis operation may take before it counts as a failure."""
    breaker_threshold: int = 3
    """Consecutive failures or timeouts that open the circuit breaker."""
    breaker_cooldown: float = 2.0
    """Seconds the breaker stays open before a half-open probe."""
    stream_maxlen: int = 10_000
    """Entries each stream keeps at least (or history_size if larger): how far a node's
    reader may fall behind (a paused `block` channel, a slow node) without a gap."""


BROKER_KEYS: KeyTypes = {
    "kind": str,
    "url": str,
    "prefix": str,
    "timeout": (int, float),
    "breaker_threshold": int,
    "breaker_cooldown": (int, float),
    "stream_maxlen": int,
}
BROKER_KINDS = ("memory", "redis")


def broker_config(values: dict[str, Any], at: Callable[[str], str]) -> BrokerConfig:
    """Validate `[broker]` values (types already checked) into a `BrokerConfig`.

    `at(key)` names where the key's value came from (the file, an environment
    variable or a flag), so every error points at what the user must fix.
    """
    if values.get("kind", "memory") not in BROKER_KINDS:
        raise ConfigError(
            at("kind"),
            "[broker] kind",
            " | ".join(f'"{k}"' for k in BROKER_KINDS),
            values["kind"],
        )
    for key in ("timeout", "breaker_cooldown"):
        if key in values:
            if not values[key] > 0:
                raise ConfigError(at(key), f"[broker] {key}", "seconds > 0", values[key])
            values[key] = float(values[key])
    for key in ("breaker_threshold", "stream_maxlen"):
        if key in values and values[key] < 1:
            raise ConfigError(at(key), f"[broker] {key}", "an integer >= 1", values[key])
    return BrokerConfig(**values)
