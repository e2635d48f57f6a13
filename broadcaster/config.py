"""Configuration: one TOML file, environment variables and CLI flags, validated at start.

Precedence, highest first: CLI flags, environment variables, the file, the
built-in defaults. Every problem is reported as a `ConfigError` naming the
source (file or variable), the key and what was expected, so `broadcaster
serve` can print one paragraph and exit 2 instead of a traceback.

Environment variables: `BROADCASTER_<SECTION>_<KEY>` for the keys of
`[server]`, `[defaults]`, `[broker]`, `[api]`, `[auth]`, `[admin]` and
`[limits]` (for example
`BROADCASTER_SERVER_PORT=9000`, `BROADCASTER_DEFAULTS_QUEUE_SIZE=512`,
`BROADCASTER_BROKER_URL=redis://...`, `BROADCASTER_API_KEYS='["k1", "k2"]'`).

In code, `Config.build(server={...}, channels={...})` builds a config from
plain dicts with the same validation as a file, for embedding without TOML.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broadcaster.core.policy import Access, ChannelPolicy, PolicyTable
from broadcaster.core.strategies import Strategy
from broadcaster.errors import ConfigError

__all__ = [
    "AdminConfig",
    "ApiConfig",
    "AuthConfig",
    "BrokerConfig",
    "Config",
    "LimitsConfig",
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


# Signature algorithms a token may use: HMAC with the shared secret, or a public key.
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
# A shorter secret can be brute-forced offline from one token: RFC 7518 3.2 asks
# for at least the hash's size (PyJWT warns below it).
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_ADMIN_TOKEN_CHARS = 16


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthConfig:
    """`[auth]`: JWTs that grant channels to WebSocket clients (`?token=` or the `auth` op)."""

    enabled: bool = False
    algorithms: tuple[str, ...] = ("HS256",)
    """Accepted `alg`s: HS256/384/512 (with `secret`), RS*/PS*/ES* (with `public_key_file`)."""
    secret: str = field(default="", repr=False)
    """The HMAC secret (at least 32 bytes); prefer `secret_env`, which keeps it out of files."""
    secret_env: str = ""
    """Name of an environment variable holding the HMAC secret."""
    public_key_file: str = ""
    """PEM public key for RS256 and the other public-key algorithms."""
    public_key: str = field(default="", repr=False)
    """The content of `public_key_file`, read when the config is loaded."""
    audience: str = ""
    """When set, tokens must carry this `aud`."""
    issuer: str = ""
    """When set, tokens must carry this `iss`."""
    leeway: float = 0.0
    """Seconds of clock skew tolerated on `exp` and `nbf`."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AdminConfig:
    """`[admin]`: who may read /stats, /dashboard, /metrics and subscribe to `$sys.*`."""

    token: str = field(default="", repr=False)
    """An opaque admin token (16+ characters); prefer `token_env`."""
    token_env: str = ""
    """Name of an environment variable holding the admin token."""
    open: bool = False
    """Without any admin credential (no token, auth off): serve the admin endpoints to
    every address instead of loopback only (for a trusted network)."""


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
    max_subscriptions: int = 128
    """Subscriptions per connection; the extra `subscribe` gets `forbidden`."""
    max_channels: int = 100_000
    """Channels this process holds (they live as long as it does, about 1 KB each);
    a subscribe or publish that would create one more gets `forbidden`."""
    publish_rate: float = 0.0
    """Publishes per second per connection (a token bucket); over: error `rate_limited`."""
    publish_burst: float = 0.0
    """Publishes at once above `publish_rate` (default: the rate, at least 1)."""
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
    auth: AuthConfig = field(default_factory=AuthConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
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
        auth: Mapping[str, Any] | None = None,
        admin: Mapping[str, Any] | None = None,
        limits: Mapping[str, Any] | None = None,
        sources: Mapping[str, Mapping[str, Any]] | None = None,
        source: str = "<Config.build>",
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        """A config from plain dicts, one per TOML section, validated exactly like a file.

        For applications that embed the server and keep their settings
        elsewhere::

            Config.build(server={"port": 9000}, channels={"orders": {"strategy": "block"}})

        Mistakes raise `ConfigError` naming the section and key. `environ` is
        where `secret_env` / `token_env` are looked up (default: os.environ).
        """
        raw: dict[str, Any] = {}
        for name, section in (
            ("server", server),
            ("defaults", defaults),
            ("channels", channels),
            ("broker", broker),
            ("api", api),
            ("auth", auth),
            ("admin", admin),
            ("limits", limits),
            ("sources", sources),
        ):
            if section is not None:
                raw[name] = _plain(section)
        return build_config(raw, source=source, environ=environ)

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
max_message_size = 65536       # bytes per incoming frame; larger -> close 1009
socket_send_buffer = 65536     # SO_SNDBUF per client socket; 0 = kernel autotuning
shutdown_timeout = 5.0         # seconds to drain queues on SIGTERM before close 1001
strict_channels = false        # true: channels matching no [channels] entry -> unknown_channel
allowed_origins = ["self"]     # browser origins allowed to connect (others: HTTP 403)
# tls_cert = "cert.pem"        # with tls_key: wss:// (and https:// for [api])
# tls_key = "key.pem"

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

[limits]                       # the edge; see the README's "Security" (0 = no limit)
max_connections = 10000        # open connections in total -> HTTP 503
connections_per_ip = 256       # open connections per address -> HTTP 429
connection_rate = 20           # new connections per second per address -> HTTP 429
exempt_networks = ["127.0.0.0/8", "::1/128"]  # skip the per-address limits (a local proxy)
max_subscriptions = 128        # per connection -> forbidden
publish_rate = 0               # publishes per second per connection -> rate_limited, then 4029
max_loop_lag = 1.0             # event-loop lag (s) -> HTTP 503, then shed with 1013

# [auth]                       # JWTs: ?token= or the `auth` op (see "Security")
# enabled = true
# secret_env = "BROADCASTER_JWT_SECRET"

# [admin]                      # /stats, /dashboard, /metrics, $sys.*: loopback only without it
# token_env = "BROADCASTER_ADMIN_TOKEN"

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
    "idle_channel_ttl": (int, float),
    "allowed_origins": list,
    "allow_no_origin": bool,
    "tls_cert": str,
    "tls_key": str,
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
    "subscribe": str,
    "publish": str,
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
_AUTH_KEYS: dict[str, type | tuple[type, ...]] = {
    "enabled": bool,
    "algorithms": list,
    "secret": str,
    "secret_env": str,
    "public_key_file": str,
    "audience": str,
    "issuer": str,
    "leeway": (int, float),
}
_ADMIN_KEYS: dict[str, type | tuple[type, ...]] = {
    "token": str,
    "token_env": str,
    "open": bool,
}
_LIMITS_KEYS: dict[str, type | tuple[type, ...]] = {
    "max_connections": int,
    "connections_per_ip": int,
    "connection_rate": (int, float),
    "connection_burst": (int, float),
    "exempt_networks": list,
    "retry_after": (int, float),
    "max_subscriptions": int,
    "max_channels": int,
    "publish_rate": (int, float),
    "publish_burst": (int, float),
    "rate_limit_strikes": int,
    "rate_limit_window": (int, float),
    "max_loop_lag": (int, float),
    "shed_after": (int, float),
    "shed_fraction": (int, float),
}
_SECTIONS = (
    "server",
    "defaults",
    "channels",
    "broker",
    "api",
    "auth",
    "admin",
    "limits",
    "sources",
)
# Sections whose keys env vars and flags may override, with their key tables.
_OVERRIDABLE: dict[str, dict[str, type | tuple[type, ...]]] = {
    "server": _SERVER_KEYS,
    "defaults": _POLICY_KEYS,
    "broker": _BROKER_KEYS,
    "api": _API_KEYS,
    "auth": _AUTH_KEYS,
    "admin": _ADMIN_KEYS,
    "limits": _LIMITS_KEYS,
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
    if ok and expected is list:
        ok = all(isinstance(item, str) for item in value)
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
        elif key in ("subscribe", "publish"):
            try:
                kwargs[key] = Access(value)
            except ValueError:
                raise ConfigError(
                    where(key),
                    f"{section} {key}",
                    " | ".join(f'"{a.value}"' for a in Access),
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


def _secret(
    values: dict[str, Any],
    section: str,
    key: str,
    at: Callable[[str], str],
    environ: Mapping[str, str],
) -> str:
    """The secret in `key`, or in the environment variable named by `key`_env ("" if neither)."""
    env_key = f"{key}_env"
    inline, var = values.get(key, ""), values.get(env_key, "")
    if inline and var:
        raise ConfigError(at(key), f"{section} {key}", f"either {key} or {env_key}, not both")
    if not var:
        return str(inline)
    value = environ.get(var, "")
    if not value:
        # Name the variable, never a value: this is where secrets live.
        raise ConfigError(
            at(env_key), f"{section} {env_key}", f"the environment variable {var} to be set"
        )
    return value


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


def _auth(
    values: dict[str, Any], at: Callable[[str], str], environ: Mapping[str, str]
) -> AuthConfig:
    """Validate `[auth]`; with `enabled`, resolve the secret and read the public key."""

    def fail(key: str, expected: str, show: bool = True) -> ConfigError:
        return ConfigError(at(key), f"[auth] {key}", expected, values[key] if show else None)

    if "algorithms" in values:
        algorithms = values["algorithms"]
        known = HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS
        if not algorithms or not all(a in known for a in algorithms):
            raise fail("algorithms", f"a non-empty list of {', '.join(known)}")
        values["algorithms"] = tuple(algorithms)
    if values.get("leeway", 0) < 0:
        raise fail("leeway", "seconds >= 0")
    if "leeway" in values:
        values["leeway"] = float(values["leeway"])
    algorithms = values.get("algorithms", AuthConfig().algorithms)
    if values.get("enabled", False):
        if any(a in HMAC_ALGORITHMS for a in algorithms):
            hmac_names = "/".join(a for a in algorithms if a in HMAC_ALGORITHMS)
            if not values.get("secret") and not values.get("secret_env"):
                raise ConfigError(
                    at("secret_env"),
                    "[auth] secret_env",
                    f"the name of an environment variable holding the secret for {hmac_names} "
                    "(or [auth] secret)",
                )
            secret = _secret(values, "[auth]", "secret", at, environ)
            needed = max(MIN_SECRET_BYTES[a] for a in algorithms if a in HMAC_ALGORITHMS)
            if len(secret.encode()) < needed:
                where = "secret_env" if values.get("secret_env") else "secret"
                raise ConfigError(
                    at(where),
                    f"[auth] {where}",
                    f"a secret of at least {needed} bytes for {hmac_names} "
                    "(e.g. `openssl rand -base64 64`)",
                )
            values["secret"] = secret
        if any(a in PUBLIC_KEY_ALGORITHMS for a in algorithms):
            path = values.get("public_key_file", "")
            if not path:
                raise ConfigError(
                    at("public_key_file"),
                    "[auth] public_key_file",
                    "a PEM public key file for "
                    f"{'/'.join(a for a in algorithms if a in PUBLIC_KEY_ALGORITHMS)}",
                )
            try:
                values["public_key"] = Path(path).read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    at("public_key_file"), "[auth] public_key_file", f"a readable PEM file ({exc})"
                ) from None
            from broadcaster.security.auth import public_key_problem

            problem = public_key_problem(values["public_key"])
            if problem:
                raise ConfigError(at("public_key_file"), "[auth] public_key_file", problem, path)
    return AuthConfig(**values)


def _admin(
    values: dict[str, Any], at: Callable[[str], str], environ: Mapping[str, str]
) -> AdminConfig:
    """Validate `[admin]` and resolve its token."""
    token = _secret(values, "[admin]", "token", at, environ)
    if token and (len(token) < MIN_ADMIN_TOKEN_CHARS or token.strip() != token):
        where = "token_env" if values.get("token_env") else "token"
        raise ConfigError(
            at(where),
            f"[admin] {where}",
            f"a token of at least {MIN_ADMIN_TOKEN_CHARS} characters without surrounding spaces",
        )
    values["token"] = token
    return AdminConfig(**values)


def _limits(values: dict[str, Any], at: Callable[[str], str]) -> LimitsConfig:
    """Validate `[limits]`: counts and rates >= 0 (0 = off), bursts default to twice the rate."""

    def fail(key: str, expected: str) -> ConfigError:
        return ConfigError(at(key), f"[limits] {key}", expected, values[key])

    for key in ("max_connections", "connections_per_ip", "max_subscriptions", "max_channels"):
        if values.get(key, 0) < 0:
            raise fail(key, "an integer >= 0 (0 = no limit)")
    for key in ("connection_rate", "publish_rate", "max_loop_lag", "shed_after"):
        if key in values:
            if values[key] < 0:
                raise fail(key, "a number >= 0 (0 = off)")
            values[key] = float(values[key])
    for rate_key, burst_key in (
        ("connection_rate", "connection_burst"),
        ("publish_rate", "publish_burst"),
    ):
        if burst_key in values:
            if values[burst_key] < 1:
                raise fail(burst_key, "a number >= 1")
            values[burst_key] = float(values[burst_key])
        elif values.get(rate_key, 0) > 0:
            values[burst_key] = max(1.0, 2 * values[rate_key])
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


def _check_access(source: str, auth: AuthConfig, policies: PolicyTable) -> None:
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
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Parse and validate TOML text; `overrides` maps "section.key" to values from env/flags."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(syntax)", f"valid TOML ({exc})") from None
    return build_config(raw, source=source, overrides=overrides, origins=origins, environ=environ)


def build_config(
    raw: Mapping[str, Any],
    *,
    source: str,
    overrides: Mapping[str, Any] | None = None,
    origins: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate a parsed config mapping and build the immutable `Config`.

    `origins` maps an overridden "section.key" to where its value came from
    (an environment variable, a flag), so an error names that instead of the file.
    `environ` is where `[auth] secret_env` and `[admin] token_env` are read
    (default: the process environment).
    """
    known_origins = dict(origins or {})
    env = os.environ if environ is None else environ

    def at(section: str, key: str) -> str:
        return known_origins.get(f"{section}.{key}", source)

    for section in raw:
        if section not in _SECTIONS:
            raise ConfigError(source, f"[{section}]", f"one of the sections {', '.join(_SECTIONS)}")
    server_values = _check_table(source, "[server]", raw.get("server", {}), _SERVER_KEYS)
    defaults_values = _check_table(source, "[defaults]", raw.get("defaults", {}), _POLICY_KEYS)
    broker_values = _check_table(source, "[broker]", raw.get("broker", {}), _BROKER_KEYS)
    api_values = _check_table(source, "[api]", raw.get("api", {}), _API_KEYS)
    auth_values = _check_table(source, "[auth]", raw.get("auth", {}), _AUTH_KEYS)
    admin_values = _check_table(source, "[admin]", raw.get("admin", {}), _ADMIN_KEYS)
    limits_values = _check_table(source, "[limits]", raw.get("limits", {}), _LIMITS_KEYS)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        target = {
            "server": server_values,
            "defaults": defaults_values,
            "broker": broker_values,
            "api": api_values,
            "auth": auth_values,
            "admin": admin_values,
            "limits": limits_values,
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
    if "idle_channel_ttl" in server_values:
        if server_values["idle_channel_ttl"] < 0:
            raise ConfigError(
                at("server", "idle_channel_ttl"),
                "[server] idle_channel_ttl",
                "seconds >= 0 (0 = keep channels forever)",
                server_values["idle_channel_ttl"],
            )
        server_values["idle_channel_ttl"] = float(server_values["idle_channel_ttl"])
    _server_security(server_values, lambda key: at("server", key))
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
    auth = _auth(auth_values, lambda key: at("auth", key), env)
    admin = _admin(admin_values, lambda key: at("admin", key), env)
    limits = _limits(limits_values, lambda key: at("limits", key))

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

    policies = PolicyTable(defaults, tuple(entries), server.strict_channels)
    _check_access(source, auth, policies)
    return Config(
        server=server,
        policies=policies,
        broker=broker,
        api=api,
        auth=auth,
        admin=admin,
        limits=limits,
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
    environ = os.environ if environ is None else environ
    overrides = env_overrides(environ)
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
            DEFAULT_TOML,
            source="<embedded default>",
            overrides=overrides,
            origins=origins,
            environ=environ,
        )
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "(file)", "an existing TOML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "(file)", f"a readable UTF-8 file ({exc})") from None
    return parse_config(text, source=source, overrides=overrides, origins=origins, environ=environ)


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
