"""The server as users run it: `python -m broadcaster serve`, signals, exit codes, memory."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import broadcaster
from tests.conftest import StartProcess
from tests.support.clients import JsonClient
from tests.support.http import http_get_json
from tests.support.raw_client import RawClient
from tests.support.servers import free_port, wait_until

PROCESS_TOML = """
[server]
host = "127.0.0.1"
socket_send_buffer = 4096
shutdown_timeout = 3.0
close_timeout = 0.5

[channels."firehose"]
strategy = "drop-oldest"
queue_size = 64
slow_consumer_timeout = 120.0
"""


async def test_sigterm_closes_clients_with_1001_and_exits_0(serve_process: StartProcess) -> None:
    """SIGTERM: connected clients get close 1001 and the process exits with status 0."""
    proc = await serve_process(PROCESS_TOML)
    async with connect(proc.url) as ws:
        client = JsonClient(ws)
        await client.subscribe("firehose")
        proc.terminate()
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
    code, output = await proc.wait_exit()
    assert code == 0, output
    assert "Traceback" not in output


async def test_sigterm_drains_a_backlog_before_closing(
    serve_process: StartProcess,
) -> None:
    """Queued messages are delivered before the 1001 close (up to shutdown_timeout)."""
    proc = await serve_process(PROCESS_TOML)
    reader = await RawClient(proc.port).connect()
    try:
        await reader.subscribe("firehose")
        async with connect(proc.url) as ws:
            publisher = JsonClient(ws)
            for i in range(40):
                await publisher.send(
                    {"op": "publish", "channel": "firehose", "data": {"i": i, "pad": "q" * 1000}}
                )
            assert await publisher.publish("firehose", {"i": "last"}) == 41
        status, stats = await http_get_json(proc.port, "/stats")
        assert status == 200
        assert stats["connections"][0]["depth"] > 0, "the reader has a backlog at SIGTERM"
        proc.terminate()
        events = await reader.read_to_end(timeout=10)
        seqs = [e["seq"] for e in events if e.get("event") == "message"]
        assert seqs == list(range(1, 42)), "nothing queued was lost"
        assert reader.close_code == 1001
    finally:
        reader.close()
    code, output = await proc.wait_exit()
    assert code == 0, output


async def test_memory_stays_bounded_with_many_stalled_clients(
    serve_process: StartProcess,
) -> None:
    """40 clients that stop reading cost the server bounded memory, not what was published."""
    proc = await serve_process(PROCESS_TOML)
    stalled = [await RawClient(proc.port).connect() for _ in range(40)]
    try:
        for client in stalled:
            await client.subscribe("firehose")
        before = proc.rss_bytes()
        message_size = 1000
        published = 3000
        async with connect(proc.url) as ws:
            publisher = JsonClient(ws)
            for i in range(published):
                op: dict[str, object] = {
                    "op": "publish",
                    "channel": "firehose",
                    "data": {"i": i, "p": "m" * 1000},
                }
                if i % 100 == 99:
                    op["id"] = i  # a round trip now and then paces the publisher
                    await publisher.send(op)
                    await publisher.recv_event("published", id=i)
                else:
                    await publisher.send(op)
        status, stats = await http_get_json(proc.port, "/stats")
        growth = proc.rss_bytes() - before
        unbounded = len(stalled) * published * message_size
        # Per client: its queue (64 shared messages) and at most one write
        # budget (64 KiB) stuck in the transport; plus interpreter slack.
        allowed = len(stalled) * (64 * 1024 + 64 * 1100) + 16 * 1024 * 1024
        assert allowed < unbounded / 4, "the bound must be far below the unbounded cost"
        assert growth < allowed, f"RSS grew {growth} bytes (allowed {allowed})"
        assert status == 200
        assert len(stats["connections"]) == 40
        for conn in stats["connections"]:
            (sub,) = conn["subscriptions"]
            assert sub["dropped"] > 0, "each stalled client lost messages instead of memory"
            assert sub["depth"] <= 64 + 80, "queue plus what sits in the transport"
    finally:
        for client in stalled:
            client.close()


def _run_cli(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broadcaster", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[server]\nport = 'eighty'\n", "[server] port: expected an integer, got 'eighty'"),
        ("[defaults]\nqueue_sise = 3\n", "[defaults] queue_sise: expected one of the known keys"),
        ('[channels."a"]\nstrategy = "fastest"\n', '[channels."a"] strategy: expected'),
        ("[defaults]\nqueue_size = 10\nlow_watermark = 10\n", "[defaults] low_watermark"),
        ("[server\nport = 1\n", "(syntax): expected valid TOML"),
        ('[broker]\nkind = "kafka"\n', '[broker] kind: expected "memory" | "redis"'),
        ("[sources.feed]\nkind = 'nope'\nchannel = 'x'\n", "[sources.feed] kind"),
    ],
)
async def test_bad_config_exits_2_with_one_paragraph_naming_file_and_key(
    tmp_path: Path, toml: str, expected: str
) -> None:
    """A user's config mistake prints the file, the key and the expectation; exit 2, no trace."""
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = await asyncio.to_thread(_run_cli, ["serve", "--config", str(path)])
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


