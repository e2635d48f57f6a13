"""`Config`, the whole configuration, and how it is built from a parsed TOML mapping.

`build_config` is the one validation path: a file (`parse_config`), the
embedded default and `Config.build` (plain dicts from code) all go through
it. It checks the shape of every section first, applies the overrides from
environment variables and flags, then lets each section's module validate
its values (`server.py`, `broker.py`, `api.py`, `auth.py`, `admin.py`,
`limits.py`, `policies.py`, `sources.py`), and finally checks what spans
sections.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broadcaster.config.admin import ADMIN_KEYS, AdminConfig, admin_config
from broadcaster.config.api import API_KEYS, ApiConfig, api_config
from broadcaster.config.auth import AUTH_KEYS, AuthConfig, auth_config
from broadcaster.config.broker import BROKER_KEYS, BrokerConfig, broker_config
from broadcaster.config.default_toml import DEFAULT_TOML
from broadcaster.config.limits import LIMITS_KEYS, LimitsConfig, limits_config
from broadcaster.config.policies import POLICY_KEYS, check_access, policy_table
from broadcaster.config.server import SERVER_KEYS, ServerConfig, server_config
from broadcaster.config.sources import SourceConfig, source_table
from broadcaster.config.tables import check_table
from broadcaster.core.policy import PolicyTable
from broadcaster.errors import ConfigError

__all__ = ["SECTIONS", "Config", "build_config", "parse_config"]

SECTIONS = (
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
"""Every top-level table a config may have, in the order errors list them."""


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


def _check_workers(server: ServerConfig, api: ApiConfig, at: Any) -> None:
    """Several workers share their ports (SO_REUSEPORT): each must be a fixed port.

    With port 0 every worker would bind a different ephemeral port, and a
    client would reach one worker's share of the server only.
    """
    if server.workers == 1:
        return
    if server.port == 0:
        raise ConfigError(
            at("server", "port"),
            "[server] port",
            f"a fixed TCP port 1-65535 with [server] workers = {server.workers} (with port 0 "
            "each worker would listen on a different port)",
            0,
        )
    if api.enabled and api.port == 0:
        raise ConfigError(
            at("api", "port"),
            "[api] port",
            f"a fixed TCP port 1-65535 with [server] workers = {server.workers} (with port 0 "
            "each worker would listen on a different port)",
            0,
        )


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
        if section not in SECTIONS:
            raise ConfigError(source, f"[{section}]", f"one of the sections {', '.join(SECTIONS)}")
    server_values = check_table(source, "[server]", raw.get("server", {}), SERVER_KEYS)
    defaults_values = check_table(source, "[defaults]", raw.get("defaults", {}), POLICY_KEYS)
    broker_values = check_table(source, "[broker]", raw.get("broker", {}), BROKER_KEYS)
    api_values = check_table(source, "[api]", raw.get("api", {}), API_KEYS)
    auth_values = check_table(source, "[auth]", raw.get("auth", {}), AUTH_KEYS)
    admin_values = check_table(source, "[admin]", raw.get("admin", {}), ADMIN_KEYS)
    limits_values = check_table(source, "[limits]", raw.get("limits", {}), LIMITS_KEYS)
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

    # The order of these checks is the order in which errors surface.
    server = server_config(server_values, lambda key: at("server", key))
    broker = broker_config(broker_values, lambda key: at("broker", key))
    api = api_config(api_values, lambda key: at("api", key))
    auth = auth_config(auth_values, lambda key: at("auth", key), env)
    admin = admin_config(admin_values, lambda key: at("admin", key), env)
    limits = limits_config(limits_values, lambda key: at("limits", key))
    policies = policy_table(
        source,
        defaults_values,
        raw.get("channels", {}),
        server.strict_channels,
        lambda key: at("defaults", key),
    )

    sources_raw = raw.get("sources", {})
    if not isinstance(sources_raw, dict):
        raise ConfigError(source, "[sources]", "tables such as [sources.demo_ticker]", sources_raw)
    sources = tuple(source_table(source, name, table) for name, table in sources_raw.items())

    check_access(source, auth, policies)
    _check_workers(server, api, lambda section, key: at(section, key))
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
