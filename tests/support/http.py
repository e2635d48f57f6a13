"""Plain HTTP GETs against a test server, through the standard library's client."""

from __future__ import annotations

import asyncio
import http.client
from typing import Any

import orjson

__all__ = ["http_get", "http_get_json"]


def _get(port: int, path: str, headers: dict[str, str] | None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


async def http_get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(_get, port, path, headers)


async def http_get_json(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    status, _headers, body = await http_get(port, path, headers)
    return status, orjson.loads(body)
