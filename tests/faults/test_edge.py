"""The edge before and around the handshake, attacked over raw sockets on 127.0.0.1.

Each test replays an attack from issue 15 with bounded numbers and checks
what a user of the server depends on: unauthenticated clients are refused
early and counted, the memory they can pin is bounded by the configured
limits, half-sent API requests do not hold connections forever, malformed
requests get a 4xx (never a 500 with a traceback), and no credential reaches
a log line at any level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from broadcaster.server.app import Broadcaster
from tests.conftest import StartProcess, StartServer
from tests.support.http import http_get
from tests.support.metrics import scrape
from tests.support.security import ADMIN_TOKEN, SECRET, hs256
from tests.support.servers import free_port, wait_until

# The attacker's address: any 127/8 address is local, and a different one from
# the scraper's (127.0.0.1, exempt) keeps the per-address limits on it alone.
ATTACKER = "127.0.0.2"
HEADER_LINE = b"X-Stuffing: " + b"a" * 7000 + b"\r\n"  # ~7 KB, under websockets' 8 KiB lines
API_KEY = "api-key-for-edge-tests-0123456789"

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(port: int, *, source: str = "127.0.0.1") -> Conn:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes (a reset ends it too: the server closed)."""
    chunks: list[bytes] = []
    try:
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    except ConnectionError:
        pass
    return b"".join(chunks)


async def _exchange(port: int, request: bytes) -> bytes:
    """Send `request` whole, then read the answer until the server closes."""
    reader, writer = await _connect(port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(_read_all(reader), 10)
    finally:
        writer.close()


def _status(answer: bytes) -> int:
    """The status code of an HTTP answer (0 when the server answered nothing)."""
    first = answer.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) > 1 else 0


def _body(answer: bytes) -> dict[str, object]:
    document = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert isinstance(document, dict)
    return document


def _api_connections(server: Broadcaster) -> int:
    """Connections the API's aiohttp server holds."""
    assert server.api is not None
    assert server.api._runner is not None
    assert server.api._runner.server is not None
    return len(server.api._runner.server.connections)


@contextlib.asynccontextmanager
async def _connections() -> AsyncIterator[list[asyncio.StreamWriter]]:
    writers: list[asyncio.StreamWriter] = []
    try:
        yield writers
    finally:
        for writer in writers:
            writer.close()


# --- header stuffing against a real `broadcaster serve` process (RSS via /proc) -----------

EDGE_PROCESS_TOML = """
[server]
host = "127.0.0.1"

[limits]
exempt_networks = ["127.0.0.1/32"]
half_open_per_ip = 50
max_half_open = 100
max_header_bytes = 16384
"""
ATTACK_CONNECTIONS = 200
HELD_PER_IP = 50
MAX_HEADER_BYTES = 16384
# What one held connection may cost besides its headers (objects, buffers, a task):
# measured at ~10 KB for an idle WebSocket connection, so this is generous.
PER_CONNECTION_ALLOWANCE = 64 * 1024
# Allocator and interpreter noise around any measurement.
RSS_SLACK = 16 * 1024 * 1024


async def _refusals(port: int) -> dict[str, float]:
    metrics = await scrape(port)
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in metrics.samples.items()
        if name == "broadcaster_refusals_total"
    }


