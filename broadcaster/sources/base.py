"""The source interface, the registry of source kinds, and the supervisor that runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from broadcaster.config import SourceConfig
from broadcaster.errors import ConfigError

__all__ = ["SOURCE_KINDS", "Publish", "Source", "SourceRunner", "SourceState", "build_source"]

Publish = Callable[[str, Any], Awaitable[int]]

logger = logging.getLogger("broadcaster.sources")


class Source(Protocol):
    """A feed of messages for one channel."""

    name: str
    channel: str

    async def run(self, publish: Publish) -> None:
        """Publish messages until cancelled; raising makes the runner restart it."""
        ...


SourceFactory = Callable[[SourceConfig], Source]
SOURCE_KINDS: dict[str, SourceFactory] = {}


def build_source(config: SourceConfig, origin: str) -> Source:
    """Build the source a `[sources.NAME]` table describes, or raise ConfigError."""
    # Import the built-in kinds so they register themselves.
    from broadcaster.sources import demo_ticker  # noqa: F401

    factory = SOURCE_KINDS.get(config.kind)
    if factory is None:
        raise ConfigError(
            origin,
            f"[sources.{config.name}] kind",
            f"one of {', '.join(sorted(SOURCE_KINDS))}",
            config.kind,
        )
    try:
        return factory(config)
    except ValueError as exc:
        raise ConfigError(origin, f"[sources.{config.name}]", str(exc)) from None


@dataclass(slots=True)
class SourceState:
    """What /stats shows of a running source."""

    name: str
    kind: str
    channel: str
    state: str = "starting"
    restarts: int = 0
    last_error: str | None = None


class SourceRunner:
    """Runs sources as tasks; restarts a failed one after 0.5 s, doubling to 30 s."""

    def __init__(
        self, publish: Publish, *, initial_backoff: float = 0.5, max_backoff: float = 30.0
    ) -> None:
        self._publish = publish
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._tasks: list[asyncio.Task[None]] = []
        self.states: list[SourceState] = []

    def start(self, source: Source, kind: str) -> None:
        state = SourceState(source.name, kind, source.channel)
        self.states.append(state)
        task = asyncio.get_running_loop().create_task(
            self._supervise(source, state), name=f"source:{source.name}"
        )
        self._tasks.append(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for state in self.states:
            state.state = "stopped"

    async def _supervise(self, source: Source, state: SourceState) -> None:
        backoff = self._initial_backoff
        while True:
            state.state = "running"
            try:
                await source.run(self._publish)
                state.state = "finished"
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.restarts += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                state.state = "backoff"
                logger.warning(
                    "source %s failed (%s); restarting in %.1f s", source.name, exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
