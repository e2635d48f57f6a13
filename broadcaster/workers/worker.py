"""One worker process: `python -m broadcaster.workers.worker RUN_DIR INDEX COUNT ...`.

Started by the supervisor (workers/supervisor.py), never by hand. It reads
the `Config` the supervisor built from the user's file, environment and
flags (pickled into the private run_dir, so every worker runs exactly that
config, not a re-read of a file that may have changed since), runs one
whole `Broadcaster(config, worker=WorkerIdentity(...))` on the shared ports,
and tells the supervisor on its ready pipe when the ports are bound.

It stops, draining exactly as one process does (`Broadcaster.stop()`), on
SIGTERM or SIGINT, and by itself when its bus connection is lost: a worker
whose supervisor died must not keep serving a server nobody manages.

Exit status: 0 after a stop, 1 when it could not start (a port, the bus),
2 when the config cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import pickle
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from broadcaster.config import Config
from broadcaster.errors import BroadcasterError
from broadcaster.workers.identity import WorkerIdentity

__all__ = ["CONFIG_FILE", "main", "worker_config"]

logger = logging.getLogger("broadcaster.workers")

CONFIG_FILE = "config.pickle"
"""The supervisor's built `Config`, in run_dir (mode 0700, so only this user reads it)."""


def worker_config(config: Config, index: int) -> Config:
    """What worker `index` runs: the user's config; the sources in worker 0 only.

    A source (the demo ticker, a file, stdin) publishes into channels every
    worker shares: run in each worker, it would publish every message N times.
    """
    if index == 0:
        return config
    return dataclasses.replace(config, sources=())


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="broadcaster-worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("index", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--restarts", type=int, default=0)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def _serve(config: Config, identity: WorkerIdentity, ready_fd: int, restarts: int) -> None:
    from broadcaster.server.app import Broadcaster

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = Broadcaster(config, worker=identity)
    await server.start()  # a failed start undoes itself and raises
    if server.http.view is not None:
        server.http.view.restarts = restarts
    try:
        line = server.http.startup_line()
        os.write(ready_fd, orjson.dumps({"pid": os.getpid(), "startup": line}) + b"\n")
        os.close(ready_fd)
        link = server.link
        assert link is not None, "a Broadcaster with a worker identity has a bus link"
        stopped = asyncio.create_task(stop.wait())
        lost = asyncio.create_task(link.lost.wait())
        await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        lost.cancel()
        # Stopping from now on: the supervisor's SIGTERM after a Ctrl-C the worker
        # got too (the whole process group) must neither cut the drain short nor,
        # once the loop has removed its handlers, kill the exiting process.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        if not link.lost.is_set():  # (a lost bus is logged by the Broadcaster, which stops)
            logger.info(
                "worker %d shutting down: draining up to %.1f s",
                identity.index,
                config.server.shutdown_timeout,
            )
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level, logging.INFO),
        format=f"%(asctime)s %(levelname)s %(name)s [worker {args.index}]: %(message)s",
    )
    if args.log_level != "DEBUG":
        logging.getLogger("websockets").setLevel(logging.WARNING)
    from broadcaster.cli import run, tune_gc_for_serving
    from broadcaster.security.redact import install as install_log_filter

    install_log_filter()
    try:
        config = pickle.loads((args.run_dir / CONFIG_FILE).read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        print(f"broadcaster worker {args.index}: cannot read its config: {exc}", file=sys.stderr)
        return 2
    assert isinstance(config, Config)
    identity = WorkerIdentity(args.index, args.count, args.run_dir)
    tune_gc_for_serving()
    try:
        run(_serve(worker_config(config, args.index), identity, args.ready_fd, args.restarts))
    except (OSError, BroadcasterError) as exc:
        print(f"broadcaster worker {args.index}: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - the supervisor's subprocess
    sys.exit(main())
