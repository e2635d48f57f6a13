"""The trivial server: the fastest fan-out we can write in Python, to find the tool's ceiling.

Not a design anyone should ship (no bounds, no backpressure), but the upper limit
for a Python server on this loop: each message is framed once (websockets' own
frame serializer) and the same bytes are queued for every subscriber; once per
event-loop iteration every subscriber with pending frames gets one
``transport.write()`` of its frames joined. Replies travel the same path so they
stay ordered with messages. When the load tool reports about as many deliveries/s
against this server as against another, the load client, not that server, is the
limit. Run: ``python -m loadtest.baselines.trivial --port N``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from loadtest.baselines._common import run_server


class Outlet:
    """One connection's transport and the frames it has pending in this loop iteration."""

    __slots__ = ("pending", "transport")

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self.pending: list[bytes] = []


class Hub:
    """Channels, their seqs, and the per-iteration flush of every outlet with pending frames."""

    def __init__(self) -> None:
        self.outlets: defaultdict[str, list[Outlet]] = defaultdict(list)
        self.seq: defaultdict[str, int] = defaultdict(int)
        self.dirty: list[Outlet] = []

    def push(self, outlet: Outlet, frame: bytes) -> None:
        if not outlet.pending:
            if not self.dirty:
                asyncio.get_running_loop().call_soon(self.flush)
            self.dirty.append(outlet)
        outlet.pending.append(frame)

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        for outlet in dirty:
            pending = outlet.pending
            if not outlet.transport.is_closing():
                outlet.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
            pending.clear()

    def send(self, outlet: Outlet, event: dict[str, Any]) -> None:
        self.push(outlet, frame_of(orjson.dumps(event)))

    async def handle(self, ws: ServerConnection) -> None:
        outlet = Outlet(ws.transport)
        mine: set[str] = set()
        try:
            async for raw in ws:
                self.on_op(outlet, raw, mine)
        except ConnectionClosed:
            pass
        finally:
            for channel in mine:
                self.outlets[channel].remove(outlet)

    def on_op(self, outlet: Outlet, raw: str | bytes, mine: set[str]) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.send(outlet, {"event": "error", "code": "invalid_json", "message": "bad JSON"})
            return
        op = msg.get("op") if isinstance(msg, dict) else None
        channel = msg.get("channel") if isinstance(msg, dict) else None
        ident = {"id": msg["id"]} if isinstance(msg, dict) and "id" in msg else {}
        if op in ("subscribe", "unsubscribe", "publish") and not isinstance(channel, str):
            self.send(outlet, {"event": "error", "code": "invalid_message", **ident})
        elif op == "subscribe":
            assert isinstance(channel, str)
            event = {"event": "subscribed", "channel": channel, "seq": self.seq[channel]}
            self.send(outlet, {**event, **ident})
            if channel not in mine:
                self.outlets[channel].append(outlet)
                mine.add(channel)
        elif op == "unsubscribe":
            assert isinstance(channel, str)
            if channel in mine:
                self.outlets[channel].remove(outlet)
                mine.discard(channel)
            self.send(outlet, {"event": "unsubscribed", "channel": channel, **ident})
        elif op == "publish":
            assert isinstance(channel, str)
            self.seq[channel] += 1
            seq = self.seq[channel]
            event = {"event": "message", "channel": channel, "seq": seq, "data": msg.get("data")}
            frame = frame_of(orjson.dumps(event))
            for subscriber in self.outlets[channel]:
                self.push(subscriber, frame)
            if ident:
                self.send(outlet, {"event": "published", "channel": channel, "seq": seq, **ident})
        elif op == "ping":
            self.send(outlet, {"event": "pong", **ident})
        else:
            self.send(outlet, {"event": "error", "code": "unknown_op", **ident})


def frame_of(payload: bytes) -> bytes:
    """A complete unmasked server-to-client text frame, framed by websockets."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


async def serve_until(host: str, port: int, stop: asyncio.Future[None]) -> None:
    hub = Hub()
    async with serve(hub.handle, host, port):
        await stop


if __name__ == "__main__":
    run_server(__doc__ or "", serve_until)
