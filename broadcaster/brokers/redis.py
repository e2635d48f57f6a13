"""The Redis broker: channels shared by many server processes through Redis Streams.

- publish: one Lua script (`redis_scripts.PUBLISH`) increments the channel's
  counter and appends the entry with that seq, atomically, so seq is
  gap-free, the same on every node and in stream order. The publishing node
  does not deliver locally at once: its reader does, like every other node's.
- reading: `StreamReader`, one task per node, for the channels with local
  subscribers; `channel.last_seq` is the seq of the last entry delivered on
  this node, `subscribed.seq` is that value.
- prepare: a node that does not read a channel yet learns the channel's last
  seq, epoch and last entry id in one script (`SYNC`) and starts reading right
  after that entry: the reply's seq and the live stream meet exactly.
- rollbacks: both scripts start a new epoch when Redis may have lost seqs it
  acknowledged (restarted or failed over without fsyncing every write, or
  behind what this node saw); this node passes the Redis process it checked
  (`_check_process`) and the highest seq it saw, see redis_scripts.
- recover: this node's own recent deliveries, plus the stream's retained
  tail up to this node's cursor for what came before; see `recover`.
- failures: every operation has a timeout and goes through a circuit breaker
  (`Guard`); publishes fail fast with `BrokerUnavailable` (`unavailable`,
  with `retry_after`) while Redis is down or slow, and nothing else waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from broadcaster.brokers.base import BrokerStatus, MessageFactory
from broadcaster.brokers.breaker import Breaker
from broadcaster.brokers.guard import Guard
from broadcaster.brokers.redis_reader import StreamReader
from broadcaster.brokers.redis_scripts import PUBLISH, SYNC, Keys
from broadcaster.config import BrokerConfig
from broadcaster.core.channel import Channel
from broadcaster.core.history import Recovery, reaches_back
from broadcaster.core.message import Message
from broadcaster.errors import BrokerUnavailable, InvalidPublish

__all__ = ["RedisBroker"]

logger = logging.getLogger("broadcaster.redis")


class RedisBroker:
    """Seq in Redis, order in the stream, delivery by this node's reader."""

    name = "redis"

    def __init__(
        self,
        config: BrokerConfig,
        factory: MessageFactory,
        clock: Callable[[], float],
        *,
        idle_ttl: float = 0.0,
    ):
        self.config = config
        self.idle_ttl = idle_ttl
        """`[server] idle_channel_ttl`: unused channels' keys expire (0: never)."""
        self.node = secrets.token_hex(6)
        self._factory = factory
        self._clock = clock
        self._keys = Keys(config.prefix)
        self._min_len = config.stream_maxlen
        # No retries inside redis-py: the guard decides (fail fast, breaker), and
        # a retried publish whose reply was lost would take two seqs.
        self.client = Redis.from_url(
            config.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=config.timeout,
            socket_timeout=None,
        )
        self.guard = Guard(
            self.name,
            Breaker(threshold=config.breaker_threshold, cooldown=config.breaker_cooldown),
            timeout=config.timeout,
            clock=clock,
            on_connection_lost=self._drop_idle_connections,
        )
        self._publish = self.client.register_script(PUBLISH)
        self._sync = self.client.register_script(SYNC)
        self.reader = StreamReader(self.client, self._keys, self.node, factory, self.guard)
        self._tasks: set[asyncio.Task[None]] = set()
        # The Redis process the scripts' decisions are about (see _check_process).
        self._run_id = ""
        self._durable = False
        self._may_continue = False

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Connect and start reading; a Redis that is down now only makes the node degraded."""
        try:
            await self.guard.run("connect", self.client.ping)
            await self._check_process()
        except BrokerUnavailable as exc:
            logger.warning("redis at %s is not reachable yet: %s", _safe(self.config.url), exc)
        self.reader.start()
        if self.idle_ttl:
            task = asyncio.get_running_loop().create_task(
                self._refresh_expiry(), name="redis-expiry-refresh"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _ttl_ms(self, channel: Channel) -> int:
        """How long the channel's keys live unused: the hub's idle rule, in Redis."""
        if not self.idle_ttl:
            return 0
        return int(1000 * channel.policy.kept_unused(self.idle_ttl))

    async def _refresh_expiry(self) -> None:
        """Keep the keys of every channel this node reads from expiring, three times per TTL.

        A channel with subscribers but no publish for a while is in use: its
        seq history must not vanish under them.
        """
        interval = max(0.05, self.idle_ttl / 3)
        while True:
            await asyncio.sleep(interval)
            tails = [tail for tail in self.reader.tails.values() if tail.reading]
            if not tails:
                continue
            pipe = self.client.pipeline(transaction=False)
            for tail in tails:
                ttl_ms = self._ttl_ms(tail.channel)
                pipe.pexpire(self._keys.meta(tail.channel.name), ttl_ms)
                pipe.pexpire(tail.key, ttl_ms)
            # A failure is counted by the guard; the next round tries again.
            with contextlib.suppress(BrokerUnavailable):
                await self.guard.run("refresh", pipe.execute)

    async def _drop_idle_connections(self) -> None:
        await self.client.connection_pool.disconnect(inuse_connections=False)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.guard.close()
        try:
            await self.reader.stop()
        finally:
            await self.client.aclose()

    def status(self) -> BrokerStatus:
        reader = self.reader
        return dataclasses.replace(
            self.guard.status(),
            reader=reader.state,
            reader_restarts=reader.restarts,
            last_error=reader.last_error,
            bad_entries=reader.bad_entries,
            epoch_resets=reader.epoch_resets,
        )

    # --- which Redis process -------------------------------------------------

    async def _check_process(self) -> None:
        """Learn which Redis process answers, and whether it can lose acknowledged writes.

        Its data survives a restart intact only with `appendonly yes` and
        `appendfsync always` on a primary; a replica promoted to primary may
        lag whatever its settings. The scripts compare the run_id checked
        here with the one that assigned a channel's last seq (redis_scripts).
        A Redis that refuses CONFIG GET counts as not durable: its restarts
        start new epochs, which tells subscribers instead of guessing.
        """

        async def inspect() -> tuple[Any, Any, Any]:
            server = await self.client.info("server")
            replication = await self.client.info("replication")
            try:
                config = await self.client.config_get("append*")
            except ResponseError:
                config = {}
            return server, replication, config

        server, replication, config = await self.guard.run("check the Redis process", inspect)
        settings = {_text(k): _text(v) for k, v in config.items()}
        durable = (
            settings.get("appendonly") == "yes"
            and settings.get("appendfsync") == "always"
            and replication.get("role") == "master"
        )
        run_id = _text(server["run_id"])
        if run_id != self._run_id:
            logger.info(
                "redis at %s: process %s, %s",
                _safe(self.config.url),
                run_id,
                "fsyncs every write: restarts keep seqs"
                if durable
                else "may lose recent writes on a restart or failover: "
                "those start new epochs (docs/guarantees.md)",
            )
        self._run_id = run_id
        self._durable = durable
        self._may_continue = durable and int(replication.get("second_repl_offset", -1)) == -1

    async def _script(
        self, what: str, script: AsyncScript, channel: Channel, extra: list[bytes | str | int]
    ) -> list[Any]:
        """Run PUBLISH or SYNC for `channel`; its reply after the leading "ok".

        When Redis runs another process than the one last checked (a restart,
        a failover), check it, then run the script again.
        """
        keys = [self._keys.meta(channel.name), self._keys.stream(channel.name)]
        for _ in range(3):
            known_epoch, known_seq = self.reader.seen.get(channel.name, ("", 0))
            args: list[bytes | str | int] = [
                secrets.token_hex(6),
                self._run_id,
                "1" if self._durable else "0",
                "1" if self._may_continue else "0",
                known_epoch,
                known_seq,
                *extra,
            ]
            reply: list[Any] = await self.guard.run(
                what, functools.partial(script, keys=keys, args=args)
            )
            if reply[0] == b"ok":
                return reply[1:]
            await self._check_process()
        raise self.guard.unavailable(what)

    # --- publish -----------------------------------------------------------

    async def publish(self, channel: Channel, data: Any) -> int:
        """Append `data` to the channel's stream; returns its seq (delivery is the reader's)."""
        try:
            payload = orjson.dumps(data)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise InvalidPublish(f"data for channel {channel.name!r} is not JSON: {exc}") from None
        maxlen = max(self._min_len, channel.policy.history_size)
        epoch, seq = await self._script(
            "publish", self._publish, channel, [payload, maxlen, self._ttl_ms(channel)]
        )
        self.reader.note(channel.name, epoch.decode(), int(seq))
        return int(seq)

    # --- subscribe ---------------------------------------------------------

    async def prepare(self, channel: Channel) -> None:
        """Make sure this node reads `channel`, with `last_seq` and the cursor in step."""
        tail = self.reader.tails.get(channel.name)
        if tail is not None and tail.reading:
            return
        reply = await self._script("subscribe", self._sync, channel, [self._ttl_ms(channel)])
        tail = self.reader.tails.get(channel.name)
        if tail is not None and tail.reading:
            return  # another subscribe got there first; its state is at least as new
        epoch, seq, cursor = reply
        channel.epoch = epoch.decode()
        channel.last_seq = int(seq)
        self.reader.track(channel, cursor)
        self.reader.note(channel.name, channel.epoch, channel.last_seq)

    async def recover(self, channel: Channel, since: int, epoch: str | None) -> Recovery:
        """Every retained message after `since` up to this node's `last_seq`.

        The seam: live delivery to the new subscriber starts after
        `channel.last_seq` at attachment, so recovery must end exactly there.
        This node's reader keeps the last `history_size` messages it
        delivered (`Tail.history`); those are served locally. Only what came
        before this node started reading is fetched from Redis, in one
        XREVRANGE ending at the cursor (the entry of `last_seq` at that
        moment); whatever the reader delivers during that round trip lands in
        the local history, so the two meet without a chase, a gap or a
        duplicate. The caller attaches without awaiting after this returns.
        """
        await self.prepare(channel)
        tail = self.reader.tails[channel.name]
        size = channel.policy.history_size
        start_epoch = channel.epoch
        fetched: list[Message] = []
        local = tail.history.retained(self._clock())
        first_local = local[0].seq if local else channel.last_seq + 1
        wanted_from = max(since + 1, channel.last_seq - size + 1, 1)
        mismatch = epoch is not None and epoch != channel.epoch
        if size and channel.last_seq and (first_local > wanted_from or mismatch):
            end_id, end_seq = tail.cursor, channel.last_seq
            fetched = await self._fetch(channel, tail.key, end_id, size)
            if channel.epoch != start_epoch:
                # The stream was lost meanwhile: nothing before it can be recovered.
                return Recovery(recovered=False, messages=[], oldest_seq=channel.last_seq + 1)
            local = tail.history.retained(self._clock())
            if local and local[0].seq > end_seq + 1:
                fetched = []  # more than history_size arrived meanwhile: local covers all
        return self._recovery(channel, since, epoch, fetched, local)

    async def _fetch(
        self, channel: Channel, key: bytes, end_id: bytes, count: int
    ) -> list[Message]:
        """The last `count` entries up to `end_id` still within history_ttl, as messages.

        Their age is measured on Redis' clock (the entry id is Redis time).
        """

        async def fetch() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.time()
            pipe.xrevrange(key, max=end_id, min="-", count=count)
            return await pipe.execute()

        (seconds, micros), newest_first = await self.guard.run("recover history", fetch)
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        cutoff_ms = now_ms - int(channel.policy.history_ttl * 1000)
        current = channel.epoch.encode()
        messages = []
        for entry_id, fields in reversed(newest_first):
            if fields.get(b"e") == current and _entry_ms(entry_id) >= cutoff_ms:
                try:
                    seq = int(fields[b"s"])
                    data = orjson.loads(fields[b"d"])
                except (KeyError, ValueError):
                    continue  # unreadable (the reader counts and logs it): not history
                messages.append(self._factory.build(channel, seq, data))
        return messages

    def _recovery(
        self,
        channel: Channel,
        since: int,
        epoch: str | None,
        fetched: list[Message],
        local: list[Message],
    ) -> Recovery:
        """Join the fetched and local tails and apply the one recovery rule (`reaches_back`)."""
        last = channel.last_seq
        size = channel.policy.history_size
        by_seq = {m.seq: m for m in fetched}
        by_seq.update((m.seq, m) for m in local)
        # Only the contiguous run of the last `size` seqs that ends at `last` is retained.
        window: list[Message] = []
        seq = last
        while seq > last - size and seq in by_seq:
            window.append(by_seq[seq])
            seq -= 1
        window.reverse()
        recovered, oldest = reaches_back(
            since, last_seq=last, oldest_retained=window[0].seq if window else None
        )
        if (epoch is not None and epoch != channel.epoch) or not recovered:
            return Recovery(recovered=False, messages=[], oldest_seq=oldest)
        return Recovery(
            recovered=True, messages=[m for m in window if m.seq > since], oldest_seq=oldest
        )

    # --- hooks from the hub --------------------------------------------------

    def channel_active(self, channel: Channel) -> None:
        tail = self.reader.tails.get(channel.name)
        if tail is None:
            # Attached without `prepare` (code calling the hub directly): catch
            # up in the background; that subscriber's seq starts where the sync lands.
            task = asyncio.get_running_loop().create_task(self._prepare_quietly(channel))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif not tail.reading:
            # The last subscriber left while this one was being prepared: go on
            # from where reading stopped, so nothing after last_seq is missed.
            tail.reading = True
            self.reader.changed()

    async def _prepare_quietly(self, channel: Channel) -> None:
        try:
            await self.prepare(channel)
        except BrokerUnavailable as exc:
            logger.warning("channel %r: cannot start reading: %s", channel.name, exc)

    def channel_idle(self, channel: Channel) -> None:
        tail = self.reader.tails.get(channel.name)
        if tail is not None:
            tail.reading = False

    def channel_room(self, channel: Channel) -> None:
        self.reader.resume(channel)

    def channel_freed(self, channel: Channel) -> None:
        # The stream stays in Redis (seq and epoch live there); this node stops tracking it.
        self.reader.untrack(channel)


def _entry_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    head, at, tail = url.rpartition("@")
    return f"{head.split('//', 1)[0]}//***@{tail}" if at else url
