"""Configuration: one TOML file, environment variables and CLI flags, validated at start.

Precedence, highest first: CLI flags, environment variables, the file, the
built-in defaults. Every problem is reported as a `ConfigError` naming the
source (file or variable), the key and what was expected, so `broadcaster
serve` can print one paragraph and exit 2 instead of a traceback.

Environment variables: `BROADCASTER_<SECTION>_<KEY>` for the keys of
`[server]`, `[defaults]`, `[broker]` and `[api]` (for example
`BROADCASTER_SERVER_PORT=9000`, `BROADCASTER_DEFAULTS_QUEUE_SIZE=512`,
`BROADCASTER_BROKER_URL=redis://...`, `BROADCASTER_API_KEYS='["k1", "k2"]'`).

In code, `Config.build(server={...}, channels={...})` builds a config from
plain dicts with the same validation as a file, for embedding without TOML.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broadcaster.core.policy import ChannelPolicy, PolicyTable
from broadcaster.core.strategies import Strategy
from broadcaster.errors import ConfigError

__all__ = [
    "ApiConfig",
    "BrokerConfig",
    "Config",
    "ServerConfig",
    "SourceConfig",
    "build_config",
    "load_config",
    "parse_config",
    "source_from_flag",
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
    api: ApiConfig = field(default_factory=ApiConfig)
    sources: tuple[SourceConfig, ...] = ()
    source: str = "<built-in defaults>"
    """Where this config came from, for messages."""

    @classmethod
    def embedded_default(cls) -> Config:
        """The config `broadcaster serve` runs with no --config: configs/default.toml's content."""
        return parse_config(DEFAULT_TOML, source="<embedded default>")

    @classmethod
    def build(
        cls,
        *,
        server: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        channels: Mapping[str, Mapping[str, Any]] | None = None,
        broker: Mapping[str, Any] | None = None,
        api: Mapping[str, Any] | None = None,
        sources: Mapping[str, Mapping[str, Any]] | None = None,
        source: str = "<Config.build>",
    ) -> Config:
        """A config from plain dicts, one per TOML section, validated exactly like a file.

        For applications that embed the server and keep their settings
        elsewhere::

            Config.build(server={"port": 9000}, channels={"orders": {"strategy": "block"}})

        Mistakes raise `ConfigError` naming the section and key.
        """
        raw: dict[str, Any] = {}
        for name, section in (
            ("server", server),
            ("defaults", defaults),
            ("channels", channels),
            ("broker", broker),
            ("api", api),
            ("sources", sources),
        ):
            if section is not None:
                raw[name] = _plain(section)
        return build_config(raw, source=source)

    def with_sources(self, *extra: SourceConfig) -> Config:
        """A copy with `extra` sources added (names must be unique)."""
        names = {s.name for s in self.sources}
        for added in extra:
            if added.name in names:
                raise ConfigError(self.source, f"[sources.{added.name}]", "a unique source name")
            names.add(added.name)
        return dataclasses.replace(self, sources=(*self.sources, *extra))


