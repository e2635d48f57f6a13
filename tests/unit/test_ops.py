"""Parsing client frames: every op, and every error code a frame alone can cause."""

from __future__ import annotations

import pytest

from broadcaster.codes import ABUSE_ERROR_CODES, ErrorCode
from broadcaster.core.ops import (
    MAX_CHANNEL_LENGTH,
    Auth,
    Op,
    Ping,
    Publish,
    Rejected,
    Subscribe,
    Unsubscribe,
    parse_op,
    validate_channel,
)


def rejected(frame: str | bytes) -> Rejected:
    result = parse_op(frame)
    assert isinstance(result, Rejected), result
    return result


def accepted(frame: str) -> Op:
    result = parse_op(frame)
    assert not isinstance(result, Rejected), result
    return result


# --- accepted ops ---------------------------------------------------------------


def test_subscribe_minimal() -> None:
    """`subscribe` needs only a channel."""
    assert accepted('{"op":"subscribe","channel":"tickers"}') == Subscribe("tickers")


def test_subscribe_with_every_option() -> None:
    """`since`, `epoch` and `max_rate` are carried through; max_rate becomes a float."""
    op = accepted('{"op":"subscribe","channel":"t","id":3,"since":41,"epoch":"e1","max_rate":5}')
    assert op == Subscribe("t", id=3, since=41, epoch="e1", max_rate=5.0)
    assert isinstance(op, Subscribe)
    assert isinstance(op.max_rate, float)


def test_subscribe_since_zero_is_valid() -> None:
    """`since: 0` asks for everything retained."""
    op = accepted('{"op":"subscribe","channel":"t","since":0}')
    assert isinstance(op, Subscribe)
    assert op.since == 0


def test_unsubscribe() -> None:
    """`unsubscribe` names the channel to leave."""
    assert accepted('{"op":"unsubscribe","channel":"t","id":"u1"}') == Unsubscribe("t", "u1")


@pytest.mark.parametrize(
    ("data_json", "data"),
    [
        ("null", None),
        ("0", 0),
        ('"x"', "x"),
        ("[1,2]", [1, 2]),
        ('{"a":{"b":true}}', {"a": {"b": True}}),
    ],
)
def test_publish_carries_any_json_value(data_json: str, data: object) -> None:
    """`data` may be any JSON value, including null."""
    op = accepted(f'{{"op":"publish","channel":"t","data":{data_json}}}')
    assert op == Publish("t", data)


def test_ping_without_id() -> None:
    """`ping` needs nothing else."""
    assert accepted('{"op":"ping"}') == Ping()


@pytest.mark.parametrize(("id_json", "op_id"), [("7", 7), ('"abc"', "abc"), ("0", 0), ("-1", -1)])
def test_id_may_be_an_integer_or_a_string(id_json: str, op_id: int | str) -> None:
    """Every op may carry an integer or string id, echoed in its reply."""
    assert accepted(f'{{"op":"ping","id":{id_json}}}') == Ping(op_id)


def test_null_id_is_no_id() -> None:
    """`"id": null` is the same as no id."""
    assert accepted('{"op":"ping","id":null}') == Ping(None)


def test_auth() -> None:
    """`auth` carries the token."""
    assert accepted('{"op":"auth","token":"s3cret","id":1}') == Auth("s3cret", 1)


def test_unknown_fields_are_ignored() -> None:
    """Extra fields do not make an op invalid (forward compatibility)."""
    assert accepted('{"op":"ping","future":1}') == Ping()


def test_channel_of_maximum_length_is_accepted() -> None:
    """A channel name of exactly the maximum length is valid."""
    name = "c" * MAX_CHANNEL_LENGTH
    assert accepted(f'{{"op":"subscribe","channel":"{name}"}}') == Subscribe(name)


def test_validate_channel_accepts_a_normal_name() -> None:
    """A non-empty string channel name is valid."""
    assert validate_channel("tickers.demo") is None


