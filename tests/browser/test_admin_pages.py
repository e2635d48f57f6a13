"""The dashboard and the ticker page behind the admin token and channel permissions,
in a real browser: the token in the page's URL is passed on to the WebSocket."""

from __future__ import annotations

from playwright.async_api import Page

from tests.conftest import StartServer
from tests.support.security import ADMIN_TOKEN, SECRET, hs256

CONFIG = f"""
[auth]
enabled = true
secret = "{SECRET}"

[admin]
token = "{ADMIN_TOKEN}"

[channels."tickers.*"]
strategy = "conflate"
conflate_key = "symbol"
subscribe = "token"
publish = "none"

[sources.demo_ticker]
channel = "tickers.demo"
symbols = ["AAPL", "MSFT"]
rate = 50
"""


async def test_the_dashboard_needs_and_passes_on_the_admin_token(
    serve: StartServer, page: Page
) -> None:
    """Without the token the page is refused (401); with ?token= it goes live over $sys.stats."""
    server = await serve(CONFIG)
    response = await page.goto(f"http://127.0.0.1:{server.port}/dashboard")
    assert response is not None
    assert response.status == 401
    await page.goto(f"http://127.0.0.1:{server.port}/dashboard?token={ADMIN_TOKEN}")
    await page.wait_for_selector("#status.live")


async def test_the_ticker_page_passes_a_token_on(serve: StartServer, page: Page) -> None:
    """/?token=JWT: the browser client authenticates and the token-only channel streams."""
    server = await serve(CONFIG)
    token = hs256(subscribe=["tickers.*"])
    await page.goto(f"http://127.0.0.1:{server.port}/?token={token}")
    await page.wait_for_selector("text=AAPL")
    await page.wait_for_selector("text=MSFT")
