"""`[defaults]` and `[channels."PATTERN"]`: per-channel policies, resolved into a `PolicyTable`.

Both sections take the same keys (`POLICY_KEYS`); a `[channels]` entry starts
from `[defaults]` and overrides what it sets. What each key means, and the
checks between keys (watermarks against the queue size, conflate needs a
key), live on `broadcaster.core.policy.ChannelPolicy`; this module turns
TOML values into its types and its `ValueError`s into `ConfigError`s that
name the section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from broadcaster.config.auth import AuthConfig
from broadcaster.config.tables import KeyTypes, check_table
from broadcaster.core.policy import Access, ChannelPolicy, Compression, PolicyTable
from broadcaster.core.strategies import Strategy
from broadcaster.errors import ConfigError

__all__ = ["POLICY_KEYS", "channel_policy", "check_access", "policy_table"]

POLICY_KEYS: KeyTypes = {
    "strategy": str,
    "queue_size": int,
    "high_watermark": int,
    "low_watermark": int,
    "slow_consumer_timeout": (int, float),
    "slow_consumer_share": (int, float),
    "history_size": int,
    "history_ttl": (int, float),
    "conflate_key": str,
    "conflate_fallback": str,
    "snapshot": bool,
    "max_rate": (int, float),
    "subscribe": str,
    "publish": str,
    "compression": str,
    "compression_min_size": int,
    "compression_level": int,
}
# Keys whose string value names one member of an enum.
_CHOICES: dict[str, type[Strategy] | type[Access] | type[Compression]] = {
    "compression": Compression,
    "strategy": Strategy,
    "conflate_fallback": Strategy,
    "subscribe": Access,
    "publish": Access,
}


def policy_table(
    source: str,
    defaults_values: Mapping[str, Any],
    channels: Any,
    strict: bool,
    at: Callable[[str], str],
) -> PolicyTable:
    """The `[defaults]` policy and the `[channels]` entries, in file order (first match wins).

    `defaults_values` are already type-checked (environment variables and flags
    may override them, and `at(key)` names where each came from); `channels`
    is the raw `[channels]` table, which only the file can set.
    """
    defaults = channel_policy(source, "[defaults]", defaults_values, ChannelPolicy(), "*", at)
    if not isinstance(channels, dict):
        raise ConfigError(source, "[channels]", 'tables such as [channels."tickers.*"]', channels)
    entries: list[tuple[str, ChannelPolicy]] = []
    for pattern, table in channels.items():
        section = f'[channels."{pattern}"]'
        if isinstance(table, dict):
            for key, value in table.items():
                if isinstance(value, dict):
                    # Unquoted, [channels.tickers.demo] is a table in a table: say how to quote it.
                    raise ConfigError(
                        source,
                        f"{section} {key}",
                        f"a channel setting; a channel name with dots must be quoted: "
                        f'[channels."{pattern}.{key}"]',
                    )
        values = check_table(source, section, table, POLICY_KEYS)
        entries.append((pattern, channel_policy(source, section, values, defaults, pattern)))
    return PolicyTable(defaults, tuple(entries), strict)


def channel_policy(
    source: str,
    section: str,
    values: Mapping[str, Any],
    base: ChannelPolicy,
    label: str,
    origin: Callable[[str], str] | None = None,
) -> ChannelPolicy:
    """`base` with `values` applied, labelled `label`; errors name `section` and the key.

    `origin(key)` names where a value came from when it may be an override
    (only `[defaults]`); otherwise errors name `source`.
    """

    def where(key: str) -> str:
        return origin(key) if origin is not None else source

    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        choices = _CHOICES.get(key)
        if choices is not None:
            try:
                kwargs[key] = choices(value)
            except ValueError:
                raise ConfigError(
                    where(key),
                    f"{section} {key}",
                    " | ".join(f'"{choice.value}"' for choice in choices),
                    value,
                ) from None
        elif key in ("slow_consumer_timeout", "slow_consumer_share", "history_ttl", "max_rate"):
            kwargs[key] = float(value)
        else:
            kwargs[key] = value
    # Unset watermarks stay None in the defaults policy, so a channel that
    # only changes its queue size gets watermarks derived from its own size.
    try:
        return dataclasses.replace(base, label=label, **kwargs)
    except ValueError as exc:
        key, _, expected = str(exc).partition(": expected ")
        if key not in values and section != "[defaults]":
            expected += f" (the value is inherited from [defaults]; set {key} in {section})"
        raise ConfigError(where(key), f"{section} {key}", expected) from None


def check_access(source: str, auth: AuthConfig, policies: PolicyTable) -> None:
    """`token` access needs tokens: refuse it while [auth] is off, naming the section."""
    if auth.enabled:
        return
    for section, policy in [("[defaults]", policies.defaults)] + [
        (f'[channels."{pattern}"]', p) for pattern, p in policies.entries
    ]:
        for key in ("subscribe", "publish"):
            if getattr(policy, key) is Access.TOKEN:
                raise ConfigError(
                    source,
                    f"{section} {key}",
                    '"anyone" or "none" while [auth] enabled = false (no client can have a token)',
                    "token",
                )
