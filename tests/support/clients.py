"""A thin JSON layer over websockets' client for tests that read normally."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

__all__ = ["JsonClient", "open_client"]


class JsonClient:
    """Sends ops and reads events as dicts."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, op: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(op).decode())

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        event: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.seen.append(event)
        return event

    async def recv_event(self, name: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next event called `name` whose fields equal `match` (others are kept in `seen`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.recv(max(0.01, deadline - loop.time()))
            if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                return event

    async def subscribe(self, channel: str, **extra: Any) -> dict[str, Any]:
        await self.send({"op": "subscribe", "channel": channel, "id": f"sub:{channel}", **extra})
        return await self.recv_event("subscribed", channel=channel)

    async def publish(self, channel: str, data: Any) -> int:
        op_id = f"pub:{len(self.seen)}:{id(data)}"
        await self.send({"op": "publish", "channel": channel, "data": data, "id": op_id})
        reply = await self.recv_event("published", id=op_id)
        return int(reply["seq"])

    async def messages(
        self, channel: str, count: int, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while len(got) < count:
            event = await self.recv_event("message", timeout=timeout, channel=channel)
            got.append(event)
        return got

    async def close(self) -> None:
        await self.ws.close()


async def open_client(url: str) -> JsonClient:
    # max_queue=None: a healthy client keeps reading into its own buffer while the
    # test is busy elsewhere, so it never looks like a slow consumer.
    return JsonClient(await connect(url, max_size=None, max_queue=None))
