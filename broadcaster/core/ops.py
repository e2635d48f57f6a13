"""Client → server ops: strict parsing and validation of one frame.

`parse_op` turns a received frame into a typed op or a `Rejected` carrying
the PROTOCOL.md error code, a message that tells the client what to fix, and
the op's `id` when the frame got far enough to have one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from broadcaster.codes import ErrorCode

__all__ = [
    "MAX_CHANNEL_LENGTH",
    "SYSTEM_PREFIX",
    "Auth",
    "Op",
    "Ping",
    "Publish",
    "Rejected",
    "Subscribe",
    "Unsubscribe",
    "parse_op",
    "validate_channel",
]

MAX_CHANNEL_LENGTH = 255
# Channels whose names start with this belong to the server: no client or API publishes there.
SYSTEM_PREFIX = "$sys."

OpId = int | str | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    id: OpId = None
    since: int | None = None
    epoch: str | None = None
    max_rate: float | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str
    id: OpId = None


@dataclass(frozen=True, slots=True)
class Publish:
    channel: str
    data: Any
    id: OpId = None


@dataclass(frozen=True, slots=True)
class Ping:
    id: OpId = None


@dataclass(frozen=True, slots=True)
class Auth:
    token: str
    id: OpId = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame that cannot be acted on: reply `error` with this code."""

    code: ErrorCode
    message: str
    id: OpId = None


Op = Subscribe | Unsubscribe | Publish | Ping | Auth

OPS = ("subscribe", "unsubscribe", "publish", "ping", "auth")


def validate_channel(channel: object) -> str | None:
    """Why `channel` is not a usable channel name, or None when it is."""
    if not isinstance(channel, str) or not channel:
        return "'channel' must be a non-empty string"
    if len(channel) > MAX_CHANNEL_LENGTH:
        return f"'channel' must be at most {MAX_CHANNEL_LENGTH} characters"
    return None


def parse_op(frame: str | bytes) -> Op | Rejected:
    """Parse one received frame (str for a text frame, bytes for a binary one)."""
    if isinstance(frame, bytes):
        return Rejected(
            ErrorCode.INVALID_MESSAGE, "binary frames are not supported: send JSON in a text frame"
        )
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        return Rejected(ErrorCode.INVALID_JSON, f"frame is not strict JSON: {exc}")
    if not isinstance(obj, dict):
        return Rejected(
            ErrorCode.INVALID_MESSAGE,
            f"expected a JSON object with an 'op', got {type(obj).__name__}",
        )
    op_id = obj.get("id")
    if op_id is not None and (isinstance(op_id, bool) or not isinstance(op_id, int | str)):
        return Rejected(ErrorCode.INVALID_MESSAGE, "'id' must be an integer or a string")
    op = obj.get("op")
    if not isinstance(op, str):
        return Rejected(ErrorCode.INVALID_MESSAGE, "'op' is missing or not a string", op_id)
    if op == "publish":
        return _publish(obj, op_id)
    if op == "subscribe":
        return _subscribe(obj, op_id)
    if op == "unsubscribe":
        problem = validate_channel(obj.get("channel"))
        if problem:
            return Rejected(ErrorCode.INVALID_MESSAGE, f"unsubscribe: {problem}", op_id)
        return Unsubscribe(obj["channel"], op_id)
    if op == "ping":
        return Ping(op_id)
    if op == "auth":
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            return Rejected(
                ErrorCode.INVALID_MESSAGE, "auth: 'token' must be a non-empty string", op_id
            )
        return Auth(token, op_id)
    return Rejected(
        ErrorCode.UNKNOWN_OP, f"unknown op {op!r}; expected one of {', '.join(OPS)}", op_id
    )


def _publish(obj: dict[str, Any], op_id: OpId) -> Publish | Rejected:
    problem = validate_channel(obj.get("channel"))
    if problem:
        return Rejected(ErrorCode.INVALID_MESSAGE, f"publish: {problem}", op_id)
    if "data" not in obj:
        return Rejected(ErrorCode.INVALID_MESSAGE, "publish: 'data' is missing", op_id)
    return Publish(obj["channel"], obj["data"], op_id)


def _subscribe(obj: dict[str, Any], op_id: OpId) -> Subscribe | Rejected:
    problem = validate_channel(obj.get("channel"))
    if problem:
        return Rejected(ErrorCode.INVALID_MESSAGE, f"subscribe: {problem}", op_id)
    since = obj.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
        return Rejected(
            ErrorCode.INVALID_MESSAGE, "subscribe: 'since' must be an integer >= 0", op_id
        )
    epoch = obj.get("epoch")
    if epoch is not None and not isinstance(epoch, str):
        return Rejected(ErrorCode.INVALID_MESSAGE, "subscribe: 'epoch' must be a string", op_id)
    max_rate = obj.get("max_rate")
    if max_rate is not None and (
        isinstance(max_rate, bool) or not isinstance(max_rate, int | float) or not max_rate > 0
    ):
        return Rejected(
            ErrorCode.INVALID_MESSAGE, "subscribe: 'max_rate' must be a number > 0", op_id
        )
    return Subscribe(
        obj["channel"],
        op_id,
        since,
        epoch,
        float(max_rate) if max_rate is not None else None,
    )