async def test_header_stuffing_is_refused_early_and_memory_stays_bounded(
    serve_process: StartProcess,
) -> None:
    """200 connections from one address sending ~7 KB header lines and never finishing.

    Before: all 200 held for the open timeout, ~1.2 MB each once the lines kept
    coming (126 lines of ~8 KB), no refusal. Now: the 151st and later are
    refused at accept (429, `ip_half_open`), and each held one is answered 431
    (`header_size`) and closed once its head passes 16 KiB, so the server's RSS
    grows by at most the configured limits' worth.
    """
    server = await serve_process(EDGE_PROCESS_TOML)
    await _refusals(server.port)  # warm up the scrape path before measuring
    rss_before = server.rss_bytes()
    async with _connections() as writers:
        readers: list[asyncio.Task[bytes]] = []
        for _ in range(ATTACK_CONNECTIONS):
            reader, writer = await _connect(server.port, source=ATTACKER)
            writers.append(writer)
            writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n" + HEADER_LINE)
            readers.append(asyncio.create_task(_read_all(reader)))

        refused_at_accept = ATTACK_CONNECTIONS - HELD_PER_IP
        await wait_until(
            lambda: sum(task.done() for task in readers) >= refused_at_accept,
            timeout=30,
            what="the connections over half_open_per_ip to be closed",
        )
        refusals = await _refusals(server.port)
        assert refusals["ip_half_open"] == refused_at_accept
        held = [i for i, task in enumerate(readers) if not task.done()]
        assert len(held) == HELD_PER_IP
        for task in readers:
            if task.done():
                answer = task.result()
                # Refused before reading: the answer may be lost to a reset.
                assert answer == b"" or _status(answer) == 429, answer[:200]
        rss_held = server.rss_bytes()

        async def keep_stuffing(index: int) -> None:
            # The attacker: ~126 lines of ~8 KB, until the server answers.
            for _ in range(126):
                if readers[index].done():
                    return
                try:
                    writers[index].write(HEADER_LINE)
                    await writers[index].drain()
                except ConnectionError:
                    return

        await asyncio.wait_for(asyncio.gather(*(keep_stuffing(i) for i in held)), timeout=60)
        answers = await asyncio.wait_for(asyncio.gather(*(readers[i] for i in held)), 30)
        assert all(_status(answer) == 431 for answer in answers), [a[:80] for a in answers]
        refusals = await _refusals(server.port)
        assert refusals["header_size"] == HELD_PER_IP
        rss_after = server.rss_bytes()

    bound = HELD_PER_IP * (MAX_HEADER_BYTES + PER_CONNECTION_ALLOWANCE) + RSS_SLACK
    print(
        f"\nheader stuffing: {ATTACK_CONNECTIONS} connections, {len(held)} held, "
        f"{refused_at_accept} refused at accept, {HELD_PER_IP} answered 431; RSS "
        f"{rss_before / 2**20:.1f} MiB -> {rss_held / 2**20:.1f} MiB (held) -> "
        f"{rss_after / 2**20:.1f} MiB (after), growth {(rss_after - rss_before) / 2**20:.1f} "
        f"MiB, bound {bound / 2**20:.1f} MiB"
    )
    assert rss_after - rss_before <= bound


# --- the half-open caps and the header cap, in process ----------------------------------


async def test_half_open_connections_are_capped_in_total(serve: StartServer) -> None:
    """Over max_half_open connections still sending their request: 503 at accept, counted;
    a finished request gives its place back."""
    server = await serve("[limits]\nmax_half_open = 4\n")
    async with _connections() as writers:
        pending: list[Conn] = []
        for _ in range(4):
            reader, writer = await _connect(server.port)
            writers.append(writer)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            pending.append((reader, writer))
        await wait_until(lambda: server.edge.half_open.open == 4, what="4 half-open")

        answer = await _exchange(server.port, b"")
        assert _status(answer) == 503
        assert b"Retry-After: 5" in answer
        assert _body(answer)["error"] == "unavailable"
        assert server.metrics.refusals["half_open"] == 1

        reader, writer = pending[0]
        writer.write(b"\r\n")  # this request is complete now
        assert _status(await asyncio.wait_for(_read_all(reader), 10)) == 200
        await wait_until(lambda: server.edge.half_open.open == 3, what="a place given back")
        answer = await _exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(answer) == 200
    await wait_until(lambda: server.edge.half_open.open == 0, what="all places given back")


async def test_the_header_cap_refuses_as_bytes_arrive(serve: StartServer) -> None:
    """A request head over max_header_bytes is answered 431 before it is complete; one
    under it is served (the cap is configurable)."""
    server = await serve("[limits]\nmax_header_bytes = 2048\n")
    small = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 1900 + b"\r\n\r\n"
    assert len(small) <= 2048
    assert _status(await _exchange(server.port, small)) == 200

    # Never completed (no blank line): refused on the bytes alone.
    answer = await _exchange(server.port, b"GET /ws HTTP/1.1\r\n" + b"X-Pad: p\r\n" * 300)
    assert _status(answer) == 431
    assert _body(answer)["error"] == "header_too_large"
    assert server.metrics.refusals["header_size"] == 1
    await wait_until(lambda: server.edge.half_open.open == 0, what="the place given back")


# --- malformed requests on the WebSocket port --------------------------------------------