# --- invalid_json -------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "",
        "{",
        "NaN",
        "Infinity",
        "-Infinity",
        '{"op":"publish","channel":"t","data":NaN}',
        '{"op":"publish","channel":"t","data":Infinity}',
        '{"op":"publish","channel":"t","data":-Infinity}',
        '{"op":"publish","channel":"t","data":"\\ud800"}',
        '{"op":"publish","channel":"t","data":"\\udc00"}',
        '{"op":"publish","channel":"t","data":"\ud800"}',
        '{"op":"ping"} x',
        "{'op':'ping'}",
        '{"op":"ping",}',
        '{"op":"ping"} // comment',
        '{"op":"publish","channel":"t","data":1e400}',
    ],
    ids=[
        "empty",
        "truncated",
        "nan",
        "infinity",
        "minus-infinity",
        "nan-in-data",
        "infinity-in-data",
        "minus-infinity-in-data",
        "escaped-lone-high-surrogate",
        "escaped-lone-low-surrogate",
        "raw-lone-surrogate",
        "trailing-garbage",
        "single-quotes",
        "trailing-comma",
        "comment",
        "number-overflowing-double",
    ],
)
def test_invalid_json(frame: str) -> None:
    """Anything that is not strict RFC 8259 JSON is `invalid_json`."""
    result = rejected(frame)
    assert result.code is ErrorCode.INVALID_JSON
    assert result.id is None
    assert "JSON" in result.message


def test_escaped_surrogate_pair_is_valid_json() -> None:
    """A correctly paired surrogate escape is ordinary text."""
    op = accepted('{"op":"publish","channel":"t","data":"\\ud83d\\ude00"}')
    assert op == Publish("t", "\U0001f600")


# --- invalid_message ----------------------------------------------------------------


@pytest.mark.parametrize("frame", ["[]", '[{"op":"ping"}]', "1", '"ping"', "null", "true"])
def test_json_that_is_not_an_object(frame: str) -> None:
    """Arrays and scalars are valid JSON but not ops: `invalid_message`."""
    result = rejected(frame)
    assert result.code is ErrorCode.INVALID_MESSAGE
    assert "object" in result.message


@pytest.mark.parametrize("frame", [b'{"op":"ping"}', b"\x00\x01"])
def test_binary_frame(frame: bytes) -> None:
    """Binary frames are refused even when they hold valid JSON."""
    result = rejected(frame)
    assert result.code is ErrorCode.INVALID_MESSAGE
    assert "binary" in result.message


@pytest.mark.parametrize("frame", ["{}", '{"id":4}', '{"op":null,"id":4}', '{"op":7,"id":4}'])
def test_op_missing_or_not_a_string(frame: str) -> None:
    """An object without a string `op` is `invalid_message`, echoing a valid id."""
    result = rejected(frame)
    assert result.code is ErrorCode.INVALID_MESSAGE
    assert "'op'" in result.message
    assert result.id == (4 if "id" in frame else None)


@pytest.mark.parametrize(
    "id_json", ["true", "false", "1.5", "1.0", "[]", "{}", "18446744073709551616"]
)
def test_bad_id(id_json: str) -> None:
    """An id that is not an integer or a string is refused and not echoed."""
    result = rejected(f'{{"op":"ping","id":{id_json}}}')
    assert result.code is ErrorCode.INVALID_MESSAGE
    assert "'id'" in result.message
    assert result.id is None


@pytest.mark.parametrize("op", ["subscribe", "unsubscribe", "publish"])
@pytest.mark.parametrize(
    "channel_field",
    ["", ',"channel":null', ',"channel":5', ',"channel":""', ',"channel":["a"]', ',"channel":{}'],
    ids=["missing", "null", "number", "empty", "array", "object"],
)
def test_channel_missing_or_not_a_non_empty_string(op: str, channel_field: str) -> None:
    """Ops on a channel need `channel` as a non-empty string; the error echoes the id."""
    result = rejected(f'{{"op":"{op}","id":9,"data":1{channel_field}}}')
    assert result.code is ErrorCode.INVALID_MESSAGE
    assert result.message.startswith(f"{op}: 'channel'")
    assert result.id == 9


