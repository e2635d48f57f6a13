"""`[auth]`: JWTs that grant channels to WebSocket clients, and the keys that verify them.

`AuthConfig` says what each key means; `AUTH_KEYS` is what the file, the
environment and the flags may set; `auth_config` checks the values and, when
auth is on, resolves the HMAC secret and reads the public key file, so a
server never starts with auth it cannot verify. The token checks themselves
live in `broadcaster.security.auth`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broadcaster.config.secret import resolve_secret
from broadcaster.config.tables import KeyTypes
from broadcaster.errors import ConfigError

__all__ = [
    "AUTH_KEYS",
    "HMAC_ALGORITHMS",
    "MIN_SECRET_BYTES",
    "PUBLIC_KEY_ALGORITHMS",
    "AuthConfig",
    "auth_config",
]

# Signature algorithms a token may use: HMAC with the shared secret, or a public key.
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
# A shorter secret can be brute-forced offline from one token: RFC 7518 3.2 asks
# for at least the hash's size (PyJWT warns below it).
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


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


AUTH_KEYS: KeyTypes = {
    "enabled": bool,
    "algorithms": list,
    "secret": str,
    "secret_env": str,
    "public_key_file": str,
    "audience": str,
    "issuer": str,
    "leeway": (int, float),
}


def auth_config(
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
            secret = resolve_secret(values, "[auth]", "secret", at, environ)
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
            # Imported here: broadcaster.security.auth imports broadcaster.config at
            # module level, so importing it at the top of this module would be circular.
            from broadcaster.security.auth import public_key_problem

            problem = public_key_problem(values["public_key"])
            if problem:
                raise ConfigError(at("public_key_file"), "[auth] public_key_file", problem, path)
    return AuthConfig(**values)
