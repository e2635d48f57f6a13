"""`[limits]`: admission control and per-connection limits at the edge (0 = no limit).

`LimitsConfig` says what each key means; `LIMITS_KEYS` is what the file, the
environment and the flags may set; `limits_config` checks the values and
fills in the bursts a rate implies. The limits are enforced in
`broadcaster.security` (admission, overload, publish_limit).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broadcaster.config.tables import KeyTypes
from broadcaster.errors import ConfigError

__all__ = ["LIMITS_KEYS", "MIN_HEADER_BYTES", "LimitsConfig", "limits_config"]

# Below this a browser's ordinary handshake (cookies, user agent, extensions) may not fit.
MIN_HEADER_BYTES = 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class LimitsConfig:
    """`[limits]`: admission control and per-connection limits at the edge (0 = no limit)."""

    max_connections: int = 10_000
    """Open WebSocket connections, server-wide; above: HTTP 503 + Retry-After."""
    connections_per_ip: int = 256
    """Open connections per client address (IPv6: per /64); above: HTTP 429 + Retry-After."""
    connection_rate: float = 20.0
    """New connections per second per client address (a token bucket); above: HTTP 429."""
    connection_burst: float = 40.0
    """Connections a client address may open at once above `connection_rate`."""
    exempt_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Addresses the per-address limits skip (a reverse proxy on this host, tests)."""
    retry_after: float = 5.0
    """Seconds in Retry-After when a count (or overload) refuses a handshake."""
    max_header_bytes: int = 16_384
    """Bytes of one HTTP request head (request line and headers) on the WebSocket port; the
    connection is answered 431 and closed as soon as more arrive (at least 1024)."""
    max_half_open: int = 1024
    """Connections whose HTTP request is not complete yet, server-wide; the next one is
    answered 503 and closed when accepted."""
    half_open_per_ip: int = 32
    """Connections whose HTTP request is not complete yet, per client address (IPv6: per
    /64; `exempt_networks` skip it); the next one is answered 429 and closed when accepted."""
    max_subscriptions: int = 128
    """Subscriptions per connection; the extra `subscribe` gets `forbidden`."""
    max_channels: int = 100_000
    """Channels this process holds at once (about 1 KB each; unused ones are freed after
    `[server] idle_channel_ttl`); a subscribe or publish that would create one more gets
    `forbidden`."""
    publish_rate: float = 0.0
    """Publishes per second per connection (a token bucket); over: error `rate_limited`."""
    publish_burst: float = 0.0
    """Publishes at once above `publish_rate` (default: twice the rate, at least 1)."""
    rate_limit_strikes: int = 10
    """`rate_limited` refusals within `rate_limit_window` after which the next one closes 4029."""
    rate_limit_window: float = 10.0
    """Seconds over which `rate_limit_strikes` are counted."""
    max_loop_lag: float = 1.0
    """Event-loop lag (seconds) above which new connections get HTTP 503; 0 = off."""
    shed_after: float = 5.0
    """Seconds the lag may stay above `max_loop_lag` before open connections are shed
    (closed with 1013, newest first); 0 = never shed."""
    shed_fraction: float = 0.05
    """Fraction of the connections shed per monitor tick while shedding (at least one)."""

    # Channel creation by WebSocket clients (security/channel_budget.py). Kept
    # as one block: a subscribe, or a publish to a channel keeping messages,
    # that creates a channel costs one token of the connection and its address.
    new_channel_rate: float = 10.0
    """Channels one connection may create per second (a token bucket); over: `rate_limited`."""
    new_channel_burst: float = 200.0
    """Channels one connection may create at once (at least `max_subscriptions`, so a new
    connection can subscribe to that many new channels at once)."""
    new_channel_rate_per_ip: float = 50.0
    """Channels the connections of one address may create per second; 0 = no limit."""
    new_channel_burst_per_ip: float = 1000.0
    """Channels the connections of one address may create at once."""


