"""The `redis_pubsub` source: follow a Redis pub/sub channel (or pattern).

```toml
[sources.alerts]
kind = "redis_pubsub"
channel = "alerts"                  # the broadcaster channel to publish into
url = "redis://127.0.0.1:6379/0"
redis_channel = "alerts"            # SUBSCRIBE to this Redis channel ...
# redis_pattern = "alerts.*"        # ... or PSUBSCRIBE to a pattern (one of the two)
```

Each Redis message's payload is one JSON value, published as `data`; a
payload that is not strict JSON is skipped and counted in /stats. The
position is the number of Redis messages taken.

Pub/sub keeps nothing: messages sent while the source is disconnected are
gone, and while a `block` channel holds the source back, Redis buffers for it
only up to its `client-output-buffer-limit pubsub` and then drops the
connection (the source reconnects with backoff and the buffered messages are
lost). Use `redis_stream` when loss is unacceptable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson

from broadcaster.config import SourceConfig
from broadcaster.sources.base import SOURCE_KINDS, Publish, SourceOptionError
from broadcaster.sources.options import DEFAULT_REDIS_URL, Options

__all__ = ["RedisPubSubSource"]


class RedisPubSubSource:
    """Publishes the JSON payload of every message on a Redis channel or pattern."""

    def __init__(
        self,
        *,
        name: str,
        channel: str,
        url: str = DEFAULT_REDIS_URL,
        redis_channel: str | None = None,
        redis_pattern: str | None = None,
    ) -> None:
        if (redis_channel is None) == (redis_pattern is None):
            raise SourceOptionError("redis_channel", "exactly one of redis_channel, redis_pattern")
        self.name = name
        self.channel = channel
        self.url = url
        self.redis_channel = redis_channel
        self.redis_pattern = redis_pattern
        self.received = 0

    async def run(self, publish: Publish) -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(self.url, socket_connect_timeout=5.0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            if self.redis_pattern is not None:
                await pubsub.psubscribe(self.redis_pattern)
            else:
                await pubsub.subscribe(cast(str, self.redis_channel))
            async for message in pubsub.listen():
                await self._emit(publish, cast("dict[str, Any]", message))
        finally:
            # redis-py types aclose() only from 8.x on: call it through a typed alias
            # so mypy passes on every version pyproject.toml allows.
            close: Callable[[], Awaitable[None]] = pubsub.aclose
            await close()
            await client.aclose()

    async def _emit(self, publish: Publish, message: dict[str, Any]) -> None:
        if message.get("type") not in ("message", "pmessage"):
            return
        self.received += 1
        try:
            data = orjson.loads(message["data"])
        except orjson.JSONDecodeError as exc:
            name = message["channel"].decode(errors="replace")
            publish.skip(
                f"redis channel {name!r}: message is not strict JSON: {exc}",
                position=self.received,
            )
            return
        await publish(self.channel, data, position=self.received)


def _from_config(config: SourceConfig) -> RedisPubSubSource:
    options = Options(config.options)
    source = RedisPubSubSource(
        name=config.name,
        channel=config.channel,
        url=options.get_str("url", DEFAULT_REDIS_URL),
        redis_channel=options.get_str("redis_channel", None),
        redis_pattern=options.get_str("redis_pattern", None),
    )
    options.done()
    return source


SOURCE_KINDS["redis_pubsub"] = _from_config
