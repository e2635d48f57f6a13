"""The body of an HTTP publish request: strict parsing and validation of every item.

`POST /api/publish` takes either one message, `{"channel": C, "data": D}`, or
a batch, `{"messages": [{"channel": C, "data": D}, ...]}`. A batch is
validated whole before anything is published, so a bad item never leaves the
items before it half-published; the rejection names the item's `index`.
The codes are PROTOCOL.md's, so an HTTP publisher and a WebSocket publisher
match on the same strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from broadcaster.codes import ErrorCode
from broadcaster.core.ops import SYSTEM_PREFIX, validate_channel
from broadcaster.core.policy import PolicyTable

__all__ = ["BodyRejected", "PublishBody", "PublishItem", "parse_publish_body"]


@dataclass(frozen=True, slots=True)
class PublishItem:
    """One message to publish."""

    channel: str
    data: Any


@dataclass(frozen=True, slots=True)
class PublishBody:
    """A validated request: its items in order, and whether it used the batch form."""

    items: tuple[PublishItem, ...]
    batch: bool


@dataclass(frozen=True, slots=True)
class BodyRejected:
    """Why a body cannot be published: a PROTOCOL.md code, a message, the bad item's index."""

    code: ErrorCode
    message: str
    index: int | None = None


def parse_publish_body(
    body: bytes, *, policies: PolicyTable, max_batch: int
) -> PublishBody | BodyRejected:
    """Parse and validate a request body; nothing is published unless every item is good."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return BodyRejected(ErrorCode.INVALID_JSON, f"the body is not strict JSON: {exc}")
    if not isinstance(obj, dict):
        return BodyRejected(
            ErrorCode.INVALID_MESSAGE,
            f'expected a JSON object {{"channel", "data"}} or {{"messages": [...]}}, '
            f"got {_json_type(obj)}",
        )
    if "messages" not in obj:
        single = _item(obj, policies, None)
        if isinstance(single, BodyRejected):
            return single
        return PublishBody((single,), batch=False)
    if "channel" in obj or "data" in obj:
        return BodyRejected(
            ErrorCode.INVALID_MESSAGE,
            "send either 'channel' and 'data' (one message) or 'messages' (a batch), not both",
        )
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        return BodyRejected(
            ErrorCode.INVALID_MESSAGE, "'messages' must be a non-empty array of messages"
        )
    if len(messages) > max_batch:
        return BodyRejected(
            ErrorCode.INVALID_MESSAGE,
            f"a batch holds at most {max_batch} messages, got {len(messages)}; split it",
        )
    items: list[PublishItem] = []
    for index, entry in enumerate(messages):
        if not isinstance(entry, dict):
            return BodyRejected(
                ErrorCode.INVALID_MESSAGE,
                f'messages[{index}]: expected an object {{"channel", "data"}}, '
                f"got {_json_type(entry)}",
                index,
            )
        item = _item(entry, policies, index)
        if isinstance(item, BodyRejected):
            return item
        items.append(item)
    return PublishBody(tuple(items), batch=True)


def _item(
    obj: dict[str, Any], policies: PolicyTable, index: int | None
) -> PublishItem | BodyRejected:
    where = "" if index is None else f"messages[{index}]: "
    channel = obj.get("channel")
    problem = validate_channel(channel)
    if problem:
        return BodyRejected(ErrorCode.INVALID_MESSAGE, where + problem, index)
    assert isinstance(channel, str)
    if "data" not in obj:
        return BodyRejected(ErrorCode.INVALID_MESSAGE, where + "'data' is missing", index)
    if channel.startswith(SYSTEM_PREFIX):
        return BodyRejected(
            ErrorCode.FORBIDDEN,
            f"{where}channel {channel!r} belongs to the server; publishers cannot publish to it",
            index,
        )
    if policies.resolve(channel) is None:
        return BodyRejected(
            ErrorCode.UNKNOWN_CHANNEL,
            f"{where}channel {channel!r} matches no [channels] entry and strict_channels is on",
            index,
        )
    return PublishItem(channel, obj["data"])


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__
