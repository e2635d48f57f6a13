"""The live ticker page at `/`, in a real browser."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page

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
    await page.screenshot(path=str(artifacts / "ticker.png"))
