"""The dashboard at `/dashboard`, in a real browser, watching a client fall behind."""

from __future__ import annotations

import asyncio
import re
from importlib.resources import files
from pathlib import Path

from playwright.async_api import Page

from broadcaster.metrics.exporter import REFUSAL_REASONS
from broadcaster.server.app import Broadcaster
from broadcaster.server.session import ClientSession
from tests.conftest import ConnectRaw, StartServer
from tests.support.clients import JsonClient, open_client
from tests.support.raw_client import RawClient
from tests.support.worker_processes import WorkersProcess, open_spread

CONFIG = """
[channels."slow"]
strategy = "drop-oldest"
queue_size = 32
slow_consumer_timeout = 1.5

[sources.demo_ticker]
channel = "tickers.demo"
symbols = ["AAPL", "MSFT"]
rate = 50
"""

PAD = "d" * 1000


def session_of(server: Broadcaster, raw: RawClient) -> ClientSession:
    host, port = raw.sock.getsockname()[:2]
    session = next(s for s in server.sessions.values() if s.remote == f"{host}:{port}")
    assert isinstance(session, ClientSession)
    return session


async def publish_until(server: Broadcaster, done: asyncio.Event) -> None:
    """1 KB messages into "slow", yielding between them, until `done` (bounded count)."""
    for i in range(100_000):
        if done.is_set():
            return
        await server.publish("slow", {"i": i, "pad": PAD})
        await asyncio.sleep(0.002)


def row(session_id: int) -> str:
    return f"#conn-table tr[data-id='{session_id}']"


async def test_dashboard_shows_a_stalled_client_fall_behind_and_get_cut_off(
    serve: StartServer, connect_raw: ConnectRaw, page: Page, artifacts: Path
) -> None:
    """Depth rises to the limit (paused, the row turns red), then the 4008 cut-off is listed."""
    server = await serve(CONFIG)
    healthy = [await open_client(server.url) for _ in range(3)]
    for client in healthy:
        await client.subscribe("slow")
    await page.goto(f"http://127.0.0.1:{server.port}/dashboard")
    await page.wait_for_selector("#status.live")

    stalled = await connect_raw(server.port)
    await stalled.subscribe("slow")
    sid = session_of(server, stalled).id
    await page.wait_for_selector(row(sid))

    done = asyncio.Event()
    publisher = asyncio.create_task(publish_until(server, done))
    try:
        # The page shows the depth rising: first a backlog, then the limit (paused).
        await page.wait_for_function(
            "(sel) => Number(document.querySelector(sel)?.dataset.depth) > 0", arg=row(sid)
        )
        await page.wait_for_selector(f"{row(sid)}[data-paused='true']")
        depth = int(await page.get_attribute(row(sid), "data-depth") or 0)
        assert depth >= 32
        # Past half of its slow-consumer timeout the row is marked as about to be cut off.
        await page.wait_for_selector(f"{row(sid)}.danger")
        await page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)

        # Then the cut-off: listed with its id, counted, and gone from the table.
        await page.wait_for_selector(f"#cutoffs li[data-id='{sid}']", timeout=15_000)
        await page.wait_for_selector(row(sid), state="detached")
        assert int(await page.inner_text("#sc-count")) >= 1
    finally:
        done.set()
        await publisher
    await page.screenshot(path=str(artifacts / "dashboard-cut-off.png"), full_page=True)
    assert server.hub.channels["slow"].counters.slow_consumer_disconnects == 1


async def test_dashboard_sorts_and_aggregates_every_connection(
    serve: StartServer, page: Page
) -> None:
    """Sort buttons reorder the rows; the histogram counts every connection."""
    server = await serve()
    clients = [await open_client(server.url) for _ in range(4)]
    await page.goto(f"http://127.0.0.1:{server.port}/dashboard?sort=age")
    await page.wait_for_function(
        "() => document.querySelectorAll('#conn-table tr[data-id]').length === 5"
    )
    ids = await page.eval_on_selector_all(
        "#conn-table tr[data-id]", "rows => rows.map(r => Number(r.dataset.id))"
    )
    assert ids == sorted(ids), "oldest first"
    assert await page.is_hidden("#worker-th"), "one process: no worker column"
    assert await page.inner_text("#sorts button.on") == "age"
    counts = await page.get_attribute("#histogram svg", "data-counts")
    assert counts is not None
    assert sum(int(n) for n in counts.split(",")) == len(clients) + 1
    await page.click("#sorts button[data-sort='dropped']")
    await page.wait_for_selector("#sorts button.on[data-sort='dropped']")
    assert "sort=dropped" in page.url


async def test_dashboard_shows_each_subscriptions_strategy_and_rate_cap(
    serve: StartServer, page: Page
) -> None:
    """A subscription with max_rate shows its strategy and its cap in its row."""
    server = await serve('[channels."capped"]\nstrategy = "drop-newest"\n')
    client = await open_client(server.url)
    await client.subscribe("capped", max_rate=4)
    (session,) = server.sessions.values()
    await page.goto(f"http://127.0.0.1:{server.port}/dashboard")
    await page.wait_for_selector(f"{row(session.id)} .sub")
    text = await page.inner_text(f"{row(session.id)} .sub")
    assert "drop-newest" in text
    assert "≤4" in text


def refusal_row(reason: str) -> str:
    return f"#refusal-table tbody[data-reason='{reason}']"


