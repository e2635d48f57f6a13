"""`serve --workers N` in one process: a BusServer and N `Broadcaster(worker=...)`.

Every worker listens on its own free loopback port here (the supervisor's
SO_REUSEPORT binding is not under test); real WebSocket clients talk to
each worker. What holds in one process must hold across workers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broadcaster.server.app import Broadcaster
from tests.support.clients import JsonClient, open_client
from tests.support.workers import Workers


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    started = Workers()
    yield started
    await started.stop()


async def _seqs(client: JsonClient, channel: str, count: int) -> list[int]:
    return [m["seq"] for m in await client.messages(channel, count)]


@pytest.mark.parametrize("count", [2, 3])
async def test_a_publish_on_any_worker_reaches_every_worker_in_one_order(
    workers: Workers, count: int
) -> None:
    servers = await workers.start(count)
    subs = [await open_client(server.url) for server in servers]
    for sub in subs:
        reply = await sub.subscribe("prices")
        assert reply["seq"] == 0
    epochs = {sub.seen[-1]["epoch"] for sub in subs}
    assert len(epochs) == 1, "one epoch for the whole server"
    pubs = [await open_client(server.url) for server in servers]
    sent = []
    for round_ in range(3):
        for index, pub in enumerate(pubs):
            sent.append(await pub.publish("prices", {"from": index, "round": round_}))
        sent.append(await servers[round_ % count].publish("prices", {"from": "api"}))
    assert sent == list(range(1, len(sent) + 1)), "gap-free seqs in publish order"
    seen = [await sub.messages("prices", len(sent)) for sub in subs]
    for got in seen:
        assert [m["seq"] for m in got] == sent
        assert [m["data"] for m in got] == [m["data"] for m in seen[0]]


async def _ignore(server: Broadcaster) -> None:
    return None
