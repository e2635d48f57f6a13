"""A worker's side of the one-server view: what it answers, and what it serves merged.

Every worker registers `answer` with its bus link (`BusLink.on_gather`):
asked for "stats?top=..&sort=..&channels=.." it returns its own /stats
document (plus its pid and restart count), asked for "metrics" its own
Prometheus exposition. The worker that serves a request for /stats,
/metrics or /healthz (the kernel picked it) gathers every worker's answer
over the bus and merges them with the pure functions of workers/view.py;
the dashboard's `$sys.stats` is fed the same merged document.
"""

from __future__ import annotations

import asyncio
import http
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import orjson

from broadcaster.server.stats import SORT_KEYS, StatsQueryError, build_stats
from broadcaster.workers.view import down_workers, merge_metrics, merge_stats

if TYPE_CHECKING:
    from websockets.http11 import Response

    from broadcaster.core.channel import Channel
    from broadcaster.server.app import Broadcaster
    from broadcaster.workers.identity import WorkerIdentity
    from broadcaster.workers.link import BusLink

__all__ = ["GATHER_TIMEOUT", "WorkerView"]

logger = logging.getLogger("broadcaster.workers")

GATHER_TIMEOUT = 1.0
"""Seconds a worker has to answer; a slower one is shown as not answering (`up: false`)."""


class WorkerView:
    """One worker's answers to the others, and the merged endpoints it serves."""

    def __init__(self, app: Broadcaster, link: BusLink, identity: WorkerIdentity) -> None:
        self.app = app
        self.link = link
        self.identity = identity
        self.restarts = 0
        """How many times the supervisor restarted this worker (set by workers/worker.py)."""
        self._stats_task: asyncio.Task[None] | None = None
        link.on_gather(self.answer)

    # --- what this worker answers ------------------------------------------------

    async def answer(self, what: str) -> bytes:
        """This worker's own snapshot for `what` ("stats?..." or "metrics")."""
        name, _, query = what.partition("?")
        if name == "stats":
            params = parse_qs(query)
            top = params.get("top", [None])[-1]
            channels = params.get("channels", [None])[-1]
            document = build_stats(
                self.app,
                top=int(top) if top is not None else None,
                sort=params.get("sort", ["depth"])[-1],
                max_channels=int(channels) if channels is not None else None,
            )
            document["worker"] = {
                "index": self.identity.index,
                "pid": os.getpid(),
                "restarts": self.restarts,
            }
            return orjson.dumps(document)
        if name == "metrics":
            # The count lives in the supervisor's memory, handed to each new
            # worker process; the merge labels it with `worker` like every sample.
            restarts = (
                "# HELP broadcaster_worker_restarts_total "
                "Times the supervisor restarted this worker after it died.\n"
                "# TYPE broadcaster_worker_restarts_total counter\n"
                f"broadcaster_worker_restarts_total {self.restarts}\n"
            )
            return self.app.metrics.render() + restarts.encode()
        raise ValueError(f"unknown gather request {what!r}")

    # --- the merged view -----------------------------------------------------------

    async def stats(
        self, *, top: int | None = None, sort: str = "depth", max_channels: int | None = None
    ) -> dict[str, Any]:
        """The whole server's /stats document (raises StatsQueryError for a bad query)."""
        if top is not None and top < 0:
            raise StatsQueryError(f"top must be an integer >= 0, got {top}")
        if max_channels is not None and max_channels < 0:
            raise StatsQueryError(f"channels must be an integer >= 0, got {max_channels}")
        query: dict[str, Any] = {"sort": sort}
        if top is not None:
            query["top"] = top
        if max_channels is not None:
            query["channels"] = max_channels
        if sort not in SORT_KEYS:
            raise StatsQueryError(f"sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
        answers = await self.link.gather(f"stats?{urlencode(query)}", GATHER_TIMEOUT)
        docs: dict[int, dict[str, Any] | None] = {}
        for index, body in answers.items():
            docs[index] = _json(body)
        if docs.get(self.identity.index) is None:
            # The bus could not reach this worker itself: answer with what it knows.
            docs[self.identity.index] = orjson.loads(await self.answer(f"stats?{urlencode(query)}"))
        return merge_stats(
            docs, count=self.identity.count, top=top, sort=sort, max_channels=max_channels
        )

    async def metrics(self) -> bytes:
        answers = await self.link.gather("metrics", GATHER_TIMEOUT)
        if answers.get(self.identity.index) is None:
            answers = {**answers, self.identity.index: self.app.metrics.render()}
        return merge_metrics(answers, count=self.identity.count)

    def down(self) -> list[int]:
        """Workers that are not connected to the bus right now."""
        return down_workers(self.identity.count, self.link.workers_up())

    # --- the endpoints ---------------------------------------------------------------

    def route(self, path: str) -> Callable[[dict[str, list[str]]], Awaitable[Response]] | None:
        """The merged handler for `path` (None: the path is served as by one process)."""
        return {"/stats": self._stats_page, "/metrics": self._metrics_page}.get(path)

    async def _stats_page(self, query: dict[str, list[str]]) -> Response:
        from broadcaster.server.http import StatsQuery, json_response, stats_query

        asked = stats_query(query)
        if not isinstance(asked, StatsQuery):
            return asked
        try:
            document = await self.stats(
                top=asked.top, sort=asked.sort, max_channels=asked.max_channels
            )
        except StatsQueryError as exc:
            return json_response(
                http.HTTPStatus.BAD_REQUEST, {"error": "invalid_query", "message": str(exc)}
            )
        return json_response(http.HTTPStatus.OK, document)

    async def _metrics_page(self, query: dict[str, list[str]]) -> Response:
        from broadcaster.metrics import CONTENT_TYPE
        from broadcaster.server.http import respond

        return respond(http.HTTPStatus.OK, await self.metrics(), CONTENT_TYPE)

    # --- $sys.stats -------------------------------------------------------------------

    def publish_stats(self, channel: Channel, *, top: int, max_channels: int) -> None:
        """Publish the merged document on this worker's `$sys.stats` (one gather at a time).

        Called from the monitor's tick, which cannot wait: the gather runs as
        a task, and a tick that finds the previous one still running skips.
        """
        if self._stats_task is not None and not self._stats_task.done():
            return
        self._stats_task = asyncio.get_running_loop().create_task(
            self._publish_stats(channel, top, max_channels)
        )

    async def _publish_stats(self, channel: Channel, top: int, max_channels: int) -> None:
        from broadcaster.server.system import publish_local

        try:
            document = await self.stats(top=top, sort="depth", max_channels=max_channels)
        except Exception:
            logger.exception("worker %d: merging $sys.stats failed", self.identity.index)
            return
        if channel.subscriptions:
            publish_local(self.app.factory, channel, document)

    async def stop(self) -> None:
        task, self._stats_task = self._stats_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _json(body: bytes | None) -> dict[str, Any] | None:
    if body is None:
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None
