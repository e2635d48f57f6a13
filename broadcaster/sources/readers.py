"""Reading bytes from a file descriptor without blocking the event loop.

Two ways, chosen by what the descriptor is:

- a regular file is read in a worker thread, a chunk at a time (a read from
  disk always returns, so a thread never hangs at shutdown);
- a pipe, socket or terminal goes through the loop's `connect_read_pipe`
  (a thread blocked on an idle pipe could never be interrupted). The
  stream's buffer is bounded: while the source does not read (a blocked
  channel), the loop stops reading the pipe and the writer upstream blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from typing import Protocol

__all__ = ["CHUNK", "ChunkReader", "FileReader", "PipeReader", "open_reader"]

CHUNK = 64 * 1024


class ChunkReader(Protocol):
    async def read(self) -> bytes:
        """The next bytes (at most CHUNK); b"" at the end of the input."""
        ...

    def close(self) -> None: ...


class FileReader:
    """A regular file read in a worker thread, from `offset` on (None: where it stands)."""

    def __init__(self, fd: int, offset: int | None = None) -> None:
        self.fd = fd
        self._inflight: asyncio.Future[bytes] | None = None
        if offset is None:
            self.offset = os.lseek(fd, 0, os.SEEK_CUR)
        else:
            self.offset = os.lseek(fd, offset, os.SEEK_SET)

    async def read(self) -> bytes:
        loop = asyncio.get_running_loop()
        self._inflight = loop.run_in_executor(None, os.read, self.fd, CHUNK)
        # Shielded: if this task is cancelled, the thread's read still runs to its
        # end, and `close` must not free the descriptor under it (a reused number
        # would make it read someone else's file or socket).
        chunk = await asyncio.shield(self._inflight)
        self.offset += len(chunk)
        return chunk

    def seek(self, offset: int) -> None:
        os.lseek(self.fd, offset, os.SEEK_SET)
        self.offset = offset

    def close(self) -> None:
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            inflight.add_done_callback(self._close_after_read)
        else:
            self._close_fd()

    def _close_after_read(self, read: asyncio.Future[bytes]) -> None:
        if not read.cancelled():
            read.exception()  # retrieved: the read's outcome no longer matters
        self._close_fd()

    def _close_fd(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class PipeReader:
    """A pipe, socket or terminal read through the event loop (a dup of the descriptor)."""

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.ReadTransport, fd: int):
        self._reader = reader
        self._transport = transport
        self._fd = fd

    @classmethod
    async def open(cls, fd: int) -> PipeReader:
        loop = asyncio.get_running_loop()
        own = os.dup(fd)
        pipe = os.fdopen(own, "rb", buffering=0)
        reader = asyncio.StreamReader(limit=CHUNK)
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
        except BaseException:
            pipe.close()
            raise
        return cls(reader, transport, own)

    async def read(self) -> bytes:
        return await self._reader.read(CHUNK)

    def close(self) -> None:
        # The loop made the descriptor non-blocking; a dup shares that flag with
        # the original, so restore it (a terminal left non-blocking breaks the shell).
        with contextlib.suppress(OSError):
            os.set_blocking(self._fd, True)
        self._transport.close()


async def open_reader(fd: int) -> ChunkReader:
    """A reader for `fd`: a thread for a regular file, the loop for anything else.

    The reader owns `fd` only for regular files; for pipes it reads a dup.
    """
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return FileReader(os.dup(fd))
    return await PipeReader.open(fd)
