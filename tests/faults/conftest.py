"""Fixtures and helpers of the fault suite: Redis in every persistence mode, raw
subscribers that read the wire, a publisher that records acks, and the figures.

Everything is real: redis-server processes (killed with SIGKILL, cut off
behind a TCP proxy, restarted on their files), server nodes in this process or as
`python -m broadcaster serve` processes, WebSocket clients on raw sockets
(tests/support/raw_client.py), so the oracle reads the protocol itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.oracle import Ack, Figures
from tests.support.raw_client import RawClient
from tests.support.redis_server import RedisServer

# Per drill, in the order run: printed at the end of the session.
FIGURES: dict[str, dict[str, int]] = {}

NO_PERSISTENCE = ["--save", "", "--appendonly", "no"]
RDB_ONLY = ["--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb"]
AOF_EVERYSEC = ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
AOF_ALWAYS = ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("fault drills: acknowledged publishes per subscriber")
    columns = ["acknowledged", "expected", "delivered", "reported_gap", "reported_reset", "lost"]
    terminalreporter.write_line(f"{'drill':<48}" + "".join(f"{c:>15}" for c in columns))
    for name, figures in FIGURES.items():
        terminalreporter.write_line(
            f"{name:<48}" + "".join(f"{figures[c]:>15}" for c in columns)
        )


def record(name: str, figures: Figures) -> None:
    FIGURES[name] = figures.summary()


class FaultRedis(RedisServer):
    """A redis-server with the persistence the drill needs (and optionally a replica)."""

    def __init__(
        self, directory: Path, persistence: list[str], replicaof: int | None = None
    ) -> None:
        super().__init__(directory)
        self.persistence = persistence
        self.replicaof = replicaof

    def options(self) -> list[str]:
        if self.replicaof is None:
            return list(self.persistence)
        return [*self.persistence, "--replicaof", "127.0.0.1", str(self.replicaof)]


@pytest.fixture
def fault_redis(tmp_path: Path) -> Iterator[list[FaultRedis]]:
    """Started FaultRedis servers are appended here by the test; all killed at teardown."""
    servers: list[FaultRedis] = []
    yield servers
    for server in servers:
        server.kill()


class Subscriber:
    """One subscriber on a raw socket; a background task reads everything it is sent.

    `events` keeps every event of every connection in order, so a subscriber
    that reconnects elsewhere with `since` is one history for the oracle.
    """

    def __init__(self, name: str, channel: str) -> None:
        self.name = name
        self.channel = channel
        self.events: list[dict[str, Any]] = []
        self.client: RawClient | None = None
        self._pump: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()

    @property
    def position(self) -> tuple[str | None, int]:
        """The epoch and the last seq this subscriber got (what it resubscribes with)."""
        epoch: str | None = None
        last = 0
        for event in self.events:
            if event.get("event") == "subscribed":
                epoch, last = event["epoch"], int(event["seq"])
            elif event.get("event") == "message":
                last = int(event["seq"])
        return epoch, last

    async def open(self, port: int, *, resume: bool = False) -> dict[str, Any]:
        client = RawClient(port, rcvbuf=0)
        await client.connect()
        op: dict[str, Any] = {"op": "subscribe", "channel": self.channel, "id": "sub"}
        if resume:
            epoch, last = self.position
            op |= {"since": last, "epoch": epoch}
        await client.send(op)
        events = await client.read_until(
            lambda evs: any(e.get("event") in ("subscribed", "error") for e in evs)
        )
        reply = next(e for e in events if e.get("event") in ("subscribed", "error"))
        assert reply["event"] == "subscribed", reply
        if self.client is not None:
            self.client.close()  # the connection that ended
        self.client = client
        self.ended = asyncio.Event()
        start = len(self.events)
        self.events.extend(client.events)
        self._pump = asyncio.get_running_loop().create_task(self._read(client, start))
        return reply

    async def _read(self, client: RawClient, start: int) -> None:
        """Read until the connection ends (or 110 s): each read appends to client.events."""
        deadline = time.monotonic() + 110
        try:
            while time.monotonic() < deadline:
                try:
                    alive = await client.read_once(1.0)
                except TimeoutError:
                    continue
                except OSError:
                    alive = False
                self.events[start:] = client.events
                if not alive:
                    return
        finally:
            self.ended.set()

    def resets(self) -> list[dict[str, Any]]:
        """The in-band reset notices this subscriber got."""
        return [e for e in self.events if e.get("event") == "subscribed" and e.get("reset")]

    def has(self, data: Any) -> bool:
        return any(e.get("event") == "message" and e["data"] == data for e in self.events)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.client is not None:
            self.client.close()


class Publisher:
    """Publishes one item at a time on a raw socket and records what was acknowledged."""

    def __init__(self, channel: str, tag: str) -> None:
        self.channel = channel
        self.tag = tag
        self.acks: list[Ack] = []
        self.refused = 0
        self.client: RawClient | None = None
        self._ids = itertools.count()
        self.acked = asyncio.Condition()
        self._holds: dict[int, asyncio.Event] = {}

    def hold(self, count: int) -> None:
        """Stop publishing after `count` acks until `release(count)`: a fault goes there."""
        self._holds[count] = asyncio.Event()

    def release(self, count: int) -> None:
        self._holds.pop(count).set()

    async def open(self, port: int) -> Publisher:
        self.client = await RawClient(port, rcvbuf=0).connect()
        return self

    async def publish_one(self) -> None:
        assert self.client is not None
        n = next(self._ids)
        data = {"tag": self.tag, "n": n}
        op_id = f"p{n}"
        await self.client.send(
            {"op": "publish", "channel": self.channel, "data": data, "id": op_id}
        )
        events = await self.client.read_until(
            lambda evs: any(e.get("id") == op_id for e in evs[-4:]), timeout=15
        )
        reply = next(e for e in reversed(events) if e.get("id") == op_id)
        if reply["event"] == "published":
            self.acks.append(Ack(seq=int(reply["seq"]), data=data))
            async with self.acked:
                self.acked.notify_all()
        else:
            assert reply.get("code") == "unavailable", reply
            self.refused += 1
            await asyncio.sleep(0.05)

    async def run(self, total: int, timeout: float = 60.0) -> None:
        """Publish until `total` acks (bounded in attempts and time)."""
        deadline = time.monotonic() + timeout
        for _ in range(total * 100):
            if len(self.acks) >= total or time.monotonic() > deadline:
                return
            gate = self._holds.get(len(self.acks))
            if gate is not None:
                await asyncio.wait_for(gate.wait(), timeout)
            await self.publish_one()

    async def until(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` publishes were acknowledged."""
        async with asyncio.timeout(timeout), self.acked:
            await self.acked.wait_for(lambda: len(self.acks) >= count)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
