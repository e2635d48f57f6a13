"""Secrets written inline or named by an environment variable (`[auth]`, `[admin]`).

A secret can be given as `key = "..."` or, better, as `key_env = "VAR"` so it
never sits in a config file. Both sections resolve it the same way, and no
error message ever contains a secret's value: they name the key or the
variable instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from broadcaster.errors import ConfigError

__all__ = ["resolve_secret"]


def resolve_secret(
    values: dict[str, Any],
    section: str,
    key: str,
    at: Callable[[str], str],
    environ: Mapping[str, str],
) -> str:
    """The secret in `key`, or in the environment variable named by `key`_env ("" if neither)."""
    env_key = f"{key}_env"
    inline, var = values.get(key, ""), values.get(env_key, "")
    # `token_env = "BROADCASTER_ADMIN_TOKEN"` names the very variable that also
    # overrides `[admin] token`: then both hold the same value, not two secrets.
    if inline and var and at(key) != var:
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
