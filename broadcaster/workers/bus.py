"""The local bus: one process sequences every channel for all the workers.

Runs in the supervisor (workers/supervisor.py) on its own asyncio loop,
listening on `run_dir/bus.sock` (the run_dir is private, mode 0700). Each
worker's `BusLink` connects and says hello with its index. See
docs/ARCHITECTURE.md "Workers: the local bus" for the design; in short:

- publish: a worker sends the message's data (JSON, as its publisher encoded
  it) once; the bus gives it the channel's next seq, keeps it in the
  channel's history, builds ONE frame and writes that same bytes object to
  every interested worker (the publisher's included), then acks the
  publisher with the seq. One connection per worker and one loop here: every
  worker sees every channel's messages in seq order, and a worker that asked
  to be told of a channel gets the reply before any message after it.
- subscribe (a worker prepares a channel): the reply carries the epoch, the
  last seq, the retained history and the snapshot, all as of that moment;
  every later message follows on the same connection.
- block: each worker says when one of its `block` channels gets its first
  full subscriber and loses its last; the bus relays that to every other
  worker, and clears a gone worker's state for them.
- limits: each worker's admission deltas (per address, total) are relayed to
  the others; a worker that joins is told what the others hold.
- gather: a worker's question ("stats") goes to every worker, each answer
  back to the one who asked.

The per-message cost here is one header parse, one header encode and one
write per interested worker: it does not depend on how many subscribers the
workers have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from broadcaster.workers.channels import BusChannels, Spec, mark_full
from broadcaster.workers.framing import FrameDecoder, FrameError, encode

__all__ = ["WRITE_LIMIT", "BusServer", "spec_of"]

logger = logging.getLogger("broadcaster.bus")

# Bytes the bus lets pile up for one worker that does not read: beyond it the
# worker is cut off (its link reports `lost`, the worker stops, the supervisor
# restarts it) rather than letting the supervisor's memory grow without bound.
WRITE_LIMIT = 256 * 1024 * 1024
# Seconds between two sweeps of unused channels that keep messages.
SWEEP_INTERVAL = 1.0


def spec_of(header: dict[str, Any]) -> Spec:
    """The channel policy a publish or subscribe frame carries."""
    return Spec(
        history_size=int(header.get("h", 0)),
        history_ttl=float(header.get("ht", 0.0)),
        snapshot=bool(header.get("sn", False)),
        kept=header.get("ku"),
    )


class _Worker(asyncio.Protocol):
    """One worker's connection, as the bus sees it."""

    def __init__(self, bus: BusServer) -> None:
        self.bus = bus
        self.index: int | None = None
        self.transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder()
        self._out: list[bytes] = []
        """Frames written while the bus handles a read: sent in one write at its end."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            logger.error("bus: worker %s sent a bad frame (%s); disconnecting it", self.index, exc)
            self.abort()
            return
        bus = self.bus
        dispatch = bus._dispatch
        # Every frame this read causes goes out in one write per worker: a
        # burst of publishes costs one system call per worker, not one per message.
        bus._batching = True
        try:
            for header, payload in frames:
                try:
                    dispatch(self, header, payload)
                except (KeyError, TypeError, ValueError) as exc:
                    logger.error(
                        "bus: worker %s sent a bad %r frame (%s); disconnecting it",
                        self.index,
                        header.get("t"),
                        exc,
                    )
                    self.abort()
                    return
        finally:
            bus._batching = False
            bus._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.bus._gone(self)
        self.transport = None

    def write(self, frame: bytes) -> None:
        if self.bus._batching:
            out = self._out
            if not out:
                self.bus._dirty.append(self)
            out.append(frame)
            return
        self._send(frame)

    def flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            self._send(out[0] if len(out) == 1 else b"".join(out))

    def _send(self, frame: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(frame)
        if transport.get_write_buffer_size() > WRITE_LIMIT:
            logger.error(
                "bus: worker %s does not read (over %d bytes waiting); disconnecting it",
                self.index,
                WRITE_LIMIT,
            )
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class BusServer:
    """Listens on the bus socket; sequences, keeps history, relays between workers."""

    def __init__(
        self, path: Path, *, workers: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = Path(path)
        self.workers = workers
        self._clock = clock
        self.state = BusChannels(secrets.token_hex(6))
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[int, _Worker] = {}
        self._all: set[_Worker] = set()
        self._full: dict[str, set[int]] = {}
        """Per `block` channel: the workers with a full subscriber of it."""
        self._held: dict[int, dict[str | None, int]] = {}
        """Per worker: admitted connections per address key (None: exempt ones)."""
        self._sweeper: asyncio.Task[None] | None = None
        self._batching = False
        self._dirty: list[_Worker] = []
        self.published = 0
        """Messages sequenced since start (for the benchmark and the logs)."""
        self.draining = False
        """Set by the supervisor when it stops every worker: a worker leaving then is expected."""

    async def start(self) -> None:
        """Listen on the Unix socket (a stale socket file of a dead bus is replaced)."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await loop.create_unix_server(lambda: _Worker(self), str(self.path))
        with contextlib.suppress(OSError):
            self.path.chmod(0o600)
        self._sweeper = loop.create_task(self._sweep(), name="bus-sweep")

    async def stop(self) -> None:
        """Close every worker connection and remove the socket."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._all):
            conn.abort()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    def connected(self) -> frozenset[int]:
        """Worker indexes with a live connection (after their hello)."""
        return frozenset(self._conns)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self.state.sweep(self._clock())
            except Exception:  # a bug here must not stop sequencing
                logger.exception("bus: sweeping unused channels failed")

    # --- frames from workers ------------------------------------------------

    def _dispatch(self, conn: _Worker, header: dict[str, Any], payload: bytes) -> None:
        kind = header["t"]
        if kind == "p":
            self._publish(conn, header, payload)
            return
        worker = conn.index
        if worker is None:
            if kind != "hello":
                raise ValueError("a frame before hello")
            self._hello(conn, int(header["w"]))
            return
        if kind == "s":
            self._subscribe(conn, worker, header)
        elif kind == "u":
            self.state.unsubscribe(str(header["c"]), worker, self._clock())
        elif kind == "f":
            self._fullness(worker, str(header["c"]), bool(header["f"]))
        elif kind == "a":
            self._admission(worker, header.get("k"), int(header["d"]))
        elif kind == "g":
            self._gather(worker, header)
        elif kind == "r":
            asker = self._conns.get(int(header["a"]))
            if asker is not None:
                answer = {"t": "R", "i": header["i"], "w": worker}
                if header.get("x"):
                    answer["x"] = 1
                asker.write(encode(answer, payload))
        else:
            raise ValueError(f"unknown frame type {kind!r}")

    def _hello(self, conn: _Worker, worker: int) -> None:
        if not 0 <= worker < self.workers:
            raise ValueError(f"worker index {worker} is not in 0..{self.workers - 1}")
        previous = self._conns.get(worker)
        if previous is not None:
            # A restarted worker whose old connection is not gone yet: the new one wins.
            logger.warning("bus: worker %d connected again; dropping its old connection", worker)
            self._forget(previous)
            previous.abort()
        conn.index = worker
        self._conns[worker] = conn
        self._all.add(conn)
        self._announce()
        # What the others hold now: their full block channels and admitted connections.
        for name, full in self._full.items():
            for other in full:
                conn.write(encode({"t": "F", "c": name, "w": other, "f": 1}))
        for other, held in self._held.items():
            for key, count in held.items():
                conn.write(encode({"t": "A", "w": other, "k": key, "d": count, "sync": 1}))
        logger.info("bus: worker %d joined (%d connected)", worker, len(self._conns))

    def _announce(self) -> None:
        frame = encode({"t": "W", "up": sorted(self._conns)})
        for conn in self._conns.values():
            conn.write(frame)

    def _gone(self, conn: _Worker) -> None:
        self._all.discard(conn)
        if conn.index is None or self._conns.get(conn.index) is not conn:
            return
        self._forget(conn)
        log = logger.info if self.draining else logger.warning
        log("bus: worker %d disconnected (%d connected)", conn.index, len(self._conns))
        self._announce()

    def _forget(self, conn: _Worker) -> None:
        """Drop everything `conn`'s worker held, and tell the others."""
        worker = conn.index
        assert worker is not None
        del self._conns[worker]
        self.state.worker_gone(worker, self._clock())
        for name in [name for name, full in self._full.items() if worker in full]:
            self._fullness(worker, name, False)
        held = self._held.pop(worker, {})
        for key, count in held.items():
            self._relay(worker, encode({"t": "A", "w": worker, "k": key, "d": -count}))

    def _relay(self, sender: int, frame: bytes) -> None:
        for index, conn in self._conns.items():
            if index != sender:
                conn.write(frame)

    # --- channels -------------------------------------------------------------

    def _publish(self, conn: _Worker, header: dict[str, Any], payload: bytes) -> None:
        if conn.index is None:
            raise ValueError("a publish before hello")
        name = str(header["c"])
        key = header.get("k")
        channel = self.state.publish(
            name,
            spec_of(header),
            payload,
            float(header["tm"]),
            self._clock(),
            key=key.encode() if isinstance(key, str) else None,
        )
        seq = channel.last_seq
        self.published += 1
        if channel.interested:
            frame = encode({"t": "m", "c": name, "s": seq, "tm": header["tm"]}, payload)
            conns = self._conns
            for worker in channel.interested:
                target = conns.get(worker)
                if target is not None:
                    target.write(frame)
        # After the message: a publisher interested in the channel has it before its ack.
        conn.write(encode({"t": "P", "i": header["i"], "s": seq, "e": channel.epoch}))

    def _subscribe(self, conn: _Worker, worker: int, header: dict[str, Any]) -> None:
        name = str(header["c"])
        now = self._clock()
        channel = self.state.subscribe(name, worker, spec_of(header), now)
        history = channel.retained(now)
        snapshot = channel.snapshot()
        # Entries as [seq, created, length]; the payload is their data, concatenated.
        reply = {
            "t": "S",
            "c": name,
            "e": channel.epoch,
            "s": channel.last_seq,
            "hist": [[e.seq, e.created, len(e.data)] for e in history],
            "snap": [[e.seq, e.created, len(e.data)] for e in snapshot],
        }
        conn.write(encode(reply, b"".join([e.data for e in history] + [e.data for e in snapshot])))

    def _fullness(self, worker: int, name: str, full: bool) -> None:
        if mark_full(self._full, name, worker, full):
            self._relay(worker, encode({"t": "F", "c": name, "w": worker, "f": 1 if full else 0}))

    def _admission(self, worker: int, key: str | None, delta: int) -> None:
        held = self._held.setdefault(worker, {})
        count = held.get(key, 0) + delta
        if count > 0:
            held[key] = count
        else:
            held.pop(key, None)
        self._relay(worker, encode({"t": "A", "w": worker, "k": key, "d": delta}))

    def _gather(self, asker: int, header: dict[str, Any]) -> None:
        frame = encode({"t": "G", "a": asker, "i": header["i"], "what": header["what"]})
        for conn in self._conns.values():
            conn.write(frame)
