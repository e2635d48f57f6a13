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
"""

from __future__ import annotations

import http
from typing import TYPE_CHECKING

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from broadcaster.security.admin import peer_ip
from broadcaster.security.admission import Refusal, Ticket
from broadcaster.server.http import respond
from broadcaster.server.websocket import BroadcasterConnection

if TYPE_CHECKING:
    from broadcaster.server.app import Broadcaster

__all__ = ["HandshakeGate"]

_ERRORS = {403: "forbidden_origin", 429: "rate_limited", 503: "unavailable"}


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
