"""The one task per node that reads the streams of the channels it has subscribers for.

Each channel this node reads has a `Tail`: the id of the last stream entry
delivered locally (the cursor) beside `channel.last_seq`, the seq of that
entry. Both move together, only here, so "everything after last_seq" and
"everything after the cursor" are the same messages: a subscriber that
attaches with `subscribed.seq = last_seq` gets the rest from this reader.
When Redis comes back after an outage the reader goes on from the cursor:
nothing that reached the stream is lost for local subscribers.

One XREAD BLOCK covers every channel read (COUNT entries per stream per
call) plus the node's wake-up stream; a change in the set of channels read
(a channel becomes active, a paused `block` channel gets room) appends to the
wake-up stream, which ends the blocking call so the next one includes the
change. Each entry is decoded and built into a `Message` once per node, then
`channel.fan_out` hands it to the local subscriptions, in stream order,
which is seq order.

`block` channels: a node can only hold back its own subscribers. When a
local subscriber of a block channel is full, the reader stops delivering
that channel (the rest of the batch is re-read later from the cursor) and
leaves it out of XREAD until `resume`; the stream keeps the messages
meanwhile (at least `stream_maxlen` entries), and the slow-consumer rule
cuts a subscriber that stays full, which gives the room back.

Faults never stop delivery silently: an entry that cannot be read (a field
missing, a seq that is not a number, data that is not JSON: something else
wrote into the stream) is skipped, counted (`bad_entries`) and logged with
its channel and id (rate-limited); any other exception ends one run of the
loop, is logged once with its traceback and counted (`restarts`), and the
loop starts again after a back-off (`state` is "restarting" meanwhile, which
/healthz shows). Each channel's highest seq seen per epoch (`seen`) is what
the node passes to the scripts so Redis cannot hand out a seq this node
already saw (see redis_scripts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from redis.asyncio import Redis

from broadcaster.brokers.base import MessageFactory
from broadcaster.brokers.guard import FAILURES, Guard
from broadcaster.brokers.redis_scripts import Keys
from broadcaster.core import events
from broadcaster.core.channel import Channel
from broadcaster.core.history import History

__all__ = ["READ_BLOCK", "RateLimitedLog", "StreamReader", "Tail"]

logger = logging.getLogger("broadcaster.redis")

# Seconds one XREAD may block waiting for entries (the wake-up stream ends it early).
READ_BLOCK = 2.0
# Entries per stream per XREAD.
READ_COUNT = 512
# Seconds a wake-up stream outlives its node.
WAKE_TTL_MS = 60_000
# Delay before retrying a failed read while the breaker is still closed.
RETRY_DELAY = 0.05
# Back-off before restarting the loop after an unexpected exception: doubles up to the max.
RESTART_DELAY = 0.1
RESTART_DELAY_MAX = 5.0
# Seconds between two log lines of one kind (bad entries, reused seqs); the rest are counted.
LOG_INTERVAL = 10.0

Entry = tuple[bytes, dict[bytes, bytes]]


class Tail:
    """Where this node is in one channel's stream, and what it delivered lately.

    `history` keeps the last `history_size` messages this node delivered (the
    memory broker's ring buffer, per node): recovery serves from it what it
    can and asks Redis only for what came before this node started reading.
    """

    __slots__ = ("channel", "cursor", "history", "key", "paused", "reading")

    def __init__(self, channel: Channel, key: bytes, cursor: bytes) -> None:
        self.channel = channel
        self.key = key
        self.cursor = cursor
        self.history = History(channel.policy.history_size, channel.policy.history_ttl)
        self.reading = True
        """The channel has (or is about to get) local subscribers: include it in XREAD."""
        self.paused = False
        """A `block` channel whose local subscribers are full: left out until room returns."""

    def wanted(self) -> bool:
        return self.reading and not self.paused


class RateLimitedLog:
    """At most one warning per `interval` seconds; the next one says how many were left out.

    Why: a stream full of bad entries must not flood the log, but the first
    one must be there, with its channel and id.
    """

    __slots__ = ("_last", "_suppressed", "interval")

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last = -float("inf")
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        if self._suppressed:
            message += " (%d similar line(s) left out)"
            args = (*args, self._suppressed)
        self._last = now
        self._suppressed = 0
        logger.warning(message, *args)


class StreamReader:
    """Reads every wanted tail with one blocking XREAD at a time and delivers locally."""

    def __init__(
        self,
        client: Redis,
        keys: Keys,
        node: str,
        factory: MessageFactory,
        guard: Guard,
    ) -> None:
        self._client = client
        self._keys = keys
        self._factory = factory
        self._guard = guard
        self.tails: dict[str, Tail] = {}
        self._by_key: dict[bytes, Tail] = {}
        self._wake_key = keys.wake(node).encode()
        self._wake_cursor = b"0-0"
        self._task: asyncio.Task[None] | None = None
        self._in_read = False
        self._read_gen = 0
        self._woken_gen = -1
        self._wakers: set[asyncio.Task[None]] = set()
        self.seen: dict[str, tuple[str, int]] = {}
        """Per channel name: the newest epoch this node saw and the highest seq in it."""
        self.state = "stopped"
        """"running", or "restarting" after an unexpected exception (until the back-off ends)."""
        self.restarts = 0
        self.last_error: str | None = None
        self.bad_entries = 0
        self.epoch_resets = 0
        self._restart_delay = RESTART_DELAY
        self._bad_log = RateLimitedLog()
        self._reuse_log = RateLimitedLog()

    def note(self, name: str, epoch: str, seq: int) -> None:
        """Remember that `seq` exists under `epoch` (a newer epoch replaces an older one)."""
        known = self.seen.get(name)
        if known is None or known[0] != epoch or seq > known[1]:
            self.seen[name] = (epoch, seq)

    # --- the set of channels read ------------------------------------------

    def track(self, channel: Channel, cursor: bytes) -> Tail:
        """Start reading `channel` after the entry `cursor` (its seq is `channel.last_seq`)."""
        key = self._keys.stream(channel.name).encode()
        tail = Tail(channel, key, cursor)
        self.tails[channel.name] = tail
        self._by_key[key] = tail
        self.changed()
        return tail

    def untrack(self, channel: Channel) -> None:
        """Forget the tail of `channel` (a freed channel, so not read: no XREAD changes)."""
        tail = self.tails.get(channel.name)
        if tail is not None and tail.channel is channel:
            del self.tails[channel.name]
            if self._by_key.get(tail.key) is tail:
                del self._by_key[tail.key]
        self.seen.pop(channel.name, None)

    def changed(self) -> None:
        """The set of wanted tails changed: make the blocking read start over."""
        if self._in_read and self._woken_gen != self._read_gen:
            self._woken_gen = self._read_gen
            task = asyncio.get_running_loop().create_task(self._wake())
            self._wakers.add(task)
            task.add_done_callback(self._wakers.discard)

    async def _wake(self) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.xadd(self._wake_key, {b"w": b"1"}, maxlen=1, approximate=False)
        pipe.pexpire(self._wake_key, WAKE_TTL_MS)
        with contextlib.suppress(*FAILURES):
            async with asyncio.timeout(self._guard.timeout):
                await pipe.execute()

    # --- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self.state = "running"
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name="redis-reader"
        )

    async def stop(self) -> None:
        """Cancel the loop and pending wake-ups; never raises (the broker must stop after it)."""
        self.state = "stopped"
        tasks = [task for task in [self._task, *self._wakers] if task is not None]
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                logger.error("redis reader ended with %s", _describe(result))

    # --- the loop ----------------------------------------------------------

    async def _supervise(self) -> None:
        """Run the loop; restart it after any unexpected exception, with a back-off.

        Why: one reader serves every channel of the node; if it died, every
        subscriber here would stop getting messages while the node looked up.
        """
        while True:
            try:
                await self._run()
            except Exception as exc:
                self.restarts += 1
                self.last_error = _describe(exc)
                self.state = "restarting"
                logger.exception(
                    "redis reader failed (restart %d in %.1f s): %s",
                    self.restarts,
                    self._restart_delay,
                    self.last_error,
                )
                await asyncio.sleep(self._restart_delay)
                self._restart_delay = min(self._restart_delay * 2, RESTART_DELAY_MAX)
                self.state = "running"

    async def _run(self) -> None:
        guard = self._guard
        while True:
            if not guard.status().up:
                await self._probe()
                continue
            streams = {self._wake_key: self._wake_cursor}
            for tail in self.tails.values():
                if tail.wanted():
                    streams[tail.key] = tail.cursor
            self._read_gen += 1
            self._in_read = True
            try:
                async with asyncio.timeout(READ_BLOCK + guard.timeout):
                    reply: Any = await self._client.xread(
                        streams,  # type: ignore[arg-type]
                        count=READ_COUNT,
                        block=int(READ_BLOCK * 1000),
                    )
            except FAILURES as exc:
                guard.failed(exc)
                continue
            finally:
                self._in_read = False
            guard.succeeded()
            self._restart_delay = RESTART_DELAY
            for key, entries in reply or ():
                self._deliver(key, entries)

    async def _probe(self) -> None:
        """The broker is down: ping when the breaker allows, else wait for the cool-down."""
        guard = self._guard
        if guard.breaker.allow(asyncio.get_running_loop().time()):
            try:
                async with asyncio.timeout(guard.timeout):
                    await self._client.ping()
            except asyncio.CancelledError:
                guard.breaker.release()
                raise
            except Exception as exc:
                # Anything, not only Redis and socket errors: a probe that ends
                # without a verdict would hold the half-open slot for ever.
                if not isinstance(exc, FAILURES):
                    logger.warning("redis probe failed unexpectedly: %s", _describe(exc))
                guard.failed(exc)
                await asyncio.sleep(RETRY_DELAY)
            else:
                guard.succeeded()
            return
        now = asyncio.get_running_loop().time()
        await asyncio.sleep(max(guard.breaker.retry_after(now), RETRY_DELAY))

    def _deliver(self, key: bytes, entries: list[Entry]) -> None:
        if key == self._wake_key:
            if entries:
                self._wake_cursor = entries[-1][0]
            return
        tail = self._by_key.get(key)
        if tail is None:
            return
        channel = tail.channel
        for entry in entries:
            if tail.paused or (channel.blocking and not channel.has_room()):
                # The rest of the batch is read again from the cursor after room returns.
                tail.paused = True
                break
            self._apply(tail, entry)
        if channel.blocking and not channel.has_room():
            tail.paused = True

    def resume(self, channel: Channel) -> None:
        """A paused `block` channel has room again: read it again."""
        tail = self.tails.get(channel.name)
        if tail is not None and tail.paused:
            tail.paused = False
            self.changed()

    def _apply(self, tail: Tail, entry: Entry) -> None:
        """Deliver one stream entry locally (or skip one already delivered); move the cursor."""
        entry_id, fields = entry
        channel = tail.channel
        try:
            seq = int(fields[b"s"])
            epoch = fields[b"e"].decode()
            data = orjson.loads(fields[b"d"])
            if seq < 1 or not epoch:
                raise ValueError(f"seq {seq}, epoch {epoch!r}")
            previous = _previous(fields)
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            # ValueError covers orjson.JSONDecodeError.
            tail.cursor = entry_id
            self.bad_entries += 1
            self._bad_log.warning(
                "channel %r: stream entry %s is not a broadcaster message (%s); skipped",
                channel.name,
                entry_id.decode(errors="replace"),
                _describe(exc),
            )
            return
        if epoch != channel.epoch:
            self._epoch_changed(channel, epoch, previous)
            tail.history = History(channel.policy.history_size, channel.policy.history_ttl)
        tail.cursor = entry_id
        if seq <= channel.last_seq:
            self._reuse_log.warning(
                "channel %r: entry %s has seq %d of epoch %s, already delivered here "
                "(last seq %d); skipped",
                channel.name,
                entry_id.decode(errors="replace"),
                seq,
                epoch,
                channel.last_seq,
            )
            return
        if channel.last_seq and seq > channel.last_seq + 1:
            logger.warning(
                "channel %r: seq %d..%d left the stream before this node read them",
                channel.name,
                channel.last_seq + 1,
                seq - 1,
            )
        self.note(channel.name, epoch, seq)
        message = self._factory.build(channel, seq, data)
        tail.history.append(message)
        channel.fan_out(message)

    def _epoch_changed(
        self, channel: Channel, epoch: str, previous: tuple[str, int] | None
    ) -> None:
        """The seq history was replaced: tell local subscribers in-band, restart seq.

        When the new epoch names the one this node delivered (`previous`),
        the notice says the highest seq that epoch reached (what Redis
        recorded, raised to what this node saw), so a subscriber knows how
        many messages it missed: `previous_seq` minus the last seq it got.
        """
        self.epoch_resets += 1
        old_epoch, old_last = channel.epoch, channel.last_seq
        extra: dict[str, object] = {"reset": True}
        if previous is not None and previous[0] == old_epoch:
            known = self.seen.get(channel.name)
            seen = known[1] if known is not None and known[0] == old_epoch else 0
            extra["previous_epoch"] = old_epoch
            extra["previous_seq"] = max(previous[1], seen, old_last)
        logger.warning(
            "channel %r: epoch %s -> %s (the seq history was lost or rolled back; "
            "delivered here up to seq %d, known up to %s); seq starts again from 1",
            channel.name,
            old_epoch,
            epoch,
            old_last,
            extra.get("previous_seq", "?"),
        )
        channel.epoch = epoch
        channel.last_seq = 0
        if not channel.subscriptions:
            return
        notice = self._factory.event(
            channel,
            events.subscribed(
                channel.name,
                None,
                strategy=channel.policy.strategy.value,
                queue_size=channel.policy.queue_size,
                seq=0,
                epoch=epoch,
                extra=extra,
            ),
        )
        for sub in channel.subscriptions:
            sub.notice(notice)


def _previous(fields: dict[bytes, bytes]) -> tuple[str, int] | None:
    """The epoch an entry's epoch replaced and the highest seq it reached, when recorded."""
    pe = fields.get(b"pe")
    if not pe:
        return None
    return pe.decode(), int(fields.get(b"ps", b"0"))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