@pytest.mark.parametrize("op", ["subscribe", "unsubscribe", "publish"])
def test_channel_too_long(op: str) -> None:
    """A channel name beyond the maximum length is refused."""
    name = "c" * (MAX_CHANNEL_LENGTH + 1)
    result = rejected(f'{{"op":"{op}","channel":"{name}","data":1}}')
    assert result.code is ErrorCode.INVALID_MESSAGE
    assert str(MAX_CHANNEL_LENGTH) in result.message


def test_publish_without_data() -> None:
    """`publish` without `data` is `invalid_message` (null data is fine, absent is not)."""
    result = rejected('{"op":"publish","channel":"t","id":2}')
    assert result.code is ErrorCode.INVALID_MESSAGE
    assert "'data'" in result.message
    assert result.id == 2


@pytest.mark.parametrize("since", ["-1", "1.5", "true", '"3"', "[]", "18446744073709551616"])
def test_bad_since(since: str) -> None:
    """`since` must be an integer >= 0."""
    result = rejected(f'{{"op":"subscribe","channel":"t","since":{since},"id":1}}')
    assert result.code is ErrorCode.INVALID_MESSAGE
    assert "'since'" in result.message
    assert result.id == 1


@pytest.mark.parametrize("epoch", ["1", "true", "[]", "{}"])
def test_bad_epoch(epoch: str) -> None:
    """`epoch` must be a string."""
    result = rejected(f'{{"op":"subscribe","channel":"t","epoch":{epoch}}}')
    assert result.code is ErrorCode.INVALID_MESSAGE
    assert "'epoch'" in result.message


@pytest.mark.parametrize("max_rate", ["0", "-1", "0.0", "true", '"10"', "[]"])
def test_bad_max_rate(max_rate: str) -> None:
    """`max_rate` must be a number above zero."""
    result = rejected(f'{{"op":"subscribe","channel":"t","max_rate":{max_rate}}}')
    assert result.code is ErrorCode.INVALID_MESSAGE
    assert "'max_rate'" in result.message


@pytest.mark.parametrize("token_field", ["", ',"token":""', ',"token":5', ',"token":null'])
def test_bad_auth_token(token_field: str) -> None:
    """`auth` needs a non-empty string token."""
    result = rejected(f'{{"op":"auth","id":"a"{token_field}}}')
    assert result.code is ErrorCode.INVALID_MESSAGE
    assert "'token'" in result.message
    assert result.id == "a"


# --- unknown_op -----------------------------------------------------------------------


@pytest.mark.parametrize("op", ["subscrbe", "", "PING", "Subscribe", "flow.pause"])
def test_unknown_op(op: str) -> None:
    """An op not in the table is `unknown_op`, naming it and the ops that exist."""
    result = rejected(f'{{"op":"{op}","id":7}}')
    assert result.code is ErrorCode.UNKNOWN_OP
    assert result.message.startswith(f"unknown op {op!r}")
    assert "subscribe" in result.message
    assert result.id == 7


def test_unknown_op_message_matches_the_protocol_example() -> None:
    """PROTOCOL.md's example: `unknown op 'subscrbe'` with the id echoed."""
    result = rejected('{"op":"subscrbe","id":7}')
    assert result.message.split(";")[0] == "unknown op 'subscrbe'"


# --- the codes a frame can cause ----------------------------------------------------------


def test_frame_errors_are_exactly_the_abuse_codes() -> None:
    """The errors a malformed frame causes are the ones that count towards close 1008."""
    frames: list[str | bytes] = ["{", "[]", b"{}", '{"op":"nope"}', '{"op":"subscribe"}']
    assert {rejected(frame).code for frame in frames} == ABUSE_ERROR_CODES