MALFORMED = [
    b"GET //[ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # the 500
    b"GET //[ HTTP/1.1\r\n\r\n",
    b"GET //evil/ws HTTP/1.1\r\n\r\n",
    b"GET * HTTP/1.1\r\n\r\n",
    b"GET http://127.0.0.1/ws HTTP/1.1\r\n\r\n",
    b"GET /ws\x01 HTTP/1.1\r\n\r\n",
    b"GET /ws?x=\xff HTTP/1.1\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"\r\n\r\n",
    b"GET /ws HTTP/2.0\r\n\r\n",
    b"GET /ws HTTP/1.1\nHost: x\n\n",
    b"GET /ws HTTP/1.1\r\nBad Header: x\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /stats HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
]
TOO_LARGE = [
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",  # websockets: 414
    b"GET /ws HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",  # websockets: 431
    b"GET /ws HTTP/1.1\r\n" + b"X: a\r\n" * 200 + b"\r\n",  # websockets: 431 (headers)
]


async def test_malformed_requests_get_a_4xx_a_refusal_and_no_traceback(
    serve: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await serve()
    for request in MALFORMED:
        answer = await _exchange(server.port, request)
        assert _status(answer) == 400, (request, answer[:200])
        assert _body(answer)["error"] == "bad_request"
    for request in TOO_LARGE:
        answer = await _exchange(server.port, request)
        assert _status(answer) in (414, 431), (request[:40], answer[:200])
    for _ in range(3):  # a port check (a load balancer's): no request, no refusal
        _, writer = await _connect(server.port)
        writer.close()
        await writer.wait_closed()
    await wait_until(lambda: server.edge.half_open.open == 0, what="places given back")
    assert server.metrics.refusals["bad_request"] == len(MALFORMED)
    assert server.metrics.refusals["header_size"] == len(TOO_LARGE)
    # Tracebacks only at DEBUG (websockets' own, when asked for), never above.
    loud = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING or (r.exc_info and r.levelno > logging.DEBUG)
    ]
    assert not loud, [r.getMessage() for r in loud]
    # The server still serves.
    assert (await http_get(server.port, "/healthz"))[0] == 200


# --- the publish API: timeouts, a connection cap, quiet aborts ---------------------------


def _api_toml(extra: str = "") -> str:
    return f"""
[api]
enabled = true
port = 0
header_timeout = 0.5
body_timeout = 0.5
max_connections = 150
{extra}
"""


