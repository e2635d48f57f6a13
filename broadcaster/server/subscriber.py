"""What a subscriber is, whatever carries its bytes: ops, access rules, limits, outbox.

A `Subscriber` is the server side of one client connection, free of any
transport's framing: ops are parsed by `core.ops`, replies are built by
`core.events`, queues and flow control live in the connection's `Outbox`.
It writes the outbox's batches to an asyncio transport (`write`,
`get_write_buffer_size`) and decides when to close. The transports are thin
subclasses that add their framing and their ending (docs/ARCHITECTURE.md):

- `server/session.py` `ClientSession`: WebSocket (`/ws`): reads ops from
  frames, pings, ends with a close frame and a close code;
- `server/sse.py` `SseSession`: Server-Sent Events and NDJSON streams
  (`/sse`, `/stream` on the HTTP API port): subscriptions come from the URL,
  heartbeats are comment lines, the stream ends with a final event.

Both share the hot path (`flush`): the outbox's framer and the message's
pre-built bytes decide what goes on the wire, so a transport costs nothing
per message per subscriber.

Ingress rules (broadcaster/security/) are applied here, per op: the token
(`?token=` or `auth`; a bad one closes with "invalid token", its expiry closes
"token expired" on a timer), channel permissions and `$sys.*` (`forbidden`),
`max_subscriptions`, `max_channels`, the channel-creation budget
(`rate_limited`) and the publish rate (`rate_limited`, then 4029). None of
them touches the write path (`flush`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import socket
import struct
import termios
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from broadcaster.codes import ABUSE_ERROR_CODES, CloseCode, ErrorCode
from broadcaster.core import events
from broadcaster.core.channel import Channel
from broadcaster.core.history import Recovery
from broadcaster.core.message import Message
from broadcaster.core.ops import (
    SYSTEM_PREFIX,
    Auth,
    Ping,
    Publish,
    Rejected,
    Subscribe,
    Unsubscribe,
    parse_op,
)
from broadcaster.core.outbox import FramedOutbox, Outbox
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import Strategy
from broadcaster.errors import (
    BrokerUnavailable,
    ChannelRateLimited,
    PublishError,
    TooManyChannels,
)
from broadcaster.security.access import (
    refuse_publish,
    refuse_subscribe,
    refuse_system_subscribe,
)
from broadcaster.security.admin import peer_ip
from broadcaster.security.auth import Grant, TokenRejected
from broadcaster.security.publish_limit import PublishLimiter, Verdict
from broadcaster.server.pipeline import PublishPipeline

if TYPE_CHECKING:
    from broadcaster.server.app import Broadcaster

__all__ = ["ABUSE_LIMIT", "ABUSE_WINDOW", "REPLY_BACKLOG_LIMIT", "Subscriber"]

logger = logging.getLogger("broadcaster.session")

# More than this many abuse errors within the window closes the connection (1008).
ABUSE_LIMIT = 10
ABUSE_WINDOW = 10.0
# Stop reading a client's ops while this many reply bytes wait in its transport.
REPLY_BACKLOG_LIMIT = 256 * 1024
# The ioctl that reads how many bytes the kernel still holds for a socket (Linux; else None).
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)
# Publish errors that are refusals (broadcaster_refusals_total{reason=code}).
_REFUSED_PUBLISH_CODES = frozenset({ErrorCode.UNKNOWN_CHANNEL, ErrorCode.FORBIDDEN})


class Subscriber:
    """The transport-independent server side of one client connection.

    A transport subclass passes its asyncio `transport` (the bytes go there
    directly), `framer` (how a reply or notice is framed) and `frame_of`
    (which pre-built bytes of a message its outbox writes; None: the
    WebSocket frame), and implements `keepalive` and `_send_end`.
    """

    # Slots, not an instance dict: one per connection, and an idle connection's
    # bytes count (S4 in BENCHMARKS.md). A subclass that declares none gets a dict.
    __slots__ = (
        "_abort_handle",
        "_abuse",
        "_blocked_on",
        "_drained",
        "_expiry",
        "_lingering",
        "_open",
        "_pipeline",
        "_rate_timer",
        "_run_task",
        "_transport",
        "app",
        "channel_budget",
        "closing",
        "connected_at",
        "connected_mono",
        "grant",
        "id",
        "ip",
        "last_ping",
        "limiter",
        "loop",
        "outbox",
        "remote",
    )

    transport_name = "websocket"
    """What /stats, the dashboard and metrics call this transport."""

    def __init__(
        self,
        app: Broadcaster,
        transport: asyncio.Transport,
        peer: object,
        session_id: int,
        *,
        framer: Callable[[bytes], bytes],
        frame_of: Callable[[Message, Channel], bytes] | None = None,
    ) -> None:
        self.app = app
        self.id = session_id
        self.loop = app.loop
        self.connected_at = app.wall_clock()
        self.connected_mono = self.loop.time()
        self.remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.ip = peer_ip(peer)
        # Called per subscriber per message: a C-level partial and a bound
        # method keep the Python frames on that path to the minimum.
        on_schedule = functools.partial(app.scheduler.schedule, self)
        self.outbox = (
            Outbox(session_id, on_schedule=on_schedule, write_now=self.flush, framer=framer)
            if frame_of is None
            else FramedOutbox(
                session_id,
                on_schedule=on_schedule,
                write_now=self.flush,
                framer=framer,
                frame_of=frame_of,
            )
        )
        self.closing = False
        self._transport = transport
        self._open = True
        """Data may be written (kept by the events that end the stream)."""
        self._abuse: deque[float] | None = None  # created on the first bad frame
        self._abort_handle: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None
        self._run_task: asyncio.Task[object] | None = None
        self._rate_timer: asyncio.TimerHandle | None = None
        self._blocked_on: set[str] | None = None  # created on the first blocked publish
        self._pipeline: PublishPipeline[Publish] | None = None
        """Publishes sent to the bus, their replies to come (created on the first one)."""
        self.last_ping = self.connected_mono
        self._lingering = False
        self.grant: Grant | None = None
        """What this connection's token allows (None: no token)."""
        self._expiry: asyncio.TimerHandle | None = None
        self.channel_budget = app.channel_budgets.for_connection(self.ip, self.connected_mono)
        """What this connection (and its address) may still create in channels."""
        limits = app.config.limits
        self.limiter = (
            PublishLimiter(
                limits.publish_rate,
                limits.publish_burst,
                strikes=limits.rate_limit_strikes,
                window=limits.rate_limit_window,
                now=self.loop.time(),
            )
            if limits.publish_rate > 0
            else None
        )

    @property
    def is_admin(self) -> bool:
        """Whether this connection holds admin rights (the admin token or an admin JWT)."""
        return self.grant is not None and self.grant.admin

    @property
    def publishes_in_flight(self) -> int:
        """Publishes sent to the bus and not answered yet (pipelined; 0 with one process)."""
        return len(self._pipeline) if self._pipeline is not None else 0

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    # --- writing -----------------------------------------------------------

    def flush(self, _outbox: Outbox | None = None) -> None:
        """Write this connection's next batch in one transport call."""
        outbox = self.outbox
        batch = outbox.take_batch(self.loop.time() if outbox.timed else 0.0)
        if batch and self._open:
            transport = self._transport
            # A run shared with other subscribers comes joined already (core/outbox.py).
            data = outbox.joined or (batch[0] if len(batch) == 1 else b"".join(batch))
            transport.write(data)
            outbox.wire_bytes += len(data)
            outbox.written(transport.get_write_buffer_size())
            sampled = outbox.sample_channel
            if sampled is not None:
                # One data batch in SAMPLE_EVERY carries a latency sample (core/outbox.py).
                outbox.sample_channel = None
                sampled.counters.latency.observe(self.loop.time() - outbox.sample_created)
        else:
            outbox.sample_channel = None
            outbox.written(0)
        if outbox.wake_at is not None:
            self._wake_at(outbox.wake_at)

    def _wake_at(self, when: float) -> None:
        """A rate-capped subscription is due at `when`: flush then (one timer per connection)."""
        timer = self._rate_timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._rate_timer = self.loop.call_at(when, self._rate_due)

    def _rate_due(self) -> None:
        self._rate_timer = None
        self.outbox.schedule()

    def transport_drained(self) -> None:
        self.outbox.transport_drained()
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def send(self, payload: bytes) -> None:
        """Send a reply or control event ahead of queued data."""
        self.outbox.send_control(payload)

    # --- ops -------------------------------------------------------------------

    async def handle(self, frame: str | bytes) -> None:
        op = parse_op(frame)
        if isinstance(op, Publish):
            await self._publish(op)
            return
        if self._pipeline:
            # Publishes in flight are answered first: replies stay in op order,
            # and what comes next (a subscribe) sees them published.
            await self._pipeline.drain()
        if isinstance(op, Subscribe):
            await self._subscribe(op)
        elif isinstance(op, Unsubscribe):
            self._unsubscribe(op)
        elif isinstance(op, Ping):
            self.send(events.pong(op.id))
        elif isinstance(op, Auth):
            self._auth(op)
        else:
            self._rejected(op)

    def _rejected(self, rejected: Rejected) -> None:
        self.send(events.error(rejected.code, rejected.message, rejected.id))
        if rejected.code in ABUSE_ERROR_CODES:
            now = self.loop.time()
            abuse = self._abuse
            if abuse is None:
                abuse = self._abuse = deque()
            abuse.append(now)
            while abuse and abuse[0] < now - ABUSE_WINDOW:
                abuse.popleft()
            if len(abuse) > ABUSE_LIMIT:
                self.app.metrics.refused("abuse")
                self.close(
                    CloseCode.POLICY_VIOLATION,
                    f"protocol abuse: more than {ABUSE_LIMIT} invalid frames in {ABUSE_WINDOW:g} s",
                )

    async def _publish(self, op: Publish) -> None:
        limiter = self.limiter
        if limiter is not None:
            verdict = limiter.check(self.loop.time())
            if verdict is not Verdict.ALLOW:
                if self._pipeline:
                    await self._pipeline.drain()  # the refusal in its place
                self._refuse_rate(limiter, verdict, op)
                return
        if op.channel.startswith(SYSTEM_PREFIX):
            if self._pipeline:
                await self._pipeline.drain()
            self._forbidden(
                f"channel {op.channel!r} belongs to the server; clients cannot publish to it",
                op.id,
            )
            return
        policy = self._policy(op.channel)
        if policy is not None:
            refusal = refuse_publish(policy, op.channel, self.grant)
            if refusal is not None:
                if self._pipeline:
                    await self._pipeline.drain()
                self._forbidden(refusal, op.id)
                return
            if self.app.pipelined and policy.strategy is not Strategy.BLOCK:
                await self._submit(op)
                return
        if self._pipeline:
            # A block channel's publish (it may wait for room), or an unknown
            # channel's refusal: after the publishes in flight, as before them.
            await self._pipeline.drain()
        try:
            seq = await self.app.publish(
                op.channel, op.data, publisher=self, budget=self.channel_budget
            )
        except PublishError as exc:
            self._publish_failed(exc, op)
            return
        if op.id is not None:
            self.send(events.published(op.channel, op.id, seq))

    async def _submit(self, op: Publish) -> None:
        """Send the publish to the bus and read on; its reply comes in its turn (pipeline)."""
        pipeline = self._pipeline
        if pipeline is None:
            pipeline = self._pipeline = PublishPipeline(self._publish_settled)
        elif pipeline and self.app.at_channel_cap(op.channel):
            await pipeline.drain()  # judged as without pipelining (see at_channel_cap)
        try:
            ack = self.app.submit(op.channel, op.data, budget=self.channel_budget)
        except PublishError as exc:
            await pipeline.drain()
            self._publish_failed(exc, op)
            return
        pipeline.add(ack, op)
        if pipeline.full:
            await pipeline.wait_for_room()

    def _publish_settled(self, ack: asyncio.Future[int], op: Publish) -> None:
        """A pipelined publish's turn to be answered (every publish before it was)."""
        if ack.cancelled():
            self._publish_failed(BrokerUnavailable("the publish was cancelled"), op)
            return
        exc = ack.exception()
        if exc is None:
            if op.id is not None:
                self.send(events.published(op.channel, op.id, ack.result()))
        elif isinstance(exc, PublishError):
            self._publish_failed(exc, op)
        else:  # a bug: as an awaited publish's would, it ends the connection
            logger.error("publish to %r failed", op.channel, exc_info=exc)
            self.close(CloseCode.INTERNAL_ERROR, "internal error")

    def _publish_failed(self, exc: PublishError, op: Publish) -> None:
        # TooManyChannels and ChannelRateLimited are counted where they are raised.
        if exc.code in _REFUSED_PUBLISH_CODES and not isinstance(exc, TooManyChannels):
            self.app.metrics.refused(exc.code)
        extra = {} if exc.retry_after is None else {"retry_after": exc.retry_after}
        self.send(events.error(exc.code, str(exc), op.id, **extra))

    async def subscribe(self, op: Subscribe, *, position_unknown: bool = False) -> None:
        """Subscribe as the `subscribe` op does (streams take theirs from the URL).

        `position_unknown`: the client asked to resume but gave no position for
        this channel, so `subscribed` says `"recovered": false` (a gap of unknown size).
        """
        await self._subscribe(op, position_unknown=position_unknown)

    async def _subscribe(self, op: Subscribe, *, position_unknown: bool = False) -> None:
        name = op.channel
        if name in self.outbox.subscriptions:
            self.send(
                events.error(ErrorCode.ALREADY_SUBSCRIBED, f"already subscribed to {name!r}", op.id)
            )
            return
        if not self._may_subscribe(name, op):
            return
        channel = self.app.hub.channel(name, self.loop.time())
        if channel is None:
            self.app.metrics.refused("unknown_channel")
            self.send(events.error(ErrorCode.UNKNOWN_CHANNEL, _unknown(name), op.id))
            return
        hub = self.app.hub
        hub.pin(channel)  # not freed while this waits on the broker, until attached
        try:
            recovery = await self._prepare(op, channel)
            self._attach(op, channel, recovery, position_unknown=position_unknown)
        except PublishError as exc:
            retry = {} if exc.retry_after is None else {"retry_after": exc.retry_after}
            self.send(events.error(exc.code, str(exc), op.id, **retry))
        finally:
            hub.unpin(channel)  # frees it if nothing came to use it

    async def _prepare(self, op: Subscribe, channel: Channel) -> Recovery | None:
        """The broker brings the channel's seq up to date (a Redis node that does
        not read this channel yet starts reading it) and, with `since`, fetches
        the missed tail."""
        if op.since is not None:
            return await self.app.broker.recover(channel, op.since, op.epoch)
        await self.app.broker.prepare(channel)
        return None

    def _attach(
        self,
        op: Subscribe,
        channel: Channel,
        recovery: Recovery | None,
        *,
        position_unknown: bool = False,
    ) -> None:
        name = channel.name
        if self.closing or name in self.outbox.subscriptions:
            return
        # From here to the attachment nothing awaits: the reply's seq, the
        # recovered tail and the live stream meet without gap or duplicate.
        extra: dict[str, object] = {}
        if position_unknown:
            extra["recovered"] = False
        if recovery is not None:
            extra["recovered"] = recovery.recovered
            if not recovery.recovered:
                extra["oldest_seq"] = recovery.oldest_seq
        policy = channel.policy
        max_rate = op.max_rate
        if max_rate is not None and policy.max_rate is not None:
            max_rate = min(max_rate, policy.max_rate)
        if max_rate is not None:
            extra["max_rate"] = max_rate
        self.send(
            events.subscribed(
                name,
                op.id,
                strategy=policy.strategy.value,
                queue_size=policy.queue_size,
                seq=channel.last_seq,
                epoch=channel.epoch,
                extra=extra,
            )
        )
        sub = self.app.hub.subscribe(self.outbox, channel, now=self.loop.time(), max_rate=max_rate)
        now = self.loop.time()
        if recovery is not None and recovery.recovered:
            sub.preload(recovery.messages, now)
        elif policy.snapshot:
            snapshot = self.app.factory.snapshot
            sub.preload([snapshot(message) for message in channel.snapshot()], now)

    def _unsubscribe(self, op: Unsubscribe) -> None:
        if self.app.hub.unsubscribe(self.outbox, op.channel) is None:
            self.send(
                events.error(ErrorCode.NOT_SUBSCRIBED, f"not subscribed to {op.channel!r}", op.id)
            )
            return
        self.send(events.unsubscribed(op.channel, op.id))

    # --- ingress rules (broadcaster/security/) --------------------------------

    def _policy(self, name: str) -> ChannelPolicy | None:
        """The policy of `name` without creating the channel (None: strict and unknown)."""
        channel = self.app.hub.channels.get(name)
        if channel is not None:
            return channel.policy
        return self.app.hub.policies.resolve(name)

    def _forbidden(self, message: str, op_id: int | str | None) -> None:
        """Refuse an op with `forbidden`: a refusal, never protocol abuse."""
        self.app.metrics.refused("forbidden")
        self.send(events.error(ErrorCode.FORBIDDEN, message, op_id))

    def _may_subscribe(self, name: str, op: Subscribe) -> bool:
        """Channel permissions, `$sys.*`, `max_subscriptions` (`forbidden`), and for a
        new channel `max_channels` (`forbidden`) and the creation budget (`rate_limited`)."""
        app = self.app
        if name.startswith(SYSTEM_PREFIX):
            gate = app.admin_gate
            refusal = refuse_system_subscribe(
                name, gate.may_watch(self.is_admin, self.ip), gate.token_needed
            )
        else:
            policy = self._policy(name)
            refusal = None if policy is None else refuse_subscribe(policy, name, self.grant)
        if refusal is not None:
            self._forbidden(refusal, op.id)
            return False
        cap = app.config.limits.max_subscriptions
        if cap and len(self.outbox.subscriptions) >= cap:
            app.metrics.refused("max_subscriptions")
            self.send(
                events.error(
                    ErrorCode.FORBIDDEN,
                    f"this connection has {cap} subscriptions, the most allowed "
                    "([limits] max_subscriptions); unsubscribe from one first",
                    op.id,
                )
            )
            return False
        # Last: only a subscribe that would otherwise succeed pays for a new channel.
        try:
            app.check_new_channel(name, self.channel_budget)
        except (TooManyChannels, ChannelRateLimited) as exc:
            retry = {} if exc.retry_after is None else {"retry_after": exc.retry_after}
            self.send(events.error(exc.code, str(exc), op.id, **retry))
            return False
        return True

    def _refuse_rate(self, limiter: PublishLimiter, verdict: Verdict, op: Publish) -> None:
        """Refuse a publish over the rate with `rate_limited`, or close 4029 after warnings."""
        self.app.metrics.refused("publish_rate")
        wait = round(limiter.retry_after, 3) or 0.001
        self.send(
            events.error(
                ErrorCode.RATE_LIMITED,
                f"over the publish rate of {limiter.rate:g} messages/s (burst {limiter.burst:g}); "
                f"retry after {wait:g} s",
                op.id,
                retry_after=wait,
            )
        )
        if verdict is Verdict.CLOSE:
            self.app.metrics.refused("rate_limit")
            self.close(
                CloseCode.RATE_LIMITED,
                f"rate limited: more than {limiter.strikes} refused publishes "
                f"in {limiter.window:g} s",
            )

    def _auth(self, op: Auth) -> None:
        if not self._checks(op.token):
            self.send(events.authenticated(op.id))
            return
        if self._apply_token(op.token, op.id):
            self.send(events.authenticated(op.id))

    def apply_token(self, token: str) -> None:
        """Apply a token given outside the ops (`?token=`), if this server judges it."""
        if self._checks(token):
            self._apply_token(token, None)

    def _checks(self, token: str) -> bool:
        """Whether this server judges `token`: with JWT auth off, only the admin token is
        recognised and any other token is accepted, granting nothing (PROTOCOL.md)."""
        auth = self.app.auth
        return auth.enabled or auth.is_admin_token(token)

    def _apply_token(self, token: str, op_id: int | str | None) -> bool:
        """Verify `token` and hold its grant (replacing any earlier one); False if refused.

        A refused token gets `error` `unauthorized`, then close 1008 naming why;
        a valid one arms one timer for its expiry (no polling).
        """
        try:
            grant = self.app.auth.verify(token, time.time())
        except TokenRejected as exc:
            self._reject_token(str(exc), "token expired" if exc.expired else "invalid token", op_id)
            return False
        self.grant = grant
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if grant.expires_at is not None:
            delay = max(0.0, grant.expires_at - time.time())
            self._expiry = self.loop.call_later(delay, self._token_expired)
        return True

    def _token_expired(self) -> None:
        self._expiry = None
        self._reject_token("token expired", "token expired", None)

    def _reject_token(self, message: str, reason: str, op_id: int | str | None) -> None:
        self.app.metrics.refused("token")
        self.send(events.error(ErrorCode.UNAUTHORIZED, message, op_id))
        self.close(CloseCode.POLICY_VIOLATION, reason)

    # --- block channels ------------------------------------------------------

    def channel_blocked(self, channel: Channel) -> None:
        """This client's publish waits for room: tell it, and stop reading its frames."""
        if self._blocked_on is None:
            self._blocked_on = set()
        if channel.name not in self._blocked_on:
            self._blocked_on.add(channel.name)
            size = channel.policy.queue_size
            self.send(
                events.flow_pause(channel.name, reason="channel blocked", depth=size, limit=size)
            )

    def channel_unblocked(self, channel: Channel) -> None:
        if self._blocked_on is not None and channel.name in self._blocked_on:
            self._blocked_on.discard(channel.name)
            self.send(events.flow_resume(channel.name, dropped=0))

    # --- what each transport adds ------------------------------------------------

    def keepalive(self, now: float) -> None:
        """Called by the keepalive sweep every `ping_interval` (server/keepalive.py)."""
        raise NotImplementedError

    def _send_end(self, code: int, reason: str) -> None:
        """Tell the client the stream ends (a close frame, a final event), behind the data."""
        raise NotImplementedError

    # --- closing -------------------------------------------------------------

    def close(self, code: int, reason: str, *, flush: bool = True, linger: float = 0.0) -> None:
        """Free everything held for this client now, send the ending, abort if unanswered.

        With `flush`, what is pending is written first (so the client sees the
        errors that led to a policy close); a slow consumer gets nothing more.
        The ending goes out behind what the socket already holds. The
        connection is aborted if the close is not done within
        `close_timeout`; with `linger` (seconds), only once the client stops
        taking bytes for `close_timeout`, or `linger` has passed: a client
        that reads, but slowly, still gets its ending.
        """
        if self.closing:
            return
        self.closing = True
        if flush:
            self.flush()
        self._open = False
        self.app.hub.drop(self.outbox)
        try:
            self._send_end(code, reason)
        except Exception:  # the transport is already gone
            logger.debug("could not send the ending to %s", self.remote, exc_info=True)
        timeout = self.app.config.server.close_timeout
        if linger > 0:
            self._lingering = True
            self._abort_handle = self.loop.call_later(
                timeout, self._abort_if_stalled, self._unsent(), self.loop.time() + linger
            )
        else:
            self._abort_handle = self.loop.call_later(timeout, self._abort)
        self._stop_reading()

    def _unsent(self) -> int:
        """Bytes written to this client that it has not taken yet: the transport's and,
        where the kernel tells (Linux), the socket's."""
        unsent = self._transport.get_write_buffer_size()
        sock = self._transport.get_extra_info("socket")
        if sock is not None and _OUTQ is not None:
            with contextlib.suppress(OSError, ValueError):
                unsent += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, bytes(4)))[0]
        return unsent

    def _abort_if_stalled(self, unsent_before: int, give_up_at: float) -> None:
        """A lingering close: wait on while the client keeps reading, up to `give_up_at`."""
        self._abort_handle = None
        unsent = self._unsent()
        remaining = give_up_at - self.loop.time()
        if unsent < unsent_before and remaining > 0:
            self._abort_handle = self.loop.call_later(
                min(self.app.config.server.close_timeout, remaining),
                self._abort_if_stalled,
                unsent,
                give_up_at,
            )
            return
        self._abort()

    def _abort(self) -> None:
        """The client did not complete the closing handshake in time (it is not reading).

        SO_LINGER 0 makes the close a TCP reset: without it the kernel would
        keep the unsent bytes and queue a FIN behind them, so a client that
        does not read would never learn it was cut off, and the kernel would
        hold its buffers for minutes.
        """
        self._abort_handle = None
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    def _stop_reading(self) -> None:
        """Interrupt the read loop wherever it waits (a frame, room on a block channel)."""
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._drained is not None and not self._drained.done():
            self._drained.cancel()
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()

    def connection_lost(self) -> None:
        """The TCP connection is gone: free what it held (idempotent)."""
        if self._abort_handle is not None:
            self._abort_handle.cancel()
            self._abort_handle = None
        self._release()

    def _release(self) -> None:
        """Free everything held for this client and stop reading from it (idempotent)."""
        self.closing = True
        self._open = False
        self.app.hub.drop(self.outbox)
        self.app.forget(self)
        if self._pipeline is not None:
            self._pipeline.close()
        self._stop_reading()

    async def _wait_drained(self) -> None:
        self._drained = self.loop.create_future()
        try:
            await self._drained
        except asyncio.CancelledError:
            if not self.closing:
                raise


def _unknown(name: str) -> str:
    return f"channel {name!r} matches no [channels] entry and strict_channels is on"