LIMITS_KEYS: KeyTypes = {
    "max_connections": int,
    "connections_per_ip": int,
    "connection_rate": (int, float),
    "connection_burst": (int, float),
    "exempt_networks": list,
    "retry_after": (int, float),
    "max_header_bytes": int,
    "max_half_open": int,
    "half_open_per_ip": int,
    "max_subscriptions": int,
    "max_channels": int,
    "publish_rate": (int, float),
    "publish_burst": (int, float),
    "rate_limit_strikes": int,
    "rate_limit_window": (int, float),
    "max_loop_lag": (int, float),
    "shed_after": (int, float),
    "shed_fraction": (int, float),
    # channel creation
    "new_channel_rate": (int, float),
    "new_channel_burst": (int, float),
    "new_channel_rate_per_ip": (int, float),
    "new_channel_burst_per_ip": (int, float),
}


def limits_config(values: dict[str, Any], at: Callable[[str], str]) -> LimitsConfig:
    """Validate `[limits]`: counts and rates >= 0 (0 = off), bursts default to twice the rate."""

    def fail(key: str, expected: str) -> ConfigError:
        return ConfigError(at(key), f"[limits] {key}", expected, values[key])

    for key in (
        "max_connections",
        "connections_per_ip",
        "max_subscriptions",
        "max_channels",
        "max_half_open",
        "half_open_per_ip",
    ):
        if values.get(key, 0) < 0:
            raise fail(key, "an integer >= 0 (0 = no limit)")
    if values.get("max_header_bytes", MIN_HEADER_BYTES) < MIN_HEADER_BYTES:
        # No "off": websockets' own limits (8 KiB lines, 128 headers) would allow 1 MiB.
        raise fail("max_header_bytes", f"bytes >= {MIN_HEADER_BYTES}")
    for key in ("connection_rate", "publish_rate", "max_loop_lag", "shed_after"):
        if key in values:
            if values[key] < 0:
                raise fail(key, "a number >= 0 (0 = off)")
            values[key] = float(values[key])
    _burst(values, "connection_rate", "connection_burst", fail)
    _burst(values, "publish_rate", "publish_burst", fail)
    for key in ("retry_after", "rate_limit_window"):
        if key in values:
            if not values[key] > 0:
                raise fail(key, "seconds > 0")
            values[key] = float(values[key])
    if values.get("rate_limit_strikes", 1) < 1:
        raise fail("rate_limit_strikes", "an integer >= 1")
    if "shed_fraction" in values:
        if not 0 < values["shed_fraction"] <= 1:
            raise fail("shed_fraction", "a fraction > 0 and <= 1")
        values["shed_fraction"] = float(values["shed_fraction"])
    _new_channel_limits(values, fail)
    if "exempt_networks" in values:
        for network in values["exempt_networks"]:
            try:
                ipaddress.ip_network(network, strict=False)
            except (TypeError, ValueError):
                raise ConfigError(
                    at("exempt_networks"),
                    "[limits] exempt_networks",
                    'addresses or networks such as "10.0.0.0/8" or "::1"',
                    network,
                ) from None
        values["exempt_networks"] = tuple(values["exempt_networks"])
    return LimitsConfig(**values)


def _new_channel_limits(values: dict[str, Any], fail: Callable[[str, str], ConfigError]) -> None:
    """Channel-creation rates >= 0 (0 = no limit), bursts >= 1 (a rate without its burst:
    twice the rate, at least 1)."""
    for rate_key, burst_key in (
        ("new_channel_rate", "new_channel_burst"),
        ("new_channel_rate_per_ip", "new_channel_burst_per_ip"),
    ):
        if rate_key in values:
            if values[rate_key] < 0:
                raise fail(rate_key, "a number >= 0 (0 = no limit)")
            values[rate_key] = float(values[rate_key])
        _burst(values, rate_key, burst_key, fail)


def _burst(
    values: dict[str, Any], rate_key: str, burst_key: str, fail: Callable[[str, str], ConfigError]
) -> None:
    """A token bucket's burst: >= 1 when given; else twice its (checked) rate, at least 1."""
    if burst_key in values:
        if values[burst_key] < 1:
            raise fail(burst_key, "a number >= 1")
        values[burst_key] = float(values[burst_key])
    elif values.get(rate_key, 0) > 0:
        values[burst_key] = max(1.0, 2 * values[rate_key])
