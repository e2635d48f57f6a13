"""clients/js/examples/tickers.html: live prices in a real browser, with the client module."""

from __future__ import annotations

import http
from pathlib import Path

from playwright.async_api import Page
from websockets.http11 import Response

from broadcaster.server.http import respond
from tests.conftest import StartServer

EXAMPLE = Path(__file__).resolve().parents[2] / "clients" / "js" / "examples" / "tickers.html"

DEMO = """
[sources.demo_ticker]
channel = "tickers.demo"
symbols = ["AAPL", "MSFT"]
rate = 50
"""


def example_page(query: dict[str, list[str]]) -> Response:
    return respond(http.HTTPStatus.OK, EXAMPLE.read_bytes(), "text/html; charset=utf-8")


async def test_example_page_shows_live_prices(
    serve: StartServer, page: Page, artifacts: Path
) -> None:
    """The ten-line example page lists every demo symbol and its price keeps changing."""
    server = await serve(DEMO)
    server.http.add_route("/example", example_page)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"http://127.0.0.1:{server.port}/example")
    await page.wait_for_selector("text=AAPL")
    await page.wait_for_selector("text=MSFT")
    first = await page.locator("td.price").first.inner_text()
    assert float(first) > 0
    await page.wait_for_function(
        "(p) => document.querySelector('td.price').textContent !== p", arg=first
    )
    assert errors == []
    await page.screenshot(path=str(artifacts / "example-tickers.png"))
