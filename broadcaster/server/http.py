"""The plain HTTP endpoints served on the WebSocket port (GET only).

websockets answers every HTTP request on the port; `process_request` returns
a response for every path but `/ws`, which goes on to the WebSocket
handshake (a plain GET on `/ws` gets websockets' own 426 Upgrade Required)
unless the handshake gate (server/handshake.py: origin, admission) refuses it.

The admin endpoints (/stats, /dashboard, /metrics) answer only requests that
`security.admin.AdminGate` admits (an admin token, or loopback when no token
is configured); others get 401 or 403, counted as refusals (`admin`).

The browser client (/js/broadcaster.js) and the example pages (/examples/)
are served here so they work as they are: a page opened from a file cannot
import a module, and another static server would not have the client. The
client answers CORS for the origins `[server] allowed_origins` admits, so a
page elsewhere can `import` it from this server (a module import is a CORS
request); the same origins may then open the WebSocket.
"""

from __future__ import annotations

import html
import http
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
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
    from broadcaster.workers.answers import WorkerView

__all__ = ["HttpEndpoints", "StatsQuery", "json_response", "respond", "stats_query"]

WS_PATH = "/ws"
CLIENT_PREFIX = "/js/"
EXAMPLES_PREFIX = "/examples/"
# Served on the API port (server/sse.py); the WebSocket port redirects there.
STREAM_PATHS = frozenset({"/sse", "/stream"})

# A flat directory of pages: a name is one path segment that cannot climb out of it
# ("..", "/", "%2e%2e" and backslashes never match).
_EXAMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.(html|js|css)")
_CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
_TITLE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


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


def json_response(status: http.HTTPStatus, document: object) -> Response:
    return respond(status, orjson.dumps(document), "application/json")


_json = json_response


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """`/stats?top=N&sort=S&channels=M`, read once for one process and for workers."""

    top: int | None
    sort: str
    max_channels: int | None


def stats_query(query: dict[str, list[str]]) -> StatsQuery | Response:
    """The /stats parameters, or the 400 answer naming the one that is not an integer."""
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
    return StatsQuery(counts["top"], query.get("sort", ["depth"])[-1], counts["channels"])


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


def _examples_dir() -> Traversable | None:
    """clients/js/examples in a source checkout, else the copy shipped in the package."""
    checkout = Path(__file__).resolve().parents[2] / "clients" / "js" / "examples"
    if checkout.is_dir():
        return checkout
    shipped = resources.files("broadcaster") / "static" / "examples"
    return shipped if shipped.is_dir() else None


def _examples_index(directory: Traversable) -> bytes:
    """An HTML list of the example pages, each linked with its <title>."""
    items = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".html") or not _EXAMPLE_NAME.fullmatch(entry.name):
            continue
        title = _TITLE.search(entry.read_bytes())
        label = title.group(1).decode("utf-8", "replace").strip() if title else entry.name
        href = html.escape(EXAMPLES_PREFIX + entry.name)
        items.append(
            f'<li><a href="{href}">{html.escape(entry.name)}</a>: {html.escape(label)}</li>'
        )
    listing = "\n".join(items) or "<li>no example pages installed</li>"
    return (
        '<!doctype html>\n<meta charset="utf-8"><title>broadcaster examples</title>\n'
        '<link rel="icon" href="/favicon.svg" type="image/svg+xml">\n'
        "<h1>Example pages</h1>\n<p>Each page imports the browser client from "
        '<a href="/js/broadcaster.js">/js/broadcaster.js</a> and subscribes over '
        f"<code>/ws</code>; view a page's source to copy it.</p>\n<ul>\n{listing}\n</ul>\n"
        '<p><a href="/">the live ticker page</a></p>\n'
    ).encode()


