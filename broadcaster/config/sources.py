"""`[sources.NAME]` tables and `--source` flags: feeds that publish into a channel.

Only `kind` and `channel` are checked here; every other key is an option of
the source kind, checked by that kind (`broadcaster.sources`) when it is built,
so a new kind needs no change to the config package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broadcaster.errors import ConfigError

__all__ = ["SourceConfig", "source_from_flag", "source_table"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceConfig:
    """One `[sources.NAME]` table: a feed that publishes into a channel."""

    name: str
    kind: str
    channel: str
    options: Mapping[str, Any] = field(default_factory=dict)


def source_table(source: str, name: str, table: Any) -> SourceConfig:
    """The `[sources.NAME]` table `table`: `kind` defaults to NAME, `channel` is required."""
    section = f"[sources.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(source, section, "a table", table)
    options = dict(table)
    kind = options.pop("kind", name)
    if not isinstance(kind, str):
        raise ConfigError(source, f"{section} kind", "a string", kind)
    channel = options.pop("channel", None)
    if not isinstance(channel, str) or not channel:
        raise ConfigError(source, f"{section} channel", "a channel name (string)", channel)
    return SourceConfig(name=name, kind=kind, channel=channel, options=options)


def source_from_flag(text: str, *, index: int = 0) -> SourceConfig:
    """A source from `--source KIND:...`: `stdin:CHANNEL`, `file:PATH:CHANNEL` or
    `demo_ticker:CHANNEL`.

    The channel is what follows the last colon, so a path may contain colons.
    `demo_ticker` is a flag so that one config file can serve every node of a
    cluster while only one of them runs the feed (configs/cluster/run.sh).
    """
    kind, _, rest = text.partition(":")
    suffix = f"-{index}" if index else ""
    if kind in ("stdin", "demo_ticker") and rest:
        return SourceConfig(name=f"{kind}{suffix}", kind=kind, channel=rest)
    if kind == "file":
        path, _, channel = rest.rpartition(":")
        if path and channel:
            return SourceConfig(
                name=f"file{suffix}", kind="file", channel=channel, options={"path": path}
            )
    raise ConfigError(
        "--source", "--source", "stdin:CHANNEL, file:PATH:CHANNEL or demo_ticker:CHANNEL", text
    )
