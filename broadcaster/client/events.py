"""The events a client emits (the same names and fields as the JS client's) and their emitter.

Handlers are plain callables run inline, in the order they were added; one that
raises is logged and does not stop the others or the client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from broadcaster.client.tracking import Gap, Reset

__all__ = [
    "Connected",
    "Disconnected",
    "Emitter",
    "EventName",
    "Gap",
    "Message",
    "Pause",
    "Reconnecting",
    "Reset",
    "Resume",
    "Subscribed",
]

logger = logging.getLogger("broadcaster.client")

EventName = Literal[
    "connected",
    "disconnected",
    "reconnecting",
    "subscribed",
    "pause",
    "resume",
    "gap",
    "reset",
    "error",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a channel: `data` as published, its `seq`, and whether it is a snapshot."""

    channel: str
    seq: int
    data: Any
    snapshot: bool = False


@dataclass(frozen=True, slots=True)
class Connected:
    url: str
    reconnect: bool
    """False on the first connection, True on every reconnection."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    code: int
    reason: str
    will_reconnect: bool


@dataclass(frozen=True, slots=True)
class Reconnecting:
    attempt: int
    kind: Literal["normal", "long"]
    delay: float
    """Seconds until the next attempt."""
    code: int
    """The close code that led here (1006 when the connection failed or died)."""
    status: int | None = None
    """The HTTP status when the handshake was refused."""


@dataclass(frozen=True, slots=True)
class Subscribed:
    channel: str
    seq: int
    epoch: str
    strategy: str
    recovered: bool | None = None
    """Set when the subscribe carried `since`: whether the missed messages follow."""
    oldest_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    channel: str
    depth: int
    limit: int
    reason: str
    """"buffer full" (we read too slowly) or "channel blocked" (our publishes are held)."""


@dataclass(frozen=True, slots=True)
class Resume:
    channel: str
    dropped: int


Handler = Callable[[Any], object]


class Emitter:
    """Named events to lists of handlers."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[object, Handler]]] = {}

    def on(self, event: str, handler: Handler) -> Callable[[], None]:
        """Add `handler`; the returned function removes it (the same handler may be added twice)."""
        token = object()
        handlers = self._handlers.setdefault(event, [])
        handlers.append((token, handler))

        def off() -> None:
            handlers[:] = [entry for entry in handlers if entry[0] is not token]

        return off

    def has(self, event: str) -> bool:
        """Whether anyone listens to `event`."""
        return bool(self._handlers.get(event))

    def emit(self, event: str, payload: object) -> None:
        for _token, handler in list(self._handlers.get(event, ())):
            try:
                handler(payload)
            except Exception:
                logger.exception("broadcaster client: %s handler failed", event)
