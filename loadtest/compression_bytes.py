"""Bytes on the wire and CPU per message under permessage-deflate, per mode.

`python -m loadtest.compression_bytes [--level N] [--count N] [--json]`

No sockets: each message shape is framed the ways a server could send it,
with websockets' own frame serializer and `PerMessageDeflate` extension, and
the frames are measured. It is what decided broadcaster's compression modes
and defaults (docs/channels.md, BENCHMARKS.md):

- `plain`: the uncompressed text frame (what `compression = "off"` sends);
- `once`: each message compressed alone (no context takeover), one frame
  shared by every subscriber: what `compression = "deflate"` sends. Its CPU
  is paid once per message, so per delivery it is divided by the audience;
- `per-connection`: websockets' default permessage-deflate, one compressor
  with context takeover per subscriber: CPU paid for every delivery, and a
  zlib stream held by every connection (its memory is measured too);
- `shared-context`: the scheme of the compression notes, one compressor with
  context takeover per channel and a small window (`--shared-bits`, 2^10),
  whose frames every aligned subscriber can take as they are; the steady
  state is measured (joiners get `once` frames until aligned).

The shapes are realistic JSON, not padding: the demo ticker's `message`
events (~130 B), and order-book and market-snapshot events of 2-10 KB that
move a little between messages, as real feeds do. Deterministic (seeded);
CPU figures are the best of three rounds of `time.perf_counter`.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from broadcaster.core import events
from broadcaster.sources.demo_ticker import DemoTicker

__all__ = ["SHAPES", "main", "measure"]


def _ticker(seed: int) -> Iterator[Any]:
    ticker = DemoTicker(
        name="demo", channel="tickers.demo", symbols=["AAPL", "MSFT", "NVDA"], rate=20, seed=seed
    )
    i = 0
    while True:
        yield ticker.next_tick(ticker.symbols[i % 3])
        i += 1


def _book(levels: int) -> Callable[[int], Iterator[Any]]:
    """An order book of `levels` per side (Binance-like string pairs), moving a little each time."""

    def shapes(seed: int) -> Iterator[Any]:
        rng = random.Random(seed)
        mid = 189.0
        ts = 1_733_500_000_000
        update = 0
        while True:
            mid = round(mid * (1 + rng.gauss(0, 0.0002)), 2)
            ts += rng.randint(20, 120)
            update += rng.randint(1, 40)
            yield {
                "symbol": "AAPL",
                "lastUpdateId": 41_000_000 + update,
                "ts": ts,
                "bids": [
                    [f"{mid - 0.01 * (i + 1):.2f}", f"{rng.lognormvariate(4, 1.2):.4f}"]
                    for i in range(levels)
                ],
                "asks": [
                    [f"{mid + 0.01 * (i + 1):.2f}", f"{rng.lognormvariate(4, 1.2):.4f}"]
                    for i in range(levels)
                ],
            }

    return shapes


def _market(rows: int) -> Callable[[int], Iterator[Any]]:
    """A market snapshot: `rows` instruments as objects (names, prices, volumes)."""
    symbols = [f"SYM{i:03d}" for i in range(rows)]

    def shapes(seed: int) -> Iterator[Any]:
        rng = random.Random(seed)
        prices = {s: round(rng.uniform(5, 900), 2) for s in symbols}
        ts = 1_733_500_000_000
        while True:
            ts += 250
            out = []
            for s in symbols:
                old = prices[s]
                new = prices[s] = max(0.01, round(old * (1 + rng.gauss(0, 0.001)), 2))
                out.append(
                    {
                        "symbol": s,
                        "last": new,
                        "change": round(new - old, 2),
                        "bid": round(new - 0.01, 2),
                        "ask": round(new + 0.01, 2),
                        "volume": rng.randint(1_000, 9_000_000),
                        "halted": False,
                    }
                )
            yield {"ts": ts, "instruments": out}

    return shapes


SHAPES: dict[str, Callable[[int], Iterator[Any]]] = {
    "ticker": _ticker,
    "book-25": _book(25),
    "book-120": _book(120),
    "market-40": _market(40),
    "market-70": _market(70),
}


def _payloads(shape: str, count: int, seed: int) -> list[bytes]:
    stream = SHAPES[shape](seed)
    return [events.message("tickers.demo", seq + 1, next(stream)) for seq in range(count)]


def _frame(payload: bytes, extensions: list[PerMessageDeflate]) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=extensions)


def _best(rounds: int, run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def _zlib_state_bytes(window_bits: int, level: int) -> int:
    """Memory a context-takeover compressor holds between messages (tracemalloc, raw domain)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ext = PerMessageDeflate(False, False, 15, window_bits, {"level": level})
        _frame(b'{"warm":"up"}', [ext])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del ext
    return held


