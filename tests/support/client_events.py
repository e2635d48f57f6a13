"""The Python client in tests: quick reconnects, recorded events, bounded waits (no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from broadcaster.client import Client, Message, Subscription, connect

__all__ = ["Recorder", "quick_client", "take"]

EVENTS = (
    "connected",
    "disconnected",
    "reconnecting",
    "subscribed",
    "pause",
    "resume",
    "gap",
    "reset",
)


class Recorder:
    """Every event of `client`, by name, in order; `wait` for one that matches."""

    def __init__(self, client: Client) -> None:
        self.seen: dict[str, list[Any]] = {name: [] for name in EVENTS}
        self._changed = asyncio.Event()
        for name in EVENTS:
            client.on(name, self._recorder(name))  # type: ignore[call-overload]

    def _recorder(self, name: str) -> Callable[[Any], None]:
        def record(payload: Any) -> None:
            self.seen[name].append(payload)
            self._changed.set()

        return record

    def __getitem__(self, name: str) -> list[Any]:
        return self.seen[name]

    async def until(
        self, condition: Callable[[], bool], *, timeout: float = 10.0, what: str = ""
    ) -> None:
        """Wait until `condition()` holds, re-checked whenever an event arrives."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting for {what or condition}: {self.seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue

    async def wait(
        self,
        name: str,
        predicate: Callable[[Any], bool] = lambda _: True,
        *,
        after: int = 0,
        timeout: float = 10.0,
    ) -> Any:
        """The first `name` event from index `after` on for which `predicate` holds."""
        found: list[Any] = []

        def match() -> bool:
            found[:] = [e for e in self.seen[name][after:] if predicate(e)][:1]
            return bool(found)

        await self.until(match, timeout=timeout, what=f"event {name!r}")
        return found[0]


async def take(sub: Subscription, count: int, timeout: float = 10.0) -> list[Message]:
    """The next `count` messages of `sub`."""
    return [await asyncio.wait_for(sub.get(), timeout) for _ in range(count)]


def quick_client(url: str, **options: Any) -> Client:
    """A client that retries within a tenth of a second and pings only when asked to."""
    settings: dict[str, Any] = {"min_delay": 0.01, "max_delay": 0.1, "ping_interval": 0}
    settings.update(options)
    return connect(url, **settings)
