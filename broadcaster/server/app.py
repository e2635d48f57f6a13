"""The server: wires the core, the broker, the WebSocket and HTTP adapters, and sources.

`Broadcaster` is both what `broadcaster serve` runs and the API for running
the server inside an existing asyncio application::

    async with Broadcaster(Config.build(server={"port": 8765})) as server:
        await server.publish("tickers.demo", {"symbol": "AAPL", "price": 189.2})

Every task it starts (the WebSocket server's, the broker's, the guarded
loops of server/loops.py, the sources, the HTTP publish API) is ended by
`stop()`, so an application that stops it leaves nothing behind on its loop;
a `start()` that fails ends what it had started before raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import http
import itertools
import logging
import secrets
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Response

from broadcaster.brokers.base import Broker, MessageFactory
from broadcaster.brokers.memory import MemoryBroker
from broadcaster.codes import CloseCode
from broadcaster.config import Config
from broadcaster.core.channel import Channel
from broadcaster.core.hub import Hub
from broadcaster.core.ops import validate_channel
from broadcaster.core.strategies import Strategy
from broadcaster.core.subscription import Subscription
from broadcaster.errors import (
    ChannelBlocked,
    ChannelRateLimited,
    ConfigError,
    InvalidPublish,
    ServerStateError,
    TooManyChannels,
    UnknownChannel,
)
from broadcaster.metrics import CONTENT_TYPE, Metrics
from broadcaster.security.admin import AdminGate
from broadcaster.security.admission import Admission
from broadcaster.security.auth import Authenticator
from broadcaster.security.channel_budget import ChannelBudget, ChannelBudgets
from broadcaster.security.exposure import exposure_warnings
from broadcaster.security.origins import OriginPolicy
from broadcaster.security.overload import Overload
from broadcaster.security.redact import install as install_log_filter
from broadcaster.server.faults import FaultHook
from broadcaster.server.handshake import EdgeGuard, HandshakeGate
from broadcaster.server.http import HttpEndpoints, respond
from broadcaster.server.keepalive import Keepalive
from broadcaster.server.loops import LoopGuard, Loops
from broadcaster.server.monitor import Monitor
from broadcaster.server.rates import RateWindow
from broadcaster.server.room import RoomWaiters
from broadcaster.server.scheduler import FlushScheduler
from broadcaster.server.session import ClientSession
from broadcaster.server.subscriber import Subscriber
from broadcaster.server.system import STATS_CHANNEL, is_system, with_system_policy
from broadcaster.server.websocket import (
    BroadcasterConnection,
    connection_class,
    deflate_offer,
    deflater,
    frame_text,
)
from broadcaster.sources.base import SourceRunner, build_source

if TYPE_CHECKING:
    import ssl

    from prometheus_client import CollectorRegistry

    # aiohttp (the HTTP API and its streams, ~13 MB of RSS) is imported only when
    # [api] is enabled.
    from broadcaster.server.api import PublishApi
    from broadcaster.workers.identity import WorkerIdentity
    from broadcaster.workers.link import BusLink

__all__ = ["BlockedPublisher", "Broadcaster"]

logger = logging.getLogger("broadcaster")

# Incoming frames websockets buffers per connection before it stops reading
# the socket; a blocked publisher therefore stops being read quickly.
MAX_INCOMING_QUEUE = 16
# Seconds a publisher refused for a blocked channel is told to wait. The block
# ends when the subscriber reads or is cut off as a slow consumer; a short
# retry finds out which without hammering.
BLOCKED_RETRY_AFTER = 1.0
# Slow-consumer disconnects remembered for /stats and the dashboard.
RECENT_SLOW_CONSUMERS = 20
# Seconds a client may take to complete the TLS handshake.
TLS_HANDSHAKE_TIMEOUT = 10.0


class Phase(enum.Enum):
    """Where a server is in its life; `start()` and `stop()` change it."""

    NEW = "new"  # never started, or a start that failed and undid itself
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class BlockedPublisher(Protocol):
    """A publisher that wants to hear when its publish waits on a full `block` channel."""

    def channel_blocked(self, channel: Channel) -> None: ...

    def channel_unblocked(self, channel: Channel) -> None: ...


class Broadcaster:
    """One broadcaster server: start it, publish into it, stop it.

    `registry` is the prometheus-client registry its metrics go to (a new
    one by default, never the global one: two servers in one process keep
    separate metrics); GET /metrics serves it. `fault_hook` is for tests
    only (server/faults.py): it makes a named background loop fail.

    `worker` makes it one worker of `broadcaster serve --workers N`
    (workers/): it connects to the supervisor's local bus first (`link`),
    shares channels through it (`BusBroker`, when `[broker] kind` is
    "memory") and counts per-address limits across the workers. If the bus
    is lost, the worker stops itself (`bus_lost`). Without it nothing changes.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        registry: CollectorRegistry | None = None,
        fault_hook: FaultHook | None = None,
        worker: WorkerIdentity | None = None,
    ) -> None:
        self.config = config if config is not None else Config()
        self.worker = worker
        self.link: BusLink | None = None
        """The connection to the local bus (only with `worker`), started first, stopped last."""
        self.bus_lost = False
        """Set when this worker stopped itself because the local bus went away."""
        self._lost_watch: asyncio.Task[None] | None = None
        self._lost_stop: asyncio.Task[None] | None = None
        self._start_ended = asyncio.Event()
        """Set when start() returns or raises: the lost-bus watcher stops only a started server."""
        self.framer: Callable[[bytes], bytes] = frame_text
        self.sessions: dict[int, Subscriber] = {}
        """Every client connection, whatever its transport (WebSocket, SSE, NDJSON stream)."""
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self.api: PublishApi | None = None
        self.phase = Phase.NEW
        self._fault_hook = fault_hook
        self.loops = Loops(fault_hook)
        """The background loops' guards: their errors and state (/stats, /metrics, /healthz)."""
        self._teardown: contextlib.AsyncExitStack | None = None
        self._stopped = asyncio.Event()
        self.started_at = 0.0
        self.started_mono = 0.0
        self.metrics = Metrics(self, registry)
        self.recent_slow_consumers: deque[dict[str, Any]] = deque(maxlen=RECENT_SLOW_CONSUMERS)
        self.rates = RateWindow()
        """Recent rates of the channels and totals /stats shows (read lazily there)."""
        # Ingress protection (broadcaster/security/): decisions, applied by the adapters.
        cfg = self.config
        self.origins = OriginPolicy(
            cfg.server.allowed_origins, allow_no_origin=cfg.server.allow_no_origin
        )
        limits = cfg.limits
        self.overload = Overload(limits.max_loop_lag, limits.shed_after, limits.shed_fraction)
        self.admission = Admission(limits, self.overload)
        self.channel_budgets = ChannelBudgets(limits)
        self.auth = Authenticator(cfg.auth, admin_token=cfg.admin.token)
        self.admin_gate = AdminGate(
            self.auth, has_token=bool(cfg.admin.token), open_=cfg.admin.open
        )
        self.gate = HandshakeGate(self)
        self.edge = EdgeGuard(self)
        self.ssl: ssl.SSLContext | None = None
        self.shed = 0
        """Connections closed with 1013 by load shedding since start."""
        self._submit: Callable[[Channel, Any], asyncio.Future[int]] | None = None
        """The broker's `submit`, when it takes publishes without waiting (`BusBroker`)."""
        self.pipelined = False
        """Whether a connection may send publishes without waiting for each one's ack
        (`submit`): true with the local bus of `serve --workers`, where a publish
        is a round trip; false with the memory broker (a publish is done when it
        returns) and with Redis."""

    # --- lifecycle -------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @staticmethod
    def wall_clock() -> float:
        return time.time()

    @property
    def started(self) -> bool:
        """Whether start() has bound the port (it stays true after stop())."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with port 0)."""
        if self._server is None:
            raise ServerStateError("the server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.server.tls_cert else "ws"
        return f"{scheme}://{self.config.server.host}:{self.port}/ws"

    @property
    def api_url(self) -> str:
        """The HTTP publish endpoint, `http://HOST:PORT/api/publish` (needs `[api] enabled`)."""
        if self.api is None:
            raise ServerStateError("the HTTP publish API is not running ([api] enabled = false)")
        return self.api.url

    async def start(self) -> None:
        """Start the broker, bind the port, start the loops, the HTTP API and the sources.

        If a step fails (the port is taken, the broker refuses), what the
        earlier steps started is stopped again, newest first, and the
        step's own error is raised: nothing is left running, `stop()`
        returns at once, and `start()` may be called again.
        """
        if self.phase is not Phase.NEW:
            raise ServerStateError(
                f"the server is already {self.phase.value}; a Broadcaster starts once "
                "(create a new one to start again)"
            )
        self.phase = Phase.STARTING
        teardown = contextlib.AsyncExitStack()
        try:
            await self._start(teardown)
        except BaseException:
            self._start_ended.set()
            try:
                await teardown.aclose()
            except Exception:  # the caller must see why the start failed, not this
                logger.exception("stopping what a failed start had started also failed")
            self._server = None
            self.api = None
            self.phase = Phase.NEW
            raise
        self._teardown = teardown
        self.phase = Phase.RUNNING
        self._start_ended.set()

    async def _start(self, teardown: contextlib.AsyncExitStack) -> None:
        """The steps of start(); each pushes onto `teardown` how to undo it, right after it."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        # Before anything logs: no credential in any log line, at any level.
        install_log_filter((cfg.admin.token, cfg.auth.secret, *cfg.api.keys))
        if cfg.server.tls_cert:
            from broadcaster.security.tls import server_context

            self.ssl = server_context(cfg.server.tls_cert, cfg.server.tls_key, source=cfg.source)
        self.started_at = self.wall_clock()
        self.started_mono = self._loop.time()
        if self.worker is not None:
            await self._start_link(teardown)
        self.loops = Loops(self._fault_hook)
        self.scheduler = FlushScheduler(self._loop, self.loops.guard("flush"))
        self.rooms = RoomWaiters(self._loop)
        compresses = cfg.policies.compresses()
        self.factory = MessageFactory(
            self.framer, self._loop.time, deflater if compresses else None
        )
        self.hub = Hub(
            with_system_policy(cfg.policies),
            epoch=secrets.token_hex(6),
            on_channel_created=self._channel_created,
            on_channel_active=self._channel_active,
            on_channel_idle=self._channel_idle,
            on_slow_consumer=self._slow_consumer,
            on_channel_freed=self._channel_freed,
            idle_ttl=cfg.server.idle_channel_ttl,
        )
        self.broker: Broker = self._make_broker()
        self._submit = getattr(self.broker, "submit", None)
        self.pipelined = self._submit is not None
        await self.broker.start()
        teardown.push_async_callback(self.broker.stop)
        self.http = HttpEndpoints(self)
        if self.http.view is not None:
            teardown.push_async_callback(self.http.view.stop)
        self.http.add_route("/metrics", self._metrics_page, admin=True)
        self.monitor = Monitor(self, interval=cfg.server.stats_interval)
        self.sources = SourceRunner(self.publish)
        sources = [(build_source(sc, cfg.source), sc.kind) for sc in cfg.sources]
        self._server = await serve(
            self._handle,
            cfg.server.host,
            cfg.server.port,
            # Negotiated only when some channel compresses (server/websocket.py).
            compression=None,
            extensions=[deflate_offer()] if compresses else None,
            max_size=cfg.server.max_message_size,
            max_queue=MAX_INCOMING_QUEUE,
            write_limit=(0, 0),
            # Keepalive is one sweep for all connections (server/keepalive.py).
            ping_interval=None,
            ping_timeout=None,
            close_timeout=cfg.server.close_timeout,
            process_request=self.edge.process_request,
            create_connection=connection_class(self.edge),
            start_serving=False,
            # Workers share the port: the kernel spreads connections (workers/supervisor.py).
            reuse_port=self.worker is not None,
            **self._tls_options(),
        )
        teardown.push_async_callback(self._close_server, self._server)
        self._cap_send_buffers(self._server, cfg.server.socket_send_buffer)
        await self._server.start_serving()
        teardown.push_async_callback(self.loops.stop)
        self.loops.start("sweep", self._sweep)
        self.monitor.start(self.loops)
        self.keepalive = Keepalive(self, cfg.server.ping_interval)
        self.keepalive.start(self.loops)
        # Stopped before the loops: the sweeper keeps cutting off slow consumers while draining.
        teardown.push_async_callback(self._close_connections)
        if cfg.api.enabled:
            from broadcaster.server.api import PublishApi
            from broadcaster.server.sse import StreamEndpoints

            api = PublishApi(self, cfg.api, streams=StreamEndpoints(self))
            await api.start()
            self.api = api
            teardown.push_async_callback(api.stop)
        teardown.push_async_callback(self.sources.stop)
        for source, kind in sources:
            self.sources.start(source, kind)
        if self.worker is None:  # the supervisor logs one line for all its workers
            logger.info("%s", self.http.startup_line())
        if self.worker is None or self.worker.index == 0:
            for warning in exposure_warnings(cfg):
                logger.warning("exposed on %s: %s", cfg.server.host, warning)

    async def _start_link(self, teardown: contextlib.AsyncExitStack) -> None:
        """Join the local bus (first, so it is stopped last) and share admission counts."""
        from broadcaster.security.admission import RemoteHoldings
        from broadcaster.workers.link import BusLink

        assert self.worker is not None
        link = BusLink(self.worker, self._loop.time)
        holdings = RemoteHoldings()
        admission = self.admission

        def remote_admitted(header: dict[str, Any], payload: bytes) -> None:
            admission.remote(
                holdings,
                header.get("k"),
                int(header["d"]),
                self._loop.time(),
                sync=bool(header.get("sync")),
            )

        def admitted(key: str | None, delta: int) -> None:
            if link.connected:
                link.send({"t": "a", "k": key, "d": delta})

        link.on("A", remote_admitted)
        await link.start()
        teardown.push_async_callback(link.stop)
        self.link = link
        admission.share(holdings, admitted)
        teardown.callback(admission.share, None, None)
        self._lost_watch = self._loop.create_task(self._watch_link(link), name="bus-link-watch")
        teardown.callback(self._lost_watch.cancel)

    async def _watch_link(self, link: BusLink) -> None:
        """The bus is gone (the supervisor died): nothing reaches this worker any more, stop."""
        await link.lost.wait()
        await self._start_ended.wait()  # stop() refuses while start() runs
        if self.phase is not Phase.RUNNING:
            return  # the start failed (and undid itself), or the server is stopping already
        logger.error(
            "worker %s: the local bus is gone (the supervisor stopped?); stopping this worker",
            link.identity.index,
        )
        self.bus_lost = True
        # Its own task: stop() cancels this watcher.
        self._lost_stop = self._loop.create_task(self.stop(), name="stop-after-bus-lost")

    @staticmethod
    def _cap_send_buffers(server: Server, size: int) -> None:
        """Cap SO_SNDBUF of every client socket, so the kernel cannot absorb megabytes
        for a client that stopped reading.

        Set on the listening sockets before they listen: Linux copies it (and the
        lock that turns autotuning off) into every socket they accept. Setting it
        per accepted socket made each connection create and keep a Python socket
        object (~1.6 KB per idle connection).
        """
        if not size:
            return  # 0: the kernel's autotuning
        for sock in server.sockets:
            with contextlib.suppress(OSError):  # a platform without the option
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def _tls_options(self) -> dict[str, Any]:
        """websockets' serve() options for TLS (none without it)."""
        if self.ssl is None:
            return {}
        # A client that opens TCP and never finishes the TLS handshake holds
        # a socket; asyncio's default would let it for 60 s.
        return {"ssl": self.ssl, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT}

    def _make_broker(self) -> Broker:
        kind = self.config.broker.kind
        if kind == "memory" and self.link is not None:
            from broadcaster.brokers.bus import BusBroker

            return BusBroker(
                self.link,
                self.factory,
                self._loop.time,
                channels=self.hub.channels.get,
                idle_ttl=self.config.server.idle_channel_ttl,
            )
        if kind == "memory":
            return MemoryBroker(self.factory, self._loop.time)
        if kind == "redis":
            # Imported here: the memory-only server never loads the Redis client.
            from broadcaster.brokers.redis import RedisBroker

            return RedisBroker(
                self.config.broker,
                self.factory,
                self._loop.time,
                idle_ttl=self.config.server.idle_channel_ttl,
            )
        raise ConfigError(self.config.source, "[broker] kind", '"memory" | "redis"', kind)

    def _metrics_page(self, query: dict[str, list[str]]) -> Response:
        return respond(http.HTTPStatus.OK, self.metrics.render(), CONTENT_TYPE)

    def _channel_created(self, channel: Channel) -> None:
        channel.on_room = self._room_returned
        channel_created = getattr(self.broker, "channel_created", None)
        if channel_created is not None and not is_system(channel.name):
            channel_created(channel)  # BusBroker: other workers' full subscribers count here

    def _room_returned(self, channel: Channel) -> None:
        """A block channel has room again: wake a local publisher, let the broker read on."""
        self.rooms.wake(channel)
        self.broker.channel_room(channel)

    # System channels are local to this node (server/system.py): the broker never hears of them.

    def _channel_active(self, channel: Channel) -> None:
        if not is_system(channel.name):
            self.broker.channel_active(channel)

    def _channel_idle(self, channel: Channel) -> None:
        if not is_system(channel.name):
            self.broker.channel_idle(channel)

    def _channel_freed(self, channel: Channel) -> None:
        self.rates.forget(channel.name)
        if not is_system(channel.name):
            self.broker.channel_freed(channel)

    def _slow_consumer(self, sub: Subscription, now: float) -> None:
        """Remember who was cut off and how far behind, for /stats and the dashboard."""
        session = self.sessions.get(sub.outbox.id)
        self.recent_slow_consumers.appendleft(
            {
                "id": sub.outbox.id,
                "remote": session.remote if session is not None else None,
                "channel": sub.channel.name,
                "depth": sub.depth,
                "limit": sub.flow.high,
                "dropped": sub.dropped,
                "seconds_above": round(sub.slow.seconds_above(now), 3),
                "at": self.wall_clock(),
            }
        )

    async def stop(self) -> None:
        """Stop accepting, drain queues up to shutdown_timeout, close everyone with 1001.

        Idempotent: a second call waits for the first to finish; without a
        successful start() it returns at once (a failed start stopped what
        it had started itself).
        """
        if self.phase is Phase.STARTING:
            raise ServerStateError("stop() was called while start() runs; await start() first")
        if self.phase is Phase.STOPPING:
            await self._stopped.wait()
            return
        teardown = self._teardown
        if self.phase is not Phase.RUNNING or teardown is None:
            return
        self.phase = Phase.STOPPING
        self._teardown = None
        if self._server is not None:
            self._server.server.close()  # stop accepting; pending handshakes get 503
        try:
            # Newest first: sources, the HTTP API, the connections (drained,
            # then 1001), the loops, the WebSocket server, the broker.
            await teardown.aclose()
        finally:
            self.phase = Phase.STOPPED
            self._stopped.set()
        logger.info("broadcaster stopped")

    async def _close_connections(self) -> None:
        """Drain the queues (when stopping, not when a start failed), then close with 1001.

        A client still behind at the end of the drain (one that reads, but
        slowly) has its queue dropped: only what its socket already holds
        goes out before the close frame. It is then given as long as it
        keeps taking bytes, up to another `shutdown_timeout`, to read its
        close frame (server/subscriber.py `close(linger=...)`); one that
        stopped reading is aborted after `close_timeout`.
        """
        server_cfg = self.config.server
        if self.phase is Phase.STOPPING:
            deadline = self._loop.time() + server_cfg.shutdown_timeout
            # Polled rather than signalled: a notification would cost the hot path
            # a check on every flush for an event that happens once per process.
            while self._loop.time() < deadline and any(  # noqa: ASYNC110
                s.outbox.depth for s in self.sessions.values()
            ):
                await asyncio.sleep(0.02)
        # Refused before the closes below make room: a waiting publisher learns
        # its message was not published, instead of it going out to nobody.
        self.rooms.refuse_all()
        for session in list(self.sessions.values()):
            behind = session.outbox.depth > 0
            session.close(
                CloseCode.GOING_AWAY,
                "server shutting down",
                flush=not behind,
                linger=server_cfg.shutdown_timeout if behind else 0.0,
            )

    async def _close_server(self, server: Server) -> None:
        """Close the WebSocket server once its connections have closed (bounded)."""
        server.close(close_connections=False)
        cfg = self.config.server
        # Closing handshakes take up to close_timeout, or up to a lingering close (above).
        timeout = cfg.shutdown_timeout + cfg.close_timeout + 1.0
        try:
            await asyncio.wait_for(server.wait_closed(), timeout)
        except TimeoutError:
            logger.warning("some connections did not close in time")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully.

        The handlers are installed before `start()`, which logs the startup
        line: a supervisor that signals as soon as it reads that line gets a
        graceful stop, not the default handler's kill.
        """
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()  # a failed start undoes itself and raises
            try:
                # Or the server stopped itself (a worker whose local bus is gone).
                waits = [loop.create_task(stop.wait()), loop.create_task(self._stopped.wait())]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()
            finally:
                logger.info(
                    "shutting down: draining up to %.1f s", self.config.server.shutdown_timeout
                )
                await self.stop()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    # --- publishing --------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        publisher: BlockedPublisher | None = None,
        block_timeout: float | None = None,
        budget: ChannelBudget | None = None,
    ) -> int:
        """Publish `data` to `channel`; returns its seq. Waits for room on `block` channels.

        `block_timeout` bounds that wait (seconds; None waits as long as it takes):
        when no room appears in time nothing is published and `ChannelBlocked`
        is raised with `retry_after`. Only the wait is bounded, never the
        broker's publish itself, so a timeout never leaves a message half-sent.
        `publisher` hears when the publish starts and stops waiting. `budget`
        (a WebSocket client's) pays for the channel if the publish creates one
        that outlives it (`check_new_channel`).
        Raises `PublishError` subclasses carrying PROTOCOL.md codes.
        """
        target = self._publish_target(channel, budget)
        # Pinned until the broker took it: a channel that keeps no messages is
        # freed right after (Hub.unpin), never while a publish is under way.
        self.hub.pin(target)
        try:
            if target.blocking and self.rooms.must_wait(target):
                if block_timeout is not None and block_timeout <= 0:
                    raise ChannelBlocked(channel, 0.0, retry_after=BLOCKED_RETRY_AFTER)
                if publisher is not None:
                    publisher.channel_blocked(target)
                waited_from = self._loop.time()
                try:
                    if block_timeout is None:
                        await self.rooms.wait(target)
                    else:
                        async with asyncio.timeout(block_timeout):
                            await self.rooms.wait(target)
                except TimeoutError:
                    raise ChannelBlocked(
                        channel, block_timeout or 0.0, retry_after=BLOCKED_RETRY_AFTER
                    ) from None
                finally:
                    target.counters.blocked.observe(self._loop.time() - waited_from)
                    if publisher is not None:
                        publisher.channel_unblocked(target)
            return await self.broker.publish(target, data)
        finally:
            self.hub.unpin(target)

    def submit(
        self, channel: str, data: Any, *, budget: ChannelBudget | None = None
    ) -> asyncio.Future[int]:
        """Send a publish to the broker now; the future gets its seq (`pipelined` only).

        The same checks as `publish`, raised here; the broker's failure (a
        lost bus) fails the future. Publishes submitted one after the other
        get their seqs in that order, so a WebSocket connection can have
        several in flight and still publish in op order (server/pipeline.py).
        Not for `block` channels, whose publish may wait for room: use
        `publish`. The channel stays pinned until the future is done.
        """
        submit = self._submit
        if submit is None:
            raise ServerStateError(f"the {self.broker.name} broker does not pipeline publishes")
        existing = self.hub.channels.get(channel)
        policy = existing.policy if existing is not None else self.hub.policies.resolve(channel)
        if policy is not None and policy.strategy is Strategy.BLOCK:
            raise ServerStateError(f"{channel!r} is a block channel: publish waits for room")
        target = self._publish_target(channel, budget)
        hub = self.hub
        hub.pin(target)
        try:
            ack = submit(target, data)
        except BaseException:
            hub.unpin(target)
            raise
        ack.add_done_callback(lambda _ack: hub.unpin(target))
        return ack

    def _publish_target(self, channel: str, budget: ChannelBudget | None) -> Channel:
        """The channel a publish goes to, after the checks every publish passes."""
        if self._server is None or self.phase is Phase.STOPPED:
            raise ServerStateError("publish needs a started server")
        problem = validate_channel(channel)
        if problem:
            raise InvalidPublish(problem)
        self.check_new_channel(channel, budget, publish=True)
        target = self.hub.channel(channel, self._loop.time())
        if target is None:
            raise UnknownChannel(
                f"channel {channel!r} matches no [channels] entry and strict_channels is on"
            )
        return target

    def at_channel_cap(self, name: str) -> bool:
        """Whether a publish to `name` would now be refused by `max_channels` (nothing counted).

        A connection with publishes in flight asks this first: their channels
        are pinned until acked, where one at a time a channel that keeps no
        messages would already be freed, so it waits for them (a drain) and
        is judged on what it would have been judged on without pipelining.
        """
        channels = self.hub.channels
        cap = self.config.limits.max_channels
        return bool(cap) and len(channels) >= cap and name not in channels and name != STATS_CHANNEL

    def check_new_channel(
        self, name: str, budget: ChannelBudget | None = None, *, publish: bool = False
    ) -> None:
        """Raise (counted) if creating `name` now is refused: over the creator's
        budget (`ChannelRateLimited`) or one channel too many (`TooManyChannels`).

        A publish pays only for a channel that keeps messages: any other is
        freed as soon as the publish is done, so it holds no slot.
        """
        channels = self.hub.channels
        # $sys.stats stays reachable (the dashboard); other $sys.* names count like any.
        if name in channels or name == STATS_CHANNEL:
            return
        if budget is not None:
            policy = self.hub.policies.resolve(name)
            if policy is not None and (policy.keeps_messages or not publish):
                overspent = budget.spend(self._loop.time())
                if overspent is not None:
                    self.metrics.refused(overspent.reason)
                    raise ChannelRateLimited(
                        overspent.message, retry_after=round(overspent.retry_after, 3) or 0.001
                    )
        cap = self.config.limits.max_channels
        if cap and len(channels) >= cap:
            self.metrics.refused("max_channels")
            raise TooManyChannels(
                f"channel {name!r} does not exist and this server holds {cap} channels, "
                "the most allowed ([limits] max_channels)"
            )

    # --- connections --------------------------------------------------------------

    def _handle(self, ws: ServerConnection) -> Coroutine[Any, Any, None]:
        """websockets' connection handler: set the session up, then hand back its read
        loop for the handler task to await. Not a coroutine itself, so an idle
        connection's suspended chain is one frame shorter (~230 bytes, S4)."""
        assert isinstance(ws, BroadcasterConnection)
        session = ClientSession(self, ws, self.next_session_id())
        ws.session = session
        # The handshake's headers are not needed any more. websockets' parser
        # keeps the request object alive for the connection's life, so empty its
        # headers in place: about 3 KB per idle connection.
        if ws.request is not None:
            ws.request.headers.clear()
        ws.response = None
        # The future the handshake waited on is done and never read again (144 bytes).
        ws.request_rcvd = None  # type: ignore[assignment]
        self.sessions[session.id] = session
        self.hub.add_outbox(session.outbox)
        session.authenticate_handshake()
        return session.run()

    def next_session_id(self) -> int:
        """A connection id, unique in this server whatever the transport."""
        return next(self._ids)

    def forget(self, session: Subscriber) -> None:
        self.sessions.pop(session.id, None)

    def lag_sampled(self, lag: float, now: float) -> None:
        """One event-loop lag reading: update the overload state, shed connections if due.

        Newest first, admin connections never (security/overload.py says why).
        """
        overload = self.overload
        overload.sample(lag, now)
        count = overload.to_shed(len(self.sessions), now)
        if not count:
            return
        shed = 0
        for session in reversed(list(self.sessions.values())):
            if shed >= count:
                break
            if session.closing or session.is_admin:
                continue
            self.metrics.refused("overload")
            session.close(CloseCode.TRY_AGAIN_LATER, "server overloaded")
            shed += 1
        self.shed += shed
        logger.warning(
            "event-loop lag %.3f s above %.3f s for %.1f s: shed %d connections (1013)",
            lag,
            overload.max_lag,
            now - (overload.since or now),
            shed,
        )

    async def _sweep(self, guard: LoopGuard) -> None:
        """Close slow consumers; runs often enough to act within timeout + a tenth of it."""
        timeouts = [self.config.policies.defaults.slow_consumer_timeout] + [
            p.slow_consumer_timeout for _, p in self.config.policies.entries
        ]
        interval = min(0.25, max(0.01, min(timeouts) / 10))
        loop = self._loop
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            # Two steps, guarded apart: a failure in one must not starve the other.
            guard.run(self._close_slow_consumers, now)
            # A bounded share of the idle candidates per tick (Hub.sweep_idle's budget).
            guard.run(self._free_idle_channels, now)

    def _free_idle_channels(self, now: float) -> None:
        freed = self.hub.sweep_idle(now)
        if freed:
            logger.debug("freed %d idle channels", len(freed))

    def _close_slow_consumers(self, now: float) -> None:
        # Its own function: nothing stays referenced from the sleeping sweeper.
        for outbox in self.hub.tick(now):
            session = self.sessions.get(outbox.id)
            if session is not None:
                logger.info("slow consumer %s (%s): closing with 4008", session.id, session.remote)
                session.close(CloseCode.SLOW_CONSUMER, "slow consumer", flush=False)
