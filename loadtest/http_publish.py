"""Load the HTTP publish API with single publishes and report requests per second.

    python loadtest/http_publish.py --requests 20000 --concurrency 32

A bounded number of requests over keep-alive connections (aiohttp client), to
a loopback address unless --allow-remote is given. Prints requests/s and the
count of each status. `wrk` with loadtest/wrk_publish.lua measures the same
without a Python client competing for the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import time
from collections import Counter
from urllib.parse import urlsplit

import aiohttp
import orjson


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def run(url: str, requests: int, concurrency: int, channel: str, key: str | None) -> None:
    body = orjson.dumps({"channel": channel, "data": {"symbol": "AAPL", "price": 189.25}})
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"apikey {key}"
    statuses: Counter[int] = Counter()
    remaining = requests

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    done = sum(statuses.values())
    print(f"{done} requests in {elapsed:.2f} s: {done / elapsed:,.0f} requests/s")
    print("statuses:", dict(sorted(statuses.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8766/api/publish")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--channel", default="bench")
    parser.add_argument("--key", help="API key, when [api] keys are configured")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback URL")
    args = parser.parse_args()
    if not args.allow_remote and not _loopback(args.url):
        parser.error("refusing to load a non-loopback address without --allow-remote")
    from broadcaster.cli import run as run_on_best_loop

    run_on_best_loop(run(args.url, args.requests, args.concurrency, args.channel, args.key))


if __name__ == "__main__":
    main()
