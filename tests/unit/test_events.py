"""Server → client events: the exact JSON PROTOCOL.md shows."""

from __future__ import annotations

import orjson
import pytest

from broadcaster.core import events


def test_message_matches_the_protocol_example() -> None:
    """A `message` event is byte for byte the PROTOCOL.md example."""
    frame = events.message("tickers", 42, {"symbol": "AAPL", "price": 189.23})
    assert frame == (
        b'{"event":"message","channel":"tickers","seq":42,"data":{"symbol":"AAPL","price":189.23}}'
    )


def test_snapshot_message_is_flagged() -> None:
    """Snapshot messages carry `"snapshot": true`; live ones carry no such field."""
    assert orjson.loads(events.message("t", 1, 5, snapshot=True))["snapshot"] is True
    assert "snapshot" not in orjson.loads(events.message("t", 1, 5))


def test_message_refuses_data_that_is_not_json() -> None:
    """Data orjson cannot encode is refused at publish, not sent half-encoded."""
    with pytest.raises(TypeError):
        events.message("t", 1, {1: object()})


def test_flow_pause_matches_the_protocol_example() -> None:
    """`flow.pause` is byte for byte the PROTOCOL.md example."""
    assert events.flow_pause("tickers", reason="buffer full", depth=256, limit=256) == (
        b'{"event":"flow.pause","reason":"buffer full","channel":"tickers","depth":256,"limit":256}'
    )


def test_flow_resume_matches_the_protocol_example() -> None:
    """`flow.resume` is byte for byte the PROTOCOL.md example."""
    assert events.flow_resume("tickers", dropped=17) == (
        b'{"event":"flow.resume","channel":"tickers","dropped":17}'
    )


def test_error_matches_the_protocol_example() -> None:
    """`error` is byte for byte the PROTOCOL.md example."""
    assert events.error("unknown_op", "unknown op 'subscrbe'", 7) == (
        b'{"event":"error","code":"unknown_op","message":"unknown op \'subscrbe\'","id":7}'
    )


def test_error_carries_retry_after() -> None:
    """`rate_limited` / `unavailable` errors tell the client when to retry."""
    event = orjson.loads(events.error("rate_limited", "slow down", None, retry_after=1.5))
    assert event == {
        "event": "error",
        "code": "rate_limited",
        "message": "slow down",
        "retry_after": 1.5,
    }


def test_subscribed_reply() -> None:
    """`subscribed` carries what PROTOCOL.md lists: strategy, queue size, seq, epoch and id."""
    event = orjson.loads(
        events.subscribed("t", 3, strategy="drop-oldest", queue_size=256, seq=41, epoch="e1")
    )
    assert event == {
        "event": "subscribed",
        "channel": "t",
        "id": 3,
        "strategy": "drop-oldest",
        "queue_size": 256,
        "seq": 41,
        "epoch": "e1",
    }


def test_subscribed_reply_with_recovery_fields() -> None:
    """Extra fields (recovered, oldest_seq, max_rate) are added to `subscribed`."""
    event = orjson.loads(
        events.subscribed(
            "t",
            None,
            strategy="conflate",
            queue_size=8,
            seq=9,
            epoch="e1",
            extra={"recovered": False, "oldest_seq": 5},
        )
    )
    assert (event["recovered"], event["oldest_seq"]) == (False, 5)
    assert "id" not in event


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (events.unsubscribed("t", 1), {"event": "unsubscribed", "channel": "t", "id": 1}),
        (
            events.published("t", "p", 8),
            {"event": "published", "channel": "t", "seq": 8, "id": "p"},
        ),
        (events.pong(2), {"event": "pong", "id": 2}),
        (events.authenticated(3), {"event": "authenticated", "id": 3}),
    ],
    ids=["unsubscribed", "published", "pong", "authenticated"],
)
def test_replies(frame: bytes, expected: dict[str, object]) -> None:
    """Each reply has the PROTOCOL.md shape and echoes the op's id."""
    assert orjson.loads(frame) == expected


def test_reply_without_id_has_no_id_field() -> None:
    """A reply to an op without an id carries no `id` field."""
    assert orjson.loads(events.pong(None)) == {"event": "pong"}


def test_id_zero_is_echoed() -> None:
    """An id of 0 is an id like any other."""
    assert orjson.loads(events.pong(0)) == {"event": "pong", "id": 0}


def test_empty_string_id_is_echoed() -> None:
    """An id of "" is echoed as given."""
    assert orjson.loads(events.pong("")) == {"event": "pong", "id": ""}
