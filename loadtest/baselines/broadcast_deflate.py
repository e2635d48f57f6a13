"""Baseline (a) with per-connection compression: websockets' ``broadcast()`` and its
default ``permessage-deflate`` (context takeover both ways).

What most servers that compress do: one zlib stream per connection, so each
message is compressed once per subscriber (CPU that grows with the audience)
and every connection keeps a compressor and a decompressor between messages.
Shown beside broadcaster's compress-once fan-out in BENCHMARKS.md. Run:
``python -m loadtest.baselines.broadcast_deflate --port N``.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import serve

from loadtest.baselines._common import run_server
from loadtest.baselines.broadcast import Hub


async def serve_until(host: str, port: int, stop: asyncio.Future[None]) -> None:
    hub = Hub()
    async with serve(hub.handle, host, port, compression="deflate"):
        await stop


if __name__ == "__main__":
    run_server(__doc__ or "", serve_until)
