"""Server → client events as JSON bytes (PROTOCOL.md, "Server → client").

Every event the server sends is built here, so the wire format has one home.
`message` events are built once per published message; the rest are rare.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "authenticated",
    "error",
    "flow_pause",
    "flow_resume",
    "message",
    "pong",
    "published",
    "subscribed",
    "unsubscribed",
]

OpId = int | str | None


def _with_id(event: dict[str, Any], op_id: OpId) -> bytes:
    if op_id is not None:
        event["id"] = op_id
    return orjson.dumps(event)


def message(channel: str, seq: int, data: Any, *, snapshot: bool = False) -> bytes:
    """A `message` event; `data` must already be JSON-serializable."""
    event: dict[str, Any] = {"event": "message", "channel": channel, "seq": seq, "data": data}
    if snapshot:
        event["snapshot"] = True
    return orjson.dumps(event)


def subscribed(
    channel: str,
    op_id: OpId,
    *,
    strategy: str,
    queue_size: int,
    seq: int,
    epoch: str,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The reply to `subscribe`: from now on the client gets every seq above `seq`."""
    event: dict[str, Any] = {
        "event": "subscribed",
        "channel": channel,
        "strategy": strategy,
        "queue_size": queue_size,
        "seq": seq,
        "epoch": epoch,
    }
    if extra:
        event.update(extra)
    return _with_id(event, op_id)


def unsubscribed(channel: str, op_id: OpId) -> bytes:
    """The reply to `unsubscribe`."""
    return _with_id({"event": "unsubscribed", "channel": channel}, op_id)


def published(channel: str, op_id: OpId, seq: int) -> bytes:
    """The reply to a `publish` that carried an id."""
    return _with_id({"event": "published", "channel": channel, "seq": seq}, op_id)


def pong(op_id: OpId) -> bytes:
    """The reply to `ping`."""
    return _with_id({"event": "pong"}, op_id)


def authenticated(op_id: OpId) -> bytes:
    """The reply to a successful `auth`."""
    return _with_id({"event": "authenticated"}, op_id)


def error(code: str, text: str, op_id: OpId = None, **extra: Any) -> bytes:
    """An `error` event with a stable code and a human message."""
    event: dict[str, Any] = {"event": "error", "code": code, "message": text}
    event.update(extra)
    return _with_id(event, op_id)


def flow_pause(channel: str, *, reason: str, depth: int, limit: int) -> bytes:
    """`flow.pause`: the subscription reached its high watermark, or the channel is blocked."""
    return orjson.dumps(
        {
            "event": "flow.pause",
            "reason": reason,
            "channel": channel,
            "depth": depth,
            "limit": limit,
        }
    )


def flow_resume(channel: str, *, dropped: int) -> bytes:
    """`flow.resume`: the subscription fell to its low watermark, or the channel has room."""
    return orjson.dumps({"event": "flow.resume", "channel": channel, "dropped": dropped})