async def test_dashboard_shows_refusals_by_reason_as_they_happen(
    serve: StartServer, page: Page, artifacts: Path
) -> None:
    """A refused subscribe and publish show up by reason: counted, marked as now, charted."""
    server = await serve("[limits]\nmax_subscriptions = 1\n")
    await page.goto(f"http://127.0.0.1:{server.port}/dashboard")
    await page.wait_for_selector("#status.live")
    # Rendered, and nothing refused yet: the panel says so and the KPI is calm.
    await page.wait_for_function("() => document.getElementById('k-refused').textContent === '0'")
    assert await page.inner_text("#refusal-table tbody") == "none yet"
    assert await page.get_attribute("#k-ref-box", "class") == "kpi"

    client = await open_client(server.url)
    await client.subscribe("first")
    await client.send({"op": "subscribe", "channel": "second", "id": "over"})
    assert (await client.recv_event("error", id="over"))["code"] == "forbidden"
    await client.send({"op": "publish", "channel": "$sys.stats", "data": 1, "id": "sys"})
    assert (await client.recv_event("error", id="sys"))["code"] == "forbidden"

    for reason in ("max_subscriptions", "forbidden"):
        await page.wait_for_selector(f"{refusal_row(reason)}.now")
        cells = await page.eval_on_selector_all(
            f"{refusal_row(reason)} td", "cells => cells.map(c => c.innerText)"
        )
        assert cells[:3] == [reason, "1", "1"], "reason, total, last minute (then the chart)"
    # Only reasons seen at least once are listed (equal counts: by name).
    shown = await page.eval_on_selector_all(
        "#refusal-table tbody[data-reason]", "rows => rows.map(r => r.dataset.reason)"
    )
    assert shown == ["forbidden", "max_subscriptions"]
    title = await page.get_attribute(f"{refusal_row('max_subscriptions')} td", "title")
    assert title is not None
    assert "[limits] max_subscriptions" in title
    await page.wait_for_selector("#k-ref-box.alarm")
    assert await page.inner_text("#k-refused") == "2"
    # The rate chart draws the refusal once the page has two points of history.
    await page.wait_for_function(
        "(sel) => Number(document.querySelector(sel)?.dataset.peak) > 0",
        arg=f"{refusal_row('forbidden')} svg",
    )
    await page.screenshot(path=str(artifacts / "dashboard-refusals.png"), full_page=True)


def test_dashboard_explains_every_refusal_reason() -> None:
    """Every reason the server counts has a tooltip on the dashboard, and no stale ones."""
    html = (files("broadcaster") / "static" / "dashboard.html").read_text(encoding="utf-8")
    table = html.split("const REFUSALS = {", 1)[1].split("};", 1)[0]
    assert set(re.findall(r"^\s*(\w+):", table, re.MULTILINE)) == set(REFUSAL_REASONS)


# Every header cell's box against the viewport and against what its table is shown in
# (a scrolling wrapper clips: a header past its right edge is cut off).
HEADER_OVERFLOWS = """() => {
  const out = [];
  for (const table of document.querySelectorAll("main table")) {
    const box = table.parentElement.getBoundingClientRect();
    for (const th of table.querySelectorAll("thead th:not([hidden])")) {
      const r = th.getBoundingClientRect();
      if (r.left < Math.max(0, box.left) - 0.5 || r.right > Math.min(innerWidth, box.right) + 0.5)
        out.push(`${table.id}: "${th.textContent.trim()}" spans ${r.left}-${r.right}, ` +
                 `shown in ${box.left}-${box.right} of ${innerWidth}`);
    }
  }
  return out;
}"""

LAYOUT = """
[channels."slow"]
strategy = "drop-oldest"
queue_size = 32
slow_consumer_timeout = 60.0

[sources.demo_ticker]
channel = "tickers.demo"
symbols = ["AAPL", "MSFT"]
rate = 50
"""


async def test_dashboard_table_headers_fit_at_1280_px(
    serve: StartServer, connect_raw: ConnectRaw, page: Page, artifacts: Path
) -> None:
    """At 1280x800, with a client behind (every column filled), no header is cut off."""
    assert page.viewport_size == {"width": 1280, "height": 800}
    server = await serve(LAYOUT)
    healthy = await open_client(server.url)
    await healthy.subscribe("tickers.demo")
    await page.goto(f"http://127.0.0.1:{server.port}/dashboard")
    await page.wait_for_selector("#status.live")
    stalled = await connect_raw(server.port)
    await stalled.subscribe("slow")
    sid = session_of(server, stalled).id
    done = asyncio.Event()
    publisher = asyncio.create_task(publish_until(server, done))
    try:
        # The widest state of the row: a backlog and time above the watermark.
        await page.wait_for_function(
            "(sel) => Number(document.querySelector(sel)?.dataset.risk) > 0", arg=row(sid)
        )
        await page.wait_for_selector("#channel-table tr[data-channel='slow']")
    finally:
        done.set()
        await publisher
    await page.screenshot(path=str(artifacts / "dashboard-1280.png"))
    assert await page.evaluate(HEADER_OVERFLOWS) == []


async def test_dashboard_shows_the_worker_of_each_connection(page: Page, tmp_path: Path) -> None:
    """`serve --workers 2`: a worker column, and connections of both workers in it."""
    server = await WorkersProcess(tmp_path, 2).start()
    clients: list[JsonClient] = []
    try:
        clients = await open_spread(server, "tickers.demo")
        await page.goto(f"http://127.0.0.1:{server.port}/dashboard")
        await page.wait_for_function(
            "() => new Set([...document.querySelectorAll('#conn-table tr[data-worker]')]"
            ".map(r => r.dataset.worker)).size === 2"
        )
        assert await page.is_visible("#worker-th")
        cells = await page.eval_on_selector_all(
            "#conn-table td.worker", "cells => cells.map(c => c.textContent)"
        )
        assert set(cells) == {"0", "1"}
        assert "2 workers" in await page.inner_text("#server-line")
        assert await page.evaluate(HEADER_OVERFLOWS) == [], "the extra column fits at 1280 px"
    finally:
        for client in clients:
            await client.close()
        server.kill()
