"""The README's test command is exactly what CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    """`.ci/run` runs the second command of the README's opening block, verbatim."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2, "the README starts with two commands: run, and test"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci
