"""Baseline (a): fan-out with websockets' ``broadcast()``.

The design most users reach first: encode each message once, then hand the same
string to ``broadcast()`` for every subscriber of the channel. ``broadcast()``
writes synchronously to each connection and has no backpressure: a subscriber
that does not read makes its write buffer (and the server's memory) grow until
the keepalive ping times out. Run: ``python -m loadtest.baselines.broadcast --port N``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from loadtest.baselines._common import run_server


class Hub:
    """Channels -> subscribed connections, and each channel's last seq."""

    def __init__(self) -> None:
        self.subscribers: defaultdict[str, set[ServerConnection]] = defaultdict(set)
        self.seq: defaultdict[str, int] = defaultdict(int)

    async def handle(self, ws: ServerConnection) -> None:
        """Serve one connection: read ops until it closes, then forget it."""
        mine: set[str] = set()
        try:
            async for raw in ws:
                await self.on_op(ws, raw, mine)
        except ConnectionClosed:
            pass
        finally:
            for channel in mine:
                self.subscribers[channel].discard(ws)

    async def on_op(self, ws: ServerConnection, raw: str | bytes, mine: set[str]) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await reply(ws, {"event": "error", "code": "invalid_json", "message": "bad JSON"})
            return
        op = msg.get("op") if isinstance(msg, dict) else None
        channel = msg.get("channel") if isinstance(msg, dict) else None
        ident = {"id": msg["id"]} if isinstance(msg, dict) and "id" in msg else {}
        if op in ("subscribe", "unsubscribe", "publish") and not isinstance(channel, str):
            await reply(ws, {"event": "error", "code": "invalid_message", **ident})
        elif op == "subscribe":
            assert isinstance(channel, str)
            # Register and take LAST in one step; send() writes before it first yields,
            # so the reply reaches the socket ahead of any message with seq > LAST.
            self.subscribers[channel].add(ws)
            mine.add(channel)
            event = {"event": "subscribed", "channel": channel, "seq": self.seq[channel]}
            await reply(ws, {**event, **ident})
        elif op == "unsubscribe":
            assert isinstance(channel, str)
            self.subscribers[channel].discard(ws)
            mine.discard(channel)
            await reply(ws, {"event": "unsubscribed", "channel": channel, **ident})
        elif op == "publish":
            assert isinstance(channel, str)
            self.seq[channel] += 1
            seq = self.seq[channel]
            text = orjson.dumps(
                {"event": "message", "channel": channel, "seq": seq, "data": msg.get("data")}
            ).decode()
            broadcast(self.subscribers[channel], text)
            if ident:
                await reply(ws, {"event": "published", "channel": channel, "seq": seq, **ident})
        elif op == "ping":
            await reply(ws, {"event": "pong", **ident})
        else:
            await reply(ws, {"event": "error", "code": "unknown_op", **ident})


async def reply(ws: ServerConnection, event: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(event).decode())


async def serve_until(host: str, port: int, stop: asyncio.Future[None]) -> None:
    hub = Hub()
    async with serve(hub.handle, host, port):
        await stop


if __name__ == "__main__":
    run_server(__doc__ or "", serve_until)
