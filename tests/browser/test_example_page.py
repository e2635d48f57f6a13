"""clients/js/examples/: served at /examples/ and working in a real browser, as shipped."""

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


async def test_example_page_shows_live_prices(
    serve: StartServer, page: Page, artifacts: Path
) -> None:
    """/examples/tickers.html lists every demo symbol and its price keeps changing."""
    server = await serve(DEMO)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"http://127.0.0.1:{server.port}/examples/tickers.html")
    await page.wait_for_selector("text=AAPL")
    await page.wait_for_selector("text=MSFT")
    first = await page.locator("td.price").first.inner_text()
    assert float(first) > 0
    await page.wait_for_function(
        "(p) => document.querySelector('td.price').textContent !== p", arg=first
    )
    assert errors == []
    await page.screenshot(path=str(artifacts / "example-tickers.png"))


async def test_examples_index_opens_the_example_pages(serve: StartServer, page: Page) -> None:
    """From the ticker page, the examples link leads to an index whose links open the pages."""
    server = await serve(DEMO)
    await page.goto(f"http://127.0.0.1:{server.port}/")
    await page.click("text=examples")
    await page.wait_for_url("**/examples/")
    await page.click("a[href='/examples/tickers.html']")
    await page.wait_for_selector("td.price")
    assert page.url.endswith("/examples/tickers.html")
