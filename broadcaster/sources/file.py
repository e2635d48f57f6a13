"""The `file` source: JSON lines from a file, optionally followed as it grows (like `tail -F`).

```toml
[sources.prices]
kind = "file"
channel = "prices"
path = "/var/log/prices.jsonl"
follow = true            # keep reading lines appended later (default false: stop at the end)
start = "beginning"      # or "end": only lines appended after the server started
```

Each non-blank line is one JSON value, published as the message's `data`;
a line that is not strict JSON (or longer than `max_line` bytes) is skipped
and counted in /stats. The source's position is the byte offset just past
the last line published: after a failure it resumes there, and while its
channel blocks it stops reading (read-ahead is at most one 64 KiB chunk).
Following notices a truncated file (starts again from its beginning) and a
replaced one (finishes the old file, then reads the new one from the start).
"""

from __future__ import annotations

import asyncio
import os
import stat

from broadcaster.config import SourceConfig
from broadcaster.sources.base import SOURCE_KINDS, Publish
from broadcaster.sources.lines import JsonLines, Line
from broadcaster.sources.options import Options
from broadcaster.sources.readers import FileReader

__all__ = ["FileSource", "NotARegularFile"]

DEFAULT_MAX_LINE = 1_048_576


class NotARegularFile(OSError):
    """The path names a pipe, a directory or a device: the file source reads regular files."""


class FileSource:
    """Publishes the JSON lines of `path` to `channel`."""

    def __init__(
        self,
        *,
        name: str,
        channel: str,
        path: str,
        follow: bool = False,
        start: str = "beginning",
        poll_interval: float = 0.25,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self.name = name
        self.channel = channel
        self.path = path
        self.follow = follow
        self.start = start
        self.poll_interval = poll_interval
        self.max_line = max_line
        self.offset = 0
        """Bytes of the file published (or skipped): where a restart resumes."""
        self.line_number = 0
        self._identity: tuple[int, int] | None = None
        """(device, inode) of the file being read; None before the first open."""
        self._opened = False

    async def run(self, publish: Publish) -> None:
        while True:
            reader, lines = self._open()
            try:
                if not await self._read(reader, lines, publish):
                    return
            finally:
                reader.close()

    def _open(self) -> tuple[FileReader, JsonLines]:
        """Open the file at the position to resume from."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotARegularFile(
                    f"{self.path} is not a regular file (use the stdin source for pipes)"
                )
            identity = (info.st_dev, info.st_ino)
            if identity != self._identity:
                first = not self._opened
                self.offset = info.st_size if first and self.start == "end" else 0
                self.line_number = 0
                self._identity = identity
                self._opened = True
            elif info.st_size < self.offset:  # truncated while we were not looking
                self.offset = self.line_number = 0
            reader = FileReader(fd, self.offset)
        except BaseException:
            os.close(fd)
            raise
        return reader, JsonLines(
            max_line=self.max_line, offset=self.offset, line_number=self.line_number
        )

    async def _read(self, reader: FileReader, lines: JsonLines, publish: Publish) -> bool:
        """Publish the file's lines; True when the path now names another file to read."""
        while True:
            chunk = await reader.read()
            if chunk:
                for line in lines.feed(chunk):
                    await self._emit(publish, line)
                continue
            if not self.follow:
                for line in lines.finish():
                    await self._emit(publish, line)
                return False
            change = await self._wait_for_change(reader)
            if change == "truncated":
                reader.seek(0)
                self.offset = self.line_number = 0
                lines = JsonLines(max_line=self.max_line)
            elif change == "replaced":
                # The writer moved on to a new file: this one is complete.
                for line in lines.finish():
                    await self._emit(publish, line)
                self._identity = None  # so the next open starts the new file at 0
                return True

    async def _wait_for_change(self, reader: FileReader) -> str:
        """At the end of the file: wait until it grows, is truncated or is replaced."""
        while True:
            await asyncio.sleep(self.poll_interval)
            size = os.fstat(reader.fd).st_size
            if size > reader.offset:
                return "grown"
            if size < reader.offset:
                return "truncated"
            try:
                info = os.stat(self.path)
            except FileNotFoundError:
                continue  # rotated away, the new file not created yet
            if (info.st_dev, info.st_ino) != self._identity:
                return "replaced"

    async def _emit(self, publish: Publish, line: Line) -> None:
        if line.error is None:
            await publish(self.channel, line.data, position=line.end)
        else:
            publish.skip(f"{self.path}: {line.error}", position=line.end)
        self.offset = line.end
        self.line_number = line.number


def _from_config(config: SourceConfig) -> FileSource:
    options = Options(config.options)
    source = FileSource(
        name=config.name,
        channel=config.channel,
        path=options.get_str("path"),
        follow=options.get_bool("follow", False),
        start=options.get_choice("start", "beginning", ("beginning", "end")),
        poll_interval=options.get_seconds("poll_interval", 0.25),
        max_line=options.get_int("max_line", DEFAULT_MAX_LINE, minimum=64),
    )
    options.done()
    return source


SOURCE_KINDS["file"] = _from_config
