"""A page on another origin imports the client from the server and subscribes (CORS on /js/)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from playwright.async_api import Page

from tests.conftest import StartServer
from tests.support.servers import TEST_SERVER_TOML

# The page another site would serve: it takes the client from the broadcaster itself.
PAGE = """<!doctype html>
<meta charset="utf-8"><title>elsewhere</title>
<pre id="out">waiting</pre>
<script type="module" onerror="document.getElementById('out').textContent = 'import failed'">
  import { connect } from "http://127.0.0.1:PORT/js/broadcaster.js";
  connect("ws://127.0.0.1:PORT/ws").subscribe("news", (data) => {
    document.getElementById("out").textContent = JSON.stringify(data);
  });
</script>
"""


@pytest.fixture
async def other_site() -> AsyncIterator[tuple[int, Callable[[int], None]]]:
    """A second static server on another port (another origin); `set_port` fills in PAGE."""
    html = {"text": ""}

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=html["text"], content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])

    def set_port(server_port: int) -> None:
        html["text"] = PAGE.replace("PORT", str(server_port))

    try:
        yield port, set_port
    finally:
        await runner.cleanup()


async def test_page_on_an_allowed_origin_imports_the_client_and_receives_messages(
    serve: StartServer, page: Page, other_site: tuple[int, Callable[[int], None]]
) -> None:
    """With that origin in [server] allowed_origins, the import and the WebSocket both work."""
    site_port, set_port = other_site
    origins = f'allowed_origins = ["self", "http://127.0.0.1:{site_port}"]\n'
    server = await serve(server_toml=TEST_SERVER_TOML + origins)
    set_port(server.port)
    await page.goto(f"http://127.0.0.1:{site_port}/")
    for n in range(200):  # bounded: the subscription is live within a few publishes
        await server.publish("news", {"n": n})
        if (await page.inner_text("#out")).startswith("{"):
            break
        await asyncio.sleep(0.05)
    assert (await page.inner_text("#out")).startswith('{"n":')


async def test_page_on_another_origin_cannot_import_the_client(
    serve: StartServer, page: Page, other_site: tuple[int, Callable[[int], None]]
) -> None:
    """Without that origin in the allowlist the browser refuses the module (no CORS header)."""
    site_port, set_port = other_site
    server = await serve()
    set_port(server.port)
    await page.goto(f"http://127.0.0.1:{site_port}/")
    await page.wait_for_function(
        "() => document.getElementById('out').textContent === 'import failed'", timeout=10_000
    )
