"""The Python asyncio client: one object that keeps itself connected until closed.

    async with connect("ws://127.0.0.1:8765/ws") as client:
        async for msg in client.subscribe("tickers.demo"):
            print(msg.seq, msg.data)

The state that outlives a connection lives here: subscriptions with their seq
trackers, publishes not sent yet, event handlers, the backoff. Each connection
is served by a `Session` (session.py); when it ends, the reconnect loop below
decides from the close code (or the refused handshake's HTTP status) whether
and when to try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, overload

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from broadcaster.client.backoff import Backoff, Policy, close_policy, http_policy, parse_retry_after
from broadcaster.client.errors import (
    ClientClosed,
    ClientError,
    ConnectFailed,
    QueueFull,
)
from broadcaster.client.events import (
    Connected,
    Disconnected,
    Emitter,
    Gap,
    Pause,
    Reconnecting,
    Reset,
    Resume,
    Subscribed,
)
from broadcaster.client.session import Session
from broadcaster.client.subscription import Subscription
from broadcaster.client.tracking import SeqTracker

__all__ = ["Client", "TokenSource", "connect"]

logger = logging.getLogger("broadcaster.client")

TokenSource = str | Callable[[], str | Awaitable[str]]
"""A token, or a function (sync or async) that returns a fresh one for each connection."""

# The close reason the server gives when a token's `exp` passes (close 1008).
TOKEN_EXPIRED = "token expired"


@dataclass(slots=True)
class ChannelState:
    """One channel this client subscribes to, shared by its `Subscription` objects."""

    name: str
    tracker: SeqTracker
    max_rate: float | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    sub_id: str | None = None
    sent_since: int | None = None
    active: bool = False


@dataclass(slots=True)
class PendingPublish:
    """A publish waiting to be sent, or sent and waiting for its ack."""

    id: str
    frame: str
    future: asyncio.Future[int]


class Client:
    """A broadcaster connection that reconnects, resubscribes and reports gaps on its own.

    Delays are in seconds. See `connect` for the options.
    """

    def __init__(
        self,
        url: str,
        *,
        min_delay: float = 0.5,
        max_delay: float = 20.0,
        factor: float = 2.0,
        long_delay: float = 30.0,
        ping_interval: float = 25.0,
        ping_timeout: float = 10.0,
        open_timeout: float = 10.0,
        max_queued: int = 1000,
        max_queue: int = 256,
        fail_fast: bool = True,
        random: Callable[[], float] | None = None,
        token: TokenSource | None = None,
        compression: bool = True,
    ) -> None:
        self.url = url
        self.token = token
        self.compression = compression
        backoff = Backoff(min_delay, max_delay, factor, long_delay)
        if random is not None:
            backoff.random = random
        self.backoff = backoff
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.open_timeout = open_timeout
        self.max_queued = max_queued
        self.max_queue = max_queue
        self.fail_fast = fail_fast
        self.events = Emitter()
        self.channels: dict[str, ChannelState] = {}
        self.held: deque[PendingPublish] = deque()
        self.session: Session | None = None
        self.closed = False
        self._ids = itertools.count(1)
        self._closing: asyncio.Event | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._ever_connected = False

    # --- public API ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self.session is not None and self.session.open

    @property
    def queued(self) -> int:
        """Publishes waiting to be sent: made while disconnected or while paused by the server."""
        return len(self.held)

    async def start(self) -> None:
        """Start connecting; with `fail_fast`, wait for the first connection (or ConnectFailed)."""
        if self._run_task is not None:
            return
        loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        self._first = loop.create_future()
        self._run_task = loop.create_task(self._run(), name=f"broadcaster-client {self.url}")
        if self.fail_fast:
            await asyncio.shield(self._first)

    async def close(self) -> None:
        """Close for good (code 1000); held and unacknowledged publishes fail with `closed`."""
        if self.closed and self._run_task is None:
            return
        self.closed = True
        if self._closing is not None:
            self._closing.set()
        # Iterators end first: a reader waiting on a full subscription must not hold the close.
        for state in self.channels.values():
            for sub in state.subscriptions:
                sub.inbox.end()
        task, self._run_task = self._run_task, None
        session = self.session
        if session is not None:
            closed = ClientClosed("broadcaster: the client was closed")
            for item in session.pending.values():
                if not item.future.done():
                    item.future.set_exception(closed)
            session.pending.clear()
            await session.close()
        elif task is not None:
            task.cancel()  # sleeping between attempts, or in the middle of one
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_held(ClientClosed("broadcaster: the client was closed"))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @overload
    def on(
        self, event: Literal["connected"], handler: Callable[[Connected], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["disconnected"], handler: Callable[[Disconnected], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["reconnecting"], handler: Callable[[Reconnecting], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["subscribed"], handler: Callable[[Subscribed], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["pause"], handler: Callable[[Pause], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["resume"], handler: Callable[[Resume], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(self, event: Literal["gap"], handler: Callable[[Gap], object]) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["reset"], handler: Callable[[Reset], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["error"], handler: Callable[[ClientError], object]
    ) -> Callable[[], None]: ...
    def on(self, event: str, handler: Callable[[Any], object]) -> Callable[[], None]:
        """Call `handler(payload)` on every `event`; returns a function that removes it."""
        return self.events.on(event, handler)

    def subscribe(
        self,
        channel: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
        max_rate: float | None = None,
        max_queue: int | None = None,
    ) -> Subscription:
        """Receive `channel`'s messages: `async for msg in client.subscribe(channel)`.

        The subscription starts now (not at the first iteration), so nothing
        published after this call is missed. `since`/`epoch`/`max_rate` apply
        when this is the first subscription of the channel on this client.
        """
        if self.closed:
            raise ClientClosed("broadcaster: the client is closed")
        state = self.channels.get(channel)
        if state is None:
            state = ChannelState(channel, SeqTracker(since, epoch), max_rate)
            self.channels[channel] = state
            if self.session is not None and self.session.open:
                self.session.send_subscribe(state)
        sub = Subscription(channel, max_queue or self.max_queue, self._release)
        state.subscriptions.append(sub)
        return sub

    def publish(self, channel: str, data: Any) -> asyncio.Future[int]:
        """Publish `data`; await the result for the seq the server assigned.

        The publish is queued at the call, so publishes go out in the order of
        the calls even when they are awaited later. The future fails with
        ServerError on an error reply, ConnectionLost if the connection dropped
        before the ack (it may or may not have been applied), QueueFull or
        ClientClosed.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_exception(ClientClosed("broadcaster: the client is closed"))
            return future
        op_id = f"p{next(self._ids)}"
        try:
            frame = orjson.dumps(
                {"op": "publish", "channel": channel, "data": data, "id": op_id}
            ).decode()
        except TypeError as exc:
            future.set_exception(ClientError(f"data is not JSON: {exc}", code="invalid_message"))
            return future
        if len(self.held) >= self.max_queued:
            future.set_exception(QueueFull(f"broadcaster: {len(self.held)} publishes queued"))
            return future
        self.held.append(PendingPublish(op_id, frame, future))
        if self.session is not None:
            self.session.wake()
        return future

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    # --- subscriptions --------------------------------------------------------------

    def _release(self, sub: Subscription) -> None:
        state = self.channels.get(sub.channel)
        if state is None or sub not in state.subscriptions:
            return
        state.subscriptions.remove(sub)
        if state.subscriptions:
            return
        del self.channels[sub.channel]
        if not self.closed and self.session is not None and self.session.open:
            self.session.send_control(
                {"op": "unsubscribe", "channel": sub.channel, "id": self.next_id("u")}
            )

    def _fail_held(self, error: ClientError) -> None:
        while self.held:
            item = self.held.popleft()
            if not item.future.done():
                item.future.set_exception(error)

    # --- the reconnect loop -----------------------------------------------------------

    async def _run(self) -> None:
        assert self._closing is not None
        assert self._first is not None
        try:
            while not self.closed:
                policy, code, reason, retry_after, status = await self._connect_once()
                if self.closed:
                    break
                if not self._ever_connected and (self.fail_fast or policy == "none"):
                    self._give_up(ConnectFailed(f"cannot connect to {self.url}: {reason}"))
                    return
                if policy == "none":
                    self._give_up(
                        ClientClosed(
                            f"broadcaster: the server closed the connection ({code} {reason})",
                            code="closed",
                        )
                    )
                    return
                step = self.backoff.next(policy, retry_after)
                self.events.emit(
                    "reconnecting",
                    Reconnecting(step.attempt, step.kind, step.delay, code, status),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), step.delay)
        except Exception as exc:  # a bug: fail loudly rather than hang the application
            logger.exception("broadcaster client: reconnect loop failed")
            self._give_up(ClientClosed(f"broadcaster: client failed: {exc!r}"))
        finally:
            if not self._first.done():
                self._first.set_exception(ClientClosed("broadcaster: the client was closed"))
            self._first.exception()  # marked as retrieved: nobody may be waiting

    async def _token(self) -> str | None:
        """The token for the next connection: the string, or what the function returns."""
        source = self.token
        if source is None or isinstance(source, str):
            return source
        value = source()
        if inspect.isawaitable(value):
            value = await value
        return str(value)

    async def _connect_once(self) -> tuple[Policy, int, str, float | None, int | None]:
        """One attempt: connect and serve until the connection ends; how to go on."""
        try:
            token = await self._token()
        except Exception as exc:  # the application's token function failed: retry later
            return "normal", 1006, f"token function failed: {exc!r}", None, None
        try:
            ws: ClientConnection = await ws_connect(
                self.url,
                open_timeout=self.open_timeout,
                ping_interval=None,  # the heartbeat is the protocol's `ping` op (session.py)
                close_timeout=1.0,
                max_size=None,
                # websockets' permessage-deflate offer; the server answers with no
                # context takeover, so neither side keeps a zlib stream between messages.
                compression="deflate" if self.compression else None,
            )
        except InvalidURI as exc:
            return "none", 1006, f"invalid URL: {exc}", None, None
        except InvalidStatus as exc:
            status = exc.response.status_code
            retry_after = parse_retry_after(exc.response.headers.get("Retry-After"))
            return http_policy(status), 1006, f"HTTP {status}", retry_after, status
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return "normal", 1006, str(exc) or type(exc).__name__, None, None
        if self.closed:  # close() was called while the handshake was under way
            await ws.close(1000, "client closed")
            return "none", 1000, "client closed", None, None
        self.backoff.reset()
        session = Session(self, ws, token)
        self.session = session
        reconnect = self._ever_connected
        self._ever_connected = True
        assert self._first is not None
        if not self._first.done():
            self._first.set_result(None)
        try:
            code, reason = await session.run(Connected(self.url, reconnect))
        finally:
            self.session = None
        if self.closed:
            self.events.emit("disconnected", Disconnected(1000, "client closed", False))
            return "none", code, reason, None, None
        policy = close_policy(code)
        if code == 1008 and reason == TOKEN_EXPIRED and callable(self.token):
            policy = "normal"  # a token function can give a fresh one: come back with it
        self.events.emit("disconnected", Disconnected(code, reason, policy != "none"))
        return policy, code, reason, None, None

    def _give_up(self, error: ClientError) -> None:
        """No more reconnects: fail what waits and end every subscription with `error`."""
        self.closed = True
        assert self._first is not None
        if not self._first.done():
            self._first.set_exception(error)
        self._fail_held(error)
        for state in self.channels.values():
            for sub in state.subscriptions:
                sub.inbox.end(error)


