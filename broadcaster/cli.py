"""The `broadcaster` command: `serve` runs the server; `sub` and `pub` talk to one.

A mistake in the user's config or flags prints one paragraph and exits 2;
a server that cannot be reached prints one line and exits 1; tracebacks are
for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import orjson

import broadcaster
from broadcaster.config import load_config, source_from_flag
from broadcaster.errors import ConfigError
from broadcaster.security.redact import install as install_log_filter
from broadcaster.server.app import Broadcaster

__all__ = ["DISTRIBUTION", "main", "run", "version"]

EXIT_USAGE = 2

DISTRIBUTION = "broadcaster-fanout"
"""The name the project is installed under (`pip install broadcaster-fanout`)."""

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop when it is installed, on the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def version() -> str:
    """The installed version, so a bug report can say which release it is about.

    A source checkout installed under another distribution name (or not at
    all) still answers, with the version the package itself declares.
    """
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return broadcaster.__version__


def tune_gc_for_serving() -> None:
    """Keep the cyclic garbage collector from scanning every connection over and over.

    A server holds many long-lived objects per connection; with the default
    thresholds, accepting 10,000 connections spent about 40% of the server's
    time in full collections that found nothing. Freezing what exists after
    start-up and collecting the young generation less often keeps collection
    cheap. Only the `serve` process does this: an application embedding the
    server keeps its own settings.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)


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
                "server.workers": _workers_flag(args.workers),
            },
        )
        config = config.with_sources(
            *(source_from_flag(text, index=i) for i, text in enumerate(args.source))
        )
        if config.server.workers > 1:
            # Imported here: one process (the default) never loads the supervisor.
            from broadcaster.workers.supervisor import Supervisor

            return Supervisor(config, log_level=args.log_level).run()
        server = Broadcaster(config)
        tune_gc_for_serving()
        run(server.serve_forever())
    except ConfigError as exc:
        print(f"broadcaster: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"broadcaster: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _workers_flag(text: str | None) -> int | str | None:
    """`--workers 4` is the integer 4; `--workers auto` stays the word (config validates both)."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


# The same as broadcaster.client.commands.DEFAULT_URL, which `serve` does not import
# (the client's modules are loaded by `sub` and `pub` only).
CLIENT_DEFAULT_URL = "ws://127.0.0.1:8765/ws"


def _sub(args: argparse.Namespace) -> int:
    from broadcaster.client import commands as client

    args.url = args.url or client.default_url()
    try:
        return run(client.sub(args.url, args.channels, out=sys.stdout, err=sys.stderr))
    except KeyboardInterrupt:  # Ctrl-C is how `sub` is meant to end
        return 0
    except BrokenPipeError:  # `broadcaster sub ... | head`
        return 0


def _pub(args: argparse.Namespace) -> int:
    if args.stdin == (args.json is not None):
        print("broadcaster pub: give either a JSON argument or --stdin", file=sys.stderr)
        return EXIT_USAGE
    from broadcaster.client import commands as client

    args.url = args.url or client.default_url()
    try:
        if args.stdin:
            readline = sys.stdin.buffer.readline
            return run(
                client.pub_lines(args.url, args.channel, readline, out=sys.stdout, err=sys.stderr)
            )
        try:
            data = orjson.loads(args.json)
        except orjson.JSONDecodeError as exc:
            print(f"broadcaster pub: invalid JSON: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return run(client.pub(args.url, args.channel, data, out=sys.stdout, err=sys.stderr))
    except KeyboardInterrupt:
        return 1


def _add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    url_help = f"server WebSocket URL (env BROADCASTER_URL; default {CLIENT_DEFAULT_URL})"
    sub = commands.add_parser(
        "sub",
        help="print the messages of channels as they come (until Ctrl-C)",
        description="Print CHANNEL #SEQ DATA lines on stdout; pauses, resumes, gaps and "
        "reconnects as '# ...' lines on stderr. Reconnects on its own.",
    )
    sub.add_argument("--url", help=url_help)
    sub.add_argument("channels", nargs="+", metavar="CHANNEL")
    sub.set_defaults(func=_sub)
    pub = commands.add_parser(
        "pub",
        help="publish a JSON message (or one per line of stdin) and print its seq",
        description="Publish JSON to CHANNEL and print the seq the server assigned. "
        "With --stdin, one JSON value per line: bad lines are reported with their line "
        "number and skipped; exit 2 if any line was bad. A paused publisher waits.",
    )
    pub.add_argument("--url", help=url_help)
    pub.add_argument("--stdin", action="store_true", help="publish one JSON value per line")
    pub.add_argument("channel", metavar="CHANNEL")
    pub.add_argument("json", nargs="?", metavar="JSON", help="the message, e.g. '{\"a\": 1}'")
    pub.set_defaults(func=_pub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broadcaster", description="WebSocket fan-out server for live data."
    )
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {version()}")
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
        "--workers",
        metavar="N|auto",
        help='worker processes sharing the ports (overrides [server] workers; "auto" = '
        "one per usable core; default 1)",
    )
    serve.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="SPEC",
        help="add a source: stdin:CHANNEL (JSON lines from standard input), "
        "file:PATH:CHANNEL (JSON lines from a file) or demo_ticker:CHANNEL (the simulated "
        "feed); may be repeated",
    )
    serve.set_defaults(func=_serve)
    _add_client_commands(commands)
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
    # Every command, not only `serve`: `sub` and `pub` carry BROADCASTER_TOKEN, and
    # websockets' client logs its request at DEBUG.
    install_log_filter((os.environ.get("BROADCASTER_TOKEN", ""),))
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
