"""The HTTP publish API: `POST /api/publish` on its own port, served by aiohttp.

Backends (a pricing service, a cron job, a web app) publish with one HTTP
request instead of holding a WebSocket. The WebSocket port is served by
`websockets`, which only answers GET, so the API gets a real HTTP server
(aiohttp: asyncio-native, keep-alive, its own C parser) on a port of its
own, `[api] port`.

The backpressure rules of the WebSocket edge hold here too, in HTTP's words:

- a `block` channel without room within `publish_timeout`: 503 + Retry-After
  (nothing of that item was published);
- over the publisher's rate (a token bucket per API key, or per client
  address when no keys are configured): 429 + Retry-After;
- malformed input: 400 with PROTOCOL.md's codes (`invalid_json`,
  `invalid_message`, `forbidden` for `$sys.*`, `unknown_channel`);
- the broker cannot take the publish: 503 `unavailable` + Retry-After.

Every error body is `{"error": CODE, "message": TEXT}`, plus `retry_after`
(seconds) where the status has a Retry-After, and for batches `index` (the
item at fault) and `seqs` (the items published before it).

The port is public-facing, so it bounds what a client that sends slowly can
hold (a connection, a file descriptor: at the default open-file limit, a
thousand half-sent requests would also starve the WebSocket port):

- the request head must arrive within `header_timeout` of the connect (or of
  the previous response, on keep-alive): aiohttp's keep-alive timer, which
  closes a connection still waiting for a complete request head (from
  aiohttp 3.14.4 on, hence the lower bound in pyproject.toml);
- the body within `body_timeout` once the head arrived: 408, then close
  (after discarding for up to `body_timeout` what still arrives, so the
  client sees the 408 rather than a reset);
- at most `max_connections` open connections: one more is closed as soon as
  it is accepted (counted as `api_connections`).

A client that goes away mid-request is its own business: one DEBUG line, no
traceback.

Pages publish here too (the browser client does when it fell back to SSE), and
a page is rarely on this port's origin. The API requires JSON's media type, so
a browser asks first (a CORS preflight, `OPTIONS`): the API approves it, with
`Authorization` and `Content-Type`, for the origins `[server] allowed_origins`
admits, the /ws rule ("self" also means the WebSocket port's pages on the same
host), and refuses every other origin with 403, so a page elsewhere still cannot
make a visitor's browser publish to an API on their loopback. Responses to
`POST` carry `Access-Control-Allow-Origin` for those origins only, always the
origin itself, never `*`, and never `Access-Control-Allow-Credentials`: the key
travels in `Authorization`, cookies are not wanted.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from broadcaster.codes import ErrorCode
from broadcaster.config import ApiConfig
from broadcaster.core.publish_body import BodyRejected, parse_publish_body
from broadcaster.core.token_bucket import TokenBuckets
from broadcaster.errors import (
    BrokerUnavailable,
    ChannelBlocked,
    PublishError,
    RateLimited,
    ServerStateError,
)

if TYPE_CHECKING:
    from broadcaster.server.app import Broadcaster
    from broadcaster.server.sse import StreamEndpoints

__all__ = [
    "FORBIDDEN_ORIGIN",
    "PUBLISH_PATH",
    "ApiError",
    "PublishApi",
    "cors_headers",
    "origin_allowed",
]

logger = logging.getLogger("broadcaster.api")

PUBLISH_PATH = "/api/publish"
AUTH_SCHEME = "apikey"
# Not a PROTOCOL.md code (WebSocket auth fails at the handshake); HTTP needs one for 401.
UNAUTHORIZED = "unauthorized"
# Seconds a client is told to wait when the server is shutting down.
STOPPING_RETRY_AFTER = 1.0
# Not a PROTOCOL.md code: the body did not arrive within [api] body_timeout.
REQUEST_TIMEOUT = "request_timeout"
# The /ws handshake's refusal, in the API's JSON words (also /sse's).
FORBIDDEN_ORIGIN = "forbidden_origin"
# How long a browser may reuse an approved preflight (seconds; Chromium caps it at 7200).
PREFLIGHT_MAX_AGE = 600

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An HTTP error answer: status, PROTOCOL.md-style code, message and optional extras."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def response(self) -> web.Response:
        document: dict[str, Any] = {"error": self.code, "message": self.message}
        headers = dict(self.headers)
        if self.retry_after is not None:
            document["retry_after"] = round(self.retry_after, 3)
            # Retry-After is whole seconds (RFC 9110); never tell a client 0.
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        document.update(self.extra)
        return _json(self.status, document, headers)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(status: int, document: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(document),
        content_type="application/json",
        headers=headers,
    )


def origin_allowed(app: Broadcaster, request: web.Request, origins: list[str]) -> bool:
    """The /ws origin rule on this port; "self" also covers the WebSocket port's pages.

    Those pages (the ticker, the examples) are served on `[server] port`, so their
    origin names that port, not this one.
    """
    policy = app.origins
    host = request.headers.get("Host")
    if policy.allows(origins, host):
        return True
    if host and app.started:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return policy.allows(origins, f"{name}:{app.port}")
    return False


def cors_headers(app: Broadcaster, request: web.Request) -> dict[str, str]:
    """`Access-Control-Allow-Origin` for a page of an allowed origin; nothing for others.

    The origin itself, never `*`: the answer differs per origin, hence `Vary`.
    """
    origins = request.headers.getall("Origin", [])
    if len(origins) != 1 or not origin_allowed(app, request, origins):
        return {}
    return {"Access-Control-Allow-Origin": origins[0], "Vary": "Origin"}


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer is JSON, aiohttp's own refusals (404, 405, 413) included."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = {
            404: ("not_found", f"nothing at {request.path}; publish with POST {PUBLISH_PATH}"),
            405: ("method_not_allowed", f"{PUBLISH_PATH} takes POST only"),
        }.get(exc.status, (ErrorCode.INVALID_MESSAGE.value, exc.text or exc.reason))
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return _json(exc.status, {"error": code, "message": message}, headers)


class _ConnectionCap:
    """Closes API connections beyond `cap` the moment they are accepted.

    aiohttp has no connection limit; its `Server` is told of every connection
    (`connection_made`) before the connection reads anything, which is where
    the count is exact even when many are accepted in one loop iteration.
    """

    def __init__(self, server: web.Server, cap: int, refused: Callable[[], None]) -> None:
        self.server = server
        self.cap = cap
        self.refused = refused
        self._made = server.connection_made
        server.connection_made = self.connection_made  # type: ignore[method-assign]

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        self._made(handler, transport)
        if len(self.server.connections) > self.cap:
            self.refused()
            # Not at once: the handler's task must start before the connection is lost.
            asyncio.get_running_loop().call_soon(transport.close)


class PublishApi:
    """Serves `POST /api/publish` for one `Broadcaster` on `[api] host`:`port`."""

    def __init__(
        self, app: Broadcaster, config: ApiConfig, *, streams: StreamEndpoints | None = None
    ) -> None:
        self.app = app
        self.config = config
        self.streams = streams
        """`GET /sse` and `GET /stream` (server/sse.py), served on this port too."""
        self._keys = tuple(key.encode() for key in config.keys)
        self.limiter = TokenBuckets(config.rate, config.burst) if config.rate > 0 else None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port = 0

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        web_app = web.Application(
            middlewares=[self._cors, _json_errors], client_max_size=self.config.max_body_size
        )
        web_app.router.add_post(PUBLISH_PATH, self.publish)
        web_app.router.add_route("OPTIONS", PUBLISH_PATH, self.preflight)
        if self.streams is not None:
            self.streams.add_routes(web_app.router)
        self._runner = web.AppRunner(
            web_app,
            # One log line per publish would cost more than the publish.
            access_log=None,
            # In-flight publishes end by themselves within publish_timeout.
            shutdown_timeout=self.config.publish_timeout + self.config.body_timeout + 1.0,
            # aiohttp closes a connection that has not sent a complete request
            # head this long after connecting or after its previous response.
            keepalive_timeout=self.config.header_timeout,
            # A request answered before its whole body arrived (401, 408, 413,
            # 415) is read and discarded this much longer, so the client sees
            # the answer rather than a reset; then closed. (aiohttp: 10 s.)
            lingering_time=self.config.body_timeout,
        )
        await self._runner.setup()
        assert self._runner.server is not None
        _ConnectionCap(
            self._runner.server,
            self.config.max_connections,
            lambda: self.app.metrics.refused("api_connections"),
        )
        # The WebSocket port's TLS context (`[server] tls_cert`) serves this port too.
        self._site = web.TCPSite(
            self._runner,
            self.config.host,
            self.config.port,
            ssl_context=self.app.ssl,
            # Workers share the port, as the WebSocket port (workers/supervisor.py).
            reuse_port=self.app.worker is not None,
        )
        try:
            await self._site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self._port = int(self._runner.addresses[0][1])
        if self.app.worker is None:  # the supervisor's startup line names it
            logger.info("HTTP publish API listening on %s", self.url)
        if not self._keys and not _is_loopback(self.config.host):
            logger.warning(
                "HTTP publish API on %s has no [api] keys: anyone who can reach it may publish",
                self.url,
            )

    async def stop(self) -> None:
        """Stop accepting requests; those in flight finish (bounded by publish_timeout)."""
        runner, self._runner = self._runner, None
        if runner is not None and self.streams is not None:
            await self.streams.stop()
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.app.ssl is not None else "http"
        return f"{scheme}://{self.config.host}:{self._port}{PUBLISH_PATH}"

    # --- cross-origin pages ----------------------------------------------------------

    @web.middleware
    async def _cors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """CORS headers on every answer to `POST /api/publish`, errors included.

        A page can read a 401, 429 or 503 (and its `retry_after`) only with them.
        The streams set their own before their head is sent (server/sse.py).
        """
        response = await handler(request)
        if request.path == PUBLISH_PATH and request.method != "OPTIONS":
            headers = cors_headers(self.app, request)
            if headers:
                response.headers.update(headers)
                response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        return response

    async def preflight(self, request: web.Request) -> web.Response:
        """`OPTIONS /api/publish`: approve a browser's CORS preflight for allowed origins.

        The approval names `POST` and the two headers a publish needs; the browser
        refuses anything else the page asked for. Another origin gets 403, without
        CORS headers, so the browser never sends its POST.
        """
        origins = request.headers.getall("Origin", [])
        if not origins or "Access-Control-Request-Method" not in request.headers:
            # Not a preflight (curl -X OPTIONS): say what the path takes.
            return web.Response(status=204, headers={"Allow": "OPTIONS, POST"})
        if len(origins) != 1 or not origin_allowed(self.app, request, origins):
            self.app.metrics.refused("origin")
            raise ApiError(
                403,
                FORBIDDEN_ORIGIN,
                f"origin {origins[0]!r} is not allowed to publish here "
                "([server] allowed_origins)",
                headers={"Vary": "Origin"},
            )
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origins[0],
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
                "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            },
        )

    # --- the endpoint ------------------------------------------------------------

    async def publish(self, request: web.Request) -> web.Response:
        """`{"channel", "data"}` → `{"seq"}`; `{"messages": [...]}` → `{"seqs": [...]}`."""
        publisher = self._authenticate(request)
        if request.content_type != "application/json":
            # Requiring JSON's media type makes browsers preflight cross-site
            # requests (approved for the allowed origins only, `preflight`), so
            # another web page cannot make a visitor's browser publish to an API
            # on their loopback.
            raise ApiError(
                415,
                ErrorCode.INVALID_MESSAGE,
                "send the body as Content-Type: application/json (curl --json '...' does)",
            )
        body = await self._read_body(request)
        parsed = parse_publish_body(
            body, policies=self.app.config.policies, max_batch=self.config.max_batch
        )
        if isinstance(parsed, BodyRejected):
            extra = None if parsed.index is None else {"index": parsed.index}
            raise ApiError(400, parsed.code, parsed.message, extra=extra)
        self._charge(publisher, len(parsed.items))
        loop = self.app.loop
        deadline = loop.time() + self.config.publish_timeout
        seqs: list[int] = []
        for index, item in enumerate(parsed.items):
            try:
                seq = await self.app.publish(
                    item.channel, item.data, block_timeout=deadline - loop.time()
                )
            except (PublishError, ServerStateError) as exc:
                raise self._refused(exc, index if parsed.batch else None, seqs) from None
            seqs.append(seq)
        if parsed.batch:
            return _json(200, {"seqs": seqs})
        return _json(200, {"seq": seqs[0]})

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole body within `body_timeout`, or 408 (then the connection is closed)."""
        try:
            async with asyncio.timeout(self.config.body_timeout):
                return await request.read()
        except ConnectionError:
            logger.debug("API client %s went away before its body arrived", request.remote)
            # Nobody reads this answer; it only ends the request without a 500.
            raise ApiError(
                400, ErrorCode.INVALID_MESSAGE, "the connection closed mid-body"
            ) from None
        except TimeoutError:
            self.app.metrics.refused("api_timeout")
            raise ApiError(
                408,
                REQUEST_TIMEOUT,
                f"the request body did not arrive within {self.config.body_timeout:g} s "
                "([api] body_timeout); send it whole, at once",
                headers={"Connection": "close"},
            ) from None

    def _authenticate(self, request: web.Request) -> tuple[str, object]:
        """The publisher's identity for rate limiting; 401 without a valid key when keys exist."""
        if not self._keys:
            return ("ip", request.remote or "unknown")
        scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == AUTH_SCHEME:
            offered = credential.strip().encode("utf-8", "replace")
            found = None
            # Compare with every key in constant time, so timing does not leak a prefix.
            for index, key in enumerate(self._keys):
                if hmac.compare_digest(offered, key) and found is None:
                    found = index
            if found is not None:
                return ("key", found)
        raise ApiError(
            401,
            UNAUTHORIZED,
            f"this API needs a key: send the header 'Authorization: {AUTH_SCHEME} KEY' "
            "with a key from [api] keys",
            headers={"WWW-Authenticate": AUTH_SCHEME},
        )

    def _charge(self, publisher: tuple[str, object], cost: int) -> None:
        """Take `cost` messages from the publisher's bucket, or answer 429 with the wait."""
        limiter = self.limiter
        if limiter is None:
            return
        if cost > limiter.burst:
            raise ApiError(
                400,
                ErrorCode.INVALID_MESSAGE,
                f"a batch of {cost} messages exceeds the rate limit's burst of "
                f"{limiter.burst:g}; send at most that many per request",
            )
        wait = limiter.take(publisher, self.app.loop.time(), cost)
        if wait > 0:
            exc = RateLimited(
                f"over the publish rate of {limiter.rate:g} messages/s "
                f"(burst {limiter.burst:g}); retry after {wait:.3f} s",
                retry_after=wait,
            )
            raise self._refused(exc, None, [])

    def _refused(
        self, exc: PublishError | ServerStateError, index: int | None, seqs: list[int]
    ) -> ApiError:
        """The HTTP answer for a publish the server refused."""
        extra: dict[str, Any] = {} if index is None else {"index": index, "seqs": seqs}
        if isinstance(exc, ServerStateError):
            return ApiError(
                503,
                ErrorCode.UNAVAILABLE,
                "the server is shutting down",
                retry_after=STOPPING_RETRY_AFTER,
                extra=extra,
            )
        if isinstance(exc, RateLimited):
            status = 429
        elif isinstance(exc, ChannelBlocked | BrokerUnavailable):
            status = 503
        else:
            status = 400
        retry_after = exc.retry_after
        if status in (429, 503) and retry_after is None:
            retry_after = 1.0
        return ApiError(status, exc.code, str(exc), retry_after=retry_after, extra=extra)
