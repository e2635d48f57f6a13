"""Exceptions raised by broadcaster.

All of them derive from one root so an embedding application can catch
everything the library raises with a single clause::

    BroadcasterError
    ├── ConfigError          a config file, env var or flag is wrong (names file, key, expectation)
    ├── PublishError         a publish could not be accepted
    │   ├── ForbiddenChannel     the channel is reserved (`$sys.*`) or not allowed
    │   ├── UnknownChannel       strict_channels is on and no [channels] entry matches
    │   ├── InvalidPublish       the data is not JSON-serializable or the channel name is bad
    │   └── BrokerUnavailable    the broker cannot take the publish now
    └── ServerStateError     the server was used before start() or after stop()
"""

from __future__ import annotations

__all__ = [
    "BroadcasterError",
    "BrokerUnavailable",
    "ConfigError",
    "ForbiddenChannel",
    "InvalidPublish",
    "PublishError",
    "ServerStateError",
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


class UnknownChannel(PublishError):
    """strict_channels is on and the channel matches no [channels] entry."""

    code = "unknown_channel"


class InvalidPublish(PublishError):
    """The channel name or data cannot be published."""

    code = "invalid_message"


class BrokerUnavailable(PublishError):
    """The broker cannot take the publish now; retry after `retry_after` seconds."""

    code = "unavailable"


class ServerStateError(BroadcasterError):
    """The server was used in a state that does not allow it (not started, stopped)."""
