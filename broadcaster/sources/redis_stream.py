"""The `redis_stream` source: follow an existing Redis stream with XREAD.

```toml
[sources.prices]
kind = "redis_stream"
channel = "prices"                  # the broadcaster channel to publish into
url = "redis://127.0.0.1:6379/0"
stream = "prices"                   # the Redis stream key to follow
field = "data"                      # the entry field holding the message as JSON
start = "$"                         # "$": new entries only; "0": all retained; or an entry id
```

An existing pipeline that XADDs into a stream reaches browsers with only this
section. Entries are read in batches of `count` with a blocking XREAD and
published one by one, in stream order; the position is the id of the last
entry published. The source never asks for more entries while its channel
blocks, so the stream position does not advance until room returns (a stream
keeps the entries; nothing is lost). After a failure (Redis restarting) the
source resumes after the last entry it published: no loss, no duplicate.
An entry without the field, or whose field is not strict JSON, is skipped
and counted in /stats.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

import orjson

from broadcaster.config import SourceConfig
from broadcaster.sources.base import SOURCE_KINDS, Publish, SourceOptionError
from broadcaster.sources.options import DEFAULT_REDIS_URL, Options

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStreamSource"]

_ENTRY_ID = re.compile(r"\d+(-\d+)?")


class RedisStreamSource:
    """Publishes the JSON in `field` of every new entry of Redis stream `stream`."""

    def __init__(
        self,
        *,
        name: str,
        channel: str,
        stream: str,
        url: str = DEFAULT_REDIS_URL,
        field: str = "data",
        start: str = "$",
        count: int = 100,
        block: float = 5.0,
    ) -> None:
        self.name = name
        self.channel = channel
        self.stream = stream
        self.url = url
        self.field = field
        self.start = start
        self.count = count
        self.block = block
        self.last_id: str | None = None
        """Id of the last entry published or skipped: where XREAD continues."""

    async def run(self, publish: Publish) -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(
            self.url,
            socket_connect_timeout=5.0,
            # A blocking XREAD answers within `block`; a longer silence is a dead peer.
            socket_timeout=self.block + 10.0,
        )
        try:
            if self.last_id is None:
                self.last_id = await self._resolve_start(client)
            field = self.field.encode()
            while True:
                reply = await cast(
                    "Any",
                    client.xread(
                        {self.stream: self.last_id},
                        count=self.count,
                        block=int(self.block * 1000),
                    ),
                )
                for _key, entries in reply or ():
                    for raw_id, fields in entries:
                        entry_id = raw_id.decode()
                        await self._emit(publish, entry_id, fields.get(field))
                        self.last_id = entry_id
        finally:
            await client.aclose()

    async def _resolve_start(self, client: Redis) -> str:
        """`$` as a concrete id, so entries added between two XREADs are never missed."""
        if self.start != "$":
            return self.start
        newest = await cast("Any", client.xrevrange(self.stream, count=1))
        return newest[0][0].decode() if newest else "0-0"

    async def _emit(self, publish: Publish, entry_id: str, raw: bytes | None) -> None:
        if raw is None:
            publish.skip(
                f"stream {self.stream!r} entry {entry_id} has no field {self.field!r}",
                position=entry_id,
            )
            return
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            publish.skip(
                f"stream {self.stream!r} entry {entry_id}: field {self.field!r} is not "
                f"strict JSON: {exc}",
                position=entry_id,
            )
            return
        await publish(self.channel, data, position=entry_id)


def _from_config(config: SourceConfig) -> RedisStreamSource:
    options = Options(config.options)
    start = options.get_str("start", "$")
    if start != "$" and not _ENTRY_ID.fullmatch(start):
        raise SourceOptionError(
            "start", '"$", "0" or a stream entry id such as "1700000000000-0"', start
        )
    source = RedisStreamSource(
        name=config.name,
        channel=config.channel,
        stream=options.get_str("stream"),
        url=options.get_str("url", DEFAULT_REDIS_URL),
        field=options.get_str("field", "data"),
        start=start,
        count=options.get_int("count", 100, minimum=1),
        block=options.get_seconds("block", 5.0),
    )
    options.done()
    return source


SOURCE_KINDS["redis_stream"] = _from_config
