"""Ingress protection: every way in is checked here, and refused cleanly when it must be.

One module per concern, so each limit is found in one guess (what it
decides; where the server applies it):

- `origins.py`: the browser Origin allowlist, HTTP 403; at the handshake
  (`server/handshake.py`).
- `admission.py`: per-address connection rate and count (429),
  `max_connections` and overload (503); at the handshake.
- `overload.py`: event-loop lag: when to refuse new clients and shed open
  ones (1013); on each monitor reading (`Broadcaster.lag_sampled`).
- `auth.py`: JWT verification (PyJWT: HS256, RS256, ...), the admin token,
  what a token grants; `?token=` and the `auth` op (`server/session.py`,
  `server/subscriber.py`).
- `access.py`: per-channel `subscribe` / `publish` = anyone / token / none
  (`forbidden`); the subscribe and publish ops.
- `admin.py`: /stats, /dashboard, /metrics and `$sys.*`: admin token,
  loopback only, or open; `server/http.py` and subscribe.
- `publish_limit.py`: the per-connection publish rate (`rate_limited`, then
  close 4029); the publish op.
- `tls.py`: the SSL context of wss:// and of the publish API's https://.
- `exposure.py`: startup warnings for settings unsafe on a public address.

The decisions are plain objects with time passed in (like the core); the
server adapters turn them into HTTP responses, error events and close codes,
and count each refusal in `broadcaster_refusals_total{reason}`.
"""
