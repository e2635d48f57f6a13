"""Channel permissions: may this connection subscribe to / publish on this channel?

Per channel (`[channels."x"]`, `[defaults]`), `subscribe` and `publish` say
who may: `anyone`, `token` (a token whose `subscribe` / `publish` claim has a
matching pattern) or `none`. System channels (`$sys.*`) are not in the table:
publishing there is always refused, subscribing needs admin rights (see
`security/admin.py` for when a connection has them).

Pure functions: the session asks, gets None (allowed) or the message of a
`forbidden` error. Refusals count as `broadcaster_refusals_total{reason="forbidden"}`,
never as protocol abuse: a client that asks for a channel it may not have is
not malformed.
"""

from __future__ import annotations

from broadcaster.core.policy import Access, ChannelPolicy
from broadcaster.security.auth import Grant

__all__ = ["refuse_publish", "refuse_subscribe", "refuse_system_subscribe"]

_HOW = "send a token with ?token= on the URL or in an 'auth' op"


def _refuse(action: str, access: Access, channel: str, grant: Grant | None) -> str | None:
    if access is Access.ANYONE:
        return None
    if access is Access.NONE:
        return f"{action} to {channel!r} is not allowed for WebSocket clients on this server"
    if grant is None:
        return f"{action} to {channel!r} needs a token: {_HOW}"
    if grant.allows(action, channel):
        return None
    return f"your token does not allow {action} to {channel!r} (claim {action!r})"


def refuse_subscribe(policy: ChannelPolicy, channel: str, grant: Grant | None) -> str | None:
    """Why this connection may not subscribe to `channel` (a `[channels]` one), or None."""
    return _refuse("subscribe", policy.subscribe, channel, grant)


def refuse_publish(policy: ChannelPolicy, channel: str, grant: Grant | None) -> str | None:
    """Why this connection may not publish to `channel`, or None."""
    return _refuse("publish", policy.publish, channel, grant)


def refuse_system_subscribe(channel: str, may_watch: bool, token_needed: bool) -> str | None:
    """Why this connection may not subscribe to the system channel `channel`, or None."""
    if may_watch:
        return None
    if token_needed:
        return f"{channel!r} needs the admin token: {_HOW}"
    return f"{channel!r} is only served to loopback clients (configure [admin] token)"
