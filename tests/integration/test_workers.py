"""`broadcaster serve --workers N` as users run it: one port, N processes, one server.

Each test starts the real command in a subprocess on free loopback ports
(never port 0: every worker must bind the same port) and checks the core
contract end to end through what a user sees: the WebSocket and HTTP APIs,
/stats, /metrics, /healthz, /dashboard, signals and exit codes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from tests.support.api_client import post_json
from tests.support.clients import JsonClient, open_client
from tests.support.http import http_get
from tests.support.servers import wait_until
from tests.support.worker_processes import WORKERS_TOML, WorkersProcess, open_spread

StartWorkers = Callable[..., Awaitable[WorkersProcess]]


@pytest.fixture
async def serve_workers(tmp_path: Path) -> AsyncIterator[StartWorkers]:
    """Start `serve --workers N` subprocesses; killed at teardown (the workers follow)."""
    started: list[WorkersProcess] = []

    async def start(workers: int, config: str = WORKERS_TOML) -> WorkersProcess:
        proc = WorkersProcess(tmp_path / f"server{len(started)}", workers, config)
        started.append(proc)
        return await proc.start()

    yield start
    for proc in started:
        proc.kill()


async def read_seqs(client: JsonClient, channel: str, count: int) -> list[tuple[int, Any]]:
    events = await client.messages(channel, count, timeout=15)
    return [(event["seq"], event["data"]) for event in events]


def metric_samples(text: str, name: str) -> dict[str, float]:
    """`name`'s value per worker label."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                worker = sample.labels["worker"]
                values[worker] = values.get(worker, 0.0) + sample.value
    return values


@pytest.mark.parametrize("workers", [2, 3])
async def test_every_subscriber_on_every_worker_gets_every_message_in_order(
    serve_workers: StartWorkers, workers: int
) -> None:
    """HTTP and WebSocket publishes reach all subscribers, whatever their worker, one seq order."""
    server = await serve_workers(workers)
    output = server.output()
    assert output.count("broadcaster listening on") == 1, output
    assert f"{workers} workers" in output
    clients = await open_spread(server, "prices")
    publisher = await open_client(server.url)
    try:
        for i in range(10):
            reply = await post_json(server.api_url, {"channel": "prices", "data": {"http": i}})
            assert reply.status == 200, reply.body
            await publisher.publish("prices", {"ws": i})
        got = await asyncio.gather(*(read_seqs(c, "prices", 20) for c in clients))
        first = got[0]
        assert [seq for seq, _ in first] == list(range(1, 21)), "gap-free from 1"
        assert all(other == first for other in got), "the same seqs and data everywhere"
        assert [data for _, data in first[:2]] == [{"http": 0}, {"ws": 0}]

        stats = await server.stats()
        total = len(clients) + 1
        assert stats["summary"]["connections"] == total
        assert len(stats["connections"]) == total
        assert {c["worker"] for c in stats["connections"]} == set(range(workers))
        assert [w["index"] for w in stats["workers"]] == list(range(workers))
        assert all(w["up"] and w["connections"] > 0 for w in stats["workers"])
        assert sum(w["connections"] for w in stats["workers"]) == total
        prices = stats["channels"]["prices"]
        assert prices["subscribers"] == len(clients)
        assert prices["last_seq"] == 20
        assert prices["delivered"] >= 20 * len(clients)
        totals = stats["totals"]
        assert totals["published"] == 20, "each message counted once, not once per worker"
        assert totals["delivered"] == sum(w["delivered"] for w in stats["workers"])
        assert totals["delivered"] == sum(c["delivered"] for c in stats["channels"].values())

        # The dashboard's feed: the same merged view, from whichever worker it is on.
        await publisher.subscribe("$sys.stats")
        live = await publisher.recv_event("message", timeout=10, channel="$sys.stats")
        document = live["data"]
        assert [w["index"] for w in document["workers"] if w["up"]] == list(range(workers))
        assert document["summary"]["connections"] == total
        assert {c["worker"] for c in document["connections"]} == set(range(workers))

        status, _, body = await http_get(server.port, "/metrics")
        assert status == 200
        text = body.decode()
        up = metric_samples(text, "broadcaster_worker_up")
        assert up == {str(i): 1.0 for i in range(workers)}
        connections = metric_samples(text, "broadcaster_connections")
        assert set(connections) == {str(i) for i in range(workers)}
        assert sum(connections.values()) == total

        status, _, page = await http_get(server.port, "/dashboard")
        assert status == 200
        assert b'id="worker-th"' in page
        status, health = await server.healthz()
        assert status == 200, health
        assert health["workers"] == workers
    finally:
        for client in [*clients, publisher]:
            await client.close()


