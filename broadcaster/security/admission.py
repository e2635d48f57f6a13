"""Admission control at the handshake: who may open one more connection now.

Checked for every WebSocket handshake (after the origin check), in this
order, each refusal with its HTTP status, its `Retry-After` and its
`broadcaster_refusals_total{reason}`:

- new connections per second from one address (`connection_rate`,
  `connection_burst`, a token bucket): 429, Retry-After = when the bucket
  has a token again; reason `connection_rate`;
- open connections from one address (`connections_per_ip`): 429,
  Retry-After = `retry_after`; reason `ip_connections`;
- open connections in total (`max_connections`): 503, Retry-After =
  `retry_after`; reason `connections`;
- event-loop lag above `max_loop_lag` (overload.py): 503, Retry-After =
  `retry_after`; reason `overload`.

"One address" is an IPv4 address or an IPv6 /64 (one host usually owns a
whole /64, so per-address limits on IPv6 /128s would be no limit at all).
Addresses in `exempt_networks` (loopback by default: a reverse proxy on this
host, the tests, the load tool) skip the per-address checks, never the
server-wide ones. An admitted handshake holds a `Ticket` until its TCP
connection is gone, so the counts include handshakes in progress.

Pure: time is an argument; the server calls `admit` from `process_request`
and `release` from the connection's `connection_lost`.

Under `broadcaster serve --workers N` each worker process admits its own
handshakes, so the counts must include the other workers': `share` gives
`Admission` a `RemoteHoldings` (what the other workers hold, per address key
and in total, kept current by the local bus) and a callback for its own
deltas (which the bus relays to the others). `connections_per_ip` and
`max_connections` then compare the sum with the cap, and a connection
admitted elsewhere also takes a token from this worker's bucket of its
address, so `connection_rate` holds across workers too. A worker counts
its own admissions at once and the others' when the bus's relay arrives
(one hop through the supervisor, well under a millisecond): admissions on
different workers within that delay do not see each other. With one
handshake per worker in that window (a burst spread by the kernel), a cap is
exceeded by at most N-1 with N workers; the bound in general is that no
worker admits past the cap by what it knows, so at most (N-1) x cap over
if every worker filled the cap within one relay delay. Once the relays
arrive nothing more is admitted until the total is under the cap again.

Before all that, `HalfOpen` counts the connections whose HTTP request is not
complete yet (accepted, request line and headers still arriving), because the
checks above can only run on a complete request: a client that sends headers
slowly, or never finishes them, would otherwise hold a connection and its
buffered headers for the whole open timeout without ever being counted. At
accept time, over `half_open_per_ip` from one address: 429, reason
`ip_half_open` (the same exemptions as above); over `max_half_open` in total:
503, reason `half_open`. Each holds at most `max_header_bytes` of headers
(server/websocket.py), so together they bound the memory unauthenticated
clients can pin before any other check runs.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from broadcaster.core.token_bucket import TokenBuckets

if TYPE_CHECKING:
    from broadcaster.config import LimitsConfig
    from broadcaster.security.overload import Overload

__all__ = ["Admission", "HalfOpen", "Refusal", "RemoteHoldings", "Ticket", "address_key"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused handshake: HTTP status, refusal reason, seconds to wait, a message."""

    status: int
    reason: str
    retry_after: float
    message: str

    @property
    def retry_after_header(self) -> str:
        """Retry-After is whole seconds (RFC 9110); never tell a client 0."""
        return str(max(1, math.ceil(self.retry_after)))


class _Counted(Protocol):
    def _release(self, key: str | None) -> None: ...


class Ticket:
    """One admitted connection; `release` (idempotent) gives its place back."""

    __slots__ = ("_admission", "key")

    def __init__(self, admission: _Counted, key: str | None) -> None:
        self._admission: _Counted | None = admission
        self.key = key

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission._release(self.key)


