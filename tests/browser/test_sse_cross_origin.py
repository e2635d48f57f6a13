"""A page on another origin, without WebSocket, subscribes over SSE and publishes over the API.

Chromium (Debian's /usr/bin/chromium) loads a page from a second local site (another
port, so another origin) whose `window.WebSocket` an init script removed. The browser
client falls back to SSE for its subscription (EventSource through the WebSocket
port's redirect to the API port, CORS) and publishes with `fetch` to `apiUrl`: a JSON
POST with an API key, which Chromium preflights. The API approves the preflight for
an origin in `[server] allowed_origins`, and refuses it for any other, so that page's
publish never reaches the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Page

from tests.conftest import StartServer
from tests.support.servers import TEST_SERVER_TOML

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "js" / "broadcaster.js"
KEY = "page-key"
API = f"""
[channels."chat"]
history_size = 10

[api]
enabled = true
port = 0
keys = ["{KEY}"]
"""
NO_WEBSOCKET = "delete window.WebSocket;"

# The page another site serves; it publishes once subscribed, and shows what came back
# (`?listen=no`: it publishes only).
PAGE = """<!doctype html>
<meta charset="utf-8"><title>elsewhere</title>
<pre id="received">nothing yet</pre>
<pre id="published">not yet</pre>
<script type="module">
  import { connect } from "/broadcaster.js";
  const client = connect("WS_URL", { apiUrl: "API_URL", apiKey: "API_KEY" });
  const listening = new URLSearchParams(location.search).get("listen") !== "no";
  if (listening) {
    client.subscribe("chat", (data, meta) => {
      document.getElementById("received").textContent =
        JSON.stringify({ data, seq: meta.seq, transport: client.transport });
    });
  }
  // Publish once the stream is subscribed (else the message could pass before it).
  const off = client.on(listening ? "subscribed" : "connected", () => {
    off();
    client.publish("chat", { from: "elsewhere" }).then(
      (seq) => { document.getElementById("published").textContent = `seq ${seq}`; },
      (err) => { document.getElementById("published").textContent = `refused ${err.code}`; },
    );
  });
</script>
"""

Site = tuple[int, Callable[[str, str], None]]


@pytest.fixture
async def other_site() -> AsyncIterator[Site]:
    """A second static server (another origin) serving PAGE and a copy of the client."""
    html = {"text": ""}

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=html["text"], content_type="text/html")

    async def client(request: web.Request) -> web.Response:
        return web.Response(text=CLIENT.read_text(), content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/broadcaster.js", client)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()

    def set_urls(ws_url: str, api_url: str) -> None:
        html["text"] = (
            PAGE.replace("WS_URL", ws_url).replace("API_URL", api_url).replace("API_KEY", KEY)
        )

    try:
        yield int(runner.addresses[0][1]), set_urls
    finally:
        await runner.cleanup()


async def test_page_without_websocket_publishes_and_receives_over_sse_cross_origin(
    serve: StartServer, page: Page, other_site: Site
) -> None:
    """Its origin allowed: the preflight is approved, the publish gets seq 1, and the
    page's own SSE stream delivers it back."""
    site_port, set_urls = other_site
    origins = f'allowed_origins = ["self", "http://127.0.0.1:{site_port}"]\n'
    server = await serve(API, server_toml=TEST_SERVER_TOML + origins)
    assert server.api is not None
    set_urls(server.url, server.api_url)
    await page.add_init_script(NO_WEBSOCKET)
    await page.goto(f"http://127.0.0.1:{site_port}/")
    assert await page.evaluate("typeof window.WebSocket") == "undefined"
    await page.wait_for_function(
        "() => document.getElementById('published').textContent === 'seq 1'", timeout=15_000
    )
    await page.wait_for_function(
        "() => document.getElementById('received').textContent.startsWith('{')", timeout=15_000
    )
    received = await page.inner_text("#received")
    assert received == '{"data":{"from":"elsewhere"},"seq":1,"transport":"sse"}'
    assert {s.transport_name for s in server.sessions.values()} == {"sse"}
    assert server.hub.channels["chat"].last_seq == 1


async def test_page_of_an_origin_not_allowed_cannot_publish(
    serve: StartServer, page: Page, other_site: Site
) -> None:
    """Its preflight refused, Chromium never sends the POST: the client says `unavailable`
    and the server published nothing. (The page does not subscribe here: its stream would
    be refused too, and the client would fail the publish as `disconnected` first.)"""
    site_port, set_urls = other_site
    server = await serve(API)  # allowed_origins: "self" only
    assert server.api is not None
    set_urls(server.url, server.api_url)
    await page.add_init_script(NO_WEBSOCKET)
    await page.goto(f"http://127.0.0.1:{site_port}/?listen=no")
    await page.wait_for_function(
        "() => document.getElementById('published').textContent.startsWith('refused')",
        timeout=15_000,
    )
    assert await page.inner_text("#published") == "refused unavailable"
    assert await page.inner_text("#received") == "nothing yet"
    chat = server.hub.channels.get("chat")
    assert chat is None or chat.last_seq == 0
