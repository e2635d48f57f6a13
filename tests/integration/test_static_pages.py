"""What the WebSocket port serves to browsers beside the pages: examples, icon, CORS on /js/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import StartServer
from tests.support.http import http_get
from tests.support.servers import TEST_SERVER_TOML

EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "js" / "examples"


async def test_example_pages_are_served_next_to_the_client(serve: StartServer) -> None:
    """/examples/tickers.html is the file in clients/js/examples, as HTML, on the server's port."""
    server = await serve()
    status, headers, body = await http_get(server.port, "/examples/tickers.html")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert body == (EXAMPLES / "tickers.html").read_bytes()


@pytest.mark.parametrize("path", ["/examples/", "/examples"])
async def test_examples_index_links_every_example_page(serve: StartServer, path: str) -> None:
    """The index at /examples/ links each page in clients/js/examples, with its title."""
    server = await serve()
    status, headers, body = await http_get(server.port, path)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    pages = sorted(p.name for p in EXAMPLES.glob("*.html"))
    assert pages, "clients/js/examples has pages"
    assert sorted(re.findall(rb'href="/examples/([^"]+)"', body)) == [p.encode() for p in pages]
    assert b"Live prices" in body, "the link says what tickers.html shows (its <title>)"


@pytest.mark.parametrize(
    "path",
    [
        "/examples/../broadcaster.js",
        "/examples/../broadcaster.d.ts",
        "/examples/..%2fbroadcaster.js",
        "/examples/%2e%2e/broadcaster.js",
        "/examples/../../../pyproject.toml",
        "/examples//etc/passwd",
        "/examples/..\\broadcaster.js",
        "/examples/.",
        "/examples/missing.html",
    ],
)
async def test_examples_never_serve_a_file_outside_the_examples(
    serve: StartServer, path: str
) -> None:
    """Only files directly in the examples directory: 404 for anything that climbs out."""
    server = await serve()
    status, _headers, body = await http_get(server.port, path)
    assert status == 404
    for leaked in (b"export", b"[project]", b"root:"):
        assert leaked not in body


async def test_favicon_is_served_and_linked_from_the_pages(serve: StartServer) -> None:
    """/favicon.ico is an icon (not a 404 on every page load); the pages link the SVG one."""
    server = await serve()
    status, headers, body = await http_get(server.port, "/favicon.ico")
    assert status == 200
    assert headers["Content-Type"] == "image/x-icon"
    assert body.startswith(b"\x00\x00\x01\x00"), "an ICO file"
    for page in ("/", "/dashboard", "/examples/"):
        _status, _headers, html = await http_get(server.port, page)
        link = re.search(rb'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', html)
        assert link, f"{page} links an icon"
        status, headers, icon = await http_get(server.port, link.group(1).decode())
        assert status == 200
        assert headers["Content-Type"] == "image/svg+xml"
        assert icon.lstrip().startswith(b"<svg")


CROSS_ORIGIN = 'allowed_origins = ["self", "http://127.0.0.1:9", "https://*.example.com"]\n'


@pytest.mark.parametrize("origin", ["http://127.0.0.1:9", "https://app.example.com"])
async def test_client_answers_cors_for_allowed_origins(serve: StartServer, origin: str) -> None:
    """A page on an allowed origin may `import` /js/broadcaster.js (a CORS request)."""
    server = await serve(server_toml=TEST_SERVER_TOML + CROSS_ORIGIN)
    status, headers, body = await http_get(server.port, "/js/broadcaster.js", {"Origin": origin})
    assert status == 200
    assert b"export function connect" in body
    assert headers.get("Access-Control-Allow-Origin") == origin
    assert "Origin" in headers.get("Vary", "")


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:10", None])
async def test_client_answers_no_cors_for_other_origins(
    serve: StartServer, origin: str | None
) -> None:
    """Other origins (and requests without Origin) get the file but no CORS permission."""
    server = await serve(server_toml=TEST_SERVER_TOML + CROSS_ORIGIN)
    status, headers, _body = await http_get(
        server.port, "/js/broadcaster.js", {"Origin": origin} if origin else None
    )
    assert status == 200
    assert "Access-Control-Allow-Origin" not in headers