def address_key(ip: str) -> tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address] | None:
    """The per-address key of `ip`: itself (IPv4) or its /64 (IPv6); None when not an IP."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        else:
            network = ipaddress.IPv6Network((address, 64), strict=False)
            return str(network), address
    return str(address), address


def _exempt(
    ip: str | None, exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> str | None:
    """The per-address key of `ip`, or None when per-address limits do not apply to it."""
    found = address_key(ip) if ip is not None else None
    if found is None or any(found[1] in network for network in exempt):
        return None
    return found[0]


class _OpenCounts:
    """Open places in total and per address: what `HalfOpen` and `Admission` both count.

    `_take` hands out a `Ticket` that gives its place back (`_release`) once.
    """

    def __init__(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self.exempt = tuple(ipaddress.ip_network(n, strict=False) for n in limits.exempt_networks)
        self.open = 0
        self.per_address: dict[str, int] = {}

    def _take(self, key: str | None) -> Ticket:
        self.open += 1
        if key is not None:
            self.per_address[key] = self.per_address.get(key, 0) + 1
        return Ticket(self, key)

    def _release(self, key: str | None) -> None:
        self.open -= 1
        if key is not None:
            left = self.per_address[key] - 1
            if left:
                self.per_address[key] = left
            else:
                del self.per_address[key]  # bounded by the open places, never more


class HalfOpen(_OpenCounts):
    """Counts accepted connections whose HTTP request has not fully arrived yet."""

    def enter(self, ip: str | None) -> Ticket | Refusal:
        """Count one more connection from `ip` still sending its request, or say why not."""
        limits = self.limits
        key = _exempt(ip, self.exempt)
        cap = limits.half_open_per_ip
        if key is not None and cap and self.per_address.get(key, 0) >= cap:
            return Refusal(
                429,
                "ip_half_open",
                limits.retry_after,
                f"too many connections from your address are still sending their request "
                f"(at most {cap}); finish a request before opening more connections",
            )
        if limits.max_half_open and self.open >= limits.max_half_open:
            return Refusal(
                503,
                "half_open",
                limits.retry_after,
                f"the server has {limits.max_half_open} connections still sending their "
                "request; try again later",
            )
        return self._take(key)


class RemoteHoldings:
    """The connections the other workers hold: in total and per address key.

    Fed by the local bus with each other worker's deltas (and, when a worker
    joins, with what the others hold); a worker that leaves is subtracted by
    the bus. Keys are `address_key`s; None counts an exempt connection
    (in the total only).
    """

    __slots__ = ("open", "per_address")

    def __init__(self) -> None:
        self.open = 0
        self.per_address: dict[str, int] = {}

    def apply(self, key: str | None, delta: int) -> None:
        self.open += delta
        if key is not None:
            count = self.per_address.get(key, 0) + delta
            if count > 0:
                self.per_address[key] = count
            else:
                self.per_address.pop(key, None)


class Admission(_OpenCounts):
    """Counts open connections (total and per address) and per-address handshake rates."""

    def __init__(self, limits: LimitsConfig, overload: Overload) -> None:
        super().__init__(limits)
        self.overload = overload
        self.others: RemoteHoldings | None = None
        """What the other workers hold (`serve --workers`); None in one process."""
        self._changed: Callable[[str | None, int], None] | None = None
        self.rates = (
            TokenBuckets(
                limits.connection_rate, max(1.0, limits.connection_burst or limits.connection_rate)
            )
            if limits.connection_rate > 0
            else None
        )

    def admit(self, ip: str | None, now: float) -> Ticket | Refusal:
        """Admit one more connection from `ip` at `now`, or say why not."""
        limits = self.limits
        key = _exempt(ip, self.exempt)
        if key is not None:
            if self.rates is not None:
                wait = self.rates.take(key, now)
                if wait > 0:
                    return Refusal(
                        429,
                        "connection_rate",
                        wait,
                        f"too many new connections from your address: at most "
                        f"{limits.connection_rate:g}/s (burst {self.rates.burst:g})",
                    )
            cap = limits.connections_per_ip
            held = self.per_address.get(key, 0)
            if self.others is not None:
                held += self.others.per_address.get(key, 0)
            if cap and held >= cap:
                return Refusal(
                    429,
                    "ip_connections",
                    limits.retry_after,
                    f"too many open connections from your address (at most {cap})",
                )
        total = self.open if self.others is None else self.open + self.others.open
        if limits.max_connections and total >= limits.max_connections:
            return Refusal(
                503,
                "connections",
                limits.retry_after,
                f"the server is full ({limits.max_connections} connections); try again later",
            )
        if self.overload.overloaded:
            return Refusal(
                503,
                "overload",
                limits.retry_after,
                "the server is overloaded; try again later",
            )
        return self._take(key)

    def share(
        self,
        others: RemoteHoldings | None,
        changed: Callable[[str | None, int], None] | None,
    ) -> None:
        """Count `others` in the caps, and report every admit (+1) and release (-1) to `changed`.

        `share(None, None)` goes back to counting this process only.
        """
        self.others = others
        self._changed = changed

    def remote(
        self, others: RemoteHoldings, key: str | None, delta: int, now: float, *, sync: bool
    ) -> None:
        """Another worker admitted (`delta` > 0) or released connections from `key`.

        A fresh admission elsewhere also takes a token of `key`'s rate bucket
        here (`sync`: what a worker held when this one joined, not new).
        """
        others.apply(key, delta)
        if delta > 0 and not sync and key is not None and self.rates is not None:
            for _ in range(delta):
                self.rates.take(key, now)

    def _take(self, key: str | None) -> Ticket:
        ticket = super()._take(key)
        if self._changed is not None:
            self._changed(key, 1)
        return ticket

    def _release(self, key: str | None) -> None:
        super()._release(key)
        if self._changed is not None:
            self._changed(key, -1)
