"""Baseline (b): one unbounded ``asyncio.Queue`` and one writer task per subscriber.

The other afternoon design: each connection gets a queue and a task that awaits
``ws.send()`` for every message, so a slow subscriber only grows its own queue.
Messages are encoded once and the same string is queued for every subscriber;
the cost is a queue operation and an awaited send per message per subscriber.
Run: ``python -m loadtest.baselines.queue_per_subscriber --port N``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from loadtest.baselines._common import run_server


class Hub:
    """Channels -> subscriber queues, and each channel's last seq."""

    def __init__(self) -> None:
        self.queues: defaultdict[str, set[asyncio.Queue[str]]] = defaultdict(set)
        self.seq: defaultdict[str, int] = defaultdict(int)

    async def handle(self, ws: ServerConnection) -> None:
        """Serve one connection: a writer task drains its queue while we read ops."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        writer = asyncio.create_task(write_loop(ws, queue))
        mine: set[str] = set()
        try:
            async for raw in ws:
                self.on_op(queue, raw, mine)
        except ConnectionClosed:
            pass
        finally:
            for channel in mine:
                self.queues[channel].discard(queue)
            writer.cancel()

    def on_op(self, queue: asyncio.Queue[str], raw: str | bytes, mine: set[str]) -> None:
        """Handle one op; replies go through the same queue so they stay in order."""
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            put(queue, {"event": "error", "code": "invalid_json", "message": "bad JSON"})
            return
        op = msg.get("op") if isinstance(msg, dict) else None
        channel = msg.get("channel") if isinstance(msg, dict) else None
        ident = {"id": msg["id"]} if isinstance(msg, dict) and "id" in msg else {}
        if op in ("subscribe", "unsubscribe", "publish") and not isinstance(channel, str):
            put(queue, {"event": "error", "code": "invalid_message", **ident})
        elif op == "subscribe":
            assert isinstance(channel, str)
            event = {"event": "subscribed", "channel": channel, "seq": self.seq[channel]}
            put(queue, {**event, **ident})
            self.queues[channel].add(queue)
            mine.add(channel)
        elif op == "unsubscribe":
            assert isinstance(channel, str)
            self.queues[channel].discard(queue)
            mine.discard(channel)
            put(queue, {"event": "unsubscribed", "channel": channel, **ident})
        elif op == "publish":
            assert isinstance(channel, str)
            self.seq[channel] += 1
            seq = self.seq[channel]
            text = orjson.dumps(
                {"event": "message", "channel": channel, "seq": seq, "data": msg.get("data")}
            ).decode()
            for q in self.queues[channel]:
                q.put_nowait(text)
            if ident:
                put(queue, {"event": "published", "channel": channel, "seq": seq, **ident})
        elif op == "ping":
            put(queue, {"event": "pong", **ident})
        else:
            put(queue, {"event": "error", "code": "unknown_op", **ident})


def put(queue: asyncio.Queue[str], event: dict[str, Any]) -> None:
    queue.put_nowait(orjson.dumps(event).decode())


async def write_loop(ws: ServerConnection, queue: asyncio.Queue[str]) -> None:
    """The per-subscriber writer: one awaited send per message."""
    try:
        while True:
            await ws.send(await queue.get())
    except ConnectionClosed:
        pass


async def serve_until(host: str, port: int, stop: asyncio.Future[None]) -> None:
    hub = Hub()
    async with serve(hub.handle, host, port):
        await stop


if __name__ == "__main__":
    run_server(__doc__ or "", serve_until)
