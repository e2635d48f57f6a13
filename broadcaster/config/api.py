"""`[api]`: the HTTP publish API, its port, keys, rate limit and request bounds.

`ApiConfig` says what each key means; `API_KEYS` is what the file, the
environment and the flags may set; `api_config` checks the values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broadcaster.config.tables import KeyTypes
from broadcaster.errors import ConfigError

__all__ = ["API_KEYS", "ApiConfig", "api_config"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ApiConfig:
    """`[api]`: the HTTP publish API, on its own port (the WebSocket port only speaks GET)."""

    enabled: bool = False
    """Off unless a config turns it on (configs/default.toml does): no port opens unasked."""
    host: str = "127.0.0.1"
    port: int = 8766
    keys: tuple[str, ...] = field(default=(), repr=False)
    """API keys accepted in `Authorization: apikey KEY`; empty = no auth (bind to loopback)."""
    publish_timeout: float = 5.0
    """Seconds a request may wait for room on `block` channels before answering 503."""
    rate: float = 0.0
    """Messages per second per publisher (API key, or client address without keys); 0 = no limit."""
    burst: float = 1.0
    """Messages a publisher may send at once above `rate` (default: `rate`, at least 1)."""
    max_batch: int = 1000
    """Messages in one batch request, at most."""
    max_body_size: int = 1_048_576
    """Bytes per request body; larger requests get 413."""
    header_timeout: float = 10.0
    """Seconds a connection has to send a complete request head, from the time it connects
    or its previous response was sent (so also how long an idle keep-alive connection is
    kept); then it is closed."""
    body_timeout: float = 10.0
    """Seconds to receive a request's whole body once its head arrived; then 408 and close."""
    max_connections: int = 1024
    """Open connections to the API port; one more is closed as soon as it is accepted."""


API_KEYS: KeyTypes = {
    "enabled": bool,
    "host": str,
    "port": int,
    "keys": list,
    "publish_timeout": (int, float),
    "rate": (int, float),
    "burst": (int, float),
    "max_batch": int,
    "max_body_size": int,
    "header_timeout": (int, float),
    "body_timeout": (int, float),
    "max_connections": int,
}


def api_config(values: dict[str, Any], at: Callable[[str], str]) -> ApiConfig:
    """Validate `[api]` values (types already checked) into an `ApiConfig`."""

    def fail(key: str, expected: str) -> ConfigError:
        return ConfigError(at(key), f"[api] {key}", expected, values[key])

    if "port" in values and not 0 <= values["port"] <= 65535:
        raise fail("port", "a TCP port 0-65535")
    if "keys" in values:
        keys = values["keys"]
        if not all(isinstance(k, str) and k.strip() == k and k for k in keys):
            # The keys are secrets: name the problem, never echo the value.
            raise ConfigError(
                at("keys"), "[api] keys", "a list of non-empty strings without surrounding spaces"
            )
        values["keys"] = tuple(keys)
    for key in ("publish_timeout", "header_timeout", "body_timeout"):
        if key in values:
            if not values[key] > 0:
                raise fail(key, "seconds > 0")
            values[key] = float(values[key])
    if "max_connections" in values and values["max_connections"] < 1:
        # No "off": without a cap, half-sent requests exhaust the process's file descriptors.
        raise fail("max_connections", "connections >= 1")
    rate = float(values.get("rate", 0))
    if rate < 0:
        raise fail("rate", "messages per second >= 0 (0 = no limit)")
    values["rate"] = rate
    if "burst" in values:
        if not values["burst"] >= 1:
            raise fail("burst", "messages >= 1")
        values["burst"] = float(values["burst"])
    else:
        values["burst"] = max(1.0, rate)
    if "max_batch" in values and values["max_batch"] < 1:
        raise fail("max_batch", "messages >= 1")
    if "max_body_size" in values and values["max_body_size"] < 64:
        raise fail("max_body_size", "bytes >= 64")
    return ApiConfig(**values)
