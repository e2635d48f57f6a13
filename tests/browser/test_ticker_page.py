"""The live ticker page at `/`, in a real browser."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.async_api import Page, WebSocketRoute

from tests.conftest import StartServer

DEMO = """
[sources.demo_ticker]
channel = "tickers.demo"
symbols = ["AAPL", "MSFT"]
rate = 50
"""


async def test_ticker_page_shows_prices_updating(
    serve: StartServer, page: Page, artifacts: Path
) -> None:
    """Opening `/` shows every demo symbol with a price that changes as ticks arrive."""
    server = await serve(DEMO)
    await page.goto(f"http://127.0.0.1:{server.port}/")
    await page.wait_for_selector("text=AAPL")
    await page.wait_for_selector("text=MSFT")
    first_seq = await page.locator("td.seq").first.inner_text()
    await page.wait_for_function(
        "(s) => document.querySelector('td.seq').textContent !== s", arg=first_seq
    )
    price = await page.locator("td.price").first.inner_text()
    assert float(price) > 0
    assert await page.locator("tr.up, tr.down").count() == 2, "every row shows its direction"
    assert await page.get_attribute("#flow", "data-paused") == "false"
    await page.screenshot(path=str(artifacts / "ticker.png"))


async def test_ticker_banner_says_live_once_prices_arrive_and_disconnected_when_down(
    serve: StartServer, page: Page, artifacts: Path
) -> None:
    """The flow banner follows the stream: live with prices, not stuck on "waiting"."""
    server = await serve(DEMO)
    await page.goto(f"http://127.0.0.1:{server.port}/")
    await page.wait_for_selector("td.seq")
    await page.wait_for_function(
        "() => document.getElementById('flow-state').textContent === 'live'", timeout=10_000
    )
    assert await page.inner_text("#status") == "live"

    await server.stop()
    await page.wait_for_function(
        "() => document.getElementById('flow-state').textContent.startsWith('disconnected')",
        timeout=10_000,
    )
    assert (await page.inner_text("#status")).startswith("disconnected")
    await page.screenshot(path=str(artifacts / "ticker-disconnected.png"))


class Relay:
    """Sits between the page and the server: forwards everything, or swallows some messages.

    Playwright's WebSocket routing lets the test do what a slow network and a
    full queue would: hold messages back (a seq gap) and send the page the
    server's flow-control events.
    """

    def __init__(self) -> None:
        self.page_side: WebSocketRoute | None = None
        self.swallow = 0

    def attach(self, ws: WebSocketRoute) -> None:
        self.page_side = ws
        server = ws.connect_to_server()
        server.on_message(self.from_server)

    def from_server(self, message: str | bytes) -> None:
        assert self.page_side is not None
        if self.swallow and '"event":"message"' in str(message):
            self.swallow -= 1
            return
        self.page_side.send(message)

    def inject(self, event: dict[str, object]) -> None:
        assert self.page_side is not None
        self.page_side.send(json.dumps(event))


async def test_ticker_page_shows_pause_dropped_messages_and_seq_gaps(
    serve: StartServer, page: Page, artifacts: Path
) -> None:
    """flow.pause shows a paused banner; missing seqs and flow.resume.dropped are counted."""
    server = await serve(DEMO)
    relay = Relay()
    await page.route_web_socket("**/ws", relay.attach)
    await page.goto(f"http://127.0.0.1:{server.port}/")
    await page.wait_for_selector("td.seq")

    relay.inject(
        {
            "event": "flow.pause",
            "reason": "buffer full",
            "channel": "tickers.demo",
            "depth": 256,
            "limit": 256,
        }
    )
    await page.wait_for_selector("#flow[data-paused='true']")
    assert "paused" in await page.inner_text("#flow-state")
    assert await page.inner_text("#status") == "paused"

    relay.swallow = 3
    await page.wait_for_function("() => document.getElementById('gaps').textContent === '3'")
    assert "3 messages missed" in await page.inner_text("#flow-last")

    relay.inject({"event": "flow.resume", "channel": "tickers.demo", "dropped": 3})
    await page.wait_for_selector("#flow[data-paused='false']")
    assert await page.inner_text("#dropped") == "3"
    assert await page.inner_text("#flow-state") == "live"
    await page.screenshot(path=str(artifacts / "ticker-dropped.png"))