async def test_one_connections_unanswered_publishes_keep_their_order_on_every_worker(
    serve_workers: StartWorkers,
) -> None:
    """One client sends many publishes without waiting for replies (they are pipelined to
    the bus): every subscriber, whatever its worker, gets them in that order, gap-free,
    and the publisher's replies come in the same order with increasing seqs."""
    server = await serve_workers(2)
    clients = await open_spread(server, "prices")
    publisher = await open_client(server.url)
    total = 300
    try:
        for i in range(total):
            await publisher.send({"op": "publish", "channel": "prices", "data": i, "id": i})
        expected = [(seq, seq - 1) for seq in range(1, total + 1)]
        for client in clients:
            assert await read_seqs(client, "prices", total) == expected
        replies = [await publisher.recv_event("published", timeout=15) for _ in range(total)]
        assert [(r["seq"], r["id"]) for r in replies] == expected
    finally:
        for client in [*clients, publisher]:
            await client.close()


async def test_since_recovers_across_workers_after_reconnect(
    serve_workers: StartWorkers,
) -> None:
    """A client that reconnects (to any worker) and subscribes with `since` misses nothing."""
    server = await serve_workers(2)
    clients = await open_spread(server, "prices")
    try:
        for i in range(5):
            await post_json(server.api_url, {"channel": "prices", "data": {"i": i}})
        for client in clients:
            assert [s for s, _ in await read_seqs(client, "prices", 5)] == [1, 2, 3, 4, 5]
        epoch = (await server.stats())["channels"]["prices"]["epoch"]
        for client in clients:
            await client.close()
        for i in range(5, 10):
            await post_json(server.api_url, {"channel": "prices", "data": {"i": i}})
        again = [await open_client(server.url) for _ in clients]
        clients = again
        for client in again:
            reply = await client.subscribe("prices", since=5, epoch=epoch)
            assert reply["recovered"] is True, reply
        for client in again:
            got = await read_seqs(client, "prices", 5)
            assert got == [(seq, {"i": seq - 1}) for seq in range(6, 11)]
    finally:
        for client in clients:
            await client.close()


async def test_a_killed_worker_is_restarted_and_its_clients_recover(
    serve_workers: StartWorkers,
) -> None:
    """SIGKILL a worker: /healthz says which is down (503), it comes back (200), and its
    clients reconnect to the others and recover with `since`."""
    server = await serve_workers(2)
    clients = await open_spread(server, "prices")
    pids = await server.worker_pids()
    try:
        for i in range(3):
            await post_json(server.api_url, {"channel": "prices", "data": {"i": i}})
        for client in clients:
            await read_seqs(client, "prices", 3)
        epoch = (await server.stats())["channels"]["prices"]["epoch"]
        os.kill(pids[1], signal.SIGKILL)

        async def down() -> bool:
            try:
                status, health = await server.healthz()
            except ConnectionResetError:  # it reached the killed worker's listening socket
                return False
            return status == 503 and health.get("workers_down") == [1]

        await wait_until(down, timeout=10, what="/healthz to name worker 1 down")
        lost = []
        for client in clients:
            try:
                await asyncio.wait_for(client.ws.recv(), 0.5)
            except ConnectionClosed:
                lost.append(client)
            except TimeoutError:
                pass
        assert lost, "worker 1's clients lost their connection"
        for i in range(3, 6):
            reply = await post_json(server.api_url, {"channel": "prices", "data": {"i": i}})
            assert reply.status == 200

        async def healthy() -> bool:
            status, _ = await server.healthz()
            return status == 200

        await wait_until(healthy, timeout=30, what="worker 1 to be restarted")
        stats = await server.stats("?top=0")
        restarted = next(w for w in stats["workers"] if w["index"] == 1)
        assert restarted["up"]
        assert restarted["pid"] != pids[1]
        assert restarted["restarts"] == 1
        _, _, body = await http_get(server.port, "/metrics")
        assert 'broadcaster_worker_restarts_total{worker="1"} 1.0' in body.decode()
        assert 'broadcaster_worker_restarts_total{worker="0"} 0.0' in body.decode()
        assert f"worker 1 (pid {pids[1]}) exited with signal SIGKILL" in server.output()
        for _ in lost:
            fresh = await open_client(server.url)
            clients.append(fresh)
            subscribed = await fresh.subscribe("prices", since=3, epoch=epoch)
            assert subscribed["recovered"] is True, subscribed
            assert [s for s, _ in await read_seqs(fresh, "prices", 3)] == [4, 5, 6]
    finally:
        for client in clients:
            await client.close()


