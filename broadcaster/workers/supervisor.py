"""The supervisor: `broadcaster serve --workers N` is this process and N workers.

It owns what must be one for the whole server and serves no client itself:

- a private run_dir (`mkdtemp`, mode 0700) holding the bus socket and the
  built `Config` the workers load (workers/worker.py), removed at exit;
- the `BusServer` (workers/bus.py) on `run_dir/bus.sock`, in its own loop;
- N worker processes (`python -m broadcaster.workers.worker`, a fresh
  interpreter each: nothing of this process is inherited but the config
  it hands over), each binding the shared ports with SO_REUSEPORT;
- the startup line, logged once when every worker has bound its ports.

A worker that exits while the server runs is logged with its exit status
and started again after a back-off (0.2 s doubling up to 5 s, back to the
start once it has stayed up 10 s), so a worker that crashes at once does
not spin; its clients reconnect, the kernel sends them to the others, and
they recover with `since`. A worker that cannot start the first time (its
port taken, say) stops the whole server with exit status 1: restarting it
would not help.

SIGTERM or SIGINT: every worker gets SIGTERM and drains as one process does
(`Broadcaster.stop()`), the supervisor waits for them all (bounded by what
one process may take, then SIGKILL), stops the bus, removes run_dir and
exits 0. A worker whose supervisor died sees its bus connection lost and
stops by itself (workers/worker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from broadcaster.config import Config
from broadcaster.workers.identity import WorkerIdentity

if TYPE_CHECKING:
    from broadcaster.workers.bus import BusServer
from broadcaster.workers.worker import CONFIG_FILE

__all__ = ["BACKOFF_MAX", "BACKOFF_START", "STABLE_AFTER", "Supervisor", "restart_delay"]

logger = logging.getLogger("broadcaster.workers")

BACKOFF_START = 0.2
"""Seconds before the first restart of a worker that died."""
BACKOFF_MAX = 5.0
"""The longest wait between restarts of a worker that keeps dying."""
STABLE_AFTER = 10.0
"""Seconds a worker must stay up for its next death to restart it after BACKOFF_START again."""
START_TIMEOUT = 60.0
"""Seconds a worker may take to bind its ports before the supervisor gives up on it."""


@dataclass(slots=True)
class _Worker:
    """One worker slot: its current process, and how it has fared."""

    index: int
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[dict[str, object]] | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0
    """Deaths in a row without staying up STABLE_AFTER seconds (the back-off's exponent)."""
    exits: list[int | None] = field(default_factory=list)


class StartFailed(Exception):
    """A worker could not start the first time: the server cannot run."""


class Supervisor:
    """Runs the bus and N workers until SIGTERM / SIGINT; `run()` returns the exit status."""

    def __init__(
        self,
        config: Config,
        *,
        log_level: str = "INFO",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.count = config.server.workers
        self.log_level = log_level
        self.clock = clock
        self.workers = [_Worker(index) for index in range(self.count)]
        self.restarts = 0
        """Workers restarted since start (all slots)."""
        self._stopping = False
        self._spawns: set[asyncio.Task[None]] = set()

    def run(self) -> int:
        """Run the whole server in this process's main thread; the exit status."""
        from broadcaster.cli import run

        return run(self.main())

    async def main(self) -> int:
        self._check_ports_free()
        run_dir = Path(tempfile.mkdtemp(prefix="broadcaster-"))  # mode 0700
        try:
            return await self._main(run_dir)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    async def _main(self, run_dir: Path) -> int:
        from broadcaster.workers.bus import BusServer

        config_path = run_dir / CONFIG_FILE
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            pickle.dump(self.config, out)
        self.run_dir = run_dir
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        bus = BusServer(WorkerIdentity(0, self.count, run_dir).bus_path, workers=self.count)
        await bus.start()
        try:
            return await self._serve(stop, bus)
        finally:
            await bus.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _serve(self, stop: asyncio.Event, bus: BusServer) -> int:
        try:
            lines = await self._start_all(stop)
        except StartFailed as exc:
            logger.error("%s", exc)
            await self._stop_all()
            return 1
        if lines is None:  # stopped while starting
            await self._stop_all()
            return 0
        logger.info("%s", _startup_line(lines[0], self.workers))
        watchers = {
            asyncio.create_task(self._watch(worker), name=f"worker-{worker.index}")
            for worker in self.workers
        }
        try:
            await stop.wait()
        finally:
            self._stopping = True
            bus.draining = True
            logger.info(
                "shutting down: every worker drains up to %.1f s",
                self.config.server.shutdown_timeout,
            )
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await self._stop_all()
        logger.info("broadcaster stopped (%d workers)", self.count)
        return 0

    # --- starting --------------------------------------------------------------------

    def _check_ports_free(self) -> None:
        """Refuse a port another process holds, before spawning anything.

        The workers bind with SO_REUSEPORT, which would share a port with
        another server doing the same (of this user) instead of failing: a
        plain bind here fails with EADDRINUSE in that case as in any other.
        """
        cfg = self.config
        ports = [(cfg.server.host, cfg.server.port)]
        if cfg.api.enabled:
            ports.append((cfg.api.host, cfg.api.port))
        for host, port in ports:
            for family, kind, proto, _, address in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            ):
                with socket.socket(family, kind, proto) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        probe.bind(address)
                    except OSError as exc:
                        if exc.errno == errno.EADDRINUSE:
                            raise OSError(
                                exc.errno, f"port {port} on {host} is already in use"
                            ) from None
                        raise

    def _spawn(self, worker: _Worker) -> None:
        """Start worker `worker.index`'s process; `worker.ready` is set once its ports are bound."""
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        ready: asyncio.Future[dict[str, object]] = loop.create_future()
        worker.ready = ready
        worker.started_at = self.clock()

        async def spawn() -> None:
            try:
                worker.process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "broadcaster.workers.worker",
                    str(self.run_dir),
                    str(worker.index),
                    str(self.count),
                    "--ready-fd",
                    str(write_fd),
                    "--restarts",
                    str(worker.restarts),
                    "--log-level",
                    self.log_level,
                    pass_fds=(write_fd,),
                    # Worker 0 runs the sources: a `stdin` source reads the server's stdin.
                    stdin=None if worker.index == 0 else asyncio.subprocess.DEVNULL,
                )
            finally:
                os.close(write_fd)
            line = await _read_line(read_fd)
            if not ready.done():
                if line:
                    ready.set_result(orjson.loads(line))
                else:
                    ready.set_exception(EOFError(f"worker {worker.index} exited before it was up"))

        def spawned(task: asyncio.Task[None]) -> None:
            if ready.done():
                return
            if task.cancelled():
                ready.set_exception(EOFError(f"worker {worker.index}: start cancelled"))
            elif task.exception() is not None:
                ready.set_exception(task.exception() or EOFError())

        task = loop.create_task(spawn())
        self._spawns.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._spawns.discard)
        task.add_done_callback(spawned)

    async def _start_all(self, stop: asyncio.Event) -> list[str] | None:
        """Spawn every worker and wait until each has bound its ports; their startup lines."""
        for worker in self.workers:
            self._spawn(worker)
        readies = [w.ready for w in self.workers if w.ready is not None]
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        # Done when every worker is up, or as soon as one failed.
        all_up: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.wait(readies, return_when=asyncio.FIRST_EXCEPTION)
        )
        try:
            done, _ = await asyncio.wait(
                {stopping, all_up}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
            all_up.cancel()
        if stopping in done:
            return None
        for worker in self.workers:
            assert worker.ready is not None
            if worker.ready.done() and worker.ready.exception() is not None:
                code = await self._exit_code(worker)
                raise StartFailed(
                    f"worker {worker.index} could not start (exit {_describe_exit(code)}); "
                    "the server stops"
                )
        lines: list[str] = []
        for worker in self.workers:
            assert worker.ready is not None
            if not worker.ready.done():
                raise StartFailed(f"worker {worker.index} did not start in {START_TIMEOUT:.0f} s")
            lines.append(str(worker.ready.result().get("startup", "")))
        return lines

    # --- running ---------------------------------------------------------------------

    async def _watch(self, worker: _Worker) -> None:
        """Wait for the worker to exit; while the server runs, start it again after a back-off."""
        while not self._stopping:
            process = worker.process
            assert process is not None
            code = await process.wait()
            if self._stopping:
                return
            lived = self.clock() - worker.started_at
            worker.failures, delay = restart_delay(worker.failures, lived)
            worker.exits.append(code)
            self.restarts += 1
            worker.restarts += 1
            logger.warning(
                "worker %d (pid %d) exited with %s after %.1f s: restarting it in %.1f s "
                "(restart %d of this worker, %d in all)",
                worker.index,
                process.pid,
                _describe_exit(code),
                lived,
                delay,
                worker.restarts,
                self.restarts,
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self._spawn(worker)
            assert worker.ready is not None
            try:
                await asyncio.wait_for(asyncio.shield(worker.ready), START_TIMEOUT)
            except TimeoutError:
                logger.error(
                    "worker %d did not start in %.0f s: killed", worker.index, START_TIMEOUT
                )
                if worker.process is not None and worker.process.returncode is None:
                    worker.process.kill()
                continue
            except (EOFError, OSError):
                continue  # its exit is seen on the next turn and backed off further
            logger.info("worker %d is up again (pid %s)", worker.index, _pid(worker))

    async def _exit_code(self, worker: _Worker) -> int | None:
        process = worker.process
        if process is None:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(process.wait(), 5.0)
        return process.returncode

    async def _stop_all(self) -> None:
        """SIGTERM every worker and wait for them to drain (bounded; then SIGKILL)."""
        self._stopping = True
        cfg = self.config.server
        # What one process may take (docs/configuration.md "Shutdown"), plus its start-up.
        deadline = 2 * cfg.shutdown_timeout + cfg.close_timeout + 5.0
        processes = [w.process for w in self.workers if w.process is not None]
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        waits = [process.wait() for process in processes]
        try:
            codes = await asyncio.wait_for(asyncio.gather(*waits), deadline)
        except TimeoutError:
            for process in processes:
                if process.returncode is None:
                    logger.error(
                        "worker pid %d did not stop in %.1f s: killed", process.pid, deadline
                    )
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            codes = await asyncio.gather(*(process.wait() for process in processes))
        for worker, code in zip(self.workers, codes, strict=False):
            if code and code != -signal.SIGTERM:
                logger.warning("worker %d exited with %s", worker.index, _describe_exit(code))


def restart_delay(failures: int, lived: float) -> tuple[int, float]:
    """After a worker's death: its deaths in a row (counting this one) and the wait before
    starting it again.

    0.2 s, doubling while it keeps dying, at most 5 s; a worker that stayed
    up STABLE_AFTER seconds starts the count again, so one crash a day is
    always restarted at once and a crash loop never spins.
    """
    failures = 1 if lived >= STABLE_AFTER else failures + 1
    return failures, min(BACKOFF_MAX, BACKOFF_START * 2 ** (failures - 1))


async def _read_line(fd: int) -> bytes:
    """One line from the ready pipe's read end (b"" when the worker exits first); closes it."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        return await reader.readline()
    finally:
        transport.close()


def _pid(worker: _Worker) -> int | None:
    return worker.process.pid if worker.process is not None else None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def _startup_line(line: str, workers: list[_Worker]) -> str:
    """Worker 0's startup line, saying how many workers serve it."""
    pids = ", ".join(str(_pid(w)) for w in workers)
    suffix = f", {len(workers)} workers: pids {pids}"
    if line.endswith(")"):
        return f"{line[:-1]}{suffix})"
    return f"{line} ({suffix[2:]})"
