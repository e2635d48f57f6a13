"""Fixtures for the load tool's own tests: which servers to run a short scenario against.

The repository root goes on sys.path because the project installs only the
``broadcaster`` package; ``loadtest`` is used from the source tree.

To run the same checks against the real server, add ``"broadcaster"`` (the
built-in target that writes a config and runs ``python -m broadcaster serve``) or
any command template with ``{port}`` to ``SERVER_COMMANDS``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtest.targets import TargetSpec, parse_target  # noqa: E402

SERVER_COMMANDS = ["baseline-broadcast", "baseline-queue", "trivial"]
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
