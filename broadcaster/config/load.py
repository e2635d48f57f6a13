"""Loading a config: the file (or the embedded default), then environment variables and flags.

Precedence, highest first: CLI flags, `BROADCASTER_<SECTION>_<KEY>` variables,
the file, the built-in defaults. Overrides are type-checked against the same
key tables as the file and remember where they came from, so an error names
the variable or the flag rather than the file. Validation itself is
`build.build_config`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from broadcaster.config.admin import ADMIN_KEYS
from broadcaster.config.api import API_KEYS
from broadcaster.config.auth import AUTH_KEYS
from broadcaster.config.broker import BROKER_KEYS
from broadcaster.config.build import Config, parse_config
from broadcaster.config.default_toml import DEFAULT_TOML
from broadcaster.config.limits import LIMITS_KEYS
from broadcaster.config.policies import POLICY_KEYS
from broadcaster.config.server import SERVER_KEYS
from broadcaster.config.tables import KeyTypes, check_type, type_name
from broadcaster.errors import ConfigError

__all__ = ["ENV_PREFIX", "OVERRIDABLE", "env_overrides", "env_var", "load_config"]

ENV_PREFIX = "BROADCASTER_"

# Sections whose keys env vars and flags may override, with their key tables.
OVERRIDABLE: dict[str, KeyTypes] = {
    "server": SERVER_KEYS,
    "defaults": POLICY_KEYS,
    "broker": BROKER_KEYS,
    "api": API_KEYS,
    "auth": AUTH_KEYS,
    "admin": ADMIN_KEYS,
    "limits": LIMITS_KEYS,
}


def env_var(dotted: str) -> str:
    """The environment variable that overrides "section.key"."""
    section, _, key = dotted.partition(".")
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Overrides from `BROADCASTER_<SECTION>_<KEY>` variables, parsed as TOML values."""
    found: dict[str, Any] = {}
    for section, keys in OVERRIDABLE.items():
        for key, expected in keys.items():
            var = env_var(f"{section}.{key}")
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
                    raise ConfigError(var, key, type_name(expected), text) from None
            check_type(var, key, value, expected)
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
        expected = OVERRIDABLE[section][key]
        check_type(flag, key, value, expected)
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