def _plain(value: Any) -> Any:
    """Mappings and sequences from code as the dicts and lists a TOML parser gives."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


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

[channels."tickers.*"]          # a slow browser gets the latest price of every symbol
strategy = "conflate"
conflate_key = "symbol"        # field of `data` that names the key
conflate_fallback = "drop-oldest"  # for messages without that field
snapshot = true                # new subscribers first get the latest value per key
max_rate = 50                  # the most a subscriber may ask for with subscribe's max_rate

[broker]
kind = "memory"                # memory | redis

[api]                          # HTTP publish API: POST /api/publish
enabled = true
host = "127.0.0.1"             # no keys below: anyone who can reach it may publish; keep it private
port = 8766
keys = []                      # API keys for `Authorization: apikey KEY`; empty = no auth
publish_timeout = 5.0          # seconds to wait for room on block channels before 503
rate = 0                       # messages per second per publisher (key or IP); 0 = unlimited

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
_BROKER_KEYS: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "url": str,
    "prefix": str,
    "timeout": (int, float),
    "breaker_threshold": int,
    "breaker_cooldown": (int, float),
    "stream_maxlen": int,
}
_BROKER_KINDS = ("memory", "redis")
_API_KEYS: dict[str, type | tuple[type, ...]] = {
    "enabled": bool,
    "host": str,
    "port": int,
    "keys": list,
    "publish_timeout": (int, float),
    "rate": (int, float),
    "burst": (int, float),
    "max_batch": int,
    "max_body_size": int,
}
_SECTIONS = ("server", "defaults", "channels", "broker", "api", "sources")
# Sections whose keys env vars and flags may override, with their key tables.
_OVERRIDABLE: dict[str, dict[str, type | tuple[type, ...]]] = {
    "server": _SERVER_KEYS,
    "defaults": _POLICY_KEYS,
    "broker": _BROKER_KEYS,
    "api": _API_KEYS,
}


def _type_name(expected: type | tuple[type, ...]) -> str:
    if expected is str:
        return "a string"
    if expected is int:
        return "an integer"
    if expected is bool:
        return "true or false"
    if expected is list:
        return "a list of strings"
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
    source: str,
    section: str,
    values: Mapping[str, Any],
    base: ChannelPolicy,
    label: str,
    origin: Callable[[str], str] | None = None,
) -> ChannelPolicy:
    def where(key: str) -> str:
        return origin(key) if origin is not None else source

    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("strategy", "conflate_fallback"):
            try:
                kwargs[key] = Strategy(value)
            except ValueError:
                raise ConfigError(
                    where(key),
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
        raise ConfigError(where(key), f"{section} {key}", expected) from None


def _api(values: dict[str, Any], at: Callable[[str], str]) -> ApiConfig:
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
    if "publish_timeout" in values:
        if not values["publish_timeout"] > 0:
            raise fail("publish_timeout", "seconds > 0")
        values["publish_timeout"] = float(values["publish_timeout"])
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


def parse_config(
    text: str,
    *,
    source: str,
    overrides: Mapping[str, Any] | None = None,
    origins: Mapping[str, str] | None = None,
) -> Config:
    """Parse and validate TOML text; `overrides` maps "section.key" to values from env/flags."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(syntax)", f"valid TOML ({exc})") from None
    return build_config(raw, source=source, overrides=overrides, origins=origins)


