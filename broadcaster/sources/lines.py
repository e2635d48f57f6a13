"""JSON lines: a byte stream cut into lines, each parsed as one JSON value.

Pure (no I/O): the file and stdin sources feed it the chunks they read and
publish what comes out. Each line carries the byte offset just past it, so a
source knows exactly how far its input has been published and can resume
there. A line longer than `max_line` is skipped without being held in memory
(the bytes up to its newline are discarded as they arrive).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["JsonLines", "Line"]


@dataclass(frozen=True, slots=True)
class Line:
    """One non-blank input line: its number, the offset past it, its value or what is wrong."""

    number: int
    end: int
    data: Any = None
    error: str | None = None


class JsonLines:
    """Splits bytes into lines and parses each; blank lines are passed over."""

    def __init__(self, *, max_line: int, offset: int = 0, line_number: int = 0) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._start = offset  # input offset of the first byte in the buffer
        self._number = line_number
        self._discarding = False  # inside a line that was too long

    @property
    def buffered(self) -> int:
        """Bytes read but not yet part of a complete line."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[Line]:
        """The complete lines that `chunk` finishes, in order."""
        lines: list[Line] = []
        buffer = self._buffer
        buffer += chunk
        begin = 0
        while True:
            newline = buffer.find(b"\n", begin)
            if newline < 0:
                break
            end = newline + 1
            if self._discarding:
                self._discarding = False
            else:
                self._number += 1
                line = self._line(bytes(buffer[begin:newline]), self._start + end)
                if line is not None:
                    lines.append(line)
            begin = end
        del buffer[:begin]
        self._start += begin
        if not self._discarding and len(buffer) > self.max_line:
            self._number += 1
            lines.append(
                Line(
                    self._number,
                    self._start + len(buffer),
                    error=f"line {self._number} is longer than {self.max_line} bytes",
                )
            )
            self._discarding = True
        if self._discarding:
            self._start += len(buffer)
            buffer.clear()
        return lines

    def finish(self) -> list[Line]:
        """At the end of the input: the last line, if it had no newline."""
        if self._discarding or not self._buffer:
            self._discarding = False
            return []
        text = bytes(self._buffer)
        self._start += len(self._buffer)
        self._buffer.clear()
        self._number += 1
        line = self._line(text, self._start)
        return [] if line is None else [line]

    def _line(self, text: bytes, end: int) -> Line | None:
        if not text.strip():
            return None
        try:
            return Line(self._number, end, data=orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            return Line(self._number, end, error=f"line {self._number} is not strict JSON: {exc}")
