"""The `broadcaster` command: `serve` runs the server.

A mistake in the user's config or flags prints one paragraph and exits 2;
tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from broadcaster.config import load_config, source_from_flag
from broadcaster.errors import ConfigError
from broadcaster.server.app import Broadcaster

__all__ = ["main", "run"]

EXIT_USAGE = 2


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` on uvloop when it is installed, on the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


def _serve(args: argparse.Namespace) -> int:
    config_path = args.config or os.environ.get("BROADCASTER_CONFIG")
    try:
        config = load_config(
            config_path,
            flags={
                "server.host": args.host,
                "server.port": args.port,
                "api.enabled": args.api,
                "api.host": args.api_host,
                "api.port": args.api_port,
            },
        )
        config = config.with_sources(
            *(source_from_flag(text, index=i) for i, text in enumerate(args.source))
        )
        server = Broadcaster(config)
        run(server.serve_forever())
    except ConfigError as exc:
        print(f"broadcaster: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"broadcaster: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broadcaster", description="WebSocket fan-out server for live data."
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("BROADCASTER_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging verbosity (env BROADCASTER_LOG_LEVEL; default INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument(
        "--config",
        metavar="PATH",
        help="TOML config file (env BROADCASTER_CONFIG; default: the embedded default, "
        "configs/default.toml)",
    )
    serve.add_argument("--host", help="address to bind (overrides [server] host)")
    serve.add_argument("--port", type=int, help="port to bind (overrides [server] port)")
    serve.add_argument(
        "--api",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve the HTTP publish API (overrides [api] enabled)",
    )
    serve.add_argument("--api-host", help="address of the HTTP publish API (overrides [api] host)")
    serve.add_argument(
        "--api-port", type=int, help="port of the HTTP publish API (overrides [api] port)"
    )
    serve.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="SPEC",
        help="add a source: stdin:CHANNEL (JSON lines from standard input) or "
        "file:PATH:CHANNEL (JSON lines from a file); may be repeated",
    )
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.log_level != "DEBUG":
        # websockets logs every connection at INFO: too much for a fan-out server.
        logging.getLogger("websockets").setLevel(logging.WARNING)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
