"""The server serves the browser client, from a checkout and from an installed package."""

from __future__ import annotations

from pathlib import Path

from broadcaster.server.http import _static
from tests.conftest import StartServer
from tests.support.http import http_get

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "clients" / "js" / "broadcaster.js"


async def test_served_module_is_the_client_source(serve: StartServer) -> None:
    """GET /js/broadcaster.js returns clients/js/broadcaster.js as JavaScript."""
    server = await serve()
    status, headers, body = await http_get(server.port, "/js/broadcaster.js")
    assert status == 200
    assert headers["Content-Type"].startswith("text/javascript")
    assert body == SOURCE.read_bytes()


def test_packaged_copy_is_the_client_source() -> None:
    """broadcaster/static/broadcaster.js (what a wheel ships) equals the source.

    A non-editable install has no clients/ directory, so the server falls back to
    the packaged copy; after editing the client run
    `cp clients/js/broadcaster.js broadcaster/static/broadcaster.js`.
    """
    assert _static("broadcaster.js") == SOURCE.read_bytes()
