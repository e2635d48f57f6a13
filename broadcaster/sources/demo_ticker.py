"""The built-in demo ticker: random-walk prices for a few symbols at a fixed rate.

It exists so that the default run streams something real; it publishes
through the same path as any client, so it feels `block` and the strategies
exactly like a real feed would.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

from broadcaster.config import SourceConfig
from broadcaster.sources.base import SOURCE_KINDS, Publish

__all__ = ["DemoTicker"]

_START_PRICES = {"AAPL": 189.0, "MSFT": 415.0, "NVDA": 880.0, "GOOG": 152.0, "AMZN": 178.0}


class DemoTicker:
    """Publishes `{"symbol", "price", "change", "ts"}` round-robin over `symbols`, `rate`/s."""

    def __init__(
        self,
        *,
        name: str,
        channel: str,
        symbols: Sequence[str],
        rate: float,
        seed: int | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("symbols: expected a non-empty list of strings")
        if not rate > 0:
            raise ValueError(f"rate: expected messages per second > 0, got {rate}")
        self.name = name
        self.channel = channel
        self.symbols = list(symbols)
        self.rate = float(rate)
        self._random = random.Random(seed)
        self.prices = {s: _START_PRICES.get(s, 100.0) for s in self.symbols}

    def next_tick(self, symbol: str) -> dict[str, object]:
        """Move `symbol`'s price by a small random step and return the tick."""
        old = self.prices[symbol]
        new = max(0.01, round(old * (1 + self._random.gauss(0, 0.001)), 2))
        self.prices[symbol] = new
        return {
            "symbol": symbol,
            "price": new,
            "change": round(new - old, 2),
            "ts": int(time.time() * 1000),
        }

    async def run(self, publish: Publish) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        next_at = loop.time()
        i = 0
        while True:
            symbol = self.symbols[i % len(self.symbols)]
            i += 1
            await publish(self.channel, self.next_tick(symbol))
            next_at += interval
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                # Fell behind (a blocked channel, a busy loop): do not burst to catch up.
                next_at = loop.time()
                await asyncio.sleep(0)


def _from_config(config: SourceConfig) -> DemoTicker:
    options = dict(config.options)
    symbols = options.pop("symbols", ["AAPL", "MSFT", "NVDA"])
    rate = options.pop("rate", 20)
    seed = options.pop("seed", None)
    if options:
        raise ValueError(f"unknown keys {sorted(options)}; expected symbols, rate, seed")
    if not isinstance(symbols, list) or not all(isinstance(s, str) and s for s in symbols):
        raise ValueError("symbols: expected a list of non-empty strings")
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError(f"rate: expected messages per second (a number), got {rate!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    return DemoTicker(
        name=config.name, channel=config.channel, symbols=symbols, rate=rate, seed=seed
    )


SOURCE_KINDS["demo_ticker"] = _from_config