async def test_sigterm_drains_every_worker_and_exits_0(serve_workers: StartWorkers) -> None:
    """SIGTERM: every client, whatever its worker, gets close 1001; exit 0; run_dir removed."""
    server = await serve_workers(2)
    clients = await open_spread(server, "prices")
    pids = await server.worker_pids()
    run_dir = run_dir_of(pids[0])
    assert private_dir(run_dir)
    server.send_signal(signal.SIGTERM)
    codes = [await close_code(client) for client in clients]
    assert set(codes) == {1001}
    assert await server.wait_exit() == 0, server.output()
    assert not private_dir(run_dir)
    assert exited(pids.values())
    assert "Traceback" not in server.output()
    assert "WARNING" not in server.output(), "an orderly stop warns of nothing"


async def test_ctrl_c_stops_every_worker_quietly_with_exit_0(
    serve_workers: StartWorkers,
) -> None:
    """SIGINT to the whole process group (Ctrl-C): every worker drains once, exit 0,
    and no worker is reported as killed by the supervisor's own SIGTERM."""
    server = await serve_workers(2)
    clients = await open_spread(server, "prices")
    server.signal_group(signal.SIGINT)
    assert {await close_code(client) for client in clients} == {1001}
    assert await server.wait_exit() == 0, server.output()
    assert "exited with" not in server.output(), server.output()
    assert "Traceback" not in server.output()


async def test_workers_stop_when_the_supervisor_dies(serve_workers: StartWorkers) -> None:
    """A worker whose supervisor was killed stops by itself instead of serving on unmanaged."""
    server = await serve_workers(2)
    pids = await server.worker_pids()
    server.send_signal(signal.SIGKILL)
    assert await server.wait_exit() == -signal.SIGKILL

    await wait_until(lambda: exited(pids.values()), timeout=20, what="the workers to exit")


async def test_a_taken_port_stops_the_server_with_a_clear_message(
    serve_workers: StartWorkers, tmp_path: Path
) -> None:
    """Another process on the port: exit 1 naming it, rather than sharing it (SO_REUSEPORT)."""
    first = await serve_workers(2)
    second = WorkersProcess(tmp_path / "second", 2)
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "broadcaster",
            "serve",
            "--config",
            str(second.config_path),
            "--port",
            str(first.port),
            "--api-port",
            str(second.api_port),
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"port {first.port}" in proc.stderr
    assert "already in use" in proc.stderr


async def close_code(client: JsonClient) -> int | None:
    """Read until the server closes; the close code it sent."""
    try:
        for _ in range(1000):
            await asyncio.wait_for(client.ws.recv(), 10)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    raise AssertionError("the connection was not closed")


def run_dir_of(worker_pid: int) -> Path:
    """The supervisor's run_dir, from a worker's command line."""
    argv = Path(f"/proc/{worker_pid}/cmdline").read_bytes().split(b"\0")
    return Path(argv[argv.index(b"broadcaster.workers.worker") + 1].decode())


def private_dir(path: Path) -> bool:
    """Whether `path` exists as a directory only its owner may enter (mode 0700)."""
    return path.is_dir() and path.stat().st_mode & 0o777 == 0o700


def exited(pids: Iterable[int]) -> bool:
    """Whether every process in `pids` has exited (gone, or a zombie nobody reaped yet)."""
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        if "State:\tZ" not in status:
            return False
    return True


async def test_the_default_config_runs_the_demo_on_every_worker(
    serve_workers: StartWorkers,
) -> None:
    """`serve --workers 2` on the shipped default: the demo ticker (worker 0) reaches the
    clients of every worker, the pages are served, the HTTP API publishes."""
    from broadcaster.config import DEFAULT_TOML

    server = await serve_workers(2, DEFAULT_TOML)
    clients = await open_spread(server, "tickers.demo")
    try:
        for client in clients:
            event = await client.recv_event("message", timeout=10, channel="tickers.demo")
            assert "symbol" in event["data"]
        status, _, page = await http_get(server.port, "/")
        assert status == 200
        assert b"<html" in page.lower() or b"<!doctype" in page.lower()
        reply = await post_json(server.api_url, {"channel": "news", "data": {"n": 1}})
        assert reply.status == 200, reply.body
        stats = await server.stats("?top=0")
        demo = [s for s in stats["sources"] if s.get("worker") == 0]
        assert demo, "the demo ticker runs in worker 0"
        assert all(s.get("worker") == 0 for s in stats["sources"]), "and only there"
    finally:
        for client in clients:
            await client.close()
