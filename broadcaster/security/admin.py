"""Who may see the server from the inside: /stats, /dashboard, /metrics and `$sys.*`.

Those show every client's address, its queues and the server's load: useful
to an operator, and to an attacker. One rule for all of them:

- **token** mode: an admin credential is configured (`[admin] token`, or
  `[auth] enabled`, where a JWT with `"admin": true` counts). The request
  must carry it: `Authorization: Bearer TOKEN` or `?token=TOKEN` on HTTP (the
  browser's address bar can hold the latter: `/dashboard?token=...`, and the
  page passes it on to its WebSocket in an `auth` op); the `?token=` /
  `auth` op of the WebSocket for `$sys.*`. Missing or wrong: HTTP 401; a
  valid JWT without `admin`: 403. Loopback gets no favour (a reverse proxy
  on the same host makes every client look local).
- **loopback** mode: no credential is configured. Only clients connecting
  from a loopback address are served (the default demo on 127.0.0.1 works
  unchanged); others get 403. Behind a reverse proxy on the same host every
  client is loopback: configure a token there.
- **open** mode: no credential and `[admin] open = true`: everyone (a
  trusted network only).

Every refused request counts as `broadcaster_refusals_total{reason="admin"}`.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Literal

from broadcaster.security.auth import Authenticator, TokenRejected

__all__ = ["AdminDenied", "AdminGate", "is_loopback", "peer_ip"]

Mode = Literal["token", "loopback", "open"]


@dataclass(frozen=True, slots=True)
class AdminDenied:
    """An admin request refused: HTTP status and a message safe to show."""

    status: int
    message: str


def peer_ip(remote: object) -> str | None:
    """The IP address of a socket's peer address tuple (None for anything else)."""
    if isinstance(remote, tuple) and remote and isinstance(remote[0], str):
        return remote[0]
    return None


def is_loopback(ip: str | None) -> bool:
    if ip is None:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class AdminGate:
    """Decides admin access for HTTP requests and `$sys.*` subscriptions."""

    def __init__(self, auth: Authenticator, *, has_token: bool, open_: bool) -> None:
        self.auth = auth
        self.mode: Mode = (
            "token" if has_token or auth.enabled else ("open" if open_ else "loopback")
        )

    @property
    def token_needed(self) -> bool:
        return self.mode == "token"

    def check_http(
        self, authorization: str | None, query_token: str | None, ip: str | None
    ) -> AdminDenied | None:
        """None when this request may read an admin endpoint, else why not."""
        if self.mode == "open":
            return None
        if self.mode == "loopback":
            if is_loopback(ip):
                return None
            return AdminDenied(
                403,
                "admin endpoints are served to loopback clients only; "
                "configure [admin] token to reach them from elsewhere",
            )
        token = _bearer(authorization) or query_token
        if not token:
            return AdminDenied(
                401, "this endpoint needs the admin token: Authorization: Bearer TOKEN or ?token="
            )
        try:
            grant = self.auth.verify(token, time.time())
        except TokenRejected as exc:
            return AdminDenied(401, str(exc))
        if not grant.admin:
            return AdminDenied(403, "this token is not an admin token (claim 'admin')")
        return None

    def may_watch(self, admin_grant: bool, ip: str | None) -> bool:
        """Whether a connection may subscribe to `$sys.*` channels."""
        if self.mode == "open":
            return True
        if self.mode == "loopback":
            return is_loopback(ip)
        return admin_grant


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip() or None
