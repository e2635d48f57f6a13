"""Command line: ``python -m loadtest {list,run,compare}``.

``run`` runs one scenario against one target; ``compare`` runs it against several
targets interleaved (A B C A B C ...) and prints medians and ratios, which is how
BENCHMARKS.md figures are produced on a noisy machine. Scenario parameters come
from a preset and may be overridden by flags shared by both commands.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from loadtest import reaper
from loadtest.compare import compare, render_compare
from loadtest.report import render_table
from loadtest.runner import RunOptions, pin_self, run_scenario
from loadtest.scenarios import PRESETS, STRATEGIES, Scenario, get_scenario
from loadtest.targets import TargetError, TargetSpec, parse_target

__all__ = ["build_parser", "main"]

T = TypeVar("T")


def _rate(text: str) -> float:
    """``max`` (closed loop, stored as 0) or a positive number of messages per second."""
    if text.lower() == "max":
        return 0.0
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("rate must be > 0 or 'max'")
    return value


def _strategies(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    for name in names:
        if name not in STRATEGIES:
            raise argparse.ArgumentTypeError(
                f"unknown strategy {name!r}; expected {', '.join(STRATEGIES)}"
            )
    return names


def _add_scenario_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help=f"one of {', '.join(PRESETS)}")
    g = p.add_argument_group("scenario overrides (default: the preset's value)")
    g.add_argument("--subscribers", type=int, help="reading subscribers (fast + slow)")
    g.add_argument("--processes", type=int, help="worker processes for the subscribers")
    g.add_argument("--channels", type=int, help="channels (subscribers spread round-robin)")
    g.add_argument("--publishers", type=int, help="publishing connections (round-robin)")
    g.add_argument("--rate", type=_rate, help="msg/s per channel, or 'max' for closed loop")
    g.add_argument("--size", type=int, help="approximate bytes per delivered message")
    g.add_argument("--duration", type=float, help="seconds of publishing (idle: of holding)")
    g.add_argument("--slow", type=int, help="how many subscribers read slowly")
    g.add_argument("--slow-rate", type=float, help="msg/s a slow subscriber reads")
    g.add_argument(
        "--slow-rcvbuf", type=int, help="SO_RCVBUF of slow subscribers (0: kernel autotuning)"
    )
    g.add_argument("--stalled", type=int, help="extra subscribers that stop reading (TCP level)")
    g.add_argument(
        "--idle",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="connect only: no subscribe, no publish (S4)",
    )
    g.add_argument(
        "--strategy",
        type=_strategies,
        dest="strategies",
        help="broadcaster strategy, or a comma list assigned to channels in turn",
    )
    g.add_argument("--queue-size", type=int, help="broadcaster [defaults] queue_size")
    g.add_argument("--high-watermark", type=int, help="broadcaster [defaults] high_watermark")
    g.add_argument("--low-watermark", type=int, help="broadcaster [defaults] low_watermark")
    g.add_argument(
        "--slow-consumer-timeout",
        type=float,
        help="broadcaster [defaults] slow_consumer_timeout (s)",
    )
    g.add_argument("--window", type=int, help="closed loop: unacked publishes per publisher")
    g.add_argument("--lead", type=int, help="closed loop: max msgs ahead of slowest subscriber")
    g.add_argument("--drain", type=float, help="seconds allowed for subscribers to catch up")
    g.add_argument(
        "--client",
        choices=["picows", "websockets", "sse"],
        help="subscriber client (sse: GET /sse on the API port, via the WebSocket port's redirect)",
    )
    g.add_argument(
        "--compression",
        action="store_true",
        default=None,
        help="subscribers offer permessage-deflate (implies --client websockets)",
    )
    g.add_argument(
        "--payload",
        choices=["pad", "json"],
        help="message data: 'x' padding (default) or a realistic order book of --size bytes",
    )
    g.add_argument("--connect-concurrency", type=int, help="handshakes in flight per worker")
    g.add_argument("--stalled-rcvbuf", type=int, help="SO_RCVBUF of stalled clients (bytes)")
    g.add_argument(
        "--latency-every", type=int, help="measure latency on one message in N (seqs: all)"
    )
    r = p.add_argument_group("running")
    r.add_argument(
        "--pin",
        action="store_true",
        help="pin a started server to core 0 (taskset) and the tool to core 1",
    )
    r.add_argument(
        "--progress",
        action="store_true",
        help="live progress line on stderr even when it is not a TTY",
    )
    r.add_argument("--json", type=Path, metavar="PATH", help="write the result document here")
    r.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots into DIR")


_OVERRIDES = (
    "subscribers",
    "processes",
    "channels",
    "publishers",
    "rate",
    "size",
    "duration",
    "slow",
    "slow_rate",
    "slow_rcvbuf",
    "stalled",
    "idle",
    "strategies",
    "queue_size",
    "high_watermark",
    "low_watermark",
    "slow_consumer_timeout",
    "window",
    "lead",
    "drain",
    "client",
    "compression",
    "payload",
    "connect_concurrency",
    "stalled_rcvbuf",
    "latency_every",
)


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The preset named on the command line with every given flag applied."""
    base = get_scenario(args.scenario)
    changes: dict[str, Any] = {
        name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None
    }
    if changes.get("rate") == 0.0:
        changes["rate"] = None  # 'max': closed loop
    if changes.get("idle") and "publishers" not in changes:
        changes["publishers"] = 0
    if changes.get("compression") and "client" not in changes:
        changes["client"] = "websockets"  # picows does not do permessage-deflate
    return base.override(**changes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Load tool for WebSocket fan-out servers speaking broadcaster's protocol.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the scenarios and built-in targets")

    run = sub.add_parser("run", help="run a scenario against one target")
    _add_scenario_flags(run)
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server: ws://127.0.0.1:PORT/ws")
    where.add_argument(
        "--server",
        metavar="CMD",
        help="start the server: a command with {port}, or baseline-broadcast, "
        "baseline-queue, trivial, broadcaster",
    )
    run.add_argument("--server-pid", type=int, help="pid to sample CPU/RSS of a --url target")
    run.add_argument(
        "--subscribe-url",
        action="append",
        default=[],
        metavar="URL",
        help="another node of a cluster (repeatable): subscribers spread over --url and these, "
        "publishers use --url",
    )

    cmp = sub.add_parser("compare", help="run a scenario against several targets, interleaved")
    _add_scenario_flags(cmp)
    cmp.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="[LABEL=]SPEC",
        help="a URL, a built-in name or a command with {port}; repeat for each",
    )
    cmp.add_argument("--repeat", type=int, default=3, help="rounds (A B C A B C ...); default 3")
    return parser


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def _cmd_list() -> int:
    for name, scenario in PRESETS.items():
        print(f"{name:7} {scenario.description}")
    print(
        "\ntargets: baseline-broadcast, baseline-queue, trivial, broadcaster, "
        "ws://127.0.0.1:PORT/ws, or a command containing {port}"
    )
    return 0


