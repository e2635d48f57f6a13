"""One keepalive sweep pings every connection; an unanswered ping closes it (1011)."""

from __future__ import annotations

from broadcaster.server.session import ClientSession
from tests.conftest import ConnectRaw, StartServer
from tests.support.clients import open_client
from tests.support.servers import wait_until

FAST_KEEPALIVE = """
[server]
port = 0
ping_interval = 0.2
close_timeout = 0.3
"""


async def test_client_that_answers_pings_stays_connected(serve: StartServer) -> None:
    """A live client (its library answers pings) is never closed by the keepalive."""
    server = await serve(server_toml=FAST_KEEPALIVE)
    client = await open_client(server.url)
    (session,) = server.sessions.values()
    assert isinstance(session, ClientSession)
    # Wait for several pings to have been answered: websockets measured the latency.
    await wait_until(lambda: session.ws.latency > 0, what="a pong")
    first_ping = session.last_ping
    await wait_until(lambda: session.last_ping > first_ping + 0.5, what="three more pings")
    await client.send({"op": "ping", "id": 1})
    assert await client.recv() == {"event": "pong", "id": 1}
    assert not session.closing


async def test_client_that_never_answers_is_closed_and_forgotten(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """A half-open connection (no pong within a ping interval) is closed and freed."""
    server = await serve(server_toml=FAST_KEEPALIVE)
    await connect_raw(server.port)  # handshakes, then never reads or answers again
    (session,) = server.sessions.values()
    assert isinstance(session, ClientSession)
    ws = session.ws
    await wait_until(lambda: not server.sessions, what="the silent client to be dropped")
    await wait_until(ws.connection_lost_waiter.done, what="its TCP connection to end")
    assert ws.protocol.close_sent is not None
    assert ws.protocol.close_sent.code == 1011
