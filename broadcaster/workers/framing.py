"""The local bus's frames: a length prefix, an orjson header, raw payload bytes.

Why our own framing: the bus carries one header (a small JSON object: what
the frame is, the channel, the seq) and one opaque payload (a message's data
as the publisher encoded it, a gathered stats document) per frame, over a
Unix stream socket between processes of one server. A length-prefixed frame
is the whole protocol; the payload is never parsed by the bus, so it is never
re-encoded on its way to the workers.

    frame = header_length (u32, big-endian) | payload_length (u32) | header | payload

`FrameDecoder` is pure: bytes in, frames out, in order, whatever the read
boundaries (unit-tested byte by byte).
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

__all__ = ["MAX_HEADER", "MAX_PAYLOAD", "FrameDecoder", "FrameError", "encode"]

_PREFIX = struct.Struct(">II")
PREFIX_SIZE = _PREFIX.size
# A header is a small JSON object; anything bigger is a corrupt stream.
MAX_HEADER = 1 << 20
# A payload is a message's data (bounded by max_message_size) or a gathered
# document (/metrics of one worker): far below this.
MAX_PAYLOAD = 1 << 28

Frame = tuple[dict[str, Any], bytes]


class FrameError(ValueError):
    """The byte stream is not a sequence of bus frames (a bug or a foreign peer)."""


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One frame: built once, so the bus can write the same bytes object to every worker."""
    head = orjson.dumps(header)
    return _PREFIX.pack(len(head), len(payload)) + head + payload


class FrameDecoder:
    """Splits a byte stream into frames; keeps an incomplete tail for the next `feed`."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Append `data`; return every frame now complete, oldest first.

        Raises `FrameError` on a length beyond the limits or a header that is
        not a JSON object: the connection must be dropped, there is no resync.
        """
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        offset = 0
        size = len(buffer)
        view = memoryview(buffer)
        try:
            while size - offset >= PREFIX_SIZE:
                head_len, body_len = _PREFIX.unpack_from(buffer, offset)
                if head_len > MAX_HEADER or body_len > MAX_PAYLOAD:
                    raise FrameError(f"frame lengths {head_len}/{body_len} are beyond the limits")
                start = offset + PREFIX_SIZE
                end = start + head_len + body_len
                if end > size:
                    break
                try:
                    header = orjson.loads(view[start : start + head_len])
                except orjson.JSONDecodeError as exc:
                    raise FrameError(f"frame header is not JSON: {exc}") from None
                if not isinstance(header, dict):
                    raise FrameError("frame header is not a JSON object")
                frames.append((header, bytes(view[start + head_len : end])))
                offset = end
        finally:
            view.release()
        if offset:
            del buffer[:offset]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held for the next `feed`."""
        return len(self._buffer)
