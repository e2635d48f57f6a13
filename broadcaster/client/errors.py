"""What the client raises: every failure carries a `code`, like the protocol's errors.

Codes from the server (`forbidden`, `rate_limited`, ...) arrive as `ServerError`;
the client's own are `disconnected` (a publish was in flight when the connection
dropped: it may or may not have been applied), `closed`, `queue_full` and
`connect_failed`.
"""

from __future__ import annotations

from broadcaster.errors import BroadcasterError

__all__ = [
    "ClientClosed",
    "ClientError",
    "ConnectFailed",
    "ConnectionLost",
    "QueueFull",
    "ServerError",
]


class ClientError(BroadcasterError):
    """Root of the client's errors; `code` says what happened."""

    code: str = "client_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        channel: str | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        self.channel = channel
        """Set when a subscribe to this channel was refused."""


class ServerError(ClientError):
    """The server answered an op with an `error` event (code from PROTOCOL.md)."""


class ConnectionLost(ClientError):
    """The connection dropped before the server acknowledged the publish."""

    code = "disconnected"


class ClientClosed(ClientError):
    """The client was closed, by `close()` or by a server close that forbids reconnecting."""

    code = "closed"


class QueueFull(ClientError):
    """Too many publishes are already waiting to be sent."""

    code = "queue_full"


class ConnectFailed(ClientError):
    """The first connection failed (a wrong URL or a server that is not there)."""

    code = "connect_failed"
