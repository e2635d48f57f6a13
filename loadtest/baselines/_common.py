"""The few lines every baseline shares: argument parsing, the event loop, clean shutdown.

Kept separate so each baseline module shows only its fan-out design, which is
what a reader compares.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence

__all__ = ["run_server"]


def run_server(
    description: str,
    serve_until: Callable[[str, int, asyncio.Future[None]], Awaitable[None]],
    argv: Sequence[str] | None = None,
) -> None:
    """Parse ``--host/--port`` and run ``serve_until(host, port, stop)`` on uvloop.

    ``stop`` resolves on SIGINT/SIGTERM so the load tool can end the server cleanly.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default 8765)")
    args = parser.parse_args(argv)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()

        def request_stop() -> None:
            if not stop.done():
                stop.set_result(None)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, request_stop)
        await serve_until(args.host, args.port, stop)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency on Linux
        asyncio.run(main())
    else:
        uvloop.run(main())
