"""The WebSocket handshake's gate: origin, then admission, as HTTP answers.

Runs in websockets' `process_request` for `/ws`, before any WebSocket state
exists, so a refused client costs one small HTTP response:

- a forbidden Origin: 403 (`reason="origin"`);
- admission (security/admission.py): 429 or 503 with `Retry-After`
  (`connection_rate`, `ip_connections`, `connections`, `overload`).

The body is JSON like the publish API's errors, `{"error", "message",
"retry_after"}`, for humans with curl; browsers never see it (a refused
WebSocket handshake is only an `error` event there).

An admitted handshake leaves its `Ticket` on the connection, which releases
it when the TCP connection is lost, whether or not the handshake completed.

`EdgeGuard` acts earlier, on every connection to the port (any path), while
its HTTP request is still arriving (server/websocket.py calls it):

- at accept: over the half-open caps (security/admission.py `HalfOpen`): 429
  (`ip_half_open`) or 503 (`half_open`) with Retry-After, then close;
- as bytes arrive: a request head over `[limits] max_header_bytes`: 431
  (`header_size`), then half-close and discard the rest until the client
  closes (so it sees the answer); websockets' own 414 / 431 (a line over
  8 KiB, more than 128 headers) count as `header_size` too;
- a request websockets cannot parse, or a complete one whose target or
  headers the endpoints cannot use (not starting with one `/`, characters
  outside printable ASCII, an unparsable URL, several Host or Authorization
  headers): 400 (`bad_request`), never a 500 with a traceback.
"""

from __future__ import annotations

import http
import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders
from websockets.http11 import Request, Response

from broadcaster.security.admin import peer_ip
from broadcaster.security.admission import HalfOpen, Refusal, Ticket
from broadcaster.server.http import Answer, respond
from broadcaster.server.websocket import BroadcasterConnection

if TYPE_CHECKING:
    from broadcaster.server.app import Broadcaster

__all__ = ["EdgeGuard", "HandshakeGate", "request_problem"]

logger = logging.getLogger("broadcaster")

_ERRORS = {403: "forbidden_origin", 429: "rate_limited", 503: "unavailable"}
# A request target in origin form: one "/", then printable ASCII without spaces.
_TARGET = re.compile(r"/(?!/)[\x21-\x7e]*")
# Headers the endpoints read with a single-value lookup.
_SINGLE_HEADERS = ("Host", "Authorization")


def request_problem(request: Request) -> str | None:
    """What makes `request` unusable for the endpoints (a 400), or None when it is fine."""
    if not _TARGET.fullmatch(request.path):
        return "the request target must be a path starting with a single '/' (printable ASCII)"
    try:
        urlsplit(request.path)
    except ValueError as exc:
        return f"the request target is not a valid URL ({exc})"
    for name in _SINGLE_HEADERS:
        if len(request.headers.get_all(name)) > 1:
            return f"several {name} headers; send one"
    return None


def _error(status: http.HTTPStatus, error: str, message: str) -> Response:
    return respond(status, orjson.dumps({"error": error, "message": message}), "application/json")


def refusal_response(refusal: Refusal) -> Response:
    document = {
        "error": _ERRORS.get(refusal.status, "refused"),
        "message": refusal.message,
        "retry_after": round(refusal.retry_after, 3),
    }
    return respond(
        http.HTTPStatus(refusal.status),
        orjson.dumps(document),
        "application/json",
        extra_headers={"Retry-After": refusal.retry_after_header},
    )


class HandshakeGate:
    """Origin check and admission for one server."""

    def __init__(self, app: Broadcaster) -> None:
        self.app = app

    def check(self, connection: ServerConnection, request: Request) -> Response | None:
        """None to go on with the handshake, or the HTTP response that refuses it."""
        app = self.app
        origins = request.headers.get_all("Origin")
        if not app.origins.allows(origins, request.headers.get("Host")):
            app.metrics.refused("origin")
            shown = origins[0] if len(origins) == 1 else f"{len(origins)} Origin headers"
            body = orjson.dumps(
                {
                    "error": _ERRORS[403],
                    "message": f"origin {shown!r} is not allowed ([server] allowed_origins)",
                }
            )
            return respond(http.HTTPStatus.FORBIDDEN, body, "application/json")
        decision = app.admission.admit(peer_ip(connection.remote_address), app.loop.time())
        if isinstance(decision, Refusal):
            app.metrics.refused(decision.reason)
            return refusal_response(decision)
        self._hold(connection, decision)
        return None

    @staticmethod
    def _hold(connection: ServerConnection, ticket: Ticket) -> None:
        if isinstance(connection, BroadcasterConnection):
            connection.hold(ticket)
        else:  # pragma: no cover - the server always creates BroadcasterConnection
            ticket.release()


class EdgeGuard:
    """Caps and answers for connections whose HTTP request is not complete yet (any path)."""

    def __init__(self, app: Broadcaster) -> None:
        self.app = app
        self.max_header_bytes = app.config.limits.max_header_bytes
        self.half_open = HalfOpen(app.config.limits)

    def accepted(self, connection: BroadcasterConnection) -> Response | None:
        decision = self.half_open.enter(peer_ip(connection.remote_address))
        if isinstance(decision, Refusal):
            self.app.metrics.refused(decision.reason)
            return refusal_response(decision)
        connection.half_open = decision
        return None

    def too_large(self, connection: BroadcasterConnection) -> Response:
        self.app.metrics.refused("header_size")
        return _error(
            http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_too_large",
            f"the request line and headers exceed {self.max_header_bytes} bytes "
            "([limits] max_header_bytes); send fewer or shorter headers",
        )

    def unparsable(self, connection: BroadcasterConnection, exc: Exception) -> Response | None:
        if isinstance(exc, RequestLineTooLong | HeaderLineTooLong | TooManyHeaders):
            self.app.metrics.refused("header_size")
            return None  # websockets answered 414 / 431 itself
        self.app.metrics.refused("bad_request")
        logger.debug(
            "malformed HTTP request from %s refused: %s",
            connection.remote_address,
            exc.__cause__ or exc,
        )
        return _error(
            http.HTTPStatus.BAD_REQUEST,
            "bad_request",
            "malformed HTTP request: send an HTTP/1.1 GET with CRLF line endings and valid "
            "header lines",
        )

    def process_request(self, connection: ServerConnection, request: Request) -> Answer:
        """websockets' `process_request`: a request the endpoints cannot use gets 400 here."""
        problem = request_problem(request)
        if problem is not None:
            self.app.metrics.refused("bad_request")
            return _error(http.HTTPStatus.BAD_REQUEST, "bad_request", problem)
        return self.app.http.process_request(connection, request)
