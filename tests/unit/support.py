"""Builders shared by the unit tests: messages, channels and one-connection rigs.

Frames are the JSON payloads themselves (the identity framer), so a test can
decode exactly what a client would receive.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import orjson

from broadcaster.core.channel import Channel
from broadcaster.core.hub import Hub
from broadcaster.core.message import Message
from broadcaster.core.outbox import DEFAULT_WRITE_BUDGET, Outbox
from broadcaster.core.policy import ChannelPolicy, PolicyTable
from broadcaster.core.subscription import Subscription

__all__ = [
    "Connection",
    "Event",
    "Rig",
    "data_seqs",
    "decode",
    "flow_events",
    "make_message",
]

Event = dict[str, Any]
Key = Hashable | None


def make_message(
    channel: str,
    seq: int,
    *,
    key: Key = None,
    created: float = 0.0,
    pad: int = 0,
) -> Message:
    """A message whose frame is its decodable JSON payload; `pad` lengthens it."""
    data: dict[str, Any] = {"key": key}
    if pad:
        data["pad"] = "x" * pad
    payload = orjson.dumps({"event": "message", "channel": channel, "seq": seq, "data": data})
    return Message(
        channel=channel, seq=seq, payload=payload, frame=payload, created=created, key=key
    )


def decode(frames: list[bytes]) -> list[Event]:
    """The events a client would read from these frames."""
    events: list[Event] = [orjson.loads(frame) for frame in frames]
    return events


def data_seqs(events: list[Event]) -> list[int]:
    """The seqs of the `message` events, in order."""
    return [e["seq"] for e in events if e["event"] == "message"]


def flow_events(events: list[Event]) -> list[Event]:
    """Only the `flow.pause` / `flow.resume` events, in order."""
    return [e for e in events if e["event"] in ("flow.pause", "flow.resume")]


class Connection:
    """One connection's outbox, with the adapter's write sequence as methods."""

    def __init__(
        self,
        hub: Hub,
        conn_id: int,
        *,
        budget: int = DEFAULT_WRITE_BUDGET,
        writable: bool = False,
    ) -> None:
        """`writable`: the adapter may write immediately (a burst near the watermark is
        written at once and kept for the next `take`); without it the transport
        takes bytes only when the test flushes, so the connection is under pressure."""
        self.schedules = 0
        self.outbox = Outbox(
            conn_id,
            on_schedule=self._on_schedule,
            write_now=self._write_now if writable else None,
            budget=budget,
        )
        self.last_frames: list[bytes] = []
        self.written_early: list[bytes] = []
        hub.add_outbox(self.outbox)

    def _write_now(self, outbox: Outbox) -> None:
        self.written_early += outbox.take_batch()
        outbox.written(0)

    def _on_schedule(self, _outbox: Outbox) -> None:
        self.schedules += 1

    def take(self) -> list[Event]:
        """Take the next batch without reporting the write yet."""
        early, self.written_early = self.written_early, []
        self.last_frames = self.outbox.take_batch()
        return decode(early + self.last_frames)

    def flush(self, unsent: int = 0) -> list[Event]:
        """Take a batch and report that the transport kept `unsent` bytes of it."""
        events = self.take()
        self.outbox.written(unsent)
        return events

    def flush_holding(self, frames: int) -> list[Event]:
        """Take a batch; the transport keeps exactly its last `frames` frames."""
        events = self.take()
        unsent = sum(len(f) for f in self.last_frames[len(self.last_frames) - frames :])
        self.outbox.written(unsent if frames else 0)
        return events

    def drain(self) -> list[Event]:
        """Flush until nothing is left, the transport taking everything each time."""
        events: list[Event] = []
        self.outbox.transport_drained()
        for _ in range(10_000):
            batch = self.flush()
            if not batch and not self.outbox.has_data():
                return events
            events.extend(batch)
        raise AssertionError("outbox never drained")


class Rig:
    """A hub with one channel `c` and one subscribed connection."""

    def __init__(
        self,
        policy: ChannelPolicy | None = None,
        *,
        budget: int = DEFAULT_WRITE_BUDGET,
        name: str = "c",
        epoch: str = "epoch-1",
        share: Rig | None = None,
        writable: bool = False,
    ) -> None:
        """`share`: subscribe the connection of that rig (same hub) to channel `name` instead."""
        if share is None:
            self.hub = Hub(PolicyTable(policy or ChannelPolicy()), epoch=epoch)
            self.conn = Connection(self.hub, 1, budget=budget, writable=writable)
        else:
            self.hub, self.conn = share.hub, share.conn
        channel = self.hub.channel(name)
        assert channel is not None
        self.channel: Channel = channel
        self.outbox = self.conn.outbox
        self.sub: Subscription = self.hub.subscribe(self.outbox, channel, now=0.0)
        self.seq = 0

    def message(self, *, key: Key = None, created: float = 0.0, pad: int = 0) -> Message:
        """The next message of the channel (not yet published)."""
        self.seq += 1
        return make_message(self.channel.name, self.seq, key=key, created=created, pad=pad)

    def publish(
        self, count: int = 1, *, key: Key = None, created: float = 0.0, pad: int = 0
    ) -> list[Message]:
        """Fan `count` new messages out to the channel's subscriptions."""
        sent = []
        for _ in range(count):
            message = self.message(key=key, created=created, pad=pad)
            self.channel.fan_out(message)
            sent.append(message)
        return sent

    def publish_keys(self, *keys: Key, created: float = 0.0) -> list[Message]:
        """Fan out one message per key, in order."""
        sent = []
        for key in keys:
            sent.extend(self.publish(key=key, created=created))
        return sent

    def add_connection(self, conn_id: int, *, budget: int = DEFAULT_WRITE_BUDGET) -> Connection:
        """Another connection subscribed to the same channel."""
        conn = Connection(self.hub, conn_id, budget=budget)
        self.hub.subscribe(conn.outbox, self.channel, now=0.0)
        return conn

    def flush(self, unsent: int = 0) -> list[Event]:
        return self.conn.flush(unsent)

    def drain(self) -> list[Event]:
        return self.conn.drain()

    def queued_seqs(self) -> list[int]:
        """Seqs of the queued slots, as delivered (conflate slots show their newest message)."""
        index = self.sub.index
        seqs = []
        for queued in self.sub.items:
            slot = index.get(queued.key) if queued.key is not None else None
            seqs.append((slot[1] if slot is not None and slot[0] is queued else queued).seq)
        return seqs
