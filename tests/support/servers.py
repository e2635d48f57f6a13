"""Start a real server for a test: in this process on a free port, or as a subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from broadcaster.config import parse_config
from broadcaster.server.app import Broadcaster

__all__ = [
    "TEST_SERVER_TOML",
    "ServerProcess",
    "free_port",
    "server_config",
    "slow_consumer_disconnects",
    "wait_until",
]

# Small buffers and timeouts so a stalled client backs up after a few
# kilobytes and a slow consumer is cut off in tenths of seconds; the monitor
# ticks often so $sys.stats and rates arrive without long waits.
TEST_SERVER_TOML = """
[server]
host = "127.0.0.1"
port = 0
socket_send_buffer = 4096
shutdown_timeout = 2.0
close_timeout = 0.5
stats_interval = 0.05
"""


def server_config(extra_toml: str = "", server_toml: str = TEST_SERVER_TOML) -> str:
    return server_toml + "\n" + extra_toml


async def start_server(extra_toml: str = "", server_toml: str = TEST_SERVER_TOML) -> Broadcaster:
    config = parse_config(server_config(extra_toml, server_toml), source="<test config>")
    server = Broadcaster(config)
    await server.start()
    return server


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Wait for a state change, checking every few milliseconds, failing after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def last_seq(server: Broadcaster, channel: str) -> int:
    """The last seq published to `channel` on this node, whether the channel is held or
    was freed early (nobody subscribed and it keeps no messages: `hub.resting`)."""
    held = server.hub.channels.get(channel)
    if held is not None:
        return held.last_seq
    return server.hub.resting.get(channel, ("", 0))[1]


def slow_consumer_disconnects(server: Broadcaster, channel: str) -> int:
    """How many subscribers of `channel` the server cut off as slow consumers.

    A channel keeping no messages is freed with its last subscriber: its counts
    then live on under its metrics label (`hub.retired`), which the test
    configs give each channel of their own.
    """
    hub = server.hub
    ch = hub.channels.get(channel)
    count = ch.counters.slow_consumer_disconnects if ch else 0
    policy = hub.policies.resolve(channel)
    retired = hub.retired.get(policy.label) if policy is not None else None
    return count + (retired.slow_consumer_disconnects if retired is not None else 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`python -m broadcaster serve` in a subprocess, for RSS, signals and exit codes."""

    def __init__(self, config_text: str, tmp_path: Path, *, port: int | None = None) -> None:
        self.port = port or free_port()
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.config_path = tmp_path / "server.toml"
        self.config_path.write_text(config_text)
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> ServerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
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
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        await wait_until(self._listening, timeout=20, what="server process to listen")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            output = self.proc.stdout.read() if self.proc.stdout else ""
            raise RuntimeError(f"server exited with {self.proc.returncode}: {output}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def rss_bytes(self) -> int:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match, status
        return int(match.group(1)) * 1024

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float = 15.0) -> tuple[int, str]:
        assert self.proc is not None
        proc = self.proc
        await wait_until(lambda: proc.poll() is not None, timeout=timeout, what="server exit")
        output = proc.stdout.read() if proc.stdout else ""
        return proc.returncode, output

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
