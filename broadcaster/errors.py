"""Exceptions raised by broadcaster.

All of them derive from one root so an embedding application can catch
everything the library raises with a single clause::

    BroadcasterError
    ├── ConfigError          a config file, env var or flag is wrong (names file, key, expectation)
    ├── PublishError         a publish could not be accepted
    │   ├── ForbiddenChannel     the channel is reserved (`$sys.*`) or not allowed
    │   │   └── TooManyChannels  a new channel would exceed [limits] max_channels
    │   ├── UnknownChannel       strict_channels is on and no [channels] entry matches
    │   ├── InvalidPublish       the data is not JSON-serializable or the channel name is bad
    │   ├── BrokerUnavailable    the broker cannot take the publish now
    │   │   └── BusUnavailable   a worker's local bus (`serve --workers`) is not there
    │   ├── ChannelBlocked       a `block` channel had no room within the publish's timeout
    │   └── RateLimited          the publisher is over its rate limit
    │       └── ChannelRateLimited   a client creates channels faster than [limits] allows
    └── ServerStateError     the server was used before start() or after stop()
"""

from __future__ import annotations

__all__ = [
    "BroadcasterError",
    "BrokerUnavailable",
    "BusUnavailable",
    "ChannelBlocked",
    "ChannelRateLimited",
    "ConfigError",
    "ForbiddenChannel",
    "InvalidPublish",
    "PublishError",
    "RateLimited",
    "ServerStateError",
    "TooManyChannels",
    "UnknownChannel",
]


class BroadcasterError(Exception):
    """Root of every exception broadcaster raises."""


class ConfigError(BroadcasterError):
    """The configuration is invalid; the message names the source, the key and what was expected."""

    def __init__(self, source: str, key: str, expected: str, got: object = None) -> None:
        self.source = source
        self.key = key
        self.expected = expected
        self.got = got
        detail = f"{source}: {key}: expected {expected}"
        if got is not None:
            detail += f", got {got!r}"
        super().__init__(detail)


class PublishError(BroadcasterError):
    """A publish could not be accepted; `code` is the PROTOCOL.md error code to send."""

    code: str = "invalid_message"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ForbiddenChannel(PublishError):
    """The channel may not be published to by this publisher."""

    code = "forbidden"


class TooManyChannels(ForbiddenChannel):
    """The channel does not exist yet and the server holds `[limits] max_channels` already.

    Idle channels are freed only after `[server] idle_channel_ttl`, so without
    this bound a client inventing names fast would still grow memory without limit.
    """


class UnknownChannel(PublishError):
    """strict_channels is on and the channel matches no [channels] entry."""

    code = "unknown_channel"


class InvalidPublish(PublishError):
    """The channel name or data cannot be published."""

    code = "invalid_message"


class BrokerUnavailable(PublishError):
    """The broker cannot take the publish now; retry after `retry_after` seconds."""

    code = "unavailable"


class BusUnavailable(BrokerUnavailable):
    """A worker of `serve --workers` cannot reach the local bus (the supervisor is gone)."""


class ChannelBlocked(PublishError):
    """A `block` channel had no room within the publish's timeout; nothing was published.

    A subscriber of the channel is not reading. It is cut off after the
    channel's slow_consumer_timeout at the latest, so retrying after
    `retry_after` seconds is sensible. The code is PROTOCOL.md's `unavailable`
    (the server cannot take the publish now), the message names the channel.
    """

    code = "unavailable"

    def __init__(self, channel: str, timeout: float, *, retry_after: float) -> None:
        super().__init__(
            f"channel {channel!r} is blocked (strategy block): a subscriber is not reading, "
            f"and no room appeared within {timeout:g} s",
            retry_after=retry_after,
        )
        self.channel = channel
        self.timeout = timeout


class RateLimited(PublishError):
    """The publisher sent more than its rate allows; retry after `retry_after` seconds."""

    code = "rate_limited"


class ChannelRateLimited(RateLimited):
    """The channel does not exist and its creator (a client connection, or its
    address) is over `[limits] new_channel_rate` / `new_channel_rate_per_ip`.

    Every name a client uses becomes a channel, and `max_channels` is shared by
    everyone: this budget refuses the client inventing names, not the crowd.
    Use existing channels, or retry after `retry_after` seconds.
    """


class ServerStateError(BroadcasterError):
    """The server was used in a state that does not allow it (not started, stopped)."""
