"""The per-server registry, the refusal counters and the text exposition for GET /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from broadcaster.server.app import Broadcaster

__all__ = ["CONTENT_TYPE", "REFUSAL_REASONS", "Metrics"]

# The classic Prometheus text format, which every scraper reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# `broadcaster_refusals_total{reason}`: a fixed set, so the label stays bounded.
# Code that adds a new kind of refusal adds its reason here.
REFUSAL_REASONS: tuple[str, ...] = (
    "origin",  # handshake from a forbidden Origin (HTTP 403)
    "connection_rate",  # over the per-address connection rate (HTTP 429)
    "ip_connections",  # over the per-address connection count (HTTP 429)
    "connections",  # over max_connections (HTTP 503)
    "overload",  # event-loop lag: handshake refused (HTTP 503) or connection shed (close 1013)
    "token",  # bad or expired token (error unauthorized, close 1008)
    "admin",  # /stats, /dashboard or /metrics without admin access (HTTP 401 / 403)
    "forbidden",  # an op the channel's permissions refuse, or $sys.* (error forbidden)
    "max_subscriptions",  # a subscribe over the per-connection limit (error forbidden)
    "max_channels",  # a channel that would exceed [limits] max_channels (error forbidden)
    "publish_rate",  # a publish over the per-connection rate (error rate_limited)
    "new_channel_rate",  # a connection creating channels too fast (error rate_limited)
    "new_channel_rate_per_ip",  # an address creating channels too fast (error rate_limited)
    "rate_limit",  # a client that kept publishing over its rate (close 4029)
    "abuse",  # protocol abuse: too many invalid frames (close 1008)
    "message_size",  # a frame above max_message_size (close 1009)
    "unknown_channel",  # a channel no [channels] entry matches, strict_channels on
    "half_open",  # over max_half_open connections still sending their request (HTTP 503)
    "ip_half_open",  # over half_open_per_ip such connections from one address (HTTP 429)
    "header_size",  # a request head over max_header_bytes, or websockets' 414 / 431
    "bad_request",  # a malformed HTTP request on the WebSocket port (HTTP 400)
    "api_connections",  # an API connection over [api] max_connections (closed at accept)
    "api_timeout",  # an API request body not received within [api] body_timeout (HTTP 408)
)


class Metrics:
    """One server's metrics: its registry, its refusal counts, its exposition.

    The registry is made at the first scrape when the application passes none:
    a server that is never scraped never loads prometheus-client (~2.5 MB).
    """

    def __init__(self, app: Broadcaster, registry: CollectorRegistry | None = None) -> None:
        self._app = app
        self.refusals: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self._registry: CollectorRegistry | None = None
        if registry is not None:
            self._register(registry)

    def _register(self, registry: CollectorRegistry) -> CollectorRegistry:
        from broadcaster.metrics.collector import BroadcasterCollector

        registry.register(BroadcasterCollector(self._app, self.refusals))
        self._registry = registry
        return registry

    @property
    def registry(self) -> CollectorRegistry:
        """The registry the server's metrics are in (created on first use)."""
        if self._registry is not None:
            return self._registry
        from prometheus_client import CollectorRegistry

        return self._register(CollectorRegistry())

    def refused(self, reason: str) -> None:
        """Count one refused handshake or op; `reason` must be one of REFUSAL_REASONS."""
        try:
            self.refusals[reason] += 1
        except KeyError:
            raise ValueError(
                f"unknown refusal reason {reason!r}; add it to REFUSAL_REASONS"
            ) from None

    def render(self) -> bytes:
        """The text exposition of this server's registry."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
