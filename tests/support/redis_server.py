"""A real `redis-server` on a free loopback port, that a test can kill and restart.

Never a mock: the Redis broker's claims (atomic seq, stream order, recovery
after an outage) are about what Redis does. Persistence is an append-only
file fsynced on every write, so a SIGKILL loses nothing and a restart on the
same directory brings the streams back; `wipe()` simulates a Redis that
restarted without persistence.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Self

import redis
import redis.asyncio

from tests.support.servers import free_port

__all__ = ["RedisServer", "redis_toml"]


def redis_toml(url: str, **extra: object) -> str:
    """A [broker] table for a test cluster: short timeouts and cool-down so outages are quick."""
    values: dict[str, object] = {
        "kind": "redis",
        "url": url,
        "prefix": "test:",
        "timeout": 1.0,
        "breaker_threshold": 2,
        "breaker_cooldown": 0.2,
    }
    values.update(extra)
    lines = [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in values.items()]
    return "[broker]\n" + "\n".join(lines).replace("'", '"') + "\n"


class RedisServer:
    """One redis-server process on 127.0.0.1; `kill`/`start` keep the port and the data dir."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def options(self) -> list[str]:
        """Persistence and role: AOF fsynced on every write, so `kill()` + `start()` keeps it."""
        return ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]

    def start(self) -> Self:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--protected-mode", "no", "--loglevel", "warning", *self.options()]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2)
        try:
            for _ in range(500):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                time.sleep(0.01)
        finally:
            client.close()
        raise RuntimeError("redis-server did not answer PING")

    async def restart(self) -> None:
        await asyncio.to_thread(self.start)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save (the fsynced AOF keeps what was written)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def wipe(self) -> None:
        """Forget everything on disk (call while killed): the next start is an empty Redis."""
        for path in self.dir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def async_client(self) -> redis.asyncio.Redis:
        return redis.asyncio.Redis(port=self.port, socket_timeout=5)

    async def stop(self) -> None:
        """Terminate (or kill) the server; the data directory stays."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 10)
        self.proc = None
