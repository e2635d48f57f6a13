"""The source interface, the registry of source kinds, and the supervisor that runs them.

A source reads some input (a Redis stream, a file, stdin, a simulation) and
publishes each item into its channel through the `Publish` it is given. The
runner supervises it: a source that raises is restarted with exponential
backoff, one that returns is finished, and /stats shows each one's state,
restarts, last error, messages published and input position.

Backpressure reaches the input: `publish` awaits room on a `block` channel,
and a source reads its next item only after the previous publish returned,
so a blocked channel stops its source from reading (the source's state is
`blocked` meanwhile and its position does not advance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from broadcaster.config import SourceConfig
from broadcaster.core.channel import Channel
from broadcaster.errors import ConfigError

__all__ = [
    "SOURCE_KINDS",
    "Position",
    "Publish",
    "ServerPublish",
    "Source",
    "SourceOptionError",
    "SourceRunner",
    "SourceState",
    "build_source",
]

logger = logging.getLogger("broadcaster.sources")

Position = int | str | None
"""How far a source has got in its input: a byte offset, a stream entry id, ..."""


class Publish(Protocol):
    """What a source publishes through; it also reports progress for /stats."""

    async def __call__(self, channel: str, data: Any, *, position: Position = None) -> int:
        """Publish `data`; returns its seq once published (waits while a block channel is full).

        `position` is where the input stands once this item is published.
        """
        ...

    def skip(self, reason: str, *, position: Position = None) -> None:
        """Report an input item that could not be published (bad JSON, missing field)."""
        ...


class Source(Protocol):
    """A feed of messages for one channel."""

    name: str
    channel: str

    async def run(self, publish: Publish) -> None:
        """Publish until the input ends (return) or cancelled; raising makes the runner restart it.

        The runner calls `run` again on the same object after a failure, so a
        source that remembers its position resumes where it stopped.
        """
        ...


class BlockSignals(Protocol):
    """Told when a publish starts and stops waiting for room (server.app.BlockedPublisher)."""

    def channel_blocked(self, channel: Channel) -> None: ...

    def channel_unblocked(self, channel: Channel) -> None: ...


class ServerPublish(Protocol):
    """The server's publish (`Broadcaster.publish`), as the runner calls it."""

    def __call__(
        self, channel: str, data: Any, *, publisher: BlockSignals | None = None
    ) -> Awaitable[int]: ...


class SourceOptionError(ValueError):
    """A `[sources.NAME]` option is wrong: which key, and what was expected."""

    def __init__(self, key: str, expected: str, got: object = None) -> None:
        super().__init__(f"{key}: expected {expected}")
        self.key = key
        self.expected = expected
        self.got = got


SourceFactory = Callable[[SourceConfig], Source]
SOURCE_KINDS: dict[str, SourceFactory] = {}


def build_source(config: SourceConfig, origin: str) -> Source:
    """Build the source a `[sources.NAME]` table describes, or raise ConfigError."""
    # Import the built-in kinds so they register themselves.
    from broadcaster.sources import (  # noqa: F401
        demo_ticker,
        file,
        redis_pubsub,
        redis_stream,
        stdin,
    )

    section = f"[sources.{config.name}]"
    factory = SOURCE_KINDS.get(config.kind)
    if factory is None:
        raise ConfigError(
            origin, f"{section} kind", f"one of {', '.join(sorted(SOURCE_KINDS))}", config.kind
        )
    try:
        return factory(config)
    except SourceOptionError as exc:
        raise ConfigError(origin, f"{section} {exc.key}", exc.expected, exc.got) from None
    except ValueError as exc:
        raise ConfigError(origin, section, str(exc)) from None


@dataclass(slots=True)
class SourceState:
    """What /stats shows of a source.

    `state`: starting, running, blocked (its publish waits for room on a
    block channel, so it is not reading), backoff (failed; restarting),
    finished (its input ended) or stopped.
    """

    name: str
    kind: str
    channel: str
    state: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    published: int = 0
    position: int | str | None = None
    skipped: int = 0
    last_skipped: str | None = None


# Log the first skipped item, then one in this many, so a bad file cannot flood the log.
SKIP_LOG_EVERY = 1000


class _SourcePublish:
    """One source's `Publish`: the server's publish plus its /stats bookkeeping."""

    def __init__(self, publish: ServerPublish, state: SourceState) -> None:
        self._publish = publish
        self.state = state

    async def __call__(self, channel: str, data: Any, *, position: Position = None) -> int:
        seq = await self._publish(channel, data, publisher=self)
        state = self.state
        state.published += 1
        if position is not None:
            state.position = position
        return seq

    def skip(self, reason: str, *, position: Position = None) -> None:
        state = self.state
        state.skipped += 1
        state.last_skipped = reason
        if position is not None:
            state.position = position
        if state.skipped % SKIP_LOG_EVERY == 1:
            logger.warning(
                "source %s skipped an item (%d so far): %s", state.name, state.skipped, reason
            )

    def channel_blocked(self, channel: Channel) -> None:
        self.state.state = "blocked"

    def channel_unblocked(self, channel: Channel) -> None:
        if self.state.state == "blocked":
            self.state.state = "running"


class SourceRunner:
    """Runs sources as tasks; restarts a failed one after 0.5 s, doubling to 30 s.

    The backoff starts again from `initial_backoff` once a restarted source
    has published something: a source that failed once an hour should not
    wait 30 s.
    """

    def __init__(
        self, publish: ServerPublish, *, initial_backoff: float = 0.5, max_backoff: float = 30.0
    ) -> None:
        self._publish = publish
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._tasks: list[asyncio.Task[None]] = []
        self.states: list[SourceState] = []

    def start(self, source: Source, kind: str) -> SourceState:
        state = SourceState(source.name, kind, source.channel)
        self.states.append(state)
        task = asyncio.get_running_loop().create_task(
            self._supervise(source, state), name=f"source:{source.name}"
        )
        self._tasks.append(task)
        return state

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
        publish = _SourcePublish(self._publish, state)
        while True:
            state.state = "running"
            published_before = state.published
            try:
                await source.run(publish)
                state.state = "finished"
                logger.info("source %s finished: its input ended", source.name)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if state.published > published_before:
                    backoff = self._initial_backoff
                state.restarts += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                state.state = "backoff"
                logger.warning(
                    "source %s failed (%s); restarting in %.1f s", source.name, exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
