"""Tokens against a real server: what they grant, and how bad or expired ones are refused.

HS256 (a shared secret) and RS256 (a key pair generated here), sent as
`/ws?token=` or in an `auth` op; channel permissions (`anyone` / `token` /
`none`); `$sys.*` and the admin endpoints behind the admin token. Every
refusal is checked on the wire (error code, close code and reason, HTTP
status) and in `broadcaster_refusals_total`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from websockets.asyncio.client import connect

from broadcaster.server.app import Broadcaster
from tests.conftest import TOPOLOGIES, StartServer
from tests.support.clients import JsonClient, open_client
from tests.support.http import http_get
from tests.support.metrics import scrape
from tests.support.security import ADMIN_TOKEN, SECRET, hs256, read_until_closed, rsa_keys

pytestmark = [
    pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True),
    pytest.mark.usefixtures("topology"),
]

PERMISSIONS = f"""
[auth]
enabled = true
algorithms = ["HS256"]
secret = "{SECRET}"

[admin]
token = "{ADMIN_TOKEN}"

[defaults]
subscribe = "anyone"
publish = "token"

[channels."private.*"]
subscribe = "token"
publish = "token"

[channels."closed"]
subscribe = "none"
publish = "none"
"""


def with_token(server: Broadcaster, token: str) -> str:
    return f"{server.url}?token={token}"


async def refusals(server: Broadcaster, reason: str) -> float:
    metrics = await scrape(server.port, ADMIN_TOKEN)
    return metrics.value("broadcaster_refusals_total", reason=reason)


async def test_a_query_token_grants_exactly_its_channels(serve: StartServer) -> None:
    """HS256 in ?token=: subscribe and publish where its patterns match, forbidden elsewhere."""
    server = await serve(PERMISSIONS)
    token = hs256(subscribe=["private.*"], publish=["private.a"])
    client = await open_client(with_token(server, token))
    await client.subscribe("private.b")
    assert await client.publish("private.a", "ok") == 1
    await client.send({"op": "publish", "channel": "private.b", "data": 1, "id": "p"})
    error = await client.recv_event("error", id="p")
    assert error["code"] == "forbidden"
    assert "does not allow publish" in error["message"]
    # A channel only [defaults] covers: anyone subscribes, a token publishes (not this one).
    await client.subscribe("public")
    await client.send({"op": "publish", "channel": "public", "data": 1, "id": "q"})
    assert (await client.recv_event("error", id="q"))["code"] == "forbidden"
    assert await refusals(server, "forbidden") == 2
    assert await refusals(server, "token") == 0


async def test_an_auth_op_with_an_rs256_token(serve: StartServer, tmp_path: Path) -> None:
    """RS256: the server holds only the public key; the `auth` op is answered `authenticated`."""
    keys = rsa_keys(tmp_path)
    rs = await serve(
        f"""
[auth]
enabled = true
algorithms = ["RS256"]
public_key_file = "{keys.public_file}"

