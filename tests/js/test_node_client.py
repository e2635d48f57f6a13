"""The browser client's own tests (Node's test runner) as part of the one test command.

`node --test clients/js/test/` starts real servers itself with the Python that runs
pytest (BROADCASTER_PYTHON), so a plain `pytest` runs the JS suite too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broadcaster.codes import CLOSE_CODES

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js" / "broadcaster.js"
NODE = shutil.which("node")
# The whole JS suite takes a few seconds; this bounds a hang, it is not a speed target.
SUITE_TIMEOUT = 180


def node_command(*args: str) -> list[str]:
    """`node` with WebSocket enabled (a flag before Node 22, the default from 22 on)."""
    if NODE is None:
        pytest.fail("node is not installed: .ci/run installs Debian's nodejs package")
    version = subprocess.run(
        [NODE, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    major = int(version.lstrip("v").split(".")[0])
    if major < 20:
        pytest.fail(f"the browser client's tests need Node 20 or later, found {version.strip()}")
    flags = ["--experimental-websocket"] if major < 22 else []
    return [NODE, *flags, *args]


def test_node_client_suite() -> None:
    """`node --test clients/js/test/` passes against real servers."""
    env = dict(os.environ, BROADCASTER_PYTHON=sys.executable)
    result = subprocess.run(
        node_command("--test", "--test-timeout", "60000", "clients/js/test/"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert "# fail 0" in output, output[-8000:]


def test_js_close_policy_matches_the_server_table() -> None:
    """The JS client's reconnect decisions are those of broadcaster/codes.py."""
    script = (
        f"import({json.dumps(CLIENT.as_uri())})"
        ".then(m => console.log(JSON.stringify(m.CLOSE_POLICY)))"
    )
    result = subprocess.run(
        node_command("-e", script), capture_output=True, text=True, timeout=60, check=True
    )
    js = {int(code): policy for code, policy in json.loads(result.stdout).items()}
    expected = {int(code): info.backoff for code, info in CLOSE_CODES.items()}
    assert js == expected
    assert all((info.backoff != "none") == info.reconnect for info in CLOSE_CODES.values())
