"""How fast clients (WebSocket, SSE and NDJSON) may create channels (`[limits] new_channel_*`).

Every subscribe or publish to a name that does not exist creates a channel,
and `max_channels` bounds how many the server holds. Without a budget one
connection inventing names fills that bound in seconds and every other
client (and the HTTP API) is refused any new channel until the unused ones
are freed. So creating a channel costs a token from two buckets: the
connection's own (`new_channel_rate`, `new_channel_burst`) and its
address's (`new_channel_rate_per_ip`, `new_channel_burst_per_ip`; an IPv4
address or an IPv6 /64, skipped for `exempt_networks` like the other
per-address limits). Over either, the op is refused with `rate_limited`
and `retry_after`: the abuser is refused, not the crowd. Using a channel
that exists is free; the HTTP publish API and sources are not charged
(they have their own rate, `[api] rate`).

Pure: time is an argument. The server owns one `ChannelBudgets`, each
session asks it for its `ChannelBudget`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broadcaster.core.token_bucket import TokenBucket, TokenBuckets
from broadcaster.security.admission import address_key

if TYPE_CHECKING:
    from broadcaster.config import LimitsConfig

__all__ = ["ChannelBudget", "ChannelBudgets", "Overspent"]


@dataclass(frozen=True, slots=True)
class Overspent:
    """A refused channel creation: the refusal reason, seconds to wait and a message."""

    reason: str
    retry_after: float
    message: str


class ChannelBudgets:
    """The per-address buckets, shared by every connection from one address."""

    def __init__(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self.exempt = tuple(ipaddress.ip_network(n, strict=False) for n in limits.exempt_networks)
        self.per_address = (
            TokenBuckets(limits.new_channel_rate_per_ip, limits.new_channel_burst_per_ip)
            if limits.new_channel_rate_per_ip > 0
            else None
        )

    def for_connection(self, ip: str | None, now: float) -> ChannelBudget:
        """The budget of a new connection from `ip` (None: not an IP address)."""
        found = address_key(ip) if ip is not None else None
        key = None
        if found is not None and not any(found[1] in network for network in self.exempt):
            key = found[0]
        return ChannelBudget(self, key, now)


class ChannelBudget:
    """One connection's channel-creation budget, and its address's."""

    __slots__ = ("_bucket", "_budgets", "_key")

    def __init__(self, budgets: ChannelBudgets, key: str | None, now: float) -> None:
        self._budgets = budgets
        self._key = key
        # Made at the first creation, not at connect: a bucket starts full and
        # refills only up to full, so one made later is in the same state, and
        # a connection that never creates a channel (most) holds none (~90 bytes).
        self._bucket: TokenBucket | None = None

    def spend(self, now: float) -> Overspent | None:
        """Charge one channel creation at `now`; None if allowed, else why not.

        The connection's bucket is asked first: a connection over its own
        budget does not spend its address's (its neighbours' share).
        """
        limits = self._budgets.limits
        bucket = self._bucket
        if bucket is None and limits.new_channel_rate > 0:
            bucket = self._bucket = TokenBucket(
                limits.new_channel_rate, limits.new_channel_burst, now
            )
        if bucket is not None:
            wait = bucket.take(now)
            if wait > 0:
                return Overspent(
                    "new_channel_rate",
                    wait,
                    f"this connection creates channels too fast: at most "
                    f"{limits.new_channel_rate:g}/s (burst {limits.new_channel_burst:g}, "
                    f"[limits] new_channel_rate); use existing channels or retry after "
                    f"{wait:.3g} s",
                )
        per_address = self._budgets.per_address
        if per_address is not None and self._key is not None:
            wait = per_address.take(self._key, now)
            if wait > 0:
                return Overspent(
                    "new_channel_rate_per_ip",
                    wait,
                    f"connections from your address create channels too fast: at most "
                    f"{limits.new_channel_rate_per_ip:g}/s (burst "
                    f"{limits.new_channel_burst_per_ip:g}, [limits] new_channel_rate_per_ip); "
                    f"retry after {wait:.3g} s",
                )
        return None