[channels."private.*"]
subscribe = "token"
publish = "token"
"""
    )
    client = await open_client(rs.url)
    await client.send({"op": "auth", "token": keys.sign(subscribe=["private.*"]), "id": "a"})
    assert await client.recv() == {"event": "authenticated", "id": "a"}
    await client.subscribe("private.x")
    # A token signed with another key pair is refused.
    other = rsa_keys(tmp_path / "other")
    async with connect(rs.url) as ws:
        await ws.send('{"op": "auth", "id": 1, "token": "' + other.sign(subscribe=["*"]) + '"}')
        got, code, reason = await read_until_closed(ws)
    assert [e["code"] for e in got] == ["unauthorized"]
    assert "Signature verification failed" in got[0]["message"]
    assert (code, reason) == (1008, "invalid token")


async def test_without_a_token_only_anyone_channels_work(serve: StartServer) -> None:
    """Anonymous: `token` and `none` channels are forbidden, never counted as abuse."""
    server = await serve(PERMISSIONS)
    client = await open_client(server.url)
    await client.subscribe("public")
    for i in range(15):  # more than the abuse limit: forbidden never closes
        await client.send({"op": "subscribe", "channel": "private.a", "id": i})
        error = await client.recv_event("error", id=i)
        assert error["code"] == "forbidden"
        assert "needs a token" in error["message"]
    await client.send({"op": "ping", "id": "alive"})
    await client.recv_event("pong", id="alive")
    assert await refusals(server, "forbidden") == 15
    assert await refusals(server, "abuse") == 0


async def test_none_refuses_every_client_even_the_admin(serve: StartServer) -> None:
    """`none`: no WebSocket client at all; the server itself still publishes there."""
    server = await serve(PERMISSIONS)
    admin = await open_client(with_token(server, ADMIN_TOKEN))
    await admin.send({"op": "subscribe", "channel": "closed", "id": 1})
    assert (await admin.recv_event("error", id=1))["code"] == "forbidden"
    await admin.send({"op": "publish", "channel": "closed", "data": 1, "id": 2})
    assert (await admin.recv_event("error", id=2))["code"] == "forbidden"
    assert await server.publish("closed", "from a source") == 1


BAD_TOKENS: dict[str, Any] = {
    "expired": (lambda: hs256(ttl=-5), "token expired", "token expired"),
    "wrong signature": (
        lambda: hs256(secret="another-secret-of-32-bytes-at-least!"),
        "invalid token",
        "Signature verification failed",
    ),
    "not a JWT": (lambda: "garbage", "invalid token", "invalid token"),
    "alg none": (
        lambda: "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.",
        "invalid token",
        "'none' is not accepted",
    ),
    "no exp": (
        lambda: jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"),
        "invalid token",
        '"exp"',
    ),
}


@pytest.mark.parametrize("how", ["query", "auth op"])
@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_a_bad_token_gets_unauthorized_and_close_1008(
    serve: StartServer, kind: str, how: str
) -> None:
    """Expired, badly signed, malformed, unsigned, no expiry: error + close 1008 with a reason."""
    make, close_reason, detail = BAD_TOKENS[kind]
    server = await serve(PERMISSIONS)
    token = make()
    if how == "query":
        async with connect(with_token(server, token)) as ws:
            got, code, reason = await read_until_closed(ws)
    else:
        async with connect(server.url) as ws:
            await ws.send('{"op": "auth", "id": "a", "token": "' + token + '"}')
            got, code, reason = await read_until_closed(ws)
    assert [e["event"] for e in got] == ["error"]
    assert got[0]["code"] == "unauthorized"
    assert detail in got[0]["message"]
    if how == "auth op":
        assert got[0]["id"] == "a"
    assert (code, reason) == (1008, close_reason)
    assert await refusals(server, "token") == 1


async def test_a_token_expiring_while_connected_closes_1008(serve: StartServer) -> None:
    """A timer fires at `exp`: error `unauthorized`, then close 1008 "token expired"."""
    server = await serve(PERMISSIONS)
    async with connect(with_token(server, hs256(ttl=0.5, subscribe=["private.*"]))) as ws:
        await ws.send('{"op": "subscribe", "channel": "private.a", "id": 1}')
        got, code, reason = await read_until_closed(ws)
    assert [e["event"] for e in got] == ["subscribed", "error"]
    assert got[1]["code"] == "unauthorized"
    assert (code, reason) == (1008, "token expired")
    assert await refusals(server, "token") == 1


async def test_a_new_auth_replaces_the_grant_and_its_expiry(serve: StartServer) -> None:
    """Refresh: a second `auth` before `exp` moves the expiry timer and the grant."""
    server = await serve(PERMISSIONS)
    client = await open_client(with_token(server, hs256(ttl=30, subscribe=["private.a"])))
    await client.subscribe("private.a")
    (session,) = server.sessions.values()
    first = session._expiry
    assert first is not None
    await client.send({"op": "auth", "token": hs256(ttl=3600, subscribe=["private.*"]), "id": 2})
    assert await client.recv() == {"event": "authenticated", "id": 2}
    assert session._expiry is not None
    assert session._expiry.when() - first.when() > 3000
    await client.subscribe("private.b")


async def test_sys_channels_need_the_admin_token(serve: StartServer) -> None:
    """$sys.stats: refused without a token and with a plain one; the admin token and an
    `"admin": true` JWT are in."""
    server = await serve(PERMISSIONS)
    anonymous = await open_client(server.url)
    await anonymous.send({"op": "subscribe", "channel": "$sys.stats", "id": 1})
    error = await anonymous.recv_event("error", id=1)
    assert error["code"] == "forbidden"
    assert "admin token" in error["message"]
    user = await open_client(with_token(server, hs256(subscribe=["*"])))
    await user.send({"op": "subscribe", "channel": "$sys.stats", "id": 2})
    assert (await user.recv_event("error", id=2))["code"] == "forbidden"
    for token in (ADMIN_TOKEN, hs256(admin=True)):
        admin = await open_client(with_token(server, token))
        await admin.subscribe("$sys.stats")
        (message,) = await admin.messages("$sys.stats", 1)
        assert "connections" in message["data"]
    assert await refusals(server, "forbidden") == 2


@pytest.mark.parametrize("path", ["/stats", "/metrics", "/dashboard"])
async def test_admin_endpoints_need_the_admin_token(serve: StartServer, path: str) -> None:
    """401 without (or with a bad) token, 403 with a non-admin JWT, 200 with the admin token
    as a Bearer header, as ?token=, or an admin JWT; refusals counted as `admin`."""
    server = await serve(PERMISSIONS)
    status, headers, _ = await http_get(server.port, path)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await http_get(server.port, path, {"Authorization": "Bearer wrong"})
    assert status == 401
    status, _, _ = await http_get(server.port, path, {"Authorization": f"Bearer {hs256()}"})
    assert status == 403
    for headers_, query in (
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, ""),
        (None, f"?token={ADMIN_TOKEN}"),
        ({"Authorization": f"bearer {hs256(admin=True)}"}, ""),
    ):
        status, _, _ = await http_get(server.port, path + query, headers_)
        assert status == 200
    assert await refusals(server, "admin") == 3
    # Liveness stays open: load balancers have no token.
    status, _, _ = await http_get(server.port, "/healthz")
    assert status == 200


async def test_stats_show_the_subject_and_the_refusals(serve: StartServer) -> None:
    """/stats names each connection's token subject and has a refusals section."""
    server = await serve(PERMISSIONS)
    client: JsonClient = await open_client(with_token(server, hs256(sub="carol")))
    await client.send({"op": "subscribe", "channel": "private.a", "id": 1})
    await client.recv_event("error", id=1)
    status, _, body = await http_get(
        server.port, "/stats", {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert status == 200
    document = orjson.loads(body)
    assert [c["user"] for c in document["connections"]] == ["carol"]
    assert document["refusals"]["forbidden"] == 1
    assert document["admission"]["open"] == 1


async def test_without_auth_any_token_is_accepted_and_grants_nothing(serve: StartServer) -> None:
    """PROTOCOL.md: no auth configured: `auth` is answered `authenticated` whatever the token,
    and a `?token=` is ignored; the admin token (when set) is still recognised."""
    server = await serve(f'[admin]\ntoken = "{ADMIN_TOKEN}"\n')
    client = await open_client(with_token(server, "anything"))
    await client.send({"op": "auth", "token": "anything", "id": 1})
    assert await client.recv() == {"event": "authenticated", "id": 1}
    await client.subscribe("news")
    await client.send({"op": "subscribe", "channel": "$sys.stats", "id": 2})
    assert (await client.recv_event("error", id=2))["code"] == "forbidden"
    await client.send({"op": "auth", "token": ADMIN_TOKEN, "id": 3})
    assert await client.recv() == {"event": "authenticated", "id": 3}
    await client.subscribe("$sys.stats")
    assert await refusals(server, "token") == 0
