"""Subscriber worker processes and the coordinator's handle on them.

Subscribers are spread over several processes so the load client is less often
the bottleneck. Each worker runs its own event loop (uvloop), connects its share
of subscribers, and talks to the coordinator over a pipe in a fixed sequence:

    worker -> started      coordinator -> connect
    worker -> ready        coordinator -> go(epoch)      (publishing starts)
                           coordinator -> stop(final seqs, drain)
    worker -> result       (then closes its connections and exits)

While running, each worker also writes a few numbers into a shared array (the
*board*): messages received, connections open, and per channel the lowest seq its
fast subscribers have reached, which closed-loop publishers use to stay at most
``lead`` messages ahead of the slowest fast subscriber. Every wait is bounded and
a worker whose coordinator disappears (pipe closed) exits by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import multiprocessing
import os
import resource
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from loadtest import reaper
from loadtest.accounting import SubscriberRecord, Timeline
from loadtest.clients import Subscriber, make_subscriber
from loadtest.scenarios import SubscriberSpec

__all__ = ["NO_SUBSCRIBER", "Board", "WorkerError", "WorkerPlan", "WorkerPool", "worker_entry"]

NO_SUBSCRIBER = 1 << 62
"""Board value for a channel on which a worker has no connected fast subscriber."""

_SLOT_RECEIVED = 0
_SLOT_CONNECTED = 1
_FIXED_SLOTS = 2


class WorkerError(RuntimeError):
    """A worker failed, timed out or broke the protocol."""


class Board:
    """Shared int64 counters: per worker, received/connected and min seq per channel."""

    def __init__(self, workers: int, channels: int) -> None:
        self.workers = workers
        self.channels = channels
        self.stride = _FIXED_SLOTS + channels
        ctx = multiprocessing.get_context("spawn")
        self.array: ctypes.Array[ctypes.c_int64] = ctx.RawArray(
            ctypes.c_int64, workers * self.stride
        )
        for w in range(workers):
            for c in range(channels):
                self.array[w * self.stride + _FIXED_SLOTS + c] = NO_SUBSCRIBER

    def publish_worker(
        self, worker: int, received: int, connected: int, mins: Sequence[int]
    ) -> None:
        base = worker * self.stride
        self.array[base + _SLOT_RECEIVED] = received
        self.array[base + _SLOT_CONNECTED] = connected
        for c, value in enumerate(mins):
            self.array[base + _FIXED_SLOTS + c] = value

    def received(self) -> int:
        return sum(self.array[w * self.stride + _SLOT_RECEIVED] for w in range(self.workers))

    def connected(self) -> int:
        return sum(self.array[w * self.stride + _SLOT_CONNECTED] for w in range(self.workers))

    def min_seq(self, channel: int) -> int:
        """Lowest seq reached by any connected fast subscriber of the channel, over all workers."""
        return min(
            self.array[w * self.stride + _FIXED_SLOTS + channel] for w in range(self.workers)
        )


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs, picklable for the ``spawn`` start method."""

    worker: int
    url: str
    client: str
    idle: bool
    subscribers: tuple[SubscriberSpec, ...]
    channels: tuple[str, ...]
    connect_concurrency: int
    connect_timeout: float
    closed_loop: bool
    slow_rcvbuf: int
    lifetime: float
    """Hard limit in seconds on the worker's whole life."""
    latency_every: int = 1
    """Measure latency on one message in this many per subscriber."""
    compression: bool = False
    """Subscribers offer permessage-deflate (websockets client only)."""


