"""Configuration: one TOML file, environment variables and CLI flags, validated at start.

Precedence, highest first: CLI flags, environment variables, the file, the
built-in defaults. Every problem is reported as a `ConfigError` naming the
source (file or variable), the key and what was expected, so `broadcaster
serve` can print one paragraph and exit 2 instead of a traceback.

Environment variables: `BROADCASTER_<SECTION>_<KEY>` for the scalar keys of
`[server]`, `[defaults]` and `[broker]` (for example `BROADCASTER_SERVER_PORT=9000`,
`BROADCASTER_DEFAULTS_QUEUE_SIZE=512`, `BROADCASTER_BROKER_URL=redis://...`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broadcaster.core.policy import ChannelPolicy, PolicyTable
from broadcaster.core.strategies import Strategy
from broadcaster.errors import ConfigError

__all__ = [
    "BrokerConfig",
    "Config",
    "ServerConfig",
    "SourceConfig",
    "load_config",
]

ENV_PREFIX = "BROADCASTER_"


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerConfig:
    """`[server]`: the listening socket and per-connection limits."""

    host: str = "127.0.0.1"
    port: int = 8765
    max_message_size: int = 1_048_576
    """Bytes per incoming frame; larger frames close the connection with 1009."""
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


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerConfig:
    """`[broker]`: where channels are shared."""

    kind: str = "memory"
    url: str = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceConfig:
    """One `[sources.NAME]` table: a feed that publishes into a channel."""

    name: str
    kind: str
    channel: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """The whole configuration, immutable once loaded."""

    server: ServerConfig = field(default_factory=ServerConfig)
    policies: PolicyTable = field(default_factory=PolicyTable)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    sources: tuple[SourceConfig, ...] = ()
    source: str = "<built-in defaults>"
    """Where this config came from, for messages."""

    @classmethod
    def embedded_default(cls) -> Config:
        """The config `broadcaster serve` runs with no --config: configs/default.toml's content."""
        return parse_config(DEFAULT_TOML, source="<embedded default>")


# The embedded default, kept identical to configs/default.toml by a test.
DEFAULT_TOML = """\
# broadcaster's default configuration: one process, no other service.
# Every key is documented in the README ("Configuration").

[server]
host = "127.0.0.1"
port = 8765
max_message_size = 1048576     # bytes per incoming frame; larger -> close 1009
socket_send_buffer = 65536     # SO_SNDBUF per client socket; 0 = kernel autotuning
shutdown_timeout = 5.0         # seconds to drain queues on SIGTERM before close 1001
strict_channels = false        # true: channels matching no [channels] entry -> unknown_channel

[defaults]
strategy = "drop-oldest"       # drop-oldest | drop-newest | block | conflate
queue_size = 256               # messages per subscription
# high_watermark = 256         # default: queue_size
# low_watermark = 128          # default: queue_size / 2
slow_consumer_timeout = 5.0    # seconds at or above the high watermark -> close 4008

[channels."tickers.*"]
strategy = "drop-oldest"

[broker]
kind = "memory"                # memory | redis

[sources.demo_ticker]          # built-in simulated feed
channel = "tickers.demo"
symbols = ["AAPL", "MSFT", "NVDA", "GOOG", "AMZN"]
rate = 20                      # messages per second
"""

_SERVER_KEYS: dict[str, type | tuple[type, ...]] = {
    "host": str,
    "port": int,
    "max_message_size": int,
    "socket_send_buffer": int,
    "shutdown_timeout": (int, float),
    "strict_channels": bool,
    "close_timeout": (int, float),
    "ping_interval": (int, float),
    "stats_interval": (int, float),
}
_POLICY_KEYS: dict[str, type | tuple[type, ...]] = {
    "strategy": str,
    "queue_size": int,
    "high_watermark": int,
    "low_watermark": int,
    "slow_consumer_timeout": (int, float),
    "history_size": int,
    "history_ttl": (int, float),
    "conflate_key": str,
    "conflate_fallback": str,
    "snapshot": bool,
    "max_rate": (int, float),
}
_BROKER_KEYS: dict[str, type | tuple[type, ...]] = {"kind": str, "url": str}
_BROKER_KINDS = ("memory", "redis")
_SECTIONS = ("server", "defaults", "channels", "broker", "sources")


def _type_name(expected: type | tuple[type, ...]) -> str:
    if expected is str:
        return "a string"
    if expected is int:
        return "an integer"
    if expected is bool:
        return "true or false"
    return "a number"


def _check_type(source: str, key: str, value: Any, expected: type | tuple[type, ...]) -> None:
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
    if not ok:
        raise ConfigError(source, key, _type_name(expected), value)


def _check_table(
    source: str, section: str, table: Any, keys: Mapping[str, type | tuple[type, ...]]
) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(source, section, "a table", table)
    for key, value in table.items():
        if key not in keys:
            raise ConfigError(
                source, f"{section} {key}", f"one of the known keys: {', '.join(keys)}"
            )
        _check_type(source, f"{section} {key}", value, keys[key])
    return dict(table)


