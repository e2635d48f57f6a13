"""The plain HTTP endpoints served on the WebSocket port (GET only).

websockets answers every HTTP request on the port; `process_request` returns
a response for every path but `/ws`, which goes on to the WebSocket
handshake (a plain GET on `/ws` gets websockets' own 426 Upgrade Required)
unless the handshake gate (server/handshake.py: origin, admission) refuses it.

The admin endpoints (/stats, /dashboard, /metrics) answer only requests that
`security.admin.AdminGate` admits (an admin token, or loopback when no token
is configured); others get 401 or 403, counted as refusals (`admin`).
"""

from __future__ import annotations

import http
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from broadcaster.security.admin import peer_ip
from broadcaster.server.stats import StatsQueryError, build_stats

if TYPE_CHECKING:
    from broadcaster.server.app import Broadcaster

__all__ = ["HttpEndpoints", "respond"]

WS_PATH = "/ws"


def respond(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str,
    *,
    extra_headers: dict[str, str] | None = None,
) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    headers["Connection"] = "close"
    for name, value in (extra_headers or {}).items():
        headers[name] = value
    return Response(status.value, status.phrase, headers, body)


def _json(status: http.HTTPStatus, document: object) -> Response:
    return respond(status, orjson.dumps(document), "application/json")


def _static(name: str) -> bytes | None:
    """A file shipped in broadcaster/static (None when absent)."""
    try:
        return (resources.files("broadcaster") / "static" / name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _client_js() -> bytes | None:
    """The browser client: from clients/js in a source checkout, else from the package."""
    checkout = Path(__file__).resolve().parents[2] / "clients" / "js" / "broadcaster.js"
    if checkout.is_file():
        return checkout.read_bytes()
    return _static("broadcaster.js")


Handler = Callable[[dict[str, list[str]]], Response]


class HttpEndpoints:
    """Routes GET requests to the server's pages and JSON endpoints."""

    def __init__(self, app: Broadcaster) -> None:
        self.app = app
        self.routes: dict[str, Handler] = {
            "/healthz": self._healthz,
            "/stats": self._stats,
            "/": self._page("index.html"),
            "/dashboard": self._page("dashboard.html"),
            "/js/broadcaster.js": self._client,
        }
        self.admin_paths: set[str] = {"/stats", "/dashboard"}
        """Paths that show the server from the inside: they need admin access."""

    def add_route(self, path: str, handler: Handler, *, admin: bool = False) -> None:
        """Serve GET `path` with `handler`; `admin` puts it behind the admin gate."""
        self.routes[path] = handler
        if admin:
            self.admin_paths.add(path)
        else:
            self.admin_paths.discard(path)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == WS_PATH:
            return self.app.gate.check(connection, request)
        handler = self.routes.get(url.path)
        if handler is None:
            return respond(
                http.HTTPStatus.NOT_FOUND, f"no page at {url.path}\n".encode(), "text/plain"
            )
        query = parse_qs(url.query)
        if url.path in self.admin_paths:
            denied = self.app.admin_gate.check_http(
                request.headers.get("Authorization"),
                query.get("token", [None])[-1],
                peer_ip(connection.remote_address),
            )
            if denied is not None:
                self.app.metrics.refused("admin")
                unauthorized = denied.status == 401
                return respond(
                    http.HTTPStatus(denied.status),
                    orjson.dumps(
                        {
                            "error": "unauthorized" if unauthorized else "forbidden",
                            "message": denied.message,
                        }
                    ),
                    "application/json",
                    extra_headers=(
                        {"WWW-Authenticate": 'Bearer realm="broadcaster admin"'}
                        if unauthorized
                        else None
                    ),
                )
        return handler(query)

    def _healthz(self, query: dict[str, list[str]]) -> Response:
        # 200 even while the broker is down: every node is equally affected and
        # local subscribers stay connected. 503 while this node's broker reader
        # is restarting: only this node delivers nothing, so route around it.
        broker = self.app.broker.status()
        document: dict[str, object] = {
            "status": "ok",
            "broker": "up" if broker.up else "down",
            "breaker": broker.breaker,
            "connections": len(self.app.sessions),
        }
        if broker.reader is not None:
            document["reader"] = broker.reader
        if broker.reader == "restarting":
            document["status"] = "degraded"
            return _json(http.HTTPStatus.SERVICE_UNAVAILABLE, document)
        return _json(http.HTTPStatus.OK, document)

    def _stats(self, query: dict[str, list[str]]) -> Response:
        counts: dict[str, int | None] = {}
        for key in ("top", "channels"):
            text = query.get(key, [None])[-1]
            try:
                counts[key] = int(text) if text is not None else None
            except ValueError:
                return _json(
                    http.HTTPStatus.BAD_REQUEST,
                    {"error": "invalid_query", "message": f"{key} must be an integer >= 0"},
                )
        sort = query.get("sort", ["depth"])[-1]
        try:
            document = build_stats(
                self.app, top=counts["top"], sort=sort, max_channels=counts["channels"]
            )
        except StatsQueryError as exc:
            return _json(
                http.HTTPStatus.BAD_REQUEST, {"error": "invalid_query", "message": str(exc)}
            )
        return _json(http.HTTPStatus.OK, document)

    def _page(self, name: str) -> Handler:
        def handler(query: dict[str, list[str]]) -> Response:
            body = _static(name)
            if body is None:
                return respond(http.HTTPStatus.NOT_FOUND, b"page not installed\n", "text/plain")
            return respond(http.HTTPStatus.OK, body, "text/html; charset=utf-8")

        return handler

    def _client(self, query: dict[str, list[str]]) -> Response:
        body = _client_js()
        if body is None:
            return respond(http.HTTPStatus.NOT_FOUND, b"client not installed\n", "text/plain")
        return respond(http.HTTPStatus.OK, body, "text/javascript; charset=utf-8")
