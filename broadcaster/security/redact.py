"""Credentials never reach a log line, at any level; clients' own faults never log tracebacks.

At DEBUG, websockets logs every request line and header (`?token=` JWTs, the
admin token on `/stats?token=`, `Authorization` headers), and exceptions
quote request lines; logs are copied to places (terminals, log shippers,
tickets) where a credential must not be. `LogFilter` rewrites each record of
the loggers it is installed on before any handler sees it:

- `token=VALUE` / `access_token=VALUE` query values, `Authorization` header
  values and anything shaped like a JWT become `[redacted]`;
- the server's own secrets (the admin token, `[api] keys`, the JWT secret)
  become `[redacted]` wherever they appear;
- the message, its arguments and its rendered traceback are all covered.

aiohttp logs a client that disconnects mid-request, or sends a malformed
request, as ERROR with a traceback (about 1.4 KB each, so a few thousand
aborts make megabytes of log). Those records become one DEBUG line without
the traceback, or nothing when the logger is not at DEBUG.

A filter on a logger only sees records created on that very logger, so
`install` adds it to each logger of the server and its libraries by name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["REDACTED", "LogFilter", "install", "redact"]

REDACTED = "[redacted]"

_PATTERNS = (
    # ?token=... / &access_token=... in request lines and URLs.
    (re.compile(r"(?i)\b((?:access_)?token=)[^&\s\"'#;,)\]]+"), rf"\g<1>{REDACTED}"),
    # Authorization header values: "Authorization: Bearer x", ('Authorization', 'Bearer x').
    (
        re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*['\"]?)[^'\"\r\n]+"),
        rf"\g<1>{REDACTED}",
    ),
    # Anything shaped like a JWT (header.payload.signature, the header starting '{"').
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
)
# Shorter configured secrets are not replaced verbatim: they would garble ordinary words.
MIN_SECRET_CHARS = 6

# The loggers the server and its libraries write to (a filter is per logger).
LOGGER_NAMES = (
    "broadcaster",
    "broadcaster.api",
    "broadcaster.session",
    "broadcaster.monitor",
    "broadcaster.redis",
    "broadcaster.sources",
    "broadcaster.client",
    "websockets",
    "websockets.server",
    "websockets.client",
    "aiohttp.server",
    "aiohttp.access",
    "aiohttp.web",
    "aiohttp.internal",
    "asyncio",
)
_PREFIXES = ("broadcaster.", "websockets.", "aiohttp.")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with credentials replaced by `[redacted]`."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET_CHARS and secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _client_fault(record: logging.LogRecord) -> BaseException | None:
    """The exception of an aiohttp record about a client's own fault (abort, bad request)."""
    if record.name != "aiohttp.server" or not record.exc_info:
        return None
    # aiohttp is imported only when the HTTP API is on (it costs ~13 MB of RSS);
    # a record from its logger means it already is, so this import is a lookup.
    from aiohttp.http_exceptions import HttpProcessingError

    exc = record.exc_info[1]
    if isinstance(exc, ConnectionError | HttpProcessingError):
        return exc
    return None


class LogFilter(logging.Filter):
    """Redacts credentials from records; quiets aiohttp's tracebacks for client faults."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        fault = _client_fault(record)
        if fault is not None:
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                return False
            summary = str(fault).splitlines()[0] if str(fault) else ""
            record.msg = f"{record.getMessage()}: {type(fault).__name__} {summary}".rstrip()
            record.args = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info, record.exc_text = None, None
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Rendered here, redacted, and cached where formatters look for it.
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


_FILTER = LogFilter()


def install(secrets: Iterable[str] = ()) -> LogFilter:
    """Put the (one, process-wide) filter on every server and library logger; add `secrets`.

    Idempotent; called by each server at start, so loggers created since are covered too.
    """
    _FILTER.secrets.update(s for s in secrets if s)
    names = set(LOGGER_NAMES)
    names.update(name for name in logging.Logger.manager.loggerDict if name.startswith(_PREFIXES))
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    return _FILTER