def connect(
    url: str,
    *,
    min_delay: float = 0.5,
    max_delay: float = 20.0,
    factor: float = 2.0,
    long_delay: float = 30.0,
    ping_interval: float = 25.0,
    ping_timeout: float = 10.0,
    open_timeout: float = 10.0,
    max_queued: int = 1000,
    max_queue: int = 256,
    fail_fast: bool = True,
    random: Callable[[], float] | None = None,
    token: TokenSource | None = None,
    compression: bool = True,
) -> Client:
    """A client for `url`; use it as `async with connect(url) as client:`.

    - min_delay, max_delay, factor: the reconnect backoff (full jitter), seconds;
    - long_delay: after close 4008/1013/4029 or HTTP 503/429, wait between half of it
      and all of it (or the server's Retry-After plus up to half of it);
    - ping_interval, ping_timeout: the heartbeat; 0 turns it off;
    - max_queued: publishes held while disconnected or paused (more raise QueueFull);
    - max_queue: messages buffered per subscription before the client stops reading;
    - fail_fast: entering the context raises ConnectFailed if the first attempt fails
      (False: keep retrying in the background, as after a disconnect);
    - random: the jitter's random source, to make tests deterministic;
    - token: a JWT (or the admin token) sent in an `auth` op first on every
      connection; or a function, sync or async, called before each connection
      for a fresh one (then a close 1008 "token expired" reconnects with a new
      token instead of giving up). Not put in the URL, so it stays out of logs;
    - compression: offer permessage-deflate (the server compresses large messages
      of channels with `compression = "deflate"`, docs/channels.md); False sends
      no offer, and every frame arrives plain.
    """
    return Client(
        url,
        min_delay=min_delay,
        max_delay=max_delay,
        factor=factor,
        long_delay=long_delay,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        open_timeout=open_timeout,
        max_queued=max_queued,
        max_queue=max_queue,
        fail_fast=fail_fast,
        random=random,
        token=token,
        compression=compression,
    )