def _cmd_run(args: argparse.Namespace, scenario: Scenario) -> int:
    spec: TargetSpec = parse_target(args.url if args.url else args.server)
    for extra in args.subscribe_url:
        if parse_target(extra).url is None:
            raise SystemExit(f"--subscribe-url takes ws://127.0.0.1:PORT/ws, got {extra!r}")
    if args.subscribe_url and scenario.processes < 1 + len(args.subscribe_url):
        # One worker process per node at least, so every node gets subscribers.
        scenario = scenario.override(processes=1 + len(args.subscribe_url))
    options = RunOptions(
        pin=args.pin,
        progress=args.progress or sys.stderr.isatty(),
        server_pid=args.server_pid,
        subscribe_urls=tuple(args.subscribe_url),
    )
    result = _run_async(run_scenario(scenario, spec, options))
    print(render_table(result))
    if args.json:
        _write_json(args.json, result)
    if args.plots:
        from loadtest.plots import write_plots

        for path in write_plots(result, args.plots):
            print(f"plot: {path}")
    return 1 if result["accounting"]["failed"] else 0


def _cmd_compare(args: argparse.Namespace, scenario: Scenario) -> int:
    specs = [parse_target(t) for t in args.target]
    options = RunOptions(pin=args.pin, progress=args.progress or sys.stderr.isatty())
    doc = _run_async(compare(scenario, specs, args.repeat, options))
    print(render_compare(doc))
    if args.json:
        _write_json(args.json, doc)
    if args.plots:
        from loadtest.plots import write_plots

        for run in doc["runs"]:
            prefix = f"{run['target']['label']}-r{run['round']}"
            for path in write_plots(run, args.plots, prefix=prefix):
                print(f"plot: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        return _cmd_list()
    reaper.install_signal_handlers()
    try:
        scenario = scenario_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.pin:
        pin_self(1)
    try:
        if args.command == "run":
            return _cmd_run(args, scenario)
        return _cmd_compare(args, scenario)
    except TargetError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nloadtest: interrupted; child processes stopped", file=sys.stderr)
        return 130
    finally:
        reaper.kill_all()
