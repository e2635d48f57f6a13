"""Targets: a running server at a URL, or a server command the tool starts and stops.

A target spec is one of
- ``ws://127.0.0.1:PORT/ws``: already running; the tool only connects (loopback only);
- a built-in name: ``baseline-broadcast``, ``baseline-broadcast-deflate``, ``baseline-queue``,
  ``trivial``, ``broadcaster``;
- a command template containing ``{port}`` (and optionally ``{config}``), e.g.
  ``"broadcaster serve --config X --port {port}"``.
Any spec may be prefixed with ``LABEL=`` to name it in reports. Started servers get
a free loopback port, their own session (so the whole tree can be killed), optional
pinning to core 0 with ``taskset``, and a log file whose tail is shown if they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from loadtest import reaper
from loadtest.scenarios import Scenario

__all__ = [
    "BUILTIN_TARGETS",
    "RunningTarget",
    "TargetError",
    "TargetSpec",
    "broadcaster_config",
    "free_port",
    "parse_target",
    "start_target",
]

REPO_ROOT = Path(__file__).resolve().parent.parent

# broadcaster itself; `broadcaster-sse` is the same server, its subscribers over SSE.
_BROADCASTER = [
    "{python}",
    "-m",
    "broadcaster",
    "--log-level",
    "WARNING",
    "serve",
    "--config",
    "{config}",
    "--port",
    "{port}",
]

BUILTIN_TARGETS: dict[str, list[str]] = {
    "baseline-broadcast": ["{python}", "-m", "loadtest.baselines.broadcast", "--port", "{port}"],
    "baseline-broadcast-deflate": [
        "{python}",
        "-m",
        "loadtest.baselines.broadcast_deflate",
        "--port",
        "{port}",
    ],
    "baseline-queue": [
        "{python}",
        "-m",
        "loadtest.baselines.queue_per_subscriber",
        "--port",
        "{port}",
    ],
    "trivial": ["{python}", "-m", "loadtest.baselines.trivial", "--port", "{port}"],
    "broadcaster-sse": _BROADCASTER,
    "broadcaster": _BROADCASTER,
}

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_LABELLED = re.compile(r"^([A-Za-z0-9_.+-]+)=(.+)$")


class TargetError(RuntimeError):
    """A target could not be parsed, started or reached."""


@dataclass(frozen=True)
class TargetSpec:
    """What to run against: a URL or a command template, and the label reports use."""

    label: str
    url: str | None = None
    command: tuple[str, ...] | None = None
    client: str | None = None
    """The subscriber client for this target (None: the scenario's `--client`)."""

    @property
    def started_by_tool(self) -> bool:
        return self.command is not None


@dataclass
class RunningTarget:
    """A reachable target: its URL and, when the tool started it, its process."""

    spec: TargetSpec
    url: str
    pid: int | None
    command: list[str] | None
    log_path: Path | None
    config_text: str | None

    @property
    def http_base(self) -> str:
        """``http://host:port`` of the target, for ``GET /stats``."""
        parts = urlsplit(self.url)
        scheme = "https" if parts.scheme == "wss" else "http"
        return f"{scheme}://{parts.netloc}"


def parse_target(spec: str) -> TargetSpec:
    """Parse ``[LABEL=]URL|BUILTIN|COMMAND``; raise TargetError with what was expected."""
    labelled = _LABELLED.match(spec)
    label, rest = (labelled.group(1), labelled.group(2)) if labelled else ("", spec)
    rest = rest.strip()
    if rest.startswith(("ws://", "wss://")):
        host = urlsplit(rest).hostname or ""
        if host not in LOOPBACK_HOSTS and not host.startswith("127."):
            raise TargetError(f"refusing non-loopback target {rest!r}: load only 127.0.0.1")
        return TargetSpec(label=label or rest, url=rest)
    if rest in BUILTIN_TARGETS:
        # broadcaster-sse: the same server, its subscribers over SSE (GET /sse).
        client = "sse" if rest == "broadcaster-sse" else None
        return TargetSpec(label=label or rest, command=tuple(BUILTIN_TARGETS[rest]), client=client)
    argv = shlex.split(rest)
    if not argv or not any("{port}" in a for a in argv):
        raise TargetError(
            f"target {spec!r}: expected ws://127.0.0.1:PORT/ws, one of "
            f"{', '.join(BUILTIN_TARGETS)}, or a command containing {{port}}"
        )
    return TargetSpec(label=label or argv[0], command=tuple(argv))


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def broadcaster_config(scenario: Scenario, port: int) -> str:
    """The TOML config the tool writes for the ``broadcaster`` target.

    No ``[sources]`` section, so no demo ticker competes with the load; the
    ``[defaults]`` keys carry the scenario's queue parameters and each channel gets
    its own ``[channels."load.N"]`` entry when strategies were given. ``[limits]``
    lifts the server-wide edge limits (F10k alone opens more than the default
    ``max_connections``; a loaded loop must not shed the tool's own clients):
    the tool measures the server, not its admission control.
    """
    high = scenario.high_watermark or scenario.queue_size
    low = scenario.low_watermark if scenario.low_watermark is not None else high // 2
    default_strategy = scenario.strategy_of(0) or "drop-oldest"
    lines = [
        "# Written by the load tool for one run.",
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
        "",
        "[defaults]",
        f'strategy = "{default_strategy}"',
        f"queue_size = {scenario.queue_size}",
        f"high_watermark = {high}",
        f"low_watermark = {low}",
        f"slow_consumer_timeout = {float(scenario.slow_consumer_timeout)}",
        # Publishers send `"k"` (50 keys round-robin): the key of conflate channels.
        'conflate_key = "k"',
        "",
        "[limits]",
        "max_connections = 0",
        "max_loop_lag = 0",
        "max_subscriptions = 0",
        "",
        "# GET /sse and /stream are served on the API port (the WebSocket port redirects).",
        "[api]",
        "enabled = true",
        'host = "127.0.0.1"',
        "port = 0",
        "max_connections = 100000",
    ]
    if len(scenario.strategies) > 1:
        for i, name in enumerate(scenario.channel_names):
            lines += ["", f'[channels."{name}"]', f'strategy = "{scenario.strategy_of(i)}"']
    return "\n".join(lines) + "\n"


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TargetError(f"server exited with code {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TargetError(f"server did not listen on port {port} within {timeout:.0f} s")


def _wait_all_workers(log_path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """`serve --workers N`: the port answers once one worker bound it; the supervisor logs
    its startup line once every worker has, so the load does not all land on the first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TargetError(f"server exited with code {proc.returncode} before listening")
        if b"broadcaster listening on" in log_path.read_bytes():
            return
        time.sleep(0.05)
    raise TargetError(f"not every worker listened within {timeout:.0f} s")


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start the server in its own session, output to ``log_path``, registered for reaping."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
    reaper.register(proc)
    return proc


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.asynccontextmanager
async def start_target(
    spec: TargetSpec,
    scenario: Scenario,
    *,
    pin: bool = False,
    startup_timeout: float = 20.0,
) -> AsyncIterator[RunningTarget]:
    """Yield a reachable target; a server the tool started is stopped on exit, always."""
    if spec.url is not None:
        yield RunningTarget(spec, spec.url, None, None, None, None)
        return
    assert spec.command is not None
    workdir = Path(tempfile.mkdtemp(prefix="loadtest-"))
    port = free_port()
    config_path = workdir / "broadcaster.toml"
    config_text = broadcaster_config(scenario, port)
    config_path.write_text(config_text)
    argv = [
        a.replace("{port}", str(port))
        .replace("{config}", str(config_path))
        .replace("{python}", sys.executable)
        for a in spec.command
    ]
    uses_config = any("{config}" in a for a in spec.command)
    if pin:
        if shutil.which("taskset") is None:
            raise TargetError("--pin needs taskset (util-linux)")
        argv = ["taskset", "-c", "0", *argv]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    log_path = workdir / "server.log"
    proc = _spawn(argv, env, log_path)
    try:
        try:
            await asyncio.to_thread(_wait_listening, port, proc, startup_timeout)
            if "--workers" in argv:
                await asyncio.to_thread(_wait_all_workers, log_path, proc, startup_timeout)
        except TargetError as exc:
            raise TargetError(f"{spec.label}: {exc}\n{_log_tail(log_path)}") from None
        yield RunningTarget(
            spec=spec,
            url=f"ws://127.0.0.1:{port}/ws",
            pid=proc.pid,
            command=argv,
            log_path=log_path,
            config_text=config_text if uses_config else None,
        )
    finally:
        await asyncio.to_thread(reaper.stop_popen, proc)
