"""Typed reading of a `[sources.NAME]` table's options, with errors that name the key.

Each source kind takes what it knows with `Options.get_*` and finishes with
`done()`, which refuses keys nobody took (a typo must not be silently
ignored). Errors are `SourceOptionError(key, expected, got)`, which
`build_source` turns into a `ConfigError` naming the file, the section and
the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broadcaster.sources.base import SourceOptionError

__all__ = ["DEFAULT_REDIS_URL", "Options"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_MISSING: Any = object()


class Options:
    """The options left to read from one source table."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._left = dict(options)
        self._taken: list[str] = []

    def _take(self, key: str, default: Any) -> Any:
        self._taken.append(key)
        if key in self._left:
            return self._left.pop(key)
        if default is _MISSING:
            raise SourceOptionError(key, "a value (this key is required)")
        return default

    def get_str(self, key: str, default: Any = _MISSING, *, empty: bool = False) -> Any:
        value = self._take(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or (not empty and not value):
            raise SourceOptionError(key, "a non-empty string", value)
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._take(key, default)
        if not isinstance(value, bool):
            raise SourceOptionError(key, "true or false", value)
        return value

    def get_int(self, key: str, default: int, *, minimum: int) -> int:
        value = self._take(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SourceOptionError(key, f"an integer >= {minimum}", value)
        return value

    def get_seconds(self, key: str, default: float) -> float:
        value = self._take(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise SourceOptionError(key, "seconds > 0", value)
        return float(value)

    def get_choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._take(key, default)
        if value not in choices:
            raise SourceOptionError(key, " | ".join(f'"{c}"' for c in choices), value)
        assert isinstance(value, str)
        return value

    def done(self) -> None:
        """Refuse options that no one read: a typo must not pass unnoticed."""
        if self._left:
            unknown = sorted(self._left)[0]
            raise SourceOptionError(
                unknown, f"one of the keys this kind knows: {', '.join(self._taken)}"
            )
