"""Fixtures for the load tool's own tests: which servers to run a short scenario against.

Every accounting test runs against the real server (``"broadcaster"``: the
built-in target that writes a config and runs ``python -m broadcaster serve``)
and against the baselines; any command template with ``{port}`` can be added
to ``SERVER_COMMANDS``.
"""

from __future__ import annotations

import pytest

from loadtest.targets import TargetSpec, parse_target

SERVER_COMMANDS = ["broadcaster", "baseline-broadcast", "baseline-queue", "trivial"]
"""Targets every accounting test runs against (built-in names or commands with {port})."""

BASELINES = ["baseline-broadcast", "baseline-queue", "trivial"]
"""Servers known never to cut a client off: the stalled test relies on that."""


@pytest.fixture(params=SERVER_COMMANDS)
def server_command(request: pytest.FixtureRequest) -> str:
    """A server command (template or built-in name) the tool starts on a free loopback port."""
    command: str = request.param
    return command


@pytest.fixture
def target(server_command: str) -> TargetSpec:
    """The parsed target for ``server_command``."""
    return parse_target(server_command)


@pytest.fixture(params=BASELINES)
def baseline_target(request: pytest.FixtureRequest) -> TargetSpec:
    """A server without slow-consumer handling, for the stalled-client test."""
    return parse_target(str(request.param))
