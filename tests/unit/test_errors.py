"""The exception tree: one root, config errors that explain themselves, publish error codes."""

from __future__ import annotations

import pytest

from broadcaster.codes import ErrorCode
from broadcaster.errors import (
    BroadcasterError,
    BrokerUnavailable,
    ConfigError,
    ForbiddenChannel,
    InvalidPublish,
    PublishError,
    ServerStateError,
    UnknownChannel,
)


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError,
        PublishError,
        ForbiddenChannel,
        UnknownChannel,
        InvalidPublish,
        BrokerUnavailable,
        ServerStateError,
    ],
)
def test_every_error_derives_from_the_root(exc: type[Exception]) -> None:
    """`except BroadcasterError` catches everything the library raises."""
    assert issubclass(exc, BroadcasterError)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ForbiddenChannel, ErrorCode.FORBIDDEN),
        (UnknownChannel, ErrorCode.UNKNOWN_CHANNEL),
        (InvalidPublish, ErrorCode.INVALID_MESSAGE),
        (BrokerUnavailable, ErrorCode.UNAVAILABLE),
    ],
)
def test_publish_errors_carry_their_protocol_code(exc: type[PublishError], code: ErrorCode) -> None:
    """A refused publish maps to the PROTOCOL.md error code sent to the client."""
    assert exc.code == code.value
    assert issubclass(exc, PublishError)


def test_publish_error_carries_retry_after() -> None:
    """`unavailable` tells the client when to retry."""
    assert BrokerUnavailable("down", retry_after=2.0).retry_after == 2.0


def test_config_error_names_source_key_expectation_and_value() -> None:
    """A config error reads as one line: where, which key, what was expected, what was found."""
    error = ConfigError("app.toml", "[server] port", "an integer", "80")
    assert str(error) == "app.toml: [server] port: expected an integer, got '80'"


def test_config_error_without_a_value() -> None:
    """When there is no offending value, the message stops at the expectation."""
    assert str(ConfigError("app.toml", "(file)", "an existing TOML file")) == (
        "app.toml: (file): expected an existing TOML file"
    )
