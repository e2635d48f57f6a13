"""POSTs to the HTTP publish API, through aiohttp's client (a real HTTP client)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

__all__ = ["ApiReply", "post", "post_json"]


@dataclass(frozen=True, slots=True)
class ApiReply:
    status: int
    headers: dict[str, str]
    body: Any


async def post(
    url: str,
    body: bytes | str,
    *,
    key: str | None = None,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> ApiReply:
    """POST `body` as is; the reply's JSON body decoded."""
    sent = dict(headers or {})
    if content_type is not None:
        sent["Content-Type"] = content_type
    if key is not None:
        sent["Authorization"] = f"apikey {key}"
    data = body.encode() if isinstance(body, str) else body
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=sent) as response,
    ):
        raw = await response.read()
        return ApiReply(response.status, dict(response.headers), orjson.loads(raw))


async def post_json(url: str, document: Any, **kwargs: Any) -> ApiReply:
    """POST `document` encoded as JSON."""
    return await post(url, orjson.dumps(document), **kwargs)