def _policy(
    source: str, section: str, values: Mapping[str, Any], base: ChannelPolicy, label: str
) -> ChannelPolicy:
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("strategy", "conflate_fallback"):
            try:
                kwargs[key] = Strategy(value)
            except ValueError:
                raise ConfigError(
                    source,
                    f"{section} {key}",
                    " | ".join(f'"{s.value}"' for s in Strategy),
                    value,
                ) from None
        elif key in ("slow_consumer_timeout", "history_ttl", "max_rate"):
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
        raise ConfigError(source, f"{section} {key}", expected) from None


def _source_table(source: str, name: str, table: Any) -> SourceConfig:
    section = f"[sources.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(source, section, "a table", table)
    options = dict(table)
    kind = options.pop("kind", name)
    if not isinstance(kind, str):
        raise ConfigError(source, f"{section} kind", "a string", kind)
    channel = options.pop("channel", None)
    if not isinstance(channel, str) or not channel:
        raise ConfigError(source, f"{section} channel", "a channel name (string)", channel)
    return SourceConfig(name=name, kind=kind, channel=channel, options=options)


def parse_config(text: str, *, source: str, overrides: Mapping[str, Any] | None = None) -> Config:
    """Parse and validate TOML text; `overrides` maps "section.key" to values from env/flags."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(syntax)", f"valid TOML ({exc})") from None
    return build_config(raw, source=source, overrides=overrides)


def build_config(
    raw: Mapping[str, Any], *, source: str, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Validate a parsed config mapping and build the immutable `Config`."""
    for section in raw:
        if section not in _SECTIONS:
            raise ConfigError(source, f"[{section}]", f"one of the sections {', '.join(_SECTIONS)}")
    server_values = _check_table(source, "[server]", raw.get("server", {}), _SERVER_KEYS)
    defaults_values = _check_table(source, "[defaults]", raw.get("defaults", {}), _POLICY_KEYS)
    broker_values = _check_table(source, "[broker]", raw.get("broker", {}), _BROKER_KEYS)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        target = {"server": server_values, "defaults": defaults_values, "broker": broker_values}
        target[section][key] = value

    for key in ("port",):
        if key in server_values and not 0 <= server_values[key] <= 65535:
            raise ConfigError(source, f"[server] {key}", "a TCP port 0-65535", server_values[key])
    for key in ("max_message_size",):
        if key in server_values and server_values[key] < 64:
            raise ConfigError(source, f"[server] {key}", "bytes >= 64", server_values[key])
    if server_values.get("socket_send_buffer", 0) < 0:
        raise ConfigError(
            source,
            "[server] socket_send_buffer",
            "bytes >= 0 (0 = kernel autotuning)",
            server_values["socket_send_buffer"],
        )
    for key in ("shutdown_timeout", "close_timeout", "ping_interval", "stats_interval"):
        if key in server_values:
            if not server_values[key] > 0:
                raise ConfigError(source, f"[server] {key}", "seconds > 0", server_values[key])
            server_values[key] = float(server_values[key])
    server = ServerConfig(**server_values)

    if broker_values.get("kind", "memory") not in _BROKER_KINDS:
        raise ConfigError(
            source,
            "[broker] kind",
            " | ".join(f'"{k}"' for k in _BROKER_KINDS),
            broker_values["kind"],
        )
    broker = BrokerConfig(**broker_values)

    defaults = _policy(source, "[defaults]", defaults_values, ChannelPolicy(), "*")
    channels = raw.get("channels", {})
    if not isinstance(channels, dict):
        raise ConfigError(source, "[channels]", 'tables such as [channels."tickers.*"]', channels)
    entries: list[tuple[str, ChannelPolicy]] = []
    for pattern, table in channels.items():
        section = f'[channels."{pattern}"]'
        values = _check_table(source, section, table, _POLICY_KEYS)
        entries.append((pattern, _policy(source, section, values, defaults, pattern)))

    sources_raw = raw.get("sources", {})
    if not isinstance(sources_raw, dict):
        raise ConfigError(source, "[sources]", "tables such as [sources.demo_ticker]", sources_raw)
    sources = tuple(_source_table(source, name, table) for name, table in sources_raw.items())

    return Config(
        server=server,
        policies=PolicyTable(defaults, tuple(entries), server.strict_channels),
        broker=broker,
        sources=sources,
        source=source,
    )


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Overrides from `BROADCASTER_<SECTION>_<KEY>` variables, parsed as TOML values."""
    found: dict[str, Any] = {}
    for section, keys in (
        ("server", _SERVER_KEYS),
        ("defaults", _POLICY_KEYS),
        ("broker", _BROKER_KEYS),
    ):
        for key, expected in keys.items():
            var = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            if var not in environ:
                continue
            text = environ[var]
            value: Any
            if expected is str:
                value = text
            else:
                try:
                    value = tomllib.loads(f"v = {text}")["v"]
                except tomllib.TOMLDecodeError:
                    raise ConfigError(var, key, _type_name(expected), text) from None
            _check_type(var, key, value, expected)
            found[f"{section}.{key}"] = value
    return found


def load_config(
    path: str | Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Load `path` (or the embedded default when None), then apply env vars and flags."""
    overrides = env_overrides(os.environ if environ is None else environ)
    overrides.update({k: v for k, v in (flags or {}).items() if v is not None})
    if path is None:
        return parse_config(DEFAULT_TOML, source="<embedded default>", overrides=overrides)
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "(file)", "an existing TOML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "(file)", f"a readable UTF-8 file ({exc})") from None
    return parse_config(text, source=source, overrides=overrides)
