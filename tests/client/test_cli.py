"""`broadcaster sub` and `broadcaster pub`, end to end, as a human runs them."""

from __future__ import annotations

import asyncio
import io
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO

import pytest

from broadcaster.client import Client, Reset
from broadcaster.client.commands import _narrate
from tests.support.servers import ServerProcess, free_port

SERVER_TOML = """
[server]
host = "127.0.0.1"
shutdown_timeout = 0.5
close_timeout = 0.5
"""
TIMEOUT = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(SERVER_TOML, tmp_path_factory.mktemp("cli-server"))
    asyncio.run(proc.start())
    yield proc
    proc.kill()


def broadcaster(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broadcaster", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **(env or {})},
        check=False,
    )


class Lines:
    """The lines a pipe delivers, readable with a deadline."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the end of the pipe (the process has exited)."""
        self._thread.join(TIMEOUT)

    def _pump(self, pipe: IO[str]) -> None:
        for line in pipe:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str) -> str:
        """The first line (from here on) containing `text`."""
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                raise TimeoutError(f"no line with {text!r}; seen: {self.seen}") from None
            self.seen.append(line)
            if text in line:
                return line


def test_sub_prints_what_pub_publishes_and_ends_on_ctrl_c(server: ServerProcess) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "broadcaster", "sub", "--url", server.url, "news", "other"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            out, err = Lines(proc.stdout), Lines(proc.stderr)
            err.wait_for("# subscribed to news at seq 0")
            err.wait_for("# subscribed to other")

            published = broadcaster("pub", "--url", server.url, "news", '{"headline": "hello"}')
            assert (published.returncode, published.stdout, published.stderr) == (0, "1\n", "")
            assert out.wait_for("news") == 'news #1 {"headline":"hello"}'

            proc.send_signal(signal.SIGINT)
            assert proc.wait(TIMEOUT) == 0
            out.join()
            err.join()
            assert not any("Traceback" in line for line in err.seen + list(err.lines.queue))
        finally:
            if proc.poll() is None:
                proc.kill()


def test_pub_stdin_reports_bad_lines_by_number_and_publishes_the_rest(
    server: ServerProcess,
) -> None:
    lines = '{"n": 1}\n{not json\n\n[2]\n"three"\n'
    result = broadcaster(
        "pub", "lines", "--stdin", stdin=lines, env={"BROADCASTER_URL": server.url}
    )
    assert result.stdout == "1\n2\n3\n", "one seq per published line, env BROADCASTER_URL used"
    assert result.stderr.startswith("line 2: invalid JSON:")
    assert "line 4" not in result.stderr
    assert result.returncode == 2, "bad input is reported in the exit status"


def test_pub_bad_json_argument_is_a_usage_error() -> None:
    result = broadcaster("pub", "--url", f"ws://127.0.0.1:{free_port()}/ws", "news", "{oops")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("broadcaster pub: invalid JSON:")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", [["pub", "news", "1"], ["sub", "news"]])
def test_unreachable_server_is_one_line_and_exit_1(command: list[str]) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    result = broadcaster(command[0], "--url", url, *command[1:])
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"cannot connect to {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_pub_refused_by_the_server_exits_1(server: ServerProcess) -> None:
    result = broadcaster("pub", "--url", server.url, "$sys.stats", "1")
    assert result.returncode == 1
    assert result.stderr.startswith("broadcaster pub: forbidden:")


def test_help_lists_the_client_commands() -> None:
    result = broadcaster("--help")
    assert result.returncode == 0
    assert "sub" in result.stdout
    assert "pub" in result.stdout


def test_sub_tells_the_human_about_a_reset() -> None:
    """A restarted seq history is said on stderr, with what is known and what is not."""
    client, err = Client("ws://127.0.0.1:9/ws"), io.StringIO()
    _narrate(client, err)
    client.events.emit("reset", Reset("news", "e1", "e2", last_seq=5, missed=None, seq=0))
    client.events.emit("reset", Reset("news", "e2", "e3", last_seq=8, missed=None, seq=2))
    assert err.getvalue().splitlines() == [
        "# reset of news: epoch e1 -> e2, seq starts again (last seq seen 5; an unknown number"
        " of the old epoch's messages may be lost)",
        "# reset of news: epoch e2 -> e3, seq starts again (last seq seen 8; an unknown number"
        " of the old epoch's messages may be lost; seq 1..2 of the new epoch came before this"
        " subscription)",
    ]


def test_pub_at_debug_level_logs_no_token(server: ServerProcess) -> None:
    """websockets' client logs its request at DEBUG; BROADCASTER_TOKEN must not appear in it."""
    token = "cli-secret-token-" + "x" * 24
    result = broadcaster(
        "--log-level",
        "DEBUG",
        "pub",
        "--url",
        f"{server.url}?token={token}",
        "news",
        '"hi"',
        env={"BROADCASTER_TOKEN": token},
    )
    assert result.returncode == 0, result.stderr
    assert "DEBUG" in result.stderr  # the request was logged ...
    assert token not in result.stderr + result.stdout  # ... without the credential