def worker_entry(plan: WorkerPlan, conn: Connection, board: Board) -> None:
    """Process entry point: raise the fd limit, run the worker loop on uvloop."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Thousands of long-lived connections make the default cyclic GC rescan
    # them constantly; the client must not be what limits connect rates.
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(_worker(plan, conn, board))
    else:
        uvloop.run(_worker(plan, conn, board))


async def _worker(plan: WorkerPlan, conn: Connection, board: Board) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def on_readable() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("abort",))

    loop.add_reader(conn.fileno(), on_readable)
    subscribers: list[Subscriber] = []
    try:
        async with asyncio.timeout(plan.lifetime):
            _send(conn, ("started", os.getpid()))
            await _run(plan, conn, board, inbox, subscribers)
    except Exception:
        with contextlib.suppress(OSError):
            _send(conn, ("error", traceback.format_exc()))
    finally:
        for sub in subscribers:
            sub.close()
        await asyncio.gather(*(s.wait_closed(2.0) for s in subscribers))


def _send(conn: Connection, msg: tuple[Any, ...]) -> None:
    """Send to the coordinator with the pipe in blocking mode.

    The event loop's reader on the same fd may have made it non-blocking, and a large
    message (the results of thousands of subscribers) would then be cut short.
    """
    os.set_blocking(conn.fileno(), True)
    conn.send(msg)


async def _expect(inbox: asyncio.Queue[tuple[Any, ...]], name: str) -> tuple[Any, ...]:
    msg = await inbox.get()
    if msg[0] != name:
        raise WorkerError(f"expected {name!r} from the coordinator, got {msg[0]!r}")
    return msg


async def _run(
    plan: WorkerPlan,
    conn: Connection,
    board: Board,
    inbox: asyncio.Queue[tuple[Any, ...]],
    subscribers: list[Subscriber],
) -> None:
    await _expect(inbox, "connect")
    timelines = {"fast": Timeline(0), "slow": Timeline(0)}
    for spec in plan.subscribers:
        record = SubscriberRecord(
            spec.index, spec.channel, spec.kind, timelines[spec.kind], plan.latency_every
        )
        subscribers.append(
            make_subscriber(
                plan.client,
                plan.url,
                record,
                spec.slow_rate,
                plan.idle,
                plan.slow_rcvbuf if spec.kind == "slow" else 0,
                compression=plan.compression,
            )
        )
    started_ns = time.time_ns()
    gate = asyncio.Semaphore(plan.connect_concurrency)

    async def open_one(sub: Subscriber) -> None:
        async with gate:
            try:
                await sub.open(plan.connect_timeout)
            except (OSError, TimeoutError, ConnectionError, Exception) as exc:
                sub.record.error = f"{type(exc).__name__}: {exc}"
                sub.record.connected = False
                sub.close()

    await asyncio.gather(*(open_one(s) for s in subscribers))
    done_ns = time.time_ns()
    errors = [s.record.error for s in subscribers if s.record.error]
    base_seqs: dict[str, int] = {}
    for s in subscribers:
        if s.record.subscribed:
            base_seqs[s.record.channel] = max(base_seqs.get(s.record.channel, 0), s.record.base_seq)
    _send(
        conn,
        (
            "ready",
            {
                "worker": plan.worker,
                "connect_start_ns": started_ns,
                "connect_end_ns": done_ns,
                "connected": sum(1 for s in subscribers if s.record.connected),
                "failed": len(errors),
                "errors": errors[:5],
                "base_seqs": base_seqs,
            },
        ),
    )
    channel_index = {name: i for i, name in enumerate(plan.channels)}
    records = [s.record for s in subscribers]
    updater = asyncio.create_task(_update_board(plan, board, records, channel_index))
    try:
        _, epoch_ns = await _expect(inbox, "go")
        cpu_start = time.process_time()
        for timeline in timelines.values():
            timeline.epoch_ns = epoch_ns
        _, final_seqs, drain = await _expect(inbox, "stop")
        await _drain(records, final_seqs, drain)
        cpu_s = time.process_time() - cpu_start
        for sub in subscribers:
            sub.record.wire_bytes = sub.bytes_received()
    finally:
        updater.cancel()
    _send(
        conn,
        (
            "result",
            {
                "worker": plan.worker,
                "subscribers": [r.result().to_dict() for r in records],
                # This worker's CPU from `go` until its subscribers drained: what reading
                # costs the client, per delivery in the report (reader_cpu_us_per_delivery).
                "cpu_s": cpu_s,
                "timelines": {
                    kind: {str(sec): h.to_dict() for sec, h in t.seconds.items()}
                    for kind, t in timelines.items()
                },
            },
        ),
    )


async def _update_board(
    plan: WorkerPlan, board: Board, records: list[SubscriberRecord], channel_index: dict[str, int]
) -> None:
    """Refresh this worker's board slots: every 10 ms in closed loop, else every 250 ms."""
    interval = 0.01 if plan.closed_loop else 0.25
    while True:
        mins = [NO_SUBSCRIBER] * len(channel_index)
        received = 0
        connected = 0
        for r in records:
            received += r.received
            if r.connected:
                connected += 1
                if r.kind == "fast":
                    c = channel_index[r.channel]
                    if r.last_seq < mins[c]:
                        mins[c] = r.last_seq
        board.publish_worker(plan.worker, received, connected, mins)
        await asyncio.sleep(interval)


