"""`broadcaster serve --workers N` in a subprocess, and clients spread over its workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.clients import JsonClient, open_client
from tests.support.http import http_get_json
from tests.support.servers import free_port, wait_until

__all__ = ["WORKERS_TOML", "WorkersProcess", "open_spread"]

WORKERS_TOML = """
[server]
host = "127.0.0.1"
shutdown_timeout = 2.0
close_timeout = 0.5
stats_interval = 0.2

[defaults]
history_size = 1000
history_ttl = 300.0

[channels."prices"]
strategy = "drop-oldest"
queue_size = 1000

[api]
enabled = true
host = "127.0.0.1"
"""

# Clients are opened in batches until every worker holds some (the kernel spreads
# them by address and port), up to this many per worker.
MAX_CLIENTS_PER_WORKER = 60
MIN_PER_WORKER = 2


class WorkersProcess:
    """`python -m broadcaster serve --workers N` with its output in a file."""

    def __init__(self, tmp_path: Path, workers: int, config: str = WORKERS_TOML) -> None:
        self.workers = workers
        self.port = free_port()
        self.api_port = free_port()
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.config_path = tmp_path / "server.toml"
        self.config_path.write_text(config)
        self.log_path = tmp_path / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/publish"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def start(self) -> WorkersProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "broadcaster",
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--port",
                    str(self.port),
                    "--api-port",
                    str(self.api_port),
                    "--workers",
                    str(self.workers),
                ],
                stdin=subprocess.DEVNULL,
                # Its own process group: a test may signal it as a terminal's Ctrl-C does.
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        await wait_until(self._up, timeout=60, what="every worker to listen")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
        return "broadcaster listening on" in self.output()

    async def stats(self, query: str = "") -> dict[str, Any]:
        status, document = await http_get_json(self.port, f"/stats{query}")
        assert status == 200, document
        assert isinstance(document, dict)
        return document

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        status, document = await http_get_json(self.port, "/healthz")
        return status, document

    async def worker_pids(self) -> dict[int, int]:
        stats = await self.stats("?top=0")
        return {w["index"]: w["pid"] for w in stats["workers"] if w["up"]}

    def send_signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def signal_group(self, sig: signal.Signals) -> None:
        """`sig` to the supervisor and every worker at once, as Ctrl-C in a terminal."""
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        proc = self.proc
        assert proc is not None
        await wait_until(lambda: proc.poll() is not None, timeout=timeout, what="server exit")
        return proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def open_spread(server: WorkersProcess, channel: str) -> list[JsonClient]:
    """Subscribers of `channel`, opened until every worker holds MIN_PER_WORKER (bounded)."""
    clients: list[JsonClient] = []
    for _ in range(MAX_CLIENTS_PER_WORKER * server.workers // 10):
        for _ in range(10):
            client = await open_client(server.url)
            await client.subscribe(channel)
            clients.append(client)
        stats = await server.stats("?top=0")
        held = [w["connections"] for w in stats["workers"]]
        if all(count >= MIN_PER_WORKER for count in held):
            return clients
    raise AssertionError(f"the kernel did not spread {len(clients)} clients: {held}")