Handler = Callable[[dict[str, list[str]]], Response]
Answer = Response | Awaitable[Response] | None
"""What `process_request` returns: a response, one still being made (a worker's
merged /stats and /metrics gather from every worker first), or None (go on with
the WebSocket handshake)."""


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
            "/favicon.ico": self._icon("favicon.ico", "image/x-icon"),
            "/favicon.svg": self._icon("favicon.svg", "image/svg+xml"),
        }
        self.admin_paths: set[str] = {"/stats", "/dashboard"}
        """Paths that show the server from the inside: they need admin access."""
        self.view: WorkerView | None = None
        """In a worker (`Broadcaster(worker=...)`): /stats and /metrics of every worker
        merged, /healthz naming a worker that is down (workers/answers.py)."""
        if app.link is not None and app.worker is not None:
            from broadcaster.workers.answers import WorkerView

            self.view = WorkerView(app, app.link, app.worker)

    def add_route(self, path: str, handler: Handler, *, admin: bool = False) -> None:
        """Serve GET `path` with `handler`; `admin` puts it behind the admin gate."""
        self.routes[path] = handler
        if admin:
            self.admin_paths.add(path)
        else:
            self.admin_paths.discard(path)

    def process_request(self, connection: ServerConnection, request: Request) -> Answer:
        url = urlsplit(request.path)
        if url.path == WS_PATH:
            return self.app.gate.check(connection, request)
        if url.path == EXAMPLES_PREFIX.rstrip("/") or url.path.startswith(EXAMPLES_PREFIX):
            return self._example(url.path[len(EXAMPLES_PREFIX) :])
        if url.path in STREAM_PATHS:
            return self._to_stream(request, url.path, url.query)
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
        merged = self.view.route(url.path) if self.view is not None else None
        if merged is not None:
            return merged(query)
        response = handler(query)
        if url.path.startswith(CLIENT_PREFIX):
            self._allow_cross_origin(request, response)
        return response

    def startup_line(self) -> str:
        """The log line that says the server is up, with every URL a newcomer may open.

        Only what this server serves is named (the examples when installed, the
        publish API when enabled), with https/wss under TLS.
        """
        app = self.app
        scheme = "https" if app.ssl is not None else "http"
        base = f"{scheme}://{app.config.server.host}:{app.port}"
        pages = [f"ticker {base}/", f"dashboard {base}/dashboard"]
        if _examples_dir() is not None:
            pages.append(f"examples {base}{EXAMPLES_PREFIX}")
        if "/metrics" in self.routes:
            pages.append(f"metrics {base}/metrics")
        if app.api is not None:
            pages.append(f"publish API {app.api.url}")
        # " , ": a terminal that turns URLs into links must not take the comma along.
        return (
            f"broadcaster listening on {app.url} — {' , '.join(pages)} (broker: {app.broker.name})"
        )

    def _to_stream(self, request: Request, path: str, query: str) -> Response:
        """`/sse` and `/stream` live on the API port (server/sse.py says why): redirect there.

        A page then opens `new EventSource("/sse?channel=...")` on the port it came
        from; EventSource and fetch follow a 307, and the API port answers with
        CORS headers for the allowed origins.
        """
        api = self.app.api
        if api is None:
            return respond(
                http.HTTPStatus.NOT_FOUND,
                orjson.dumps(
                    {
                        "error": "not_found",
                        "message": f"{path} is served on the HTTP API port: set [api] enabled "
                        "= true (then GET /sse here redirects there)",
                    }
                ),
                "application/json",
            )
        host = request.headers.get("Host") or api.config.host
        name = host if host.endswith("]") else host.rsplit(":", 1)[0]
        scheme = "https" if self.app.ssl is not None else "http"
        target = f"{scheme}://{name}:{api.port}{path}" + (f"?{query}" if query else "")
        response = respond(
            http.HTTPStatus.TEMPORARY_REDIRECT,
            f"streams are served at {target}\n".encode(),
            "text/plain",
            extra_headers={"Location": target},
        )
        self._allow_cross_origin(request, response)
        return response

    def _allow_cross_origin(self, request: Request, response: Response) -> None:
        """Let pages of the allowed origins import the client (CORS), others not.

        The same allowlist as the WebSocket handshake: a page that may not
        connect has no use for the client, and `"*"` opens both.
        """
        response.headers["Vary"] = "Origin"
        origins = request.headers.get_all("Origin")
        if len(origins) == 1 and self.app.origins.allows(origins, request.headers.get("Host")):
            response.headers["Access-Control-Allow-Origin"] = origins[0]

    def _example(self, name: str) -> Response:
        directory = _examples_dir()
        if directory is None:
            return respond(http.HTTPStatus.NOT_FOUND, b"examples not installed\n", "text/plain")
        if name == "":
            return respond(http.HTTPStatus.OK, _examples_index(directory), _CONTENT_TYPES["html"])
        match = _EXAMPLE_NAME.fullmatch(name)
        entry = directory / name
        if match is None or not entry.is_file():
            return respond(
                http.HTTPStatus.NOT_FOUND,
                f"no example page {name!r}: see {EXAMPLES_PREFIX}\n".encode(),
                "text/plain",
            )
        return respond(http.HTTPStatus.OK, entry.read_bytes(), _CONTENT_TYPES[match.group(1)])

    def _healthz(self, query: dict[str, list[str]]) -> Response:
        # Liveness: 200 even while the broker is down (every node is equally affected
        # and local subscribers are served). 503 once a background loop has stopped:
        # the process no longer does its job and only a restart brings the loop back
        # ("failing"); and while this node's broker reader is restarting: only this
        # node delivers nothing, so a load balancer should route around it ("degraded").
        broker = self.app.broker.status()
        stopped = self.app.loops.stopped()
        restarting = broker.reader == "restarting"
        document: dict[str, object] = {
            "status": "failing" if stopped else "degraded" if restarting else "ok",
            "broker": "up" if broker.up else "down",
            "breaker": broker.breaker,
            "connections": len(self.app.sessions),
        }
        if stopped:
            document["stopped_loops"] = stopped
        if broker.reader is not None:
            document["reader"] = broker.reader
        unhealthy = bool(stopped) or restarting
        if self.view is not None:
            # One worker down is a server that serves part of its clients' work
            # (their connections were cut): unhealthy until the supervisor restarted it.
            down = self.view.down()
            document["workers"] = self.view.identity.count
            if down:
                document["workers_down"] = down
                if document["status"] == "ok":
                    document["status"] = "degraded"
                unhealthy = True
        status = http.HTTPStatus.SERVICE_UNAVAILABLE if unhealthy else http.HTTPStatus.OK
        return _json(status, document)

    def _stats(self, query: dict[str, list[str]]) -> Response:
        asked = stats_query(query)
        if isinstance(asked, Response):
            return asked
        try:
            document = build_stats(
                self.app, top=asked.top, sort=asked.sort, max_channels=asked.max_channels
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

    def _icon(self, name: str, content_type: str) -> Handler:
        def handler(query: dict[str, list[str]]) -> Response:
            body = _static(name)
            if body is None:
                return respond(http.HTTPStatus.NOT_FOUND, b"icon not installed\n", "text/plain")
            return respond(http.HTTPStatus.OK, body, content_type)

        return handler

    def _client(self, query: dict[str, list[str]]) -> Response:
        body = _client_js()
        if body is None:
            return respond(http.HTTPStatus.NOT_FOUND, b"client not installed\n", "text/plain")
        return respond(http.HTTPStatus.OK, body, "text/javascript; charset=utf-8")