async def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A config path that does not exist is a usage error, not a crash."""
    result = await asyncio.to_thread(
        _run_cli, ["serve", "--config", str(tmp_path / "missing.toml")]
    )
    assert result.returncode == 2
    assert "missing.toml" in result.stderr
    assert "Traceback" not in result.stderr


async def test_bad_environment_variable_exits_2() -> None:
    """An environment override of the wrong type names the variable."""
    result = await asyncio.to_thread(_run_cli, ["serve"], {"BROADCASTER_SERVER_PORT": "not-a-port"})
    assert result.returncode == 2
    assert "BROADCASTER_SERVER_PORT" in result.stderr


def _startup_line(output: str) -> str:
    (line,) = [line for line in output.splitlines() if "broadcaster listening on" in line]
    return line


@pytest.mark.parametrize("api", [True, False])
async def test_startup_line_names_the_pages_and_the_publish_api(
    serve_process: StartProcess, api: bool
) -> None:
    """The one line a newcomer reads says where the pages, metrics and publish API are."""
    proc = await serve_process(f"{PROCESS_TOML}\n[api]\nenabled = {str(api).lower()}\nport = 0\n")
    proc.terminate()
    code, output = await proc.wait_exit()
    assert code == 0
    line = _startup_line(output)
    base = f"http://127.0.0.1:{proc.port}"
    assert f"broadcaster listening on ws://127.0.0.1:{proc.port}/ws — " in line
    for page in (f"ticker {base}/ ", f"dashboard {base}/dashboard ", f"metrics {base}/metrics"):
        assert page in line
    assert f"examples {base}/examples/ " in line
    publish = re.search(r"publish API (http://127\.0\.0\.1:\d+/api/publish)", line)
    assert (publish is not None) == api, line


def test_version_flag_prints_the_distribution_and_version() -> None:
    """`broadcaster --version` says which release runs, for bug reports; exit 0."""
    script = shutil.which("broadcaster", path=str(Path(sys.executable).parent))
    assert script is not None, "the console script is installed with the project"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    match = re.fullmatch(r"broadcaster-fanout (\d+\.\d+\.\d+\S*)\n", result.stdout)
    assert match, result.stdout
    try:
        installed = importlib.metadata.version("broadcaster-fanout")
    except importlib.metadata.PackageNotFoundError:
        installed = broadcaster.__version__
    assert match.group(1) == installed


async def test_misspelt_environment_variable_exits_2_naming_the_intended_one() -> None:
    """`BROADCASTER_SERVER_PROT=9000 broadcaster serve` stops instead of serving on 8765."""
    result = await asyncio.to_thread(_run_cli, ["serve"], {"BROADCASTER_SERVER_PROT": "9000"})
    assert result.returncode == 2
    assert "BROADCASTER_SERVER_PROT" in result.stderr
    assert "did you mean BROADCASTER_SERVER_PORT?" in result.stderr
    assert "Traceback" not in result.stderr


async def test_console_script_serves_the_embedded_default_with_the_demo_ticker() -> None:
    """`broadcaster serve` with no config streams the demo ticker on tickers.demo."""
    script = shutil.which("broadcaster", path=str(Path(sys.executable).parent))
    assert script is not None, "the console script is installed with the project"
    port = free_port()
    proc = subprocess.Popen(
        [script, "serve", "--port", str(port), "--api-port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        async def listening() -> bool:
            try:
                status, _ = await http_get_json(port, "/healthz")
                return status == 200
            except OSError:
                return False

        await wait_until(listening, timeout=20, what="the default server")
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            client = JsonClient(ws)
            reply = await client.subscribe("tickers.demo")
            assert reply["strategy"] == "conflate"
            message = await client.recv_event("message", channel="tickers.demo")
            while message.get("snapshot"):
                assert message["seq"] <= reply["seq"]
                message = await client.recv_event("message", channel="tickers.demo")
            assert message["seq"] > reply["seq"]
            assert set(message["data"]) >= {"symbol", "price"}
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert "Traceback" not in stderr


async def test_environment_sets_the_port(serve_process: StartProcess, tmp_path: Path) -> None:
    """BROADCASTER_SERVER_PORT is used when no flag overrides it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "broadcaster", "serve"],
        env={**os.environ, "BROADCASTER_SERVER_PORT": str(port), "BROADCASTER_API_PORT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def listening() -> bool:
            try:
                return (await http_get_json(port, "/healthz"))[0] == 200
            except OSError:
                return False

        await wait_until(listening, timeout=20, what="the server on the env port")
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
