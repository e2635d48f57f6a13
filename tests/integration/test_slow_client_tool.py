"""The slow client of docs/metrics.md (`python -m broadcaster.tools.slow_client`) gets cut off."""

from __future__ import annotations

from broadcaster.tools.slow_client import run
from tests.conftest import StartServer
from tests.support.servers import slow_consumer_disconnects

CHANNELS = """
[channels."slow.demo"]
queue_size = 8
slow_consumer_timeout = 0.3
"""


async def test_slow_client_tool_is_cut_off_and_sees_4008_and_the_stats_record(
    serve: StartServer,
) -> None:
    """It stops reading, floods its channel, learns it was cut off, then finds close 4008."""
    server = await serve(CHANNELS)
    lines: list[str] = []
    outcome = await run(
        server.url, "slow.demo", rate=500, max_seconds=30, check_every=0.1, report=lines.append
    )
    assert outcome.cut_off, lines
    assert outcome.published > 0
    assert outcome.record is not None
    assert outcome.record["channel"] == "slow.demo"
    assert outcome.record["remote"] == outcome.local_address
    assert outcome.close_code == 4008
    assert slow_consumer_disconnects(server, "slow.demo") == 1
