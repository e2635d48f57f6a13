"""The broker of a worker of `broadcaster serve --workers N`: channels shared through the local bus.

The bus (workers/bus.py, in the supervisor) sequences every channel for all
the workers; this broker is one worker's view of it, over its `BusLink`:

- publish: the data is encoded once and sent to the bus, which assigns the
  seq and writes the message to every worker that has the channel prepared
  (this one included) before it acks; `publish` returns the seq once the ack
  arrives, so this worker's subscribers have the message queued by then, as
  with the memory broker. `submit` sends it without waiting (a future of
  the seq): a WebSocket connection pipelines its publishes with it, and
  publishes submitted in order get their seqs in that order.
- messages: the bus's frames are handled in order as they arrive; each is
  built once (`MessageFactory.from_data`: the data bytes spliced, not
  re-encoded) and fanned out to this worker's subscribers.
- prepare: a channel this worker does not have prepared is asked of the bus
  (`s`); the reply (epoch, last seq, retained history, snapshot) is applied
  when it is read, before any frame the bus wrote after it, so it meets the
  live stream with no gap and no duplicate. A prepared channel stays
  prepared (receives every message, keeps its own history) until the hub
  frees it, as a channel does in one process.
- recover: this worker's history of a prepared channel (seeded from the
  bus's, then every message it received), ending exactly at
  `channel.last_seq`; nothing awaits between it and the attachment.
- block: see `channel_created` (remote fullness is counted into the channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from broadcaster.brokers.base import BrokerStatus, MessageFactory
from broadcaster.core.channel import SNAPSHOT_MAX_KEYS, Channel
from broadcaster.core.history import History, Recovery
from broadcaster.core.message import Message
from broadcaster.core.ops import SYSTEM_PREFIX
from broadcaster.errors import BrokerUnavailable, BusUnavailable, InvalidPublish
from broadcaster.workers.channels import mark_full
from broadcaster.workers.link import BusLink

__all__ = ["BusBroker"]

logger = logging.getLogger("broadcaster.bus")


class _Prepared:
    """A channel this worker has prepared: every message reaches it, it keeps history."""

    __slots__ = ("channel", "history")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.history = History(channel.policy.history_size, channel.policy.history_ttl)


class _Pending:
    """A subscribe frame sent, its reply not read yet."""

    __slots__ = ("channel", "dropped", "future")

    def __init__(self, channel: Channel, future: asyncio.Future[None]) -> None:
        self.channel = channel
        self.future = future
        self.dropped = False
        """The hub freed the channel meanwhile: the reply is read, not applied."""


def conflation_key_json(key: Any) -> str | None:
    """The bus's name of a conflation key: JSON, with 1.0 and 1 the same key (as in Python)."""
    if key is None:
        return None
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    return orjson.dumps(key).decode()