async def _drain(records: list[SubscriberRecord], final_seqs: dict[str, int], drain: float) -> None:
    """Wait (at most ``drain`` s) until every connected subscriber reached the final seq."""
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline:
        if all(r.last_seq >= final_seqs.get(r.channel, 0) for r in records if r.connected):
            return
        await asyncio.sleep(0.02)


class WorkerPool:
    """The coordinator's side: spawn workers, step them through the protocol, collect results."""

    def __init__(self, plans: list[WorkerPlan], board: Board) -> None:
        self.plans = plans
        self.board = board
        self.ctx = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = []
        self.conns: list[Connection] = []

    async def start(self, wait_s: float = 60.0) -> None:
        """Spawn every worker and wait until each has said ``started``."""
        for plan in self.plans:
            parent, child = self.ctx.Pipe()
            proc = self.ctx.Process(
                target=worker_entry,
                args=(plan, child, self.board),
                name=f"loadtest-worker-{plan.worker}",
                daemon=True,
            )
            proc.start()
            reaper.register(proc)
            child.close()
            self.processes.append(proc)
            self.conns.append(parent)
        await self._gather("started", wait_s)

    async def _recv(self, index: int, expected: str, wait_s: float) -> Any:
        conn = self.conns[index]
        ready = await asyncio.to_thread(conn.poll, wait_s)
        if not ready:
            raise WorkerError(f"worker {index}: no {expected!r} within {wait_s:.0f} s")
        try:
            msg = conn.recv()
        except EOFError:
            raise WorkerError(f"worker {index} exited before {expected!r}") from None
        if msg[0] == "error":
            raise WorkerError(f"worker {index} failed:\n{msg[1]}")
        if msg[0] != expected:
            raise WorkerError(f"worker {index}: expected {expected!r}, got {msg[0]!r}")
        return msg[1]

    async def _gather(self, expected: str, wait_s: float) -> list[Any]:
        return list(
            await asyncio.gather(*(self._recv(i, expected, wait_s) for i in range(len(self.conns))))
        )

    def _send_all(self, msg: tuple[Any, ...]) -> None:
        for conn in self.conns:
            conn.send(msg)

    async def connect(self, wait_s: float) -> list[dict[str, Any]]:
        """Have every worker connect its subscribers; return their ``ready`` reports."""
        self._send_all(("connect",))
        return await self._gather("ready", wait_s)

    def go(self, epoch_ns: int) -> None:
        """Publishing starts at ``epoch_ns``: timelines count seconds from there."""
        self._send_all(("go", epoch_ns))

    async def stop(
        self, final_seqs: dict[str, int], drain: float, wait_s: float
    ) -> list[dict[str, Any]]:
        """Drain, then collect every worker's subscriber results and timelines."""
        self._send_all(("stop", final_seqs, drain))
        return await self._gather("result", drain + wait_s)

    def shutdown(self, grace: float = 5.0) -> None:
        """Let workers exit (they close their connections), then kill any straggler."""
        for conn in self.conns:
            conn.close()
        deadline = time.monotonic() + grace
        for proc in self.processes:
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2.0)
            reaper.unregister(proc)
