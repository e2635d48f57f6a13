"""A real Chromium page negotiates permessage-deflate by itself and gets compressed frames."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page

from tests.conftest import StartServer
from tests.support.http import http_get_json

# A 120-level order book (about 5 KB of JSON), published 10 times.
BOOK: dict[str, Any] = {
    "symbol": "AAPL",
    "bids": [[f"{189 - i / 100:.2f}", f"{(i * 37) % 1000 / 7:.4f}"] for i in range(120)],
    "asks": [[f"{189 + i / 100:.2f}", f"{(i * 53) % 1000 / 7:.4f}"] for i in range(120)],
}
COUNT = 10

OPEN = """
(url) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url);
  window.received = [];
  window.ws = ws;
  ws.onerror = () => reject(new Error("websocket error"));
  ws.onmessage = (e) => {
    const event = JSON.parse(e.data);
    if (event.event === "subscribed") resolve(ws.extensions);
    if (event.event === "message") window.received.push(event);
  };
  ws.onopen = () => ws.send(JSON.stringify({op: "subscribe", channel: "books", id: 1}));
})
"""


async def test_browser_receives_compressed_frames_from_a_deflate_channel(
    serve: StartServer, page: Page
) -> None:
    """Chromium's own offer is answered with no context takeover either way; the page reads
    the order books unchanged while the server sends well under half their bytes."""
    server = await serve('[channels."books"]\ncompression = "deflate"\n')
    await page.goto(f"http://127.0.0.1:{server.port}/healthz")
    extensions = await page.evaluate(OPEN, f"ws://127.0.0.1:{server.port}/ws")
    assert extensions == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    )
    _, before = await http_get_json(server.port, "/stats")
    (connection,) = before["connections"]
    assert connection["compression"] == "permessage-deflate"
    sent_before = connection["bytes_sent"]

    for _ in range(COUNT):
        await server.publish("books", BOOK)
    await page.wait_for_function(f"() => window.received.length === {COUNT}")
    received = await page.evaluate("() => window.received")
    assert [event["seq"] for event in received] == list(range(1, COUNT + 1))
    assert all(event["data"] == BOOK for event in received)

    _, after = await http_get_json(server.port, "/stats")
    (connection,) = after["connections"]
    on_the_wire = connection["bytes_sent"] - sent_before
    plain = server.hub.channels["books"].counters.deflate_plain
    assert plain > COUNT * 4000
    assert on_the_wire < 0.4 * plain
    assert after["channels"]["books"]["compression"]["ratio"] < 0.4
