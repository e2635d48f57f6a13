"""wss:// and https:// from `[server] tls_cert` / `tls_key`, with a certificate made here.

The writer hands pre-framed bytes straight to the transport and reads
`get_write_buffer_size()` to attribute what the socket did not take; over
TLS that transport is asyncio's (or uvloop's) SSL transport. These tests
check that the round trip, a slow consumer's cut-off (4008), SO_SNDBUF and
the keepalive all still work there.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidMessage

from broadcaster.errors import ConfigError
from broadcaster.server.app import Broadcaster
from broadcaster.server.session import ClientSession
from tests.conftest import StartServer
from tests.support.clients import JsonClient
from tests.support.security import TlsFiles, make_tls, tls_client_context
from tests.support.servers import wait_until

PAD = "t" * 1000


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path)


def tls_server_toml(files: TlsFiles, extra: str = "") -> str:
    return f"""
[server]
host = "127.0.0.1"
port = 0
socket_send_buffer = 4096
close_timeout = 0.5
tls_cert = "{files.cert}"
tls_key = "{files.key}"
{extra}
"""


async def open_tls_client(server: Broadcaster, context: ssl.SSLContext) -> JsonClient:
    return JsonClient(await connect(server.url, ssl=context, max_size=None, max_queue=None))


async def test_startup_line_names_wss_and_https_urls(serve: StartServer, tls: TlsFiles) -> None:
    """Under TLS the startup line's URLs are wss:// and https://, so they open as printed."""
    server = await serve("[api]\nenabled = true\nport = 0\n", server_toml=tls_server_toml(tls))
    line = server.http.startup_line()
    base = f"https://127.0.0.1:{server.port}"
    assert line.startswith(f"broadcaster listening on wss://127.0.0.1:{server.port}/ws — ")
    assert f"ticker {base}/ , dashboard {base}/dashboard" in line
    assert f"publish API {server.api_url}" in line
    assert "http://" not in line
    assert "ws://" not in line


async def test_wss_round_trip_and_https_publish(serve: StartServer, tls: TlsFiles) -> None:
    """Subscribe and publish over wss://; the HTTP publish API answers over https://."""
    server = await serve("[api]\nenabled = true\nport = 0\n", server_toml=tls_server_toml(tls))
    assert server.url.startswith("wss://127.0.0.1:")
    assert server.api_url.startswith("https://127.0.0.1:")
    context = tls_client_context(tls)
    subscriber = await open_tls_client(server, context)
    await subscriber.subscribe("secure")
    publisher = await open_tls_client(server, context)
    assert [await publisher.publish("secure", {"n": i}) for i in range(50)] == list(range(1, 51))
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            server.api_url, json={"channel": "secure", "data": "over https"}, ssl=context
        )
        assert response.status == 200
        assert await response.json() == {"seq": 51}
    got = await subscriber.messages("secure", 51)
    assert [m["seq"] for m in got] == list(range(1, 52))
    assert got[-1]["data"] == "over https"


async def test_plain_ws_to_a_tls_port_fails(serve: StartServer, tls: TlsFiles) -> None:
    """A ws:// client on the wss:// port never gets a WebSocket."""
    server = await serve(server_toml=tls_server_toml(tls))
    with pytest.raises(InvalidMessage):  # the server answers a ClientHello, not HTTP
        async with connect(server.url.replace("wss://", "ws://"), open_timeout=5):
            pass


async def test_a_bad_certificate_pair_is_a_config_error(serve: StartServer, tmp_path: Path) -> None:
    """A key that is not the certificate's: the server does not start, the error names the keys."""
    one, two = make_tls(tmp_path / "one"), make_tls(tmp_path / "two")
    mixed = TlsFiles(one.cert, two.key)
    with pytest.raises(ConfigError, match=r"tls_cert / tls_key"):
        await serve(server_toml=tls_server_toml(mixed))


async def stalled_tls_subscriber(
    server: Broadcaster, context: ssl.SSLContext, channel: str
) -> ClientConnection:
    """A wss:// subscriber with a 4 KB receive buffer that then stops reading its socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    ws = await connect(
        server.url, sock=sock, ssl=context, server_hostname="127.0.0.1", ping_interval=None
    )
    await ws.send(orjson.dumps({"op": "subscribe", "channel": channel, "id": 1}).decode())
    await ws.recv()  # subscribed
    ws.transport.pause_reading()
    return ws


async def test_a_slow_consumer_over_tls_is_cut_off_with_4008(
    serve: StartServer, tls: TlsFiles
) -> None:
    """A TLS subscriber that stops reading fills the SSL transport, then its queue: close
    4008 within the timeout, its memory freed; a healthy TLS subscriber gets everything."""
    server = await serve(
        '[channels."live"]\nqueue_size = 16\nslow_consumer_timeout = 0.3\n',
        server_toml=tls_server_toml(tls),
    )
    context = tls_client_context(tls)
    healthy = await open_tls_client(server, context)
    await healthy.subscribe("live")
    stalled = await stalled_tls_subscriber(server, context, "live")
    session = next(s for s in server.sessions.values() if s.outbox.subscriptions and s.id != 1)
    assert isinstance(session, ClientSession)
    sock = session.ws.transport.get_extra_info("socket")
    assert sock is not None, "the SSL transport reaches its socket"
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * 4096  # Linux doubles it
    channel = server.hub.channel("live")
    assert channel is not None
    published = 0
    for i in range(5000):  # bounded; ends at the cut-off
        if channel.counters.slow_consumer_disconnects:
            break
        await server.publish("live", {"i": i, "pad": PAD})
        published += 1
        sub = session.outbox.subscriptions.get("live")
        if sub is not None:
            assert sub.depth <= 16, "depth stays within queue_size over TLS too"
        await asyncio.sleep(0.001)
    assert channel.counters.slow_consumer_disconnects == 1
    close = session.ws.protocol.close_sent
    assert close is not None
    assert close.code == 4008
    await wait_until(lambda: session.id not in server.sessions, what="the session to go")
    got = await healthy.messages("live", published, timeout=10)
    assert [m["data"]["i"] for m in got] == list(range(published))
    stalled.transport.abort()


@pytest.mark.parametrize("delivered", [0, 1])
async def test_keepalive_drops_a_silent_tls_peer(
    serve: StartServer, tls: TlsFiles, delivered: int
) -> None:
    """A TLS subscriber that goes silent is dropped by the ping timeout.

    With limits (0, 0) the SSL transport flips between paused and resumed at
    each write or read, even with nothing buffered. Obeyed, after an odd
    number of server writes (one message delivered) websockets' keepalive
    ping would wait in drain() for traffic that never comes, and the dead
    connection would stay forever; `delivered` covers both parities.
    """
    server = await serve(server_toml=tls_server_toml(tls, "ping_interval = 0.2\n"))
    ws = await connect(server.url, ssl=tls_client_context(tls), ping_interval=None)
    client = JsonClient(ws)
    await client.subscribe("quiet")
    for i in range(delivered):
        await server.publish("quiet", i)
        await client.recv_event("message")
    ws.transport.pause_reading()  # no pong from now on
    await wait_until(lambda: not server.sessions, timeout=10, what="the ping timeout")
    ws.transport.abort()