def measure(shape: str, *, count: int, level: int, shared_bits: int, seed: int) -> dict[str, Any]:
    """Bytes per delivery and CPU per compressed message for one shape, every mode."""
    payloads = _payloads(shape, count, seed)
    settings = {"level": level}

    def once_ext() -> list[PerMessageDeflate]:
        return [PerMessageDeflate(True, True, 15, 15, settings)]

    plain = [_frame(p, []) for p in payloads]
    once = once_ext()
    once_frames = [_frame(p, once) for p in payloads]
    stream = [PerMessageDeflate(False, False, 15, 15, settings)]
    stream_frames = [_frame(p, stream) for p in payloads]
    shared = [PerMessageDeflate(False, False, 15, shared_bits, settings)]
    shared_frames = [_frame(p, shared) for p in payloads]

    # Every mode's frames must decode to the payloads (a receiver per mode).
    for frames, ext in (
        (once_frames, PerMessageDeflate(True, True, 15, 15)),
        (stream_frames, PerMessageDeflate(False, False, 15, 15)),
        (shared_frames, PerMessageDeflate(False, False, shared_bits, 15)),
    ):
        for frame_bytes, payload in zip(frames, payloads, strict=True):
            assert _decode(frame_bytes, ext) == payload

    def cpu(make: Callable[[], list[PerMessageDeflate]]) -> float:
        def run() -> None:
            ext = make()
            for p in payloads:
                _frame(p, ext)

        return _best(3, run) / count

    plain_bytes = sum(map(len, plain)) / count
    return {
        "shape": shape,
        "payload_bytes": sum(map(len, payloads)) / count,
        "plain": plain_bytes,
        "once": sum(map(len, once_frames)) / count,
        "per_connection": sum(map(len, stream_frames)) / count,
        "shared_context": sum(map(len, shared_frames)) / count,
        "cpu_plain_us": cpu(lambda: []) * 1e6,
        "cpu_once_us": cpu(once_ext) * 1e6,
        "cpu_per_connection_us": cpu(lambda: [PerMessageDeflate(False, False, 15, 15, settings)])
        * 1e6,
        "cpu_shared_us": cpu(lambda: [PerMessageDeflate(False, False, 15, shared_bits, settings)])
        * 1e6,
    }


def _decode(frame_bytes: bytes, ext: PerMessageDeflate) -> bytes:
    """The payload of one unmasked server frame (short or 16-bit length), through `ext`."""
    head = frame_bytes[1] & 0x7F
    offset = 2 if head < 126 else 4
    frame = Frame(
        Opcode(frame_bytes[0] & 0x0F),
        frame_bytes[offset:],
        rsv1=bool(frame_bytes[0] & 0x40),
    )
    return bytes(ext.decode(frame).data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.compression_bytes", description=__doc__
    )
    parser.add_argument("--count", type=int, default=400, help="messages per shape (400)")
    parser.add_argument("--level", type=int, default=6, help="zlib level (6)")
    parser.add_argument(
        "--shared-bits", type=int, default=10, help="shared-context window bits (10)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object per shape")
    args = parser.parse_args(argv)
    rows = [
        measure(s, count=args.count, level=args.level, shared_bits=args.shared_bits, seed=args.seed)
        for s in SHAPES
    ]
    if args.json:
        for row in rows:
            print(orjson.dumps(row).decode())
        return 0
    print(
        f"level {args.level}, {args.count} messages per shape; bytes on the wire per delivery "
        "(% of plain); CPU per message framed (µs, best of 3)"
    )
    print(
        f"{'shape':<10} {'payload':>8} {'plain':>7} {'once':>13} {'per-conn':>13} "
        f"{'shared 2^' + str(args.shared_bits):>13} | {'cpu plain':>9} {'once':>7} "
        f"{'per-conn':>8} {'shared':>7}"
    )
    for r in rows:
        p = r["plain"]
        print(
            f"{r['shape']:<10} {r['payload_bytes']:>8.0f} {p:>7.0f} "
            f"{r['once']:>7.0f} ({r['once'] / p:>3.0%}) "
            f"{r['per_connection']:>7.0f} ({r['per_connection'] / p:>3.0%}) "
            f"{r['shared_context']:>7.0f} ({r['shared_context'] / p:>3.0%}) | "
            f"{r['cpu_plain_us']:>9.2f} {r['cpu_once_us']:>7.2f} "
            f"{r['cpu_per_connection_us']:>8.2f} {r['cpu_shared_us']:>7.2f}"
        )
    for bits in (15, args.shared_bits):
        held = _zlib_state_bytes(bits, args.level)
        print(
            f"zlib compressor kept between messages (context takeover, 2^{bits} window): {held:,} B"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
