"""Where WebSockets cannot go: the ticker page over SSE, and a real EventSource's recovery.

Chromium (Debian's /usr/bin/chromium) runs the shipped pages and client: an
init script removes `window.WebSocket` before any page script runs, as a
locked-down browser or a page behind an upgrade-stripping proxy would see it.
"""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page

from tests.conftest import StartServer
from tests.support.servers import ServerProcess, free_port, wait_until
from tests.support.sse_client import StreamClient

DEMO = """
[sources.demo_ticker]
channel = "tickers.demo"
symbols = ["AAPL", "MSFT"]
rate = 50

[api]
enabled = true
port = 0
"""

NEWS = """
[channels."news"]
history_size = 100

[api]
enabled = true
port = 0
"""

NO_WEBSOCKET = "delete window.WebSocket;"
DEFAULT_TOML = (Path(__file__).resolve().parents[2] / "configs" / "default.toml").read_text()


async def test_ticker_page_shows_live_prices_with_websocket_disabled(
    serve: StartServer, page: Page, artifacts: Path
) -> None:
    """No WebSocket in the page: the client streams over SSE and prices still update."""
    server = await serve(DEMO)
    await page.add_init_script(NO_WEBSOCKET)
    await page.goto(f"http://127.0.0.1:{server.port}/")
    assert await page.evaluate("typeof window.WebSocket") == "undefined"
    await page.wait_for_selector("text=AAPL")
    await page.wait_for_selector("text=MSFT")
    first_seq = await page.locator("td.seq").first.inner_text()
    await page.wait_for_function(
        "(s) => document.querySelector('td.seq').textContent !== s", arg=first_seq
    )
    assert float(await page.locator("td.price").first.inner_text()) > 0
    assert {s.transport_name for s in server.sessions.values()} == {"sse"}
    await page.screenshot(path=str(artifacts / "ticker-sse.png"))


async def test_default_config_serves_the_ticker_page_without_websocket(
    page: Page, tmp_path: Path
) -> None:
    """`broadcaster serve` on the shipped configs/default.toml (only its two ports moved to
    free ones): with no WebSocket in the page, the demo ticker's prices still update."""
    default = DEFAULT_TOML
    assert default.count("port = 8766\n") == 1, "the [api] port line of configs/default.toml"
    proc = ServerProcess(default.replace("port = 8766\n", f"port = {free_port()}\n"), tmp_path)
    await proc.start()
    try:
        await page.add_init_script(NO_WEBSOCKET)
        await page.goto(f"http://127.0.0.1:{proc.port}/")
        assert await page.evaluate("typeof window.WebSocket") == "undefined"
        first_seq = await page.locator("td.seq").first.inner_text()
        await page.wait_for_function(
            "(s) => document.querySelector('td.seq').textContent !== s", arg=first_seq
        )
        assert float(await page.locator("td.price").first.inner_text()) > 0
    finally:
        proc.kill()


async def test_eventsource_reconnect_recovers_missed_messages_by_last_event_id(
    serve: StartServer, page: Page
) -> None:
    """A plain EventSource whose stream is cut reconnects by itself with Last-Event-ID and
    gets what was published meanwhile from history: every seq once, in order."""
    server = await serve(NEWS)
    await page.goto(f"http://127.0.0.1:{server.port}/examples/")
    await page.evaluate(
        """() => {
            window.seen = []; window.opens = 0;
            const es = new EventSource("/sse?channel=news");
            es.onopen = () => { window.opens += 1; };
            es.onmessage = (ev) => {
                const msg = JSON.parse(ev.data);
                if (msg.event === "message") window.seen.push(msg.seq);
                if (msg.event === "subscribed") window.recovered = msg.recovered;
            };
        }"""
    )
    await wait_until(lambda: len(server.sessions) == 1, what="the stream to open")
    for i in range(3):
        await server.publish("news", i)
    await page.wait_for_function("() => window.seen.length === 3")
    # Cut the stream from the server side (a network drop): the browser reconnects after
    # the retry hint, sending the id of the last event it saw.
    (session,) = server.sessions.values()
    session.transport.abort()
    await wait_until(lambda: not server.sessions, what="the stream to be gone")
    for i in range(3, 6):
        await server.publish("news", i)
    await page.wait_for_function("() => window.seen.length === 6", timeout=15_000)
    assert await page.evaluate("window.seen") == [1, 2, 3, 4, 5, 6]
    assert await page.evaluate("window.recovered") is True
    assert await page.evaluate("window.opens") == 2


async def test_dashboard_shows_stream_connections_with_their_transport(
    serve: StartServer, page: Page
) -> None:
    """An SSE reader is a connection like any other on the dashboard, marked `sse`."""
    server = await serve(NEWS)
    assert server.api is not None
    stream = StreamClient(server.api.port, "/sse?channel=news")
    await stream.connect()
    try:
        await stream.read_until(lambda evs: any(e.get("event") == "subscribed" for e in evs))
        (session,) = server.sessions.values()
        await page.goto(f"http://127.0.0.1:{server.port}/dashboard")
        cell = f"#conn-table tr[data-id='{session.id}'] td.l"
        await page.wait_for_selector(cell)
        assert "sse" in await page.inner_text(cell)
        await page.wait_for_function(
            "() => document.getElementById('k-transports').textContent.includes('1 sse')"
        )
    finally:
        stream.close()