def build_config(
    raw: Mapping[str, Any],
    *,
    source: str,
    overrides: Mapping[str, Any] | None = None,
    origins: Mapping[str, str] | None = None,
) -> Config:
    """Validate a parsed config mapping and build the immutable `Config`.

    `origins` maps an overridden "section.key" to where its value came from
    (an environment variable, a flag), so an error names that instead of the file.
    """
    known_origins = dict(origins or {})

    def at(section: str, key: str) -> str:
        return known_origins.get(f"{section}.{key}", source)

    for section in raw:
        if section not in _SECTIONS:
            raise ConfigError(source, f"[{section}]", f"one of the sections {', '.join(_SECTIONS)}")
    server_values = _check_table(source, "[server]", raw.get("server", {}), _SERVER_KEYS)
    defaults_values = _check_table(source, "[defaults]", raw.get("defaults", {}), _POLICY_KEYS)
    broker_values = _check_table(source, "[broker]", raw.get("broker", {}), _BROKER_KEYS)
    api_values = _check_table(source, "[api]", raw.get("api", {}), _API_KEYS)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        target = {
            "server": server_values,
            "defaults": defaults_values,
            "broker": broker_values,
            "api": api_values,
        }
        target[section][key] = value

    for key in ("port",):
        if key in server_values and not 0 <= server_values[key] <= 65535:
            raise ConfigError(
                at("server", key), f"[server] {key}", "a TCP port 0-65535", server_values[key]
            )
    for key in ("max_message_size",):
        if key in server_values and server_values[key] < 64:
            raise ConfigError(
                at("server", key), f"[server] {key}", "bytes >= 64", server_values[key]
            )
    if server_values.get("socket_send_buffer", 0) < 0:
        raise ConfigError(
            at("server", "socket_send_buffer"),
            "[server] socket_send_buffer",
            "bytes >= 0 (0 = kernel autotuning)",
            server_values["socket_send_buffer"],
        )
    for key in ("shutdown_timeout", "close_timeout", "ping_interval", "stats_interval"):
        if key in server_values:
            if not server_values[key] > 0:
                raise ConfigError(
                    at("server", key), f"[server] {key}", "seconds > 0", server_values[key]
                )
            server_values[key] = float(server_values[key])
    server = ServerConfig(**server_values)

    if broker_values.get("kind", "memory") not in _BROKER_KINDS:
        raise ConfigError(
            at("broker", "kind"),
            "[broker] kind",
            " | ".join(f'"{k}"' for k in _BROKER_KINDS),
            broker_values["kind"],
        )
    for key in ("timeout", "breaker_cooldown"):
        if key in broker_values:
            if not broker_values[key] > 0:
                raise ConfigError(source, f"[broker] {key}", "seconds > 0", broker_values[key])
            broker_values[key] = float(broker_values[key])
    for key in ("breaker_threshold", "stream_maxlen"):
        if key in broker_values and broker_values[key] < 1:
            raise ConfigError(source, f"[broker] {key}", "an integer >= 1", broker_values[key])
    broker = BrokerConfig(**broker_values)
    api = _api(api_values, lambda key: at("api", key))

    defaults = _policy(
        source,
        "[defaults]",
        defaults_values,
        ChannelPolicy(),
        "*",
        lambda key: at("defaults", key),
    )
    channels = raw.get("channels", {})
    if not isinstance(channels, dict):
        raise ConfigError(source, "[channels]", 'tables such as [channels."tickers.*"]', channels)
    entries: list[tuple[str, ChannelPolicy]] = []
    for pattern, table in channels.items():
        section = f'[channels."{pattern}"]'
        if isinstance(table, dict):
            for key, value in table.items():
                if isinstance(value, dict):
                    raise ConfigError(
                        source,
                        f"{section} {key}",
                        f"a channel setting; a channel name with dots must be quoted: "
                        f'[channels."{pattern}.{key}"]',
                    )
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
        api=api,
        sources=sources,
        source=source,
    )


def env_var(dotted: str) -> str:
    """The environment variable that overrides "section.key"."""
    section, _, key = dotted.partition(".")
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Overrides from `BROADCASTER_<SECTION>_<KEY>` variables, parsed as TOML values."""
    found: dict[str, Any] = {}
    for section, keys in _OVERRIDABLE.items():
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
    origins = {dotted: env_var(dotted) for dotted in overrides}
    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        flag = f"--{key.replace('_', '-')}"
        if section == "api":
            flag = "--api" if key == "enabled" else f"--api-{key.replace('_', '-')}"
        expected = _OVERRIDABLE[section][key]
        _check_type(flag, key, value, expected)
        overrides[dotted] = value
        origins[dotted] = flag
    if path is None:
        return parse_config(
            DEFAULT_TOML, source="<embedded default>", overrides=overrides, origins=origins
        )
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "(file)", "an existing TOML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "(file)", f"a readable UTF-8 file ({exc})") from None
    return parse_config(text, source=source, overrides=overrides, origins=origins)


def source_from_flag(text: str, *, index: int = 0) -> SourceConfig:
    """A source from `--source KIND:...`: `stdin:CHANNEL` or `file:PATH:CHANNEL`.

    The channel is what follows the last colon, so a path may contain colons.
    """
    kind, _, rest = text.partition(":")
    suffix = f"-{index}" if index else ""
    if kind == "stdin" and rest:
        return SourceConfig(name=f"stdin{suffix}", kind="stdin", channel=rest)
    if kind == "file":
        path, _, channel = rest.rpartition(":")
        if path and channel:
            return SourceConfig(
                name=f"file{suffix}", kind="file", channel=channel, options={"path": path}
            )
    raise ConfigError("--source", "--source", "stdin:CHANNEL or file:PATH:CHANNEL", text)
