"""`[server]`: the listening socket, per-connection limits, origins and TLS.

`ServerConfig` says what each key means; `SERVER_KEYS` is what the file, the
environment and the flags may set; `server_config` checks the values.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broadcaster.config.tables import KeyTypes
from broadcaster.errors import ConfigError

__all__ = ["SERVER_KEYS", "WORKERS_AUTO", "ServerConfig", "server_config", "usable_cores"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerConfig:
    """`[server]`: the listening socket and per-connection limits."""

    host: str = "127.0.0.1"
    port: int = 8765
    max_message_size: int = 65_536
    """Bytes per incoming frame; larger frames close the connection with 1009. Up to 16
    frames are buffered per connection, so this bounds what one client can make the
    server hold (16 x 64 KiB) before its ops are read."""
    socket_send_buffer: int = 65_536
    """SO_SNDBUF per client socket in bytes; 0 keeps the kernel's autotuning."""
    shutdown_timeout: float = 5.0
    """Seconds to drain queues on SIGTERM before closing with 1001."""
    strict_channels: bool = False
    """True: channels matching no [channels] entry are refused with unknown_channel."""
    close_timeout: float = 1.0
    """Seconds a closing handshake may take before the TCP connection is aborted."""
    ping_interval: float = 20.0
    """Seconds between WebSocket pings to idle clients (keepalive)."""
    stats_interval: float = 0.5
    """Seconds between `$sys.stats` documents, rate samples and event-loop lag readings."""
    idle_channel_ttl: float = 300.0
    """Seconds a channel with no subscriber and no publish is kept (at least its
    `history_ttl` when it keeps history); then its seq, history and snapshot are
    forgotten and its next use starts a new epoch. 0 = keep every channel forever.
    Without it, every channel name ever used would hold memory and a slot of
    `[limits] max_channels` for the life of the process."""
    allowed_origins: tuple[str, ...] = ("self",)
    """Browser origins allowed to open a WebSocket (others: HTTP 403). "self" is the
    server's own pages (Origin's host:port equals the Host header), "*" any origin,
    else exact origins such as "https://app.example.com", `*` allowed in the host."""
    allow_no_origin: bool = True
    """Whether handshakes without an Origin header (non-browser clients) are accepted."""
    tls_cert: str = ""
    """PEM certificate chain file: with `tls_key`, serve wss:// (and https:// for the API)."""
    tls_key: str = ""
    """PEM private key file of `tls_cert`."""
    workers: int = 1
    """Processes serving the same ports (`SO_REUSEPORT`), channels shared over a local
    bus (docs/ARCHITECTURE.md "Workers"). 1 = one process, no supervisor, no bus. The
    file, the variable and `--workers` may say "auto": the usable cores
    (`os.sched_getaffinity`), resolved when the config is built."""


SERVER_KEYS: KeyTypes = {
    "host": str,
    "port": int,
    "max_message_size": int,
    "socket_send_buffer": int,
    "shutdown_timeout": (int, float),
    "strict_channels": bool,
    "close_timeout": (int, float),
    "ping_interval": (int, float),
    "stats_interval": (int, float),
    "idle_channel_ttl": (int, float),
    "allowed_origins": list,
    "allow_no_origin": bool,
    "tls_cert": str,
    "tls_key": str,
    "workers": (int, str),
}

WORKERS_AUTO = "auto"
"""`workers = "auto"`: one worker per usable core."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def server_config(values: dict[str, Any], at: Callable[[str], str]) -> ServerConfig:
    """Validate `[server]` values (types already checked) into a `ServerConfig`.

    `at(key)` names where the key's value came from (the file, a variable, a flag).
    """
    for key in ("port",):
        if key in values and not 0 <= values[key] <= 65535:
            raise ConfigError(at(key), f"[server] {key}", "a TCP port 0-65535", values[key])
    for key in ("max_message_size",):
        if key in values and values[key] < 64:
            raise ConfigError(at(key), f"[server] {key}", "bytes >= 64", values[key])
    if values.get("socket_send_buffer", 0) < 0:
        raise ConfigError(
            at("socket_send_buffer"),
            "[server] socket_send_buffer",
            "bytes >= 0 (0 = kernel autotuning)",
            values["socket_send_buffer"],
        )
    for key in ("shutdown_timeout", "close_timeout", "ping_interval", "stats_interval"):
        if key in values:
            if not values[key] > 0:
                raise ConfigError(at(key), f"[server] {key}", "seconds > 0", values[key])
            values[key] = float(values[key])
    if "idle_channel_ttl" in values:
        if values["idle_channel_ttl"] < 0:
            raise ConfigError(
                at("idle_channel_ttl"),
                "[server] idle_channel_ttl",
                "seconds >= 0 (0 = keep channels forever)",
                values["idle_channel_ttl"],
            )
        values["idle_channel_ttl"] = float(values["idle_channel_ttl"])
    if "workers" in values:
        values["workers"] = _workers(values["workers"], at("workers"))
    _server_security(values, at)
    return ServerConfig(**values)


def _workers(value: int | str, source: str) -> int:
    """`workers`: an integer >= 1, or "auto" (the usable cores)."""
    if value == WORKERS_AUTO:
        return usable_cores()
    if isinstance(value, int) and value >= 1:
        return value
    raise ConfigError(source, "[server] workers", 'an integer >= 1 or "auto"', value)


def _server_security(values: dict[str, Any], at: Callable[[str], str]) -> None:
    """Validate the origin and TLS keys of `[server]` in place."""
    from broadcaster.security.origins import normalize_entry, origin_entry_problem

    if "allowed_origins" in values:
        entries = values["allowed_origins"]
        for entry in entries:
            problem = origin_entry_problem(entry)
            if problem:
                raise ConfigError(at("allowed_origins"), "[server] allowed_origins", problem, entry)
        values["allowed_origins"] = tuple(normalize_entry(e) for e in entries)
    cert, key = values.get("tls_cert", ""), values.get("tls_key", "")
    if bool(cert) != bool(key):
        missing = "tls_key" if cert else "tls_cert"
        raise ConfigError(
            at(missing), f"[server] {missing}", "both tls_cert and tls_key, or neither"
        )
    for name in ("tls_cert", "tls_key"):
        path = values.get(name, "")
        if path and not Path(path).is_file():
            raise ConfigError(at(name), f"[server] {name}", "an existing PEM file", path)
