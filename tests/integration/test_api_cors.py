"""Pages of the allowed origins publish over the HTTP API (CORS); other origins cannot.

A browser preflights the API's JSON POST from another origin (`OPTIONS` with
`Origin` and `Access-Control-Request-Method`). The API approves it for the
origins `[server] allowed_origins` admits (the rule of /ws and /sse: "self"
also means the WebSocket port's own pages) and refuses the rest with 403 and no
CORS header, so the browser never sends their POST. Approvals name the origin
itself, never `*`, and never allow credentials.
"""

from __future__ import annotations

import aiohttp
import pytest
from multidict import CIMultiDict

from broadcaster.server.app import Broadcaster
from tests.conftest import StartServer
from tests.support.api_client import post_json
from tests.support.metrics import scrape
from tests.support.security import ADMIN_TOKEN
from tests.support.servers import TEST_SERVER_TOML

PAGE = "http://page.test:9000"

API = f"""
[api]
enabled = true
port = 0

[admin]
token = "{ADMIN_TOKEN}"
"""


def origins_toml(*entries: str) -> str:
    listed = ", ".join(f'"{e}"' for e in entries)
    return TEST_SERVER_TOML + f"allowed_origins = [{listed}]\n"


async def preflight(
    server: Broadcaster, origins: list[str], request_headers: str = "authorization,content-type"
) -> tuple[int, CIMultiDict[str], bytes]:
    """A browser's CORS preflight for `POST /api/publish`, as Chromium sends it."""
    headers: CIMultiDict[str] = CIMultiDict()
    for origin in origins:
        headers.add("Origin", origin)
    headers["Access-Control-Request-Method"] = "POST"
    headers["Access-Control-Request-Headers"] = request_headers
    async with (
        aiohttp.ClientSession() as session,
        session.options(server.api_url, headers=headers) as response,
    ):
        return response.status, CIMultiDict(response.headers), await response.read()


async def refusals(server: Broadcaster, reason: str) -> float:
    metrics = await scrape(server.port, ADMIN_TOKEN)
    return metrics.value("broadcaster_refusals_total", reason=reason)


async def test_an_allowed_origin_gets_its_preflight_approved(serve: StartServer) -> None:
    """POST with Authorization and Content-Type, for that origin exactly, cacheable."""
    server = await serve(API, server_toml=origins_toml("self", PAGE))
    status, headers, _ = await preflight(server, [PAGE])
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == PAGE
    assert headers["Access-Control-Allow-Methods"] == "POST"
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"authorization", "content-type"}
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in headers


async def test_the_websocket_ports_own_pages_are_self(serve: StartServer) -> None:
    """The default "self": the ticker page (served on the WebSocket port) may publish."""
    server = await serve(API)
    own_page = f"http://127.0.0.1:{server.port}"
    status, headers, _ = await preflight(server, [own_page])
    assert (status, headers["Access-Control-Allow-Origin"]) == (204, own_page)


async def test_a_wildcard_list_still_answers_the_origin_never_a_star(serve: StartServer) -> None:
    server = await serve(API, server_toml=origins_toml("*"))
    status, headers, _ = await preflight(server, ["https://anywhere.example"])
    assert (status, headers["Access-Control-Allow-Origin"]) == (204, "https://anywhere.example")
    reply = await post_json(
        server.api_url, {"channel": "a", "data": 1}, headers={"Origin": "https://x.example"}
    )
    assert reply.headers["Access-Control-Allow-Origin"] == "https://x.example"
    assert "Access-Control-Allow-Credentials" not in reply.headers


@pytest.mark.parametrize(
    "origins",
    [["https://evil.example"], [PAGE, PAGE], ["null"], ["http://page.test:9001"]],
)
async def test_other_origins_are_refused_403_without_cors(
    serve: StartServer, origins: list[str]
) -> None:
    """The browser sees no approval and never sends the POST; the refusal is counted."""
    server = await serve(API, server_toml=origins_toml("self", PAGE))
    status, headers, body = await preflight(server, origins)
    assert status == 403
    assert b"forbidden_origin" in body
    assert "Access-Control-Allow-Origin" not in headers
    assert await refusals(server, "origin") == 1


async def test_an_options_request_that_is_no_preflight_says_what_the_path_takes(
    serve: StartServer,
) -> None:
    server = await serve(API)
    async with (
        aiohttp.ClientSession() as session,
        session.options(server.api_url) as response,
    ):
        assert response.status == 204
        assert response.headers["Allow"] == "OPTIONS, POST"
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_publish_answers_carry_cors_for_allowed_origins_errors_included(
    serve: StartServer,
) -> None:
    """A page reads its seq, and also a 401 (or 429, 503) with its retry_after.

    A POST from another origin is answered without CORS (a browser would not have
    sent it: its preflight was refused); like a backend's, it is not refused for its
    Origin header, which a non-browser client may set as it likes: keys authenticate.
    """
    server = await serve(API, server_toml=origins_toml(PAGE))
    keyed = await serve(
        API.replace("port = 0\n", 'port = 0\nkeys = ["k"]\n'), server_toml=origins_toml(PAGE)
    )
    ok = await post_json(server.api_url, {"channel": "a", "data": 1}, headers={"Origin": PAGE})
    assert (ok.status, ok.body) == (200, {"seq": 1})
    assert ok.headers["Access-Control-Allow-Origin"] == PAGE
    assert "Origin" in ok.headers["Vary"]
    assert "Retry-After" in ok.headers["Access-Control-Expose-Headers"]
    refused = await post_json(keyed.api_url, {"channel": "a", "data": 1}, headers={"Origin": PAGE})
    assert (refused.status, refused.body["error"]) == (401, "unauthorized")
    assert refused.headers["Access-Control-Allow-Origin"] == PAGE
    other = await post_json(
        server.api_url, {"channel": "a", "data": 2}, headers={"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    backend = await post_json(server.api_url, {"channel": "a", "data": 3})
    assert backend.status == 200
    assert "Access-Control-Allow-Origin" not in backend.headers
