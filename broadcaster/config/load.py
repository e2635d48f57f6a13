"""Loading a config: the file (or the embedded default), then environment variables and flags.

Precedence, highest first: CLI flags, `BROADCASTER_<SECTION>_<KEY>` variables,
the file, the built-in defaults. Overrides are type-checked against the same
key tables as the file and remember where they came from, so an error names
the variable or the flag rather than the file. Validation itself is
`build.build_config`.

Every other `BROADCASTER_*` variable is refused, like an unknown key in the
file: a misspelt `BROADCASTER_SERVER_PROT` would otherwise leave the port at
its default without a word. The exceptions are the variables other commands
read (`NOT_CONFIG_VARIABLES`) and those the config itself names for secrets
(`[auth] secret_env`, `[admin] token_env`).
"""

from __future__ import annotations

import difflib
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

__all__ = [
    "ENV_PREFIX",
    "NOT_CONFIG_VARIABLES",
    "OVERRIDABLE",
    "check_env_names",
    "env_overrides",
    "env_var",
    "load_config",
]

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


NOT_CONFIG_VARIABLES: dict[str, str] = {
    "BROADCASTER_CONFIG": "the config file of `broadcaster serve`",
    "BROADCASTER_LOG_LEVEL": "the log level of the `broadcaster` command",
    "BROADCASTER_URL": "the server URL of `broadcaster sub/pub` and the slow-client tool",
    "BROADCASTER_TOKEN": "the token `broadcaster sub/pub` authenticates with",
    "BROADCASTER_PYTHON": "the Python the JavaScript client's test kit starts servers with",
}
"""`BROADCASTER_*` variables that are not config overrides, and who reads them."""


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
                    # A key that also takes a word (`workers = "auto"`) may be given bare.
                    if not (isinstance(expected, tuple) and str in expected):
                        raise ConfigError(var, key, type_name(expected), text) from None
                    value = text
            check_type(var, key, value, expected)
            found[f"{section}.{key}"] = value
    return found


def check_env_names(environ: Mapping[str, str], secret_variables: set[str]) -> None:
    """Refuse a `BROADCASTER_*` variable that nothing reads, suggesting the likely intended one.

    `secret_variables` are the variables the config names with `*_env` keys:
    their names are the user's choice, so they are allowed whatever they are.
    """
    known = {env_var(f"{section}.{key}") for section, keys in OVERRIDABLE.items() for key in keys}
    known |= NOT_CONFIG_VARIABLES.keys()
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in known or var in secret_variables:
            continue
        close = difflib.get_close_matches(var, sorted(known), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(
            var,
            "(environment variable)",
            f"a variable the server reads{hint}: BROADCASTER_<SECTION>_<KEY> for a config key "
            f"(sections: {', '.join(OVERRIDABLE)}) or one of "
            f"{', '.join(NOT_CONFIG_VARIABLES)}; rename or unset it",
        )


def load_config(
    path: str | Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Load `path` (or the embedded default when None), then apply env vars and flags.

    Raises `ConfigError` for a `BROADCASTER_*` variable that is neither a
    config key nor read elsewhere (see `check_env_names`).
    """
    environ = os.environ if environ is None else environ
    config = _load(path, environ, flags)
    check_env_names(environ, {config.auth.secret_env, config.admin.token_env} - {""})
    return config


def _load(
    path: str | Path | None, environ: Mapping[str, str], flags: Mapping[str, Any] | None
) -> Config:
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
