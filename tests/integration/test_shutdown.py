"""SIGTERM with a client that reads, but slowly: it still gets close 1001, not a reset."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from tests.conftest import StartProcess
from tests.support.clients import JsonClient
from tests.support.raw_client import RawClient

# The drain (shutdown_timeout) ends while the reader is still inside a
# 240 KB message: what the server's transport still holds for it then takes
# it over a second at 50 KB/s, more than close_timeout.
SHUTDOWN_TOML = """
[server]
host = "127.0.0.1"
socket_send_buffer = 4096
shutdown_timeout = 3.0
close_timeout = 0.5
max_message_size = 1048576

[channels."firehose"]
strategy = "drop-oldest"
queue_size = 64
slow_consumer_timeout = 120.0
"""

RATE = 50_000
"""Bytes per second the slow reader takes."""
CHUNK = 2_500
MESSAGE_SIZE = 240_000


async def read_slowly(reader: RawClient, timeout: float) -> None:
    """Read at most RATE bytes/s (CHUNK per slot on a fixed schedule) until the server ends
    the connection; bounded by `timeout`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for slot in range(int(timeout * RATE / CHUNK)):
        await asyncio.sleep(max(0.0, start + slot * CHUNK / RATE - loop.time()))
        if not await reader.read_once(timeout, limit=CHUNK):
            return
    raise TimeoutError("the server did not end the connection")


async def test_sigterm_gives_a_slow_reader_1001_after_dropping_its_queue(
    serve_process: StartProcess,
) -> None:
    """A client reading at 50 KB/s, still behind when the drain ends, gets close 1001 (its
    queue dropped, what its socket held delivered), not a TCP reset."""
    proc = await serve_process(SHUTDOWN_TOML)
    reader = await RawClient(proc.port).connect()
    try:
        await reader.subscribe("firehose")
        reading = asyncio.create_task(read_slowly(reader, timeout=30))
        async with connect(proc.url, max_size=None) as ws:
            publisher = JsonClient(ws)
            for i in range(2):
                await publisher.send(
                    {"op": "publish", "channel": "firehose", "data": {"i": i, "pad": "q" * 1000}}
                )
            big = {"i": "big", "pad": "b" * MESSAGE_SIZE}
            assert await publisher.publish("firehose", big) == 3
            for i in range(3):
                await publisher.send(
                    {"op": "publish", "channel": "firehose", "data": {"i": i, "pad": "q" * 1000}}
                )
            assert await publisher.publish("firehose", {"i": "last"}) == 7
        proc.terminate()
        await reading
        assert not reader.reset, "the slow reader was reset instead of closed"
        assert reader.close_code == 1001
        seqs = [m["seq"] for m in reader.messages("firehose")]
        assert seqs == [1, 2, 3], "what was queued behind the socket's content was dropped"
    finally:
        reader.close()
    code, output = await proc.wait_exit()
    assert code == 0, output
