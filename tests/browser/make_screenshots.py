"""Regenerate docs/dashboard.png and docs/ticker.png from a realistic run (not a test).

    .venv/bin/python -m tests.browser.make_screenshots

Starts the default configuration on a free port (max_connections lowered
to 20), connects a dozen healthy clients, lets the rate charts fill for a
while with a rogue client publishing to `$sys.stats` (refused: forbidden)
and a few bursts of connections over max_connections (refused: 503), then
runs the slow client tool and photographs the dashboard while that client
is about to be cut off, and the ticker page once its sparklines have
filled. Takes about a minute; uses Debian's chromium like the browser tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import replace
from pathlib import Path

from playwright.async_api import async_playwright
from websockets.exceptions import InvalidStatus

from broadcaster.config import Config
from broadcaster.server.app import Broadcaster
from broadcaster.tools.slow_client import run as run_slow_client
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.support.clients import JsonClient, open_client

DOCS = Path(__file__).resolve().parents[2] / "docs"
WARM_UP = 45.0  # seconds of traffic before the slow client, so the charts have history
# Room for the 12 clients, the rogue one, both pages and the slow client's two
# connections, but not for a burst of 8 more: the Refusals panel has something to show.
MAX_CONNECTIONS = 20


async def news(server: Broadcaster, stop: asyncio.Event) -> None:
    """A second, burstier channel, so the charts show more than one line."""
    rng = random.Random(7)
    while not stop.is_set():
        for _ in range(rng.randint(1, 30)):
            await server.publish("news.world", {"headline": "x" * rng.randint(50, 400)})
        await asyncio.sleep(0.2)


async def misbehave(server: Broadcaster, stop: asyncio.Event) -> None:
    """Refusals for the Refusals panel: forbidden publishes now and then, 503s in bursts."""
    rng = random.Random(11)
    rogue = await open_client(server.url)
    try:
        for tick in range(int(WARM_UP * 2) - 6):  # bursts over by the time the slow client connects
            if stop.is_set():
                return
            for _ in range(rng.randint(0, 2)):
                await rogue.send({"op": "publish", "channel": "$sys.stats", "data": {}})
            if tick % 25 == 10:
                extra: list[JsonClient] = []
                for _ in range(8):
                    with contextlib.suppress(InvalidStatus):  # 503: over max_connections
                        extra.append(await open_client(server.url))
                await asyncio.sleep(1)
                for client in extra:
                    await client.close()
            await asyncio.sleep(0.5)
        await stop.wait()
    finally:
        await rogue.close()


async def main() -> None:
    config = Config.embedded_default()
    # Port 0: a free port, whatever runs on 8765.
    server = Broadcaster(
        replace(
            config,
            server=replace(config.server, port=0),
            limits=replace(config.limits, max_connections=MAX_CONNECTIONS),
        )
    )
    await server.start()
    stop = asyncio.Event()
    clients: list[JsonClient] = []
    try:
        for i in range(12):
            client = await open_client(server.url)
            await client.subscribe("tickers.demo" if i % 3 else "news.world")
            clients.append(client)
        feed = asyncio.create_task(news(server, stop))
        rogue = asyncio.create_task(misbehave(server, stop))
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            dashboard = await context.new_page()
            await dashboard.goto(f"http://127.0.0.1:{server.port}/dashboard")
            ticker = await context.new_page()
            await ticker.goto(f"http://127.0.0.1:{server.port}/")
            await asyncio.sleep(WARM_UP)
            await ticker.screenshot(path=str(DOCS / "ticker.png"))

            slow = asyncio.create_task(run_slow_client(server.url, "slow.demo", rate=200))
            await dashboard.bring_to_front()
            await dashboard.wait_for_selector("#conn-table tr.danger", timeout=60_000)
            await dashboard.screenshot(path=str(DOCS / "dashboard.png"), full_page=True)
            outcome = await slow
            print(f"slow client cut off: {outcome.cut_off} after {outcome.seconds:.1f} s")
            await browser.close()
        stop.set()
        await feed
        await rogue
    finally:
        stop.set()
        for client in clients:
            await client.close()
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
