"""`[admin]`: who may read /stats, /dashboard, /metrics and subscribe to `$sys.*`.

`AdminConfig` says what each key means; `ADMIN_KEYS` is what the file, the
environment and the flags may set; `admin_config` checks the values and
resolves the token. What the token then allows lives in
`broadcaster.security.admin`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broadcaster.config.secret import resolve_secret
from broadcaster.config.tables import KeyTypes
from broadcaster.errors import ConfigError

__all__ = ["ADMIN_KEYS", "MIN_ADMIN_TOKEN_CHARS", "AdminConfig", "admin_config"]

# An admin token is compared, not signed: it must be long enough not to be guessed.
MIN_ADMIN_TOKEN_CHARS = 16


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


ADMIN_KEYS: KeyTypes = {
    "token": str,
    "token_env": str,
    "open": bool,
}


def admin_config(
    values: dict[str, Any], at: Callable[[str], str], environ: Mapping[str, str]
) -> AdminConfig:
    """Validate `[admin]` and resolve its token."""
    token = resolve_secret(values, "[admin]", "token", at, environ)
    if token and (len(token) < MIN_ADMIN_TOKEN_CHARS or token.strip() != token):
        where = "token_env" if values.get("token_env") else "token"
        raise ConfigError(
            at(where),
            f"[admin] {where}",
            f"a token of at least {MIN_ADMIN_TOKEN_CHARS} characters without surrounding spaces",
        )
    values["token"] = token
    return AdminConfig(**values)