class BusBroker:
    """Seq, order and history on the bus; delivery as the bus's frames arrive."""

    name = "bus"

    def __init__(
        self,
        link: BusLink,
        factory: MessageFactory,
        clock: Callable[[], float],
        *,
        channels: Callable[[str], Channel | None],
        idle_ttl: float = 0.0,
    ) -> None:
        self.link = link
        self._factory = factory
        self._clock = clock
        self._channels = channels
        """The hub's channel of a name, if it holds one (for remote fullness)."""
        self.idle_ttl = idle_ttl
        self._prepared: dict[str, _Prepared] = {}
        self._pending: dict[str, _Pending] = {}
        self._acks: dict[int, tuple[asyncio.Future[int], Channel]] = {}
        self._remote_full: dict[str, set[int]] = {}
        """Per channel: the other workers with a full subscriber of it."""
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        link = self.link
        link.on("m", self._message)
        link.on("P", self._acked)
        link.on("S", self._subscribed)
        link.on("F", self._remote_fullness)
        link.on_lost(self._lost)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._fail_waiting(BusUnavailable("the server is stopping"))
        self._prepared.clear()

    def status(self) -> BrokerStatus:
        up = self.link.connected
        return BrokerStatus(
            kind=self.name, up=up, detail=None if up else "the local bus connection is gone"
        )

    def history_of(self, channel: Channel) -> History | None:
        prepared = self._prepared.get(channel.name)
        return prepared.history if prepared is not None else None

    # --- publish -----------------------------------------------------------

    def _spec(self, channel: Channel) -> dict[str, Any]:
        """The channel's policy as the bus needs it (workers/channels.py `Spec`)."""
        policy = channel.policy
        spec: dict[str, Any] = {"ku": policy.kept_unused(self.idle_ttl) if self.idle_ttl else None}
        if policy.history_size:
            spec["h"] = policy.history_size
            spec["ht"] = policy.history_ttl
        if channel.latest is not None:
            spec["sn"] = True
        return spec

    async def publish(self, channel: Channel, data: Any) -> int:
        return await self.submit(channel, data)

    def submit(self, channel: Channel, data: Any) -> asyncio.Future[int]:
        """Send a publish to the bus now; the future gets its seq when the bus acks it.

        Why synchronous: a WebSocket connection pipelines its publishes
        (server/pipeline.py): each goes to the bus as it is read, without
        waiting for the ack of the one before. The link keeps the order of
        what is sent and the bus acks one worker's publishes in the order it
        reads them, so publishes submitted one after the other get
        increasing seqs. Raises `InvalidPublish` (not JSON) and
        `BusUnavailable` (the link is gone) here, before anything is sent;
        a link lost later fails the future with `BusUnavailable`.
        """
        try:
            body = orjson.dumps(data)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise InvalidPublish(f"data for channel {channel.name!r} is not JSON: {exc}") from None
        request = self.link.next_id()
        header = self._spec(channel)
        header.update(t="p", i=request, c=channel.name, tm=self._clock())
        if channel.latest is not None:
            key = conflation_key_json(channel.conflation_key(data))
            if key is not None:
                header["k"] = key
        self.link.send(header, body)
        # Registered after the send: an ack cannot arrive before this returns.
        ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[request] = (ack, channel)
        return ack

    def _acked(self, header: dict[str, Any], payload: bytes) -> None:
        waiting = self._acks.pop(int(header["i"]), None)
        if waiting is None:
            return
        ack, channel = waiting
        seq = int(header["s"])
        if channel.name not in self._prepared and channel.name not in self._pending:
            # Not delivered here: keep what /stats shows of the channel the
            # bus's (its epoch, its last seq), not this worker's own guesses.
            channel.epoch = header["e"]
            channel.last_seq = max(channel.last_seq, seq)
        if not ack.done():  # cancelled: its waiter gave up
            ack.set_result(seq)

    # --- delivery ----------------------------------------------------------

    def _message(self, header: dict[str, Any], payload: bytes) -> None:
        prepared = self._prepared.get(header["c"])
        if prepared is None:
            return  # sent before the bus read our unsubscribe, or covered by a pending reply
        channel = prepared.channel
        seq = header["s"]
        if seq <= channel.last_seq:
            logger.warning(
                "channel %r: seq %d from the bus is not after %d; skipped",
                channel.name,
                seq,
                channel.last_seq,
            )
            return
        message = self._factory.from_data(channel, seq, payload, header["tm"])
        prepared.history.append(message)
        channel.fan_out(message)

    # --- subscribe ---------------------------------------------------------

    async def prepare(self, channel: Channel) -> None:
        """Have `channel` prepared: from the bus's reply on, every message reaches it.

        `$sys.*` channels are this worker's own (server/system.py): not on the bus.
        """
        name = channel.name
        if name.startswith(SYSTEM_PREFIX):
            return
        while True:
            prepared = self._prepared.get(name)
            if prepared is not None and prepared.channel is channel:
                return
            pending = self._pending.get(name)
            if pending is None:
                pending = _Pending(channel, asyncio.get_running_loop().create_future())
                self._pending[name] = pending
                header = self._spec(channel)
                header.update(t="s", c=name)
                try:
                    self.link.send(header)
                except BusUnavailable:
                    del self._pending[name]
                    raise
            # Shielded: one subscriber giving up must not fail the others' wait.
            await asyncio.shield(pending.future)
            if pending.dropped and pending.channel is channel:
                return  # the hub freed this channel meanwhile: nothing to prepare

    def _subscribed(self, header: dict[str, Any], payload: bytes) -> None:
        """The bus's reply to `s`: applied now, before the frames the bus wrote after it."""
        name = header["c"]
        pending = self._pending.pop(name, None)
        if pending is None:
            return
        try:
            if pending.dropped:
                self._send_quietly({"t": "u", "c": name})
                return
            channel = pending.channel
            channel.epoch = header["e"]
            channel.last_seq = header["s"]
            prepared = _Prepared(channel)
            built: dict[int, Message] = {}
            offset = 0

            def take(entries: list[list[Any]]) -> list[Message]:
                nonlocal offset
                messages = []
                for seq, created, length in entries:
                    data = payload[offset : offset + length]
                    offset += length
                    message = built.get(seq)
                    if message is None:
                        message = built[seq] = self._factory.from_data(channel, seq, data, created)
                    messages.append(message)
                return messages

            for message in take(header["hist"]):
                prepared.history.append(message)
            snapshot = take(header["snap"])
            if channel.latest is not None:
                channel.latest.clear()
                for message in snapshot[-SNAPSHOT_MAX_KEYS:]:
                    if message.key is not None:
                        channel.latest[message.key] = message
            self._prepared[name] = prepared
        finally:
            if not pending.future.done():
                pending.future.set_result(None)

    async def recover(self, channel: Channel, since: int, epoch: str | None) -> Recovery:
        """As the memory broker, from this worker's history of the channel (see the module)."""
        await self.prepare(channel)
        last = channel.last_seq
        now = self._clock()
        prepared = self._prepared.get(channel.name)
        history = (
            prepared.history
            if prepared is not None
            else History(0, channel.policy.history_ttl)  # a `$sys.*` channel: none kept
        )
        if epoch is not None and epoch != channel.epoch:
            oldest = history.oldest_seq(last_seq=last, now=now)
            return Recovery(recovered=False, messages=[], oldest_seq=oldest)
        return history.since(since, last_seq=last, now=now)

    # --- hooks from the hub --------------------------------------------------

    def channel_created(self, channel: Channel) -> None:
        """Count other workers' full subscribers into a new channel; report this worker's.

        Called by `Broadcaster` for every channel it creates (not `$sys.*`).
        """
        full = self._remote_full.get(channel.name)
        if full:
            channel.remote_full = len(full)
            channel.full_count += len(full)
        if channel.blocking:
            channel.on_local_full = self._local_fullness

    def remote_full(self, name: str) -> frozenset[int]:
        """The other workers with a full subscriber of channel `name` (block channels)."""
        return frozenset(self._remote_full.get(name, ()))

    def _local_fullness(self, channel: Channel, full: bool) -> None:
        self._send_quietly({"t": "f", "c": channel.name, "f": 1 if full else 0})

    def _remote_fullness(self, header: dict[str, Any], payload: bytes) -> None:
        name = header["c"]
        worker = int(header["w"])
        full = bool(header["f"])
        if not mark_full(self._remote_full, name, worker, full):
            return
        channel = self._channels(name)
        if channel is not None:
            channel.remote_fullness(full)

    def channel_active(self, channel: Channel) -> None:
        if channel.name in self._prepared or channel.name in self._pending:
            return
        # Attached without `prepare` (code calling the hub directly): prepare in the background.
        task = asyncio.get_running_loop().create_task(self._prepare_quietly(channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prepare_quietly(self, channel: Channel) -> None:
        try:
            await self.prepare(channel)
        except BrokerUnavailable as exc:
            logger.warning("channel %r: cannot prepare it: %s", channel.name, exc)

    def channel_idle(self, channel: Channel) -> None:
        return None  # still prepared until freed: its seq and history stay current

    def channel_room(self, channel: Channel) -> None:
        return None  # told to the bus by `_local_fullness`

    def channel_freed(self, channel: Channel) -> None:
        name = channel.name
        prepared = self._prepared.get(name)
        if prepared is not None and prepared.channel is channel:
            del self._prepared[name]
            self._send_quietly({"t": "u", "c": name})
        pending = self._pending.get(name)
        if pending is not None and pending.channel is channel:
            pending.dropped = True

    # --- the link --------------------------------------------------------------

    def _send_quietly(self, header: dict[str, Any]) -> None:
        with contextlib.suppress(BusUnavailable):  # the link is lost: the worker stops
            self.link.send(header)

    def _lost(self) -> None:
        self._fail_waiting(
            BusUnavailable("the local bus is gone (the supervisor stopped); this worker stops")
        )

    def _fail_waiting(self, error: BusUnavailable) -> None:
        acks, self._acks = self._acks, {}
        for ack, _ in acks.values():
            if not ack.done():
                ack.set_exception(error)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()
