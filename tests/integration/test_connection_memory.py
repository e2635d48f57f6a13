"""What an idle connection costs the server: memory per connection, and its socket's cap.

Servers holding many mostly idle clients (dashboards left open, tabs in the
background) are sized by the memory one connection holds; docs/ARCHITECTURE.md
lists what that is. The figure is read from the server process's RSS, which
is stable on this machine (unlike CPU time).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket

from broadcaster.server.session import ClientSession
from tests.conftest import StartProcess, StartServer
from tests.support.http import http_get_json
from tests.support.raw_client import RawClient

IDLE_TOML = """
[server]
host = "127.0.0.1"

[limits]
max_connections = 0
"""

CONNECTIONS = 600
# Measured 7.5 KB per idle connection (11.6 KB before the connection's
# instance dict, its drain-waiter and frame deques, its logger adapter and its
# handshake future were trimmed; 8.2 KB before the handler's own coroutine,
# the session's instance dict and the outbox's empty lists went): the limit
# leaves room for the allocator's rounding over 600 connections.
MAX_BYTES_PER_CONNECTION = 8.75 * 1024


async def _idle_connection(port: int) -> asyncio.StreamWriter:
    """Open one WebSocket (the handshake only) and leave it idle."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    return writer


async def test_an_idle_connection_costs_the_server_under_8_75_kb(
    serve_process: StartProcess,
) -> None:
    proc = await serve_process(IDLE_TOML)
    writers: list[asyncio.StreamWriter] = []
    try:
        writers.append(await _idle_connection(proc.port))  # warm up lazily built state
        status, stats = await http_get_json(proc.port, "/stats")
        assert status == 200
        before = proc.rss_bytes()
        for _ in range(0, CONNECTIONS, 100):
            writers += await asyncio.gather(*(_idle_connection(proc.port) for _ in range(100)))
        status, stats = await http_get_json(proc.port, "/stats")
        assert status == 200
        assert len(stats["connections"]) == CONNECTIONS + 1, "every connection has its session"
        per_connection = (proc.rss_bytes() - before) / CONNECTIONS
        assert per_connection < MAX_BYTES_PER_CONNECTION, f"{per_connection:.0f} B per connection"
    finally:
        for writer in writers:
            writer.close()


async def test_a_client_socket_send_buffer_is_capped(serve: StartServer) -> None:
    """`socket_send_buffer` caps the kernel buffer of every accepted socket (set on the
    listening socket and inherited), so a stalled client cannot park megabytes there."""
    server = await serve()  # the test config: socket_send_buffer = 4096
    client = await RawClient(server.port).connect()
    try:
        await client.subscribe("a")
        (session,) = server.sessions.values()
        assert isinstance(session, ClientSession)
        sock = session.ws.transport.get_extra_info("socket")
        assert sock is not None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * 4096  # Linux doubles
    finally:
        client.close()
