"""The SSE and NDJSON wire bytes (core/streams.py): chunks, ids, sharing, Last-Event-ID."""

from __future__ import annotations

import pytest

from broadcaster.core import streams
from broadcaster.core.channel import Channel
from broadcaster.core.message import Message
from broadcaster.core.policy import ChannelPolicy


def _message(
    seq: int, payload: bytes = b'{"event":"message","channel":"c","seq":1,"data":1}'
) -> Message:
    return Message(channel="c", seq=seq, payload=payload, frame=b"ws", created=0.0)


def _channel() -> Channel:
    return Channel("c", ChannelPolicy(), epoch="e1")


def _unchunk(data: bytes) -> bytes:
    size, _, rest = data.partition(b"\r\n")
    assert rest.endswith(b"\r\n")
    body = rest[:-2]
    assert int(size, 16) == len(body), "the chunk size is the body's length in hex"
    return body


def test_a_message_is_one_chunk_with_its_epoch_seq_id() -> None:
    frame = streams.sse_message(_message(7), _channel())
    assert (
        _unchunk(frame) == b'id: e1:7\ndata: {"event":"message","channel":"c","seq":1,"data":1}\n\n'
    )


def test_the_stream_bytes_are_built_once_and_shared() -> None:
    """Every stream subscriber writes the same object: nothing per subscriber."""
    message, channel = _message(3), _channel()
    assert streams.sse_message(message, channel) is streams.sse_message(message, channel)
    assert streams.ndjson_message(message, channel) is streams.ndjson_message(message, channel)
    assert _unchunk(streams.ndjson_message(message, channel)) == message.payload + b"\n"


def test_in_band_notices_carry_no_id() -> None:
    """seq 0 is not a position: the browser's last id must stay the last message's."""
    assert b"id:" not in streams.sse_message(_message(0), _channel())
    assert b"id:" not in streams.sse_control(b'{"event":"flow.pause"}')


def test_heartbeat_and_retry_are_complete_chunks() -> None:
    assert _unchunk(streams.sse_heartbeat()).startswith(b":")
    assert _unchunk(streams.sse_retry(30000)) == b"retry: 30000\n\n"
    assert _unchunk(streams.ndjson_heartbeat()) == b"\n"


@pytest.mark.parametrize(
    ("value", "expected"), [("e1:0", ("e1", 0)), ("3f9a:41", ("3f9a", 41)), (" a:b:5 ", ("a:b", 5))]
)
def test_last_event_id_parses(value: str, expected: tuple[str, int]) -> None:
    assert streams.parse_last_event_id(value) == expected


@pytest.mark.parametrize("value", ["", "41", ":41", "e1:", "e1:-1", "e1:x", "e1:" + "9" * 19])
def test_a_bad_last_event_id_says_what_to_send(value: str) -> None:
    with pytest.raises(streams.LastEventIdError, match="EPOCH:SEQ"):
        streams.parse_last_event_id(value)
