"""The `stdin` source: JSON lines from standard input.

`producer | broadcaster serve --source stdin:tickers.raw` fans a pipeline's
output out to WebSocket clients. Each non-blank line is one JSON value,
published as `data`; bad lines are skipped and counted in /stats. When
standard input ends the source is finished (the server keeps running).

Backpressure reaches the producer: while the channel blocks, the source does
not read, the loop stops reading the pipe once its bounded buffer is full,
and the producer's writes block. A failure (the broker refusing a publish)
restarts the source with the lines it had read but not published kept, so
nothing read from the pipe is lost.
"""

from __future__ import annotations

import asyncio
from collections import deque

from broadcaster.config import SourceConfig
from broadcaster.sources.base import SOURCE_KINDS, Publish
from broadcaster.sources.file import DEFAULT_MAX_LINE
from broadcaster.sources.lines import JsonLines, Line
from broadcaster.sources.options import Options
from broadcaster.sources.readers import ChunkReader, open_reader

__all__ = ["StdinSource"]


class StdinSource:
    """Publishes the JSON lines read from file descriptor `fd` (standard input by default)."""

    def __init__(
        self, *, name: str, channel: str, max_line: int = DEFAULT_MAX_LINE, fd: int = 0
    ) -> None:
        self.name = name
        self.channel = channel
        self.max_line = max_line
        self.fd = fd
        self.offset = 0
        """Bytes of input published (or skipped)."""
        self._reader: ChunkReader | None = None
        self._lines = JsonLines(max_line=max_line)
        self._pending: deque[Line] = deque()
        self._ended = False

    async def run(self, publish: Publish) -> None:
        if self._ended:
            return
        if self._reader is None:
            self._reader = await open_reader(self.fd)
        reader = self._reader
        try:
            while True:
                await self._publish_pending(publish)
                chunk = await reader.read()
                if not chunk:
                    self._pending.extend(self._lines.finish())
                    await self._publish_pending(publish)
                    self._ended = True
                    self._close()
                    return
                self._pending.extend(self._lines.feed(chunk))
        except asyncio.CancelledError:
            self._close()
            raise

    async def _publish_pending(self, publish: Publish) -> None:
        """Publish the lines read so far; one that fails stays first in line for the restart."""
        pending = self._pending
        while pending:
            line = pending[0]
            if line.error is None:
                await publish(self.channel, line.data, position=line.end)
            else:
                publish.skip(f"stdin: {line.error}", position=line.end)
            pending.popleft()
            self.offset = line.end

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _from_config(config: SourceConfig) -> StdinSource:
    options = Options(config.options)
    source = StdinSource(
        name=config.name,
        channel=config.channel,
        max_line=options.get_int("max_line", DEFAULT_MAX_LINE, minimum=64),
    )
    options.done()
    return source


SOURCE_KINDS["stdin"] = _from_config
