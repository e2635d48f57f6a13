"""The one table of close codes and error codes, checked against PROTOCOL.md."""

from __future__ import annotations

from broadcaster.codes import ABUSE_ERROR_CODES, CLOSE_CODES, CloseCode, ErrorCode

PROTOCOL_CLOSE_CODES = {1000, 1001, 1008, 1009, 1011, 1013, 4008, 4029}
PROTOCOL_ERROR_CODES = {
    "invalid_json",
    "invalid_message",
    "unknown_op",
    "unknown_channel",
    "forbidden",
    "not_subscribed",
    "rate_limited",
    "unavailable",
}


def test_every_protocol_close_code_is_in_the_table() -> None:
    """Every close code PROTOCOL.md lists has an entry saying whether to reconnect."""
    assert {int(code) for code in CLOSE_CODES} == PROTOCOL_CLOSE_CODES
    assert {int(code) for code in CloseCode} == PROTOCOL_CLOSE_CODES


def test_table_entries_describe_their_own_code() -> None:
    """Each table entry is filed under its own code."""
    assert all(info.code is code for code, info in CLOSE_CODES.items())


def test_slow_consumer_close() -> None:
    """4008 carries the reason `slow consumer`, and a client may come back later."""
    info = CLOSE_CODES[CloseCode.SLOW_CONSUMER]
    assert info.reason == "slow consumer"
    assert info.reconnect


def test_policy_violation_is_not_retried() -> None:
    """A client closed for a bad token or abuse must not reconnect in a loop."""
    assert not CLOSE_CODES[CloseCode.POLICY_VIOLATION].reconnect


def test_normal_close_is_not_retried() -> None:
    """A normal close is final."""
    assert not CLOSE_CODES[CloseCode.NORMAL].reconnect


def test_shutdown_and_overload_are_retried() -> None:
    """1001 (shutdown) and 1013 (overload) tell the client to come back."""
    assert CLOSE_CODES[CloseCode.GOING_AWAY].reconnect
    assert CLOSE_CODES[CloseCode.TRY_AGAIN_LATER].reconnect


def test_every_protocol_error_code_exists() -> None:
    """Clients can match on every error code PROTOCOL.md defines."""
    assert {code.value for code in ErrorCode} >= PROTOCOL_ERROR_CODES


def test_abuse_codes_are_the_malformed_frame_codes() -> None:
    """Only invalid_json, invalid_message and unknown_op count towards close 1008."""
    assert {code.value for code in ABUSE_ERROR_CODES} == {
        "invalid_json",
        "invalid_message",
        "unknown_op",
    }
