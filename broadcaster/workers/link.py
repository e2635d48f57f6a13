"""A worker's connection to the local bus (workers/bus.py).

One per worker process, started first and stopped last by `Broadcaster`.
Frames are handled in arrival order, synchronously, in `data_received`: a
channel's messages are fanned out in the order the bus wrote them, and a
subscribe reply is applied before any message the bus sent after it (the
seam `BusBroker.prepare` relies on). What a frame means is its handler's
business (`on(kind, handler)`); the link itself answers gathers and keeps
`workers_up()` current.

`lost` is set when the connection ends without `stop()` (the supervisor
died, or cut this worker off): the worker cannot publish or learn of other
workers' messages any more, so `Broadcaster` stops itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from broadcaster.errors import BusUnavailable
from broadcaster.workers.framing import FrameDecoder, FrameError, encode
from broadcaster.workers.identity import WorkerIdentity

__all__ = ["CONNECT_TIMEOUT", "BusLink", "FrameHandler"]

logger = logging.getLogger("broadcaster.bus")

# Seconds `start()` waits for the bus to connect and welcome this worker.
CONNECT_TIMEOUT = 5.0
# Frames kept for a handler not registered yet (the bus's welcome tells a new
# worker what the others hold before its broker is built).
EARLY_FRAMES = 100_000

FrameHandler = Callable[[dict[str, Any], bytes], None]


class _Gather:
    """One pending `gather`: the answers so far and who is still expected."""

    __slots__ = ("answers", "done", "expected")

    def __init__(self, expected: set[int], done: asyncio.Future[None]) -> None:
        self.expected = expected
        self.answers: dict[int, bytes | None] = {}
        self.done = done

    def answer(self, worker: int, body: bytes | None) -> None:
        self.answers[worker] = body
        self.expected.discard(worker)
        self.check()

    def check(self) -> None:
        if not self.expected and not self.done.done():
            self.done.set_result(None)


class _Protocol(asyncio.Protocol):
    def __init__(self, link: BusLink) -> None:
        self.link = link
        self.decoder = FrameDecoder()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except FrameError as exc:
            logger.error("bus link: bad frame from the bus (%s); disconnecting", exc)
            self.link._abort()
            return
        handle = self.link._handle
        for header, payload in frames:
            handle(header, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._connection_lost(exc)


class BusLink:
    """Connect, say hello, route frames; publish/subscribe are `BusBroker`'s."""

    def __init__(self, identity: WorkerIdentity, clock: Callable[[], float]) -> None:
        self.identity = identity
        self.clock = clock
        self.lost = asyncio.Event()
        """Set when the bus connection is gone without `stop()` (the supervisor died)."""
        self._transport: asyncio.Transport | None = None
        self._handlers: dict[str, FrameHandler] = {
            "W": self._workers,
            "G": self._asked,
            "R": self._answered,
        }
        self._up: frozenset[int] = frozenset()
        self._welcomed: asyncio.Future[None] | None = None
        self._ids = itertools.count(1)
        self._gathers: dict[int, _Gather] = {}
        self._gather_handler: Callable[[str], Awaitable[bytes]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._on_lost: list[Callable[[], None]] = []
        self._early: list[tuple[dict[str, Any], bytes]] = []
        self._out: list[bytes] = []

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Connect and say hello; `BusUnavailable` if the bus is not there or does not answer."""
        loop = asyncio.get_running_loop()
        path = self.identity.bus_path
        self._welcomed = loop.create_future()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                transport, _ = await loop.create_unix_connection(lambda: _Protocol(self), str(path))
                self._transport = transport
                self.send({"t": "hello", "w": self.identity.index})
                await self._welcomed
        except BaseException as exc:
            self._abort()
            if not isinstance(exc, OSError | TimeoutError):
                raise
            raise BusUnavailable(
                f"worker {self.identity.index}: the local bus at {path} is not reachable "
                f"({type(exc).__name__}: {exc})"
            ) from None

    async def stop(self) -> None:
        """Close the connection (not a loss: `lost` stays clear); pending gathers end."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        self._flush()  # what was sent before stop() still goes (an unsubscribe, a release)
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._end_gathers()

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def workers_up(self) -> frozenset[int]:
        """The workers connected to the bus now (this one included while connected)."""
        return self._up

    def on(self, kind: str, handler: FrameHandler) -> None:
        """Handle frames of type `kind` (BusBroker: messages, replies; Admission: deltas).

        Frames of that type that arrived before are handled now, in order.
        """
        self._handlers[kind] = handler
        early = [frame for frame in self._early if frame[0].get("t") == kind]
        if early:
            self._early = [frame for frame in self._early if frame[0].get("t") != kind]
            for header, payload in early:
                self._handle(header, payload)

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` (synchronously) when the connection is lost, before `lost` is set."""
        self._on_lost.append(callback)

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        """Write one frame; `BusUnavailable` when the connection is gone."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise BusUnavailable(f"worker {self.identity.index}: the local bus connection is gone")
        out = self._out
        if not out:
            asyncio.get_running_loop().call_soon(self._flush)
        out.append(encode(header, payload))

    def _flush(self) -> None:
        """Write the frames sent since the last flush: one system call per loop iteration."""
        out, self._out = self._out, []
        transport = self._transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def next_id(self) -> int:
        return next(self._ids)

    # --- gather -------------------------------------------------------------------

    def on_gather(self, handler: Callable[[str], Awaitable[bytes]]) -> None:
        """What this worker answers when any worker gathers `what` (e.g. "stats")."""
        self._gather_handler = handler

    async def gather(self, what: str, timeout: float = 1.0) -> dict[int, bytes | None]:  # noqa: ASYNC109
        """Ask every worker 0..count-1 (this one included) for `what`.

        None for a worker that is down or did not answer within `timeout`
        seconds (or whose handler failed). Without the bus, only this
        worker's own answer is there.
        """
        answers: dict[int, bytes | None] = dict.fromkeys(range(self.identity.count))
        if not self.connected:
            answers[self.identity.index] = await self._answer_locally(what)
            return answers
        request = self.next_id()
        pending = _Gather(set(self._up), asyncio.get_running_loop().create_future())
        self._gathers[request] = pending
        try:
            self.send({"t": "g", "i": request, "what": what})
            pending.check()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await pending.done
        except BusUnavailable:
            pass
        finally:
            self._gathers.pop(request, None)
        answers.update(pending.answers)
        return answers

    async def _answer_locally(self, what: str) -> bytes | None:
        handler = self._gather_handler
        if handler is None:
            return None
        try:
            return await handler(what)
        except Exception:
            logger.exception("gather %r: this worker's answer failed", what)
            return None

    def _asked(self, header: dict[str, Any], payload: bytes) -> None:
        task = asyncio.get_running_loop().create_task(
            self._answer(int(header["a"]), header["i"], str(header["what"]))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, asker: int, request: Any, what: str) -> None:
        body = await self._answer_locally(what)
        reply: dict[str, Any] = {"t": "r", "a": asker, "i": request}
        if body is None:
            reply["x"] = 1
        with contextlib.suppress(BusUnavailable):
            self.send(reply, body or b"")

    def _answered(self, header: dict[str, Any], payload: bytes) -> None:
        pending = self._gathers.get(int(header["i"]))
        if pending is not None:
            pending.answer(int(header["w"]), None if header.get("x") else payload)

    def _end_gathers(self) -> None:
        for pending in self._gathers.values():
            pending.expected.clear()
            pending.check()

    # --- frames -------------------------------------------------------------------

    def _workers(self, header: dict[str, Any], payload: bytes) -> None:
        self._up = frozenset(int(w) for w in header["up"])
        for pending in self._gathers.values():
            pending.expected &= self._up
            pending.check()
        welcomed = self._welcomed
        if welcomed is not None and not welcomed.done() and self.identity.index in self._up:
            welcomed.set_result(None)

    def _handle(self, header: dict[str, Any], payload: bytes) -> None:
        handler = self._handlers.get(header.get("t", ""))
        if handler is None:
            if len(self._early) < EARLY_FRAMES:
                self._early.append((header, payload))
            else:
                logger.error("bus link: unexpected frame %r; ignored", header.get("t"))
            return
        try:
            handler(header, payload)
        except Exception:
            # One bad frame must not stop the others: log it with its type.
            logger.exception("bus link: handling a %r frame failed", header.get("t"))

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._up = frozenset()
        self._end_gathers()
        welcomed = self._welcomed
        if welcomed is not None and not welcomed.done():
            welcomed.set_exception(ConnectionError("the bus closed the connection"))
        if self._stopping:
            return
        for callback in self._on_lost:
            try:
                callback()
            except Exception:
                logger.exception("bus link: a lost-connection callback failed")
        self.lost.set()
