"""HTTP publish bodies: one message or a batch, validated whole before anything is published."""

from __future__ import annotations

import pytest

from broadcaster.codes import ErrorCode
from broadcaster.core.policy import ChannelPolicy, PolicyTable
from broadcaster.core.publish_body import (
    BodyRejected,
    PublishBody,
    PublishItem,
    parse_publish_body,
)

OPEN = PolicyTable()
STRICT = PolicyTable(ChannelPolicy(), (("known.*", ChannelPolicy()),), strict=True)


def parse(body: str, policies: PolicyTable = OPEN, max_batch: int = 10) -> object:
    return parse_publish_body(body.encode(), policies=policies, max_batch=max_batch)


def test_single_message() -> None:
    assert parse('{"channel": "a", "data": {"x": 1}}') == PublishBody(
        (PublishItem("a", {"x": 1}),), batch=False
    )


def test_data_may_be_any_json_value_including_null() -> None:
    assert parse('{"channel": "a", "data": null}') == PublishBody(
        (PublishItem("a", None),), batch=False
    )


def test_unknown_fields_are_ignored() -> None:
    """As in PROTOCOL.md: newer publishers can talk to older servers."""
    assert isinstance(parse('{"channel": "a", "data": 1, "id": 7}'), PublishBody)


def test_batch_keeps_order() -> None:
    body = '{"messages": [{"channel": "a", "data": 1}, {"channel": "b", "data": 2}]}'
    assert parse(body) == PublishBody((PublishItem("a", 1), PublishItem("b", 2)), batch=True)


@pytest.mark.parametrize(
    ("body", "code", "index"),
    [
        ("{", ErrorCode.INVALID_JSON, None),
        ('{"channel": "a", "data": Infinity}', ErrorCode.INVALID_JSON, None),
        ("[]", ErrorCode.INVALID_MESSAGE, None),
        ("null", ErrorCode.INVALID_MESSAGE, None),
        ('{"channel": "a"}', ErrorCode.INVALID_MESSAGE, None),
        ('{"channel": null, "data": 1}', ErrorCode.INVALID_MESSAGE, None),
        ('{"channel": "$sys.stats", "data": 1}', ErrorCode.FORBIDDEN, None),
        ('{"messages": null}', ErrorCode.INVALID_MESSAGE, None),
        ('{"messages": [], "channel": "a"}', ErrorCode.INVALID_MESSAGE, None),
        ('{"messages": [{"channel": "a", "data": 1}, 5]}', ErrorCode.INVALID_MESSAGE, 1),
        (
            '{"messages": [{"channel": "a", "data": 1}, {"channel": "a"}]}',
            ErrorCode.INVALID_MESSAGE,
            1,
        ),
        ('{"messages": [{"channel": "$sys.x", "data": 1}]}', ErrorCode.FORBIDDEN, 0),
    ],
)
def test_rejections_carry_the_protocol_code_and_the_item(
    body: str, code: ErrorCode, index: int | None
) -> None:
    rejected = parse(body)
    assert isinstance(rejected, BodyRejected)
    assert (rejected.code, rejected.index) == (code, index)
    if index is not None:
        assert rejected.message.startswith(f"messages[{index}]: ")


def test_strict_channels_refuse_unmatched_names() -> None:
    assert isinstance(parse('{"channel": "known.a", "data": 1}', STRICT), PublishBody)
    rejected = parse(
        '{"messages": [{"channel": "known.a", "data": 1}, {"channel": "x", "data": 1}]}', STRICT
    )
    assert rejected == BodyRejected(
        ErrorCode.UNKNOWN_CHANNEL,
        "messages[1]: channel 'x' matches no [channels] entry and strict_channels is on",
        1,
    )


def test_batch_size_is_capped() -> None:
    item = '{"channel": "a", "data": 1}'
    assert isinstance(
        parse('{"messages": [' + ",".join([item] * 3) + "]}", max_batch=3), PublishBody
    )
    rejected = parse('{"messages": [' + ",".join([item] * 4) + "]}", max_batch=3)
    assert isinstance(rejected, BodyRejected)
    assert "at most 3" in rejected.message
