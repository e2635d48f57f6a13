"""One published message, encoded once and shared by every subscriber."""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["Message"]


class Message:
    """A message of one channel with its seq, its JSON payload and its wire frame.

    The payload (the `message` event's JSON) and the frame (that payload as a
    WebSocket text frame) are built once at publish; every subscription queues
    a reference to the same object, so fan-out allocates nothing per
    subscriber. `key` is the conflation key (None when the channel does not
    conflate or the data has no such field); `created` is the loop time of the
    publish, used for the slow-consumer clock and latency sampling.
    """

    __slots__ = (
        "as_snapshot",
        "channel",
        "created",
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

    def __repr__(self) -> str:
        return f"Message(channel={self.channel!r}, seq={self.seq}, key={self.key!r})"
