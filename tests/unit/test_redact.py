"""Credentials never reach a log line; aiohttp's client-fault tracebacks become one line."""

from __future__ import annotations

import logging

import pytest
from aiohttp.http_exceptions import BadHttpMessage

from broadcaster.security.redact import REDACTED, LogFilter, redact

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
ADMIN = "admin-token-0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"< GET /ws?token={JWT} HTTP/1.1", JWT),
        (f"GET /stats?top=5&token={ADMIN}&sort=depth", ADMIN),
        (f"invalid HTTP request line: GET /ws?access_token={ADMIN}", ADMIN),
        (f"< Authorization: Bearer {ADMIN}", ADMIN),
        (f"Headers([('Authorization', 'apikey {ADMIN}'), ('Host', 'x')])", ADMIN),
        (f'{{"op": "auth", "token": "{JWT}"}}', JWT),
        (f"a JWT alone: {JWT}.", JWT),
        (f"the admin token anywhere: {ADMIN}", ADMIN),
    ],
)
def test_credentials_are_redacted(text: str, gone: str) -> None:
    clean = redact(text, {ADMIN})
    assert gone not in clean
    assert REDACTED in clean


def test_other_text_is_left_alone() -> None:
    text = "GET /stats?top=5&sort=depth HTTP/1.1 from 127.0.0.1: tokens 3, key=value"
    assert redact(text, {"ab"}) == text, "short secrets are not replaced verbatim"


def _record(
    name: str, level: int, msg: str, *args: object, exc: BaseException | None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def test_the_filter_covers_arguments_and_tracebacks() -> None:
    log_filter = LogFilter()
    log_filter.secrets.add(ADMIN)
    try:
        raise ValueError(f"invalid HTTP request line: GET /?token={JWT} HTTP/9")
    except ValueError as exc:
        record = _record("websockets.server", logging.ERROR, "< %s %s", "GET", ADMIN, exc=exc)
    assert log_filter.filter(record)
    assert ADMIN not in record.getMessage()
    assert record.exc_text is not None
    assert JWT not in record.exc_text
    assert JWT not in logging.Formatter().format(record)


def test_aiohttp_client_faults_become_one_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    log_filter = LogFilter()
    logger = logging.getLogger("aiohttp.server")
    record = _record(
        "aiohttp.server",
        logging.ERROR,
        "Error handling request from %s",
        "127.0.0.1",
        exc=ConnectionResetError("Connection lost"),
    )
    caplog.set_level(logging.INFO, logger="aiohttp.server")
    assert not log_filter.filter(record), "dropped when the logger is not at DEBUG"
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    assert logger.isEnabledFor(logging.DEBUG)
    bad = _record(
        "aiohttp.server", logging.ERROR, "Error handling request", exc=BadHttpMessage("bad")
    )
    assert log_filter.filter(bad)
    assert (bad.levelno, bad.exc_info, bad.exc_text) == (logging.DEBUG, None, None)
    assert "BadHttpMessage" in bad.getMessage()
    assert "\n" not in bad.getMessage()
    other = _record("aiohttp.server", logging.ERROR, "bug", exc=KeyError("x"))
    assert log_filter.filter(other)
    assert other.levelno == logging.ERROR, "a server bug keeps its traceback"
