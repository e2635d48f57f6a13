"""The shape of a TOML table: which keys a section knows and what type each value has.

Every section module declares its keys as a `KeyTypes` table; the file, the
environment variables and the flags are all checked against those same
tables, so a key is spelled and typed in exactly one place and every type
error reads alike ("[server] port: expected an integer").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from broadcaster.errors import ConfigError

__all__ = ["KeyTypes", "check_table", "check_type", "type_name"]

KeyTypes: TypeAlias = dict[str, type | tuple[type, ...]]
"""Key name -> the type (or types) its value may have. `list` means a list of strings."""


def type_name(expected: type | tuple[type, ...]) -> str:
    """How an error message spells `expected`, in the user's (TOML's) words."""
    if expected is str:
        return "a string"
    if expected is int:
        return "an integer"
    if expected is bool:
        return "true or false"
    if expected is list:
        return "a list of strings"
    if expected == (int, str):
        return "an integer or a string"
    return "a number"


def check_type(source: str, key: str, value: Any, expected: type | tuple[type, ...]) -> None:
    """Raise `ConfigError` unless `value` has the `expected` type.

    `bool` is a subclass of `int` in Python, but `port = true` is a mistake,
    so booleans only pass where a boolean is expected.
    """
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
    if ok and expected is list:
        ok = all(isinstance(item, str) for item in value)
    if not ok:
        raise ConfigError(source, key, type_name(expected), value)


def check_table(
    source: str, section: str, table: Any, keys: Mapping[str, type | tuple[type, ...]]
) -> dict[str, Any]:
    """A mutable copy of `table` once every key is known and every value has its type.

    Unknown keys are refused (listing the known ones) rather than ignored, so
    a typo cannot silently leave a setting at its default.
    """
    if not isinstance(table, dict):
        raise ConfigError(source, section, "a table", table)
    for key, value in table.items():
        if key not in keys:
            raise ConfigError(
                source, f"{section} {key}", f"one of the known keys: {', '.join(keys)}"
            )
        check_type(source, f"{section} {key}", value, keys[key])
    return dict(table)
