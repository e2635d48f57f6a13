"""One published message, encoded once and shared by every subscriber."""

from __future__ import annotations

from collections.abc import Callable, Hashable

__all__ = ["Message"]


class Message:
    """A message of one channel with its seq, its JSON payload and its wire frame.

    The payload (the `message` event's JSON) and the frame (that payload as a
    WebSocket text frame) are built once at publish; every subscription queues
    a reference to the same object, so fan-out allocates nothing per
    subscriber. `key` is the conflation key (None when the channel does not
    conflate or the data has no such field); `created` is the loop time of the
    publish, used for the slow-consumer clock and latency sampling.

    `deflated` is the frame for subscribers that negotiated permessage-deflate:
    the plain frame when the message is not to be compressed (no `deflate`
    given), else None until the first such subscriber takes the message, when
    `compressed()` builds it with `deflate` -- once, whatever the audience, and
    never when no subscriber negotiated compression.
    """

    __slots__ = (
        "as_snapshot",
        "channel",
        "created",
        "deflate",
        "deflated",
        "frame",
        "key",
        "ndjson_frame",
        "payload",
        "seq",
        "sse_frame",
    )

    def __init__(
        self,
        *,
        channel: str,
        seq: int,
        payload: bytes,
        frame: bytes,
        created: float,
        key: Hashable | None = None,
        deflate: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.channel = channel
        self.seq = seq
        self.payload = payload
        self.frame = frame
        self.created = created
        self.key = key
        self.as_snapshot: Message | None = None
        """The same message flagged `"snapshot": true`, built on first need and shared."""
        self.sse_frame: bytes | None = None
        """Its Server-Sent Events chunk, built when first needed (core/streams.py)."""
        self.ndjson_frame: bytes | None = None
        """Its NDJSON chunk, built when first needed (core/streams.py)."""
        self.deflated: bytes | None = frame if deflate is None else None
        self.deflate = deflate
        """What compresses this message's payload into a frame (shared; None: sent plain)."""

    def compressed(self) -> bytes:
        """The frame for subscribers that negotiated compression, built on first call."""
        frame = self.deflated
        if frame is None:
            deflate = self.deflate
            assert deflate is not None
            frame = self.deflated = deflate(self.payload)
        return frame

    def __repr__(self) -> str:
        return f"Message(channel={self.channel!r}, seq={self.seq}, key={self.key!r})"
