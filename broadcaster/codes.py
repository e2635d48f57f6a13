"""The one table of close codes and error codes, as PROTOCOL.md defines them.

Clients decide from this table whether to reconnect after a close, so every
code the server can send is listed here with that decision.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ABUSE_ERROR_CODES",
    "CLOSE_CODES",
    "CloseCode",
    "CloseCodeInfo",
    "ErrorCode",
]


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server sends."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    SLOW_CONSUMER = 4008
    RATE_LIMITED = 4029


@dataclass(frozen=True, slots=True)
class CloseCodeInfo:
    """What a close code means and how a client should react to it."""

    code: CloseCode
    reason: str
    reconnect: bool
    backoff: str


CLOSE_CODES: dict[CloseCode, CloseCodeInfo] = {
    info.code: info
    for info in (
        CloseCodeInfo(CloseCode.NORMAL, "normal close", False, "none"),
        CloseCodeInfo(CloseCode.GOING_AWAY, "server shutting down", True, "normal"),
        CloseCodeInfo(CloseCode.POLICY_VIOLATION, "policy violation", False, "none"),
        CloseCodeInfo(CloseCode.MESSAGE_TOO_BIG, "frame too large", True, "normal"),
        CloseCodeInfo(CloseCode.INTERNAL_ERROR, "keepalive ping timeout", True, "normal"),
        CloseCodeInfo(CloseCode.TRY_AGAIN_LATER, "server overloaded", True, "long"),
        CloseCodeInfo(CloseCode.SLOW_CONSUMER, "slow consumer", True, "long"),
        CloseCodeInfo(CloseCode.RATE_LIMITED, "rate limited", True, "long"),
    )
}


class ErrorCode(enum.StrEnum):
    """Codes of `error` events; stable, clients match on them."""

    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_OP = "unknown_op"
    UNKNOWN_CHANNEL = "unknown_channel"
    FORBIDDEN = "forbidden"
    NOT_SUBSCRIBED = "not_subscribed"
    ALREADY_SUBSCRIBED = "already_subscribed"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    UNAUTHORIZED = "unauthorized"
    """A token that is malformed, badly signed or expired (then close 1008)."""


# Only these count towards the protocol-abuse limit (close 1008); a client
# that asks for a forbidden channel is not malformed, just unlucky.
ABUSE_ERROR_CODES: frozenset[ErrorCode] = frozenset(
    {ErrorCode.INVALID_JSON, ErrorCode.INVALID_MESSAGE, ErrorCode.UNKNOWN_OP}
)
