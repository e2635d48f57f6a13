"""The in-band reset notice on the wire reaches every subscriber, rate-capped ones included.

When Redis loses a channel's stream, subscribers get `subscribed` with
`reset: true` ahead of the new epoch's messages (PROTOCOL.md). A `max_rate`
subscription conflates data to the latest between sends; the notice must not
be conflated with it, or the client reads the new epoch's seqs as old ones.
"""

from __future__ import annotations

from tests.conftest import StartServer
from tests.support.clients import open_client
from tests.support.redis_server import RedisServer, redis_toml


async def test_a_max_rate_subscriber_gets_the_reset_notice_then_the_latest_message(
    redis_server: RedisServer, serve: StartServer
) -> None:
    server = await serve(redis_toml(redis_server.url))
    sub = await open_client(server.url)
    old_epoch = (await sub.subscribe("news", max_rate=20))["epoch"]
    pub = await open_client(server.url)
    assert await pub.publish("news", "old") == 1
    assert [m["seq"] for m in await sub.messages("news", 1)] == [1]

    redis = redis_server.async_client()
    try:
        await redis.flushall()
    finally:
        await redis.aclose()
    assert [await pub.publish("news", n) for n in range(3)] == [1, 2, 3]

    notice = await sub.recv_event("subscribed", timeout=10)
    assert (notice["reset"], notice["seq"], notice["channel"]) == (True, 0, "news")
    assert notice["epoch"] != old_epoch
    after = [await sub.recv_event("message", timeout=10)]
    for _ in range(2):  # seqs grow: seq 3 comes within three messages
        if after[-1]["seq"] == 3:
            break
        after.append(await sub.recv_event("message", timeout=10))
    assert (after[-1]["seq"], after[-1]["data"]) == (3, 2)
    before = sub.seen[: sub.seen.index(notice)]
    assert [e["data"] for e in before if e["event"] == "message"] == ["old"], "no new data first"
