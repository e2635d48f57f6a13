"""The docs' code samples run as written, and their links lead somewhere.

A newcomer copies a sample and runs it: a sample that is a SyntaxError as a
script, never ends, or names a page that moved costs them their first hour.
So every `python` block of README.md and docs/*.md runs here as a script
(this venv's python, in a subprocess) against a real server started with the
default config, every `toml` block is validated like a config file, and
every relative link must reach an existing file and heading.

Markers, on the line before a `python` block (HTML comments: invisible on
the rendered page):

- `<!-- sample: expect REGEX -->`: the sample must exit 0 and print a line
  matching REGEX;
- `<!-- sample: skip, REASON -->`: it cannot run on its own; the reason is
  reported (`pytest -ra`).

The samples use the default addresses; the test replaces `127.0.0.1:8765`
(WebSocket) and `127.0.0.1:8766` (HTTP publish API) with its server's.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broadcaster.config import parse_config
from tests.support.servers import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

DEFAULT_WS = "127.0.0.1:8765"
DEFAULT_API = "127.0.0.1:8766"
MARKER = re.compile(r"^<!--\s*sample:\s*(expect|skip)\b[,:]?\s*(.*?)\s*-->$")
# What a sample that "runs" must not leave on stderr: a crash, or a resource
# it did not release (asyncio and the standard library report those there).
UNCLEAN = ("Traceback", "Warning", "Task was destroyed", "Unclosed", "never awaited")
SAMPLE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int
    """1-based line of the opening fence."""
    lang: str
    code: str
    marker: tuple[str, str] | None
    """(`expect` | `skip`, its argument) from the line before the fence."""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped.startswith("```"):
            i += 1
            continue
        fence = stripped[: len(stripped) - len(stripped.lstrip("`"))]
        lang = stripped[len(fence) :].strip()
        start = i
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        match = MARKER.match(previous)
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        yield Block(
            path=path,
            line=start + 1,
            lang=lang,
            code="\n".join(body) + "\n",
            marker=(match.group(1), match.group(2)) if match else None,
        )


def blocks(lang: str) -> list[Block]:
    return [block for path in DOCS for block in code_blocks(path) if block.lang == lang]


PYTHON_SAMPLES = blocks("python")
TOML_SAMPLES = blocks("toml")


def test_every_python_sample_says_what_it_prints_or_why_it_is_skipped() -> None:
    """An unmarked sample would be run with nothing checked; a skip needs its reason."""
    assert PYTHON_SAMPLES, "no ```python blocks found: is the extraction broken?"
    for sample in PYTHON_SAMPLES:
        assert sample.marker is not None, (
            f"{sample.where}: put `<!-- sample: expect REGEX -->` (a line it prints) or "
            "`<!-- sample: skip, REASON -->` on the line before the block"
        )
        kind, argument = sample.marker
        assert argument, f"{sample.where}: `sample: {kind}` needs a regex or a reason"


@dataclass(frozen=True)
class DocServer:
    ws_port: int
    api_port: int

    def localize(self, code: str) -> str:
        """The sample as it runs against this server instead of the default ports."""
        return code.replace(DEFAULT_WS, f"127.0.0.1:{self.ws_port}").replace(
            DEFAULT_API, f"127.0.0.1:{self.api_port}"
        )


@pytest.fixture(scope="module")
def doc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocServer]:
    """`broadcaster serve` with configs/default.toml (demo ticker, HTTP API) on free ports."""
    api_port = free_port()
    config = (ROOT / "configs" / "default.toml").read_text()
    assert config.count("port = 8766") == 1, "configs/default.toml's [api] port moved"
    config = config.replace("port = 8766", f"port = {api_port}")
    process = ServerProcess(config, tmp_path_factory.mktemp("doc-server"))
    try:
        asyncio.run(process.start())
        yield DocServer(ws_port=process.port, api_port=api_port)
    finally:
        process.kill()


@pytest.mark.parametrize("sample", PYTHON_SAMPLES, ids=[s.where for s in PYTHON_SAMPLES])
def test_python_sample_runs(sample: Block, doc_server: DocServer, tmp_path: Path) -> None:
    """The sample, saved as a script and run from the repository root, exits 0 cleanly."""
    if sample.marker is None:
        pytest.fail(f"{sample.where} has no sample marker (see the test above)")
    kind, argument = sample.marker
    if kind == "skip":
        pytest.skip(f"{sample.where}: {argument}")
    script = tmp_path / "sample.py"
    script.write_text(doc_server.localize(sample.code))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SAMPLE_TIMEOUT,
        check=False,
    )
    report = f"{sample.where}\n--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
    assert done.returncode == 0, report
    assert re.search(argument, done.stdout, re.MULTILINE), f"expected /{argument}/ in\n{report}"
    assert not [word for word in UNCLEAN if word in done.stderr], report


@pytest.mark.parametrize("sample", TOML_SAMPLES, ids=[s.where for s in TOML_SAMPLES])
def test_toml_sample_is_a_valid_config(sample: Block) -> None:
    """A config sample pasted into a file is accepted (ConfigError names what is wrong)."""
    parse_config(sample.code, source=sample.where)


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


FENCED = re.compile(r"^\s*(```+).*?^\s*\1\s*$", re.MULTILINE | re.DOTALL)


def prose(path: Path) -> str:
    """The file without its code blocks and inline code, where links are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCED.sub("", path.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    """Heading anchors, computed on the headings with their inline code kept."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in FENCED.sub("", path.read_text()).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if heading is None:
            continue
        name = slug(heading.group(1))
        seen = counts.get(name, 0)
        counts[name] = seen + 1
        found.add(name if seen == 0 else f"{name}-{seen}")
    return found


def test_every_relative_link_reaches_a_file_and_heading() -> None:
    """A moved section or file shows here, not as a newcomer's dead link."""
    broken: list[str] = []
    checked = 0
    for path in DOCS:
        for target in LINK.findall(prose(path)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            checked += 1
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}: ({target})"
            if not linked.exists():
                broken.append(f"{where}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors_of(linked):
                broken.append(f"{where}: no heading with anchor #{anchor}")
    assert checked > 20, "hardly any links found: is the extraction broken?"
    assert not broken, "\n".join(broken)
