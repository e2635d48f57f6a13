"""The browser origin allowlist (`[server] allowed_origins`), checked at the handshake.

Why: a browser attaches the page's `Origin` to every WebSocket handshake and,
unlike a fetch, never asks the server first (no CORS preflight). Without a
check, any web page a visitor opens can connect to this server *from the
visitor's browser*: a server on their loopback or intranet, or one that
trusts the visitor's address (cross-site WebSocket hijacking). Refusing
foreign origins with HTTP 403 closes that door. Non-browser clients may send
any Origin they like, so this is not authentication; tokens are.

Entries (validated when the config loads):

- `"self"`: the server's own pages: the Origin's host[:port] equals the
  request's Host header (the default, so `/`, `/dashboard` and pages served
  next to the server work);
- `"*"`: any origin;
- `"null"`: the opaque origin of sandboxed iframes and `file://` pages;
- `"https://app.example.com"`: exactly that origin (scheme, host, port);
- `"https://*.example.com"`: a `*` in the host matches any subdomain part.

A handshake without an Origin header (curl, servers, the Python client) is
allowed unless `[server] allow_no_origin = false`.
"""

from __future__ import annotations

import fnmatch
import re

__all__ = ["OriginPolicy", "normalize_entry", "origin_entry_problem"]

_ORIGIN = re.compile(r"^(https?)://([a-z0-9*.\-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def normalize_entry(entry: str) -> str:
    """An allowlist entry as it is compared: lower case, no trailing slash, no default port."""
    text = entry.strip().lower().rstrip("/")
    match = _ORIGIN.match(text)
    if match and match.group(3) == _DEFAULT_PORTS[match.group(1)]:
        text = text[: -len(match.group(3))]
    return text


def origin_entry_problem(entry: object) -> str | None:
    """Why `entry` cannot be an allowlist entry, or None when it can."""
    expected = (
        '"self", "*", "null" or an origin such as "https://app.example.com" '
        '(a * may stand for part of the host: "https://*.example.com")'
    )
    if not isinstance(entry, str):
        return expected
    text = normalize_entry(entry)
    if text in ("self", "*", "null") or _ORIGIN.match(text):
        return None
    return expected


def _host_of(origin: str) -> str | None:
    """The host[:port] of a serialized origin (default port dropped), or None if malformed."""
    match = _ORIGIN.match(normalize_entry(origin))
    if match is None or "*" in match.group(2):
        return None
    return match.group(2) + (match.group(3) or "")


def _strip_default_port(host: str) -> str:
    for port in _DEFAULT_PORTS.values():
        if host.endswith(port):
            return host[: -len(port)]
    return host


class OriginPolicy:
    """Decides whether a handshake's Origin header is allowed."""

    def __init__(self, allowed: tuple[str, ...], *, allow_no_origin: bool = True) -> None:
        entries = [normalize_entry(e) for e in allowed]
        self.any = "*" in entries
        self.self_ = "self" in entries
        self.exact = frozenset(e for e in entries if "*" not in e and e != "self")
        self.patterns = tuple(e for e in entries if "*" in e and e != "*")
        self.allow_no_origin = allow_no_origin

    def allows(self, origins: list[str], host: str | None) -> bool:
        """Whether a handshake with these Origin header values and this Host header may proceed.

        Several Origin headers are refused: a browser sends exactly one.
        """
        if not origins:
            return self.allow_no_origin
        if len(origins) > 1:
            return False
        if self.any:
            return True
        origin = normalize_entry(origins[0])
        if origin in self.exact:
            return True
        if self.self_ and host:
            own = _host_of(origin)
            if own is not None and _strip_default_port(own) == _strip_default_port(
                host.strip().lower()
            ):
                return True
        return any(fnmatch.fnmatchcase(origin, pattern) for pattern in self.patterns)
