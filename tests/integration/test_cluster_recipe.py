"""configs/cluster/run.sh, run for real: nodes, nginx and Redis on free ports, the admin token.

The recipe is what a user starts a cluster with, so these tests run the script
itself (not its parts) and talk to it the way a user would: through nginx.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import redis

from tests.support.clients import open_client
from tests.support.http import http_get
from tests.support.redis_server import RedisServer
from tests.support.servers import wait_until

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "configs" / "cluster" / "run.sh"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
TOKEN = "recipe-admin-token-0123456789"

pytestmark = [
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx)"),
    # The loops under test are the nodes' (uvloop); this test's loop only drives clients.
    pytest.mark.asyncio(loop_factories=["asyncio"]),
]


def consecutive_free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports that are free right now.

    Candidates come from below the kernel's ephemeral range (32768 and up on
    Linux), where the suite's thousands of client connections leave their
    TIME_WAIT ports; the check binds as the servers do, with SO_REUSEADDR, so a
    port held only by TIME_WAIT counts as free.
    """
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20000, 32000 - count)
        if all(_is_free(first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports in 200 tries")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def descendants(pid: int) -> set[int]:
    """Every living process below `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    for _ in range(20):  # depth: script -> nginx master -> workers is 2
        frontier = {child for child, parent in parents.items() if parent in frontier}
        if not frontier:
            break
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Recipe:
    """One run of configs/cluster/run.sh, its output in a file."""

    def __init__(self, proc: subprocess.Popen[bytes], output: Path) -> None:
        self.proc = proc
        self.output = output

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    async def ready(self) -> None:
        await wait_until(
            lambda: "cluster ready" in self.text() or self.proc.poll() is not None,
            timeout=90,
            what="run.sh to print 'cluster ready'",
        )
        assert self.proc.poll() is None, f"run.sh exited {self.proc.returncode}:\n{self.text()}"


@contextmanager
def run_recipe(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Recipe]:
    """Start run.sh in its own session; whatever is left at the end is killed as a group."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BROADCASTER_", "CLUSTER_"))}
    output = tmp_path / "run.out"
    assert NGINX is not None
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(RUN_SH),
                "--run-dir",
                str(tmp_path / "run"),
                "--broadcaster",
                str(Path(sys.executable).parent / "broadcaster"),
                "--nginx",
                NGINX,
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean, **(env or {})},
            start_new_session=True,
        )
    try:
        yield Recipe(proc, output)
    finally:
        # The script's children share its process group, even once it has exited.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


async def test_recipe_serves_through_nginx_guards_admin_and_stops_everything(
    tmp_path: Path,
) -> None:
    """Two nodes, nginx and the script's own Redis on free ports: a subscriber through nginx
    gets what either node publishes; /stats and /metrics through nginx need the admin token
    (nginx connects from loopback); SIGTERM stops every process the script started."""
    base = consecutive_free_ports(4)  # two nodes, nginx, Redis: never the same port twice
    nginx_port, redis_port = base + 2, base + 3
    with run_recipe(
        tmp_path,
        *("--nodes", "2", "--base-port", str(base), "--nginx-port", str(nginx_port)),
        *("--redis-port", str(redis_port)),
    ) as recipe:
        await recipe.ready()
        token = (tmp_path / "run" / "admin-token").read_text().strip()
        assert len(token) >= 16, "a generated token"
        assert token in recipe.text(), "shown to the user"

        sub = await open_client(f"ws://127.0.0.1:{nginx_port}/ws")
        await sub.subscribe("news")
        for port in (base, base + 1):
            pub = await open_client(f"ws://127.0.0.1:{port}/ws")
            await pub.publish("news", f"from {port}")
            await pub.close()
        got = await sub.messages("news", 2, timeout=10)
        assert [m["data"] for m in got] == [f"from {base}", f"from {base + 1}"]
        ticker = await open_client(f"ws://127.0.0.1:{nginx_port}/ws")
        await ticker.subscribe("tickers.demo")
        (tick,) = await ticker.messages("tickers.demo", 1, timeout=10)
        assert "symbol" in tick["data"], "node 1 runs the demo feed"

        for path in ("/stats", "/metrics", "/dashboard"):
            status, _, _ = await http_get(nginx_port, path)
            assert status == 401, f"{path} through nginx without the token"
        status, _, _ = await http_get(base + 1, "/stats")
        assert status == 401, "a node's own port is no way around the token"
        bearer = {"Authorization": f"Bearer {token}"}
        status, _, body = await http_get(nginx_port, "/stats", bearer)
        assert status == 200
        assert b'"connections"' in body
        status, _, _ = await http_get(nginx_port, f"/metrics?token={token}")
        assert status == 200
        for client in (sub, ticker):
            await client.close()

        started = descendants(recipe.proc.pid)
        assert len(started) >= 5, "Redis, two nodes, nginx master and worker"
        recipe.proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: recipe.proc.poll() is not None, timeout=60, what="run.sh exit")
        assert recipe.proc.returncode == 0, recipe.text()
        left = [pid for pid in started if alive(pid)]
        assert left == [], f"left running after SIGTERM: {left}"


async def test_recipe_uses_the_given_redis_prefix_and_token(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """--redis-url and --prefix reach the nodes (a second cluster can share a Redis), and the
    token from BROADCASTER_ADMIN_TOKEN is the one /stats accepts."""
    base = consecutive_free_ports(2)
    nginx_port = base + 1
    with run_recipe(
        tmp_path,
        *("--nodes", "1", "--base-port", str(base), "--nginx-port", str(nginx_port)),
        *("--redis-url", redis_server.url, "--prefix", "second:"),
        env={"BROADCASTER_ADMIN_TOKEN": TOKEN},
    ) as recipe:
        await recipe.ready()
        pub = await open_client(f"ws://127.0.0.1:{nginx_port}/ws")
        await pub.publish("news", "hello")
        await pub.close()
        with redis.Redis(port=redis_server.port) as client:
            keys = client.keys("*")
        assert keys, "the nodes use the Redis given by --redis-url"
        assert all(key.startswith(b"second:") for key in keys), keys
        status, _, _ = await http_get(nginx_port, "/stats", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        recipe.proc.send_signal(signal.SIGINT)  # Ctrl-C
        await wait_until(lambda: recipe.proc.poll() is not None, timeout=60, what="run.sh exit")
        assert recipe.proc.returncode == 0, recipe.text()
