"""Tokens: JWTs verified with PyJWT, and what they grant a connection.

A client proves who it is with a signed JWT, sent as `/ws?token=...` or in
an `auth` op. The server never issues tokens; the application that knows its
users does (with the shared secret, or the private key of `public_key_file`).
What is verified: the signature with one of `[auth] algorithms` (the key is
chosen by the algorithm, so an RS256 public key can never be used as an HMAC
secret), `exp` (required), `nbf` and `iat` when present, `aud` / `iss` when
configured. The claims read:

- `sub`: who the client is (shown in /stats); optional;
- `exp`: expiry, seconds since the epoch; required: the connection is
  closed with 1008 "token expired" at that moment;
- `subscribe`: a list of glob patterns (`"tickers.*"`) of the channels it
  may subscribe to;
- `publish`: a list of glob patterns of the channels it may publish to;
- `admin`: `true` grants the admin endpoints, `$sys.*` and every channel.

The opaque admin token (`[admin] token`) is accepted wherever a JWT is, and
grants what `"admin": true` does, without expiry.

`Grant` is what a connection holds after authenticating; `allows` answers
for one channel with fnmatch patterns, as `[channels]` matches.
"""

from __future__ import annotations

import fnmatch
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broadcaster.config import HMAC_ALGORITHMS

# PyJWT and cryptography (~10 MB of RSS) are imported where a token or a public
# key is first verified: a server without [auth] never loads them.

if TYPE_CHECKING:
    from broadcaster.config import AuthConfig

__all__ = ["Authenticator", "Grant", "TokenRejected", "public_key_problem"]

# Claims whose presence PyJWT must check; the rest are validated here. `exp` is
# compared here, not by PyJWT: PyJWT truncates it to whole seconds and reads
# its own clock, while a connection's expiry timer wants the exact instant.
_REQUIRED = ["exp"]
# Most patterns a token may carry per claim: a token is input like any other.
MAX_PATTERNS = 256


class TokenRejected(Exception):
    """A token was refused; the message is safe to send to the client (no secrets)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True, slots=True)
class Grant:
    """What one authenticated connection may do."""

    subject: str | None = None
    expires_at: float | None = None
    """Wall-clock time (seconds since the epoch) the grant ends; None never."""
    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    admin: bool = False
    kind: str = "jwt"
    """"jwt" or "admin-token" (the opaque admin token)."""
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def allows(self, action: str, channel: str) -> bool:
        """Whether this grant allows `action` ("subscribe" or "publish") on `channel`."""
        if self.admin:
            return True
        patterns = self.subscribe if action == "subscribe" else self.publish
        return any(channel == p or fnmatch.fnmatchcase(channel, p) for p in patterns)


ADMIN_GRANT = Grant(subject="admin", admin=True, kind="admin-token")


def public_key_problem(pem: str) -> str | None:
    """Why `pem` is not a usable PEM public key, or None."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        return f"a PEM public key (-----BEGIN PUBLIC KEY-----) ({exc})"
    return None


def _patterns(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise TokenRejected(f"invalid token: claim {name!r} must be a list of channel patterns")
    if len(value) > MAX_PATTERNS:
        raise TokenRejected(f"invalid token: claim {name!r} has more than {MAX_PATTERNS} patterns")
    return tuple(value)


class Authenticator:
    """Verifies tokens: the admin token, and JWTs when `[auth] enabled`."""

    def __init__(self, config: AuthConfig, *, admin_token: str = "") -> None:
        self.enabled = config.enabled
        self.algorithms = config.algorithms
        self.audience = config.audience or None
        self.issuer = config.issuer or None
        self.leeway = config.leeway
        self._secret = config.secret.encode() if config.secret else b""
        self._public_key: Any = None
        if config.public_key:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            self._public_key = load_pem_public_key(config.public_key.encode("ascii"))
        self._admin_token = admin_token.encode()
        if self.enabled:
            # Loaded now, not inside the first client's handshake (the import holds the loop).
            import jwt  # noqa: F401

    def is_admin_token(self, token: str) -> bool:
        """Whether `token` is the opaque admin token (compared in constant time)."""
        if not self._admin_token:
            return False
        return hmac.compare_digest(token.encode("utf-8", "replace"), self._admin_token)

    def verify(self, token: str, now: float) -> Grant:
        """The grant `token` carries at wall-clock time `now`, or raise TokenRejected."""
        if self.is_admin_token(token):
            return ADMIN_GRANT
        if not self.enabled:
            raise TokenRejected("invalid token: authentication is not configured on this server")
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(f"invalid token: {exc}") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise TokenRejected(
                f"invalid token: algorithm {alg!r} is not accepted "
                f"(accepted: {', '.join(self.algorithms)})"
            )
        key: Any = self._secret if alg in HMAC_ALGORITHMS else self._public_key
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": _REQUIRED,
                    "verify_exp": False,
                    "verify_aud": self.audience is not None,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(f"invalid token: {exc}") from None
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise TokenRejected("invalid token: 'exp' must be a number")
        if exp + self.leeway <= now:
            raise TokenRejected("token expired", expired=True)
        subject = claims.get("sub")
        if subject is not None and not isinstance(subject, str):
            raise TokenRejected("invalid token: 'sub' must be a string")
        admin = claims.get("admin", False)
        if not isinstance(admin, bool):
            raise TokenRejected("invalid token: 'admin' must be true or false")
        return Grant(
            subject=subject,
            expires_at=float(exp) + self.leeway,
            subscribe=_patterns(claims, "subscribe"),
            publish=_patterns(claims, "publish"),
            admin=admin,
            claims=claims,
        )
