"""The wire bytes of the HTTP streaming transports: Server-Sent Events and NDJSON.

Both streams are HTTP/1.1 chunked responses whose bytes the server hands to
the transport itself (server/sse.py), so every event here is a complete
chunk: a batch is any concatenation of them, written in one call.

A message's stream bytes are built once, on first need, and kept on the
`Message` (`sse_frame`, `ndjson_frame`) like its WebSocket frame: every
stream subscriber writes the same object, nothing is built per subscriber.

SSE (docs/PROTOCOL.md "Server-Sent Events"): every event is the JSON of the
same event /ws sends, on one `data:` line (orjson never writes a newline);
a channel message also carries `id: EPOCH:SEQ`, which the browser sends
back as `Last-Event-ID` when it reconnects. NDJSON: the same JSON, one
event per line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broadcaster.core.channel import Channel
    from broadcaster.core.message import Message

__all__ = [
    "END_OF_STREAM",
    "LastEventIdError",
    "chunk",
    "ndjson_control",
    "ndjson_heartbeat",
    "ndjson_message",
    "parse_last_event_id",
    "sse_control",
    "sse_heartbeat",
    "sse_message",
    "sse_retry",
]

END_OF_STREAM = b"0\r\n\r\n"
"""The last chunk of a chunked response."""


def chunk(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk (size in hex, CRLF, data, CRLF)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def sse_control(payload: bytes) -> bytes:
    """A reply or notice as an SSE event without an id (the browser's last id stays)."""
    return chunk(b"data: " + payload + b"\n\n")


def sse_message(message: Message, channel: Channel) -> bytes:
    """A channel message as an SSE event with `id: EPOCH:SEQ`; built once, then shared."""
    frame = message.sse_frame
    if frame is None:
        if message.seq:
            event = b"id: %b:%d\ndata: %b\n\n" % (
                channel.epoch.encode(),
                message.seq,
                message.payload,
            )
        else:  # an in-band notice (seq 0): no position to resume from
            event = b"data: " + message.payload + b"\n\n"
        frame = message.sse_frame = chunk(event)
    return frame


def sse_heartbeat() -> bytes:
    """A comment line: ignored by EventSource, keeps proxies from closing an idle stream."""
    return chunk(b": heartbeat\n\n")


def sse_retry(milliseconds: int) -> bytes:
    """How long the browser waits before reconnecting after this stream ends."""
    return chunk(b"retry: %d\n\n" % milliseconds)


def ndjson_control(payload: bytes) -> bytes:
    return chunk(payload + b"\n")


def ndjson_message(message: Message, channel: Channel) -> bytes:
    """A channel message as one NDJSON line; built once, then shared."""
    frame = message.ndjson_frame
    if frame is None:
        frame = message.ndjson_frame = chunk(message.payload + b"\n")
    return frame


def ndjson_heartbeat() -> bytes:
    """An empty line (NDJSON readers skip it), so proxies see traffic on idle streams."""
    return chunk(b"\n")


class LastEventIdError(ValueError):
    """A `Last-Event-ID` that is not `EPOCH:SEQ`; the message says what to send."""


def parse_last_event_id(value: str) -> tuple[str, int]:
    """`EPOCH:SEQ` as sent in an SSE event's `id:` → (epoch, seq)."""
    epoch, sep, seq = value.strip().rpartition(":")
    if not sep or not epoch or not seq.isdigit() or len(seq) > 18:
        raise LastEventIdError(
            f"Last-Event-ID {value[:64]!r} is not EPOCH:SEQ (the id of an event of this "
            "stream, e.g. '3f9a1c2b7d4e:41'); drop the header to start from now"
        )
    return epoch, int(seq)