HALF_HEAD = b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: applica"
HALF_BODY = (
    b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100\r\n\r\n{"channel": "a", "da'
)


async def test_half_sent_api_requests_are_closed_and_capped(serve: StartServer) -> None:
    """200 half-sent requests: the 50 over max_connections are closed at accept; the
    others are closed after header_timeout (half a head) or answered 408 after
    body_timeout (half a body). Before: all 200 held indefinitely."""
    server = await serve(_api_toml())
    assert server.api is not None
    port = server.api.port
    async with _connections() as writers:
        readers: list[asyncio.Task[bytes]] = []
        for _ in range(200):
            reader, writer = await _connect(port)
            writers.append(writer)
            readers.append(asyncio.create_task(_read_all(reader)))
        await wait_until(
            lambda: server.metrics.refusals["api_connections"] == 50, what="50 over the cap"
        )
        for index, writer in enumerate(writers):
            writer.write(HALF_BODY if index % 2 else HALF_HEAD)
        answers = await asyncio.wait_for(asyncio.gather(*readers), 30)
    statuses = [_status(answer) for answer in answers]
    timed_out = statuses.count(408)
    print(
        f"\nhalf-sent API requests: 200 sent, {statuses.count(0)} closed without an answer "
        f"(over the cap or no complete head), {timed_out} answered 408; all closed"
    )
    assert set(statuses) <= {0, 408}
    assert 50 <= timed_out <= 100  # the half bodies among the 150 admitted
    assert server.metrics.refusals["api_timeout"] == timed_out
    await wait_until(lambda: _api_connections(server) == 0, what="no connection left")
    # Still serving.
    status = await _publish(port, b'{"channel": "a", "data": 1}')
    assert status == 200


async def _publish(port: int, body: bytes, *, headers: bytes = b"") -> int:
    request = (
        b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + headers
        + b"Connection: close\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    return _status(await _exchange(port, request))


async def test_api_client_aborts_log_no_traceback(
    serve: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each abort used to log ~1.35 KB of ERROR traceback; now at most one DEBUG line."""
    caplog.set_level(logging.INFO)
    server = await serve(_api_toml().replace("body_timeout = 0.5", "body_timeout = 30"))
    assert server.api is not None
    for _ in range(20):
        _reader, writer = await _connect(server.api.port)
        writer.write(HALF_BODY)
        await writer.drain()
        await wait_until(lambda: _api_connections(server) == 1, what="the request read")
        writer.transport.abort()  # a reset, mid-body
        await writer.wait_closed()
    await wait_until(lambda: _api_connections(server) == 0, what="all gone")
    garbage = b"POST /api/publish HTTP/1.1\r\nBad Header: x\r\n\r\n"
    assert _status(await _exchange(server.api.port, garbage)) == 400
    noisy = [
        r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("aiohttp")
    ]
    assert not noisy, [r.getMessage() for r in noisy]
    assert not [r for r in caplog.records if r.exc_info]


# --- no credential in any log line --------------------------------------------------------

AUTH_TOML = f"""
[auth]
enabled = true
algorithms = ["HS256"]
secret = "{SECRET}"

[admin]
token = "{ADMIN_TOKEN}"

[api]
enabled = true
port = 0
keys = ["{API_KEY}"]
"""


async def _leak_attempts(ws_port: int, api_port: int, jwt: str) -> None:
    """Every way a credential reaches the server: query, header, API key, a bad request."""
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{ws_port}/ws?token={jwt}") as ws:
        await ws.send(orjson.dumps({"op": "auth", "token": jwt}).decode())
        await ws.recv()
    async with connect(
        f"ws://127.0.0.1:{ws_port}/ws", additional_headers={"Authorization": f"Bearer {jwt}"}
    ):
        pass
    assert (await http_get(ws_port, f"/stats?token={ADMIN_TOKEN}"))[0] == 200
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await http_get(ws_port, "/metrics", headers))[0] == 200
    bad_line = f"GET /ws?token={jwt} HTTP/9.9\r\n\r\n".encode()
    assert _status(await _exchange(ws_port, bad_line)) == 400
    bad_header = f"GET /ws?token={ADMIN_TOKEN} HTTP/1.1\r\nBad Header: {jwt}\r\n\r\n"
    assert _status(await _exchange(ws_port, bad_header.encode())) == 400
    key = f"Authorization: apikey {API_KEY}\r\n".encode()
    assert await _publish(api_port, b'{"channel": "a", "data": 1}', headers=key) == 200
    broken = f"POST /api/publish?token={jwt} HTTP/1.1\r\n{key.decode()}Bad Header: x\r\n\r\n"
    assert _status(await _exchange(api_port, broken.encode())) == 400


def _secrets(jwt: str) -> list[str]:
    return [jwt, ADMIN_TOKEN, API_KEY, SECRET, jwt.split(".")[2]]


async def test_no_credential_in_debug_logs(
    serve: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await serve(AUTH_TOML)
    assert server.api is not None
    jwt = hs256()
    await _leak_attempts(server.port, server.api.port, jwt)
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "< GET /ws?token=[redacted]" in text, "websockets logged the request line"
    for secret in _secrets(jwt):
        assert secret not in text


@pytest.fixture
def debug_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int, int]]:
    """`broadcaster --log-level DEBUG serve` with its log in a file (a pipe would fill)."""
    port, api_port = free_port(), free_port()
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        + AUTH_TOML.replace("port = 0", f"port = {api_port}")
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broadcaster",
                "--log-level",
                "DEBUG",
                "serve",
                "--config",
                str(config),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    try:
        yield proc, log, port, api_port
    finally:
        proc.kill()
        proc.wait()


async def test_no_credential_in_a_debug_process_log(
    debug_process: tuple[subprocess.Popen[bytes], Path, int, int],
) -> None:
    proc, log, port, api_port = debug_process
    await wait_until(
        lambda: b"HTTP publish API listening" in log.read_bytes(), timeout=20, what="startup"
    )
    jwt = hs256()
    await _leak_attempts(port, api_port, jwt)
    proc.terminate()
    await wait_until(lambda: proc.poll() is not None, timeout=15, what="exit")
    text = log.read_text()
    assert "GET /ws?token=[redacted]" in text
    for secret in _secrets(jwt):
        assert secret not in text
