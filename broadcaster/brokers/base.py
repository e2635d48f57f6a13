"""The narrow interface every broker implements, and the one place messages are built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import orjson

from broadcaster.core import events
from broadcaster.core.channel import Channel
from broadcaster.core.history import Recovery
from broadcaster.core.message import Message
from broadcaster.errors import InvalidPublish

__all__ = ["Broker", "BrokerStatus", "MessageFactory"]


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """What /healthz, /stats and metrics show of the broker.

    `breaker` is the circuit breaker's state: "closed" (healthy), "half-open"
    (probing after failures) or "open" (publishes fail fast).

    A broker with a reader task (Redis) also reports it: `reader` is
    "running" or "restarting" (it died and waits for its back-off; this node
    delivers nothing meanwhile), `reader_restarts` and `last_error` what
    killed it, `bad_entries` the stream entries skipped as unreadable and
    `epoch_resets` the seq histories this node saw replaced.
    """

    kind: str
    up: bool
    breaker: str = "closed"
    detail: str | None = None
    reader: str | None = None
    reader_restarts: int = 0
    last_error: str | None = None
    bad_entries: int = 0
    epoch_resets: int = 0

    def as_dict(self) -> dict[str, Any]:
        """For /stats: the reader's fields only for a broker that has a reader."""
        document = asdict(self)
        if self.reader is None:
            for key in ("reader", "reader_restarts", "last_error", "bad_entries", "epoch_resets"):
                del document[key]
        return document


class MessageFactory:
    """Encodes a published value once: JSON payload, WebSocket frame, conflation key.

    With a `deflater` (zlib level -> payload -> compressed frame), messages of
    channels whose policy compresses, and at least `compression_min_size`
    bytes long, carry what builds their compressed frame; it is built on first
    need (`Message.compressed`), so a channel without compressing subscribers
    pays nothing.
    """

    def __init__(
        self,
        framer: Callable[[bytes], bytes],
        clock: Callable[[], float],
        deflater: Callable[[int], Callable[[bytes], bytes]] | None = None,
    ) -> None:
        self._framer = framer
        self._clock = clock
        self._deflater = deflater
        self._by_level: dict[int, Callable[[bytes], bytes]] = {}

    def _deflate(self, channel: Channel, payload: bytes) -> Callable[[bytes], bytes] | None:
        """What compresses `payload` for `channel`, or None when it goes plain."""
        policy = channel.policy
        if (
            self._deflater is None
            or not policy.compresses
            or len(payload) < policy.compression_min_size
        ):
            return None
        level = policy.compression_level
        deflate = self._by_level.get(level)
        if deflate is None:
            deflate = self._by_level[level] = self._deflater(level)
        return deflate

    def build(self, channel: Channel, seq: int, data: Any) -> Message:
        try:
            payload = events.message(channel.name, seq, data)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise InvalidPublish(f"data for channel {channel.name!r} is not JSON: {exc}") from None
        return Message(
            channel=channel.name,
            seq=seq,
            payload=payload,
            frame=self._framer(payload),
            created=self._clock(),
            key=channel.conflation_key(data),
            deflate=self._deflate(channel, payload),
        )

    def from_data(self, channel: Channel, seq: int, data: bytes, created: float) -> Message:
        """A message whose data is already JSON (`data`, as its publisher encoded it).

        Why: a worker of `serve --workers` gets each message's data from the
        bus as bytes; splicing them in (`orjson.Fragment`) builds the same
        payload as `build` without decoding and re-encoding the data. The
        data is parsed only for a channel that conflates (its key), and
        `created` is the publisher's time, so latency counts the bus hop.
        """
        payload = events.message(channel.name, seq, orjson.Fragment(data))
        return Message(
            channel=channel.name,
            seq=seq,
            payload=payload,
            frame=self._framer(payload),
            created=created,
            key=channel.conflation_key(orjson.loads(data)) if channel.conflates else None,
            deflate=self._deflate(channel, payload),
        )

    def snapshot(self, message: Message) -> Message:
        """`message` flagged `"snapshot": true` for a new subscriber; built once, then shared."""
        variant = message.as_snapshot
        if variant is None:
            # The payload is an object ending in "}": add the flag without re-encoding data.
            payload = message.payload[:-1] + b',"snapshot":true}'
            variant = Message(
                channel=message.channel,
                seq=message.seq,
                payload=payload,
                frame=self._framer(payload),
                created=message.created,
                key=message.key,
                deflate=message.deflate,
            )
            message.as_snapshot = variant
        return variant

    def event(self, channel: Channel, payload: bytes) -> Message:
        """A non-`message` event (seq 0) that must travel in-band, behind queued messages."""
        return Message(
            channel=channel.name,
            seq=0,
            payload=payload,
            frame=self._framer(payload),
            created=self._clock(),
        )


class Broker(Protocol):
    """Assigns seqs, shares messages between nodes, keeps history.

    `publish` returns the seq the message got; the broker calls
    `channel.fan_out` for every message of a channel this node has local
    subscribers for, in seq order. `recover` must be followed by the
    subscription's attachment without an intervening await on the caller's
    side, so the recovered tail and the live stream meet with no gap and no
    duplicate.
    """

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, channel: Channel, data: Any) -> int: ...

    async def prepare(self, channel: Channel) -> None:
        """Bring `channel.last_seq` and `channel.epoch` up to date before a subscriber attaches.

        Called by `subscribe` without `since` (`recover` does the same first);
        the caller attaches without an intervening await. A node that does
        not read the channel yet (Redis) learns where the channel is and
        starts reading right after it; may raise `BrokerUnavailable`.
        """
        ...

    async def recover(self, channel: Channel, since: int, epoch: str | None) -> Recovery: ...

    def status(self) -> BrokerStatus:
        """Whether the broker is reachable, and its circuit breaker's state."""
        ...

    def channel_active(self, channel: Channel) -> None:
        """`channel` got its first local subscriber."""

    def channel_idle(self, channel: Channel) -> None:
        """`channel` lost its last local subscriber."""

    def channel_room(self, channel: Channel) -> None:
        """A `block` channel's local subscribers all have room again."""

    def channel_freed(self, channel: Channel) -> None:
        """The hub forgot idle `channel`: drop what this node holds for it.

        A channel of that name used later is a new `Channel` object, brought
        up to date by `prepare` as any channel this node does not read.
        """
