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


def test_packaged_client_is_the_client_source() -> None:
    """broadcaster/static/broadcaster.js (what a wheel ships) is the source itself.

    A non-editable install has no clients/ directory, so the server falls back to
    the packaged file; it is a symlink to clients/js/broadcaster.js, whose content
    setuptools copies into the wheel, so the two can never drift apart.
    """
    packaged = Path(__file__).resolve().parents[2] / "broadcaster" / "static" / "broadcaster.js"
    assert packaged.is_symlink()
    assert packaged.resolve() == SOURCE.resolve()
    assert _static("broadcaster.js") == SOURCE.read_bytes()
