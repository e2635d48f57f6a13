"""What a fresh machine installs is pinned, and what a user installs is a clean wheel.

The README's commands install with `-c constraints.txt`: a package the tests
run with that is missing there would float to its newest release on the next
fresh machine (mypy 2.4 and redis 8.2 once broke CI that way). The wheel is
what users of the library get: their site-packages must hold `broadcaster`
only, under a distribution name of its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt: {line!r} is not pinned with =="
        found[canonicalize_name(name)] = version
    return found


def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def requirements(*extras: str) -> list[Requirement]:
    meta = project()
    listed = list(meta["dependencies"])  # type: ignore[call-overload]
    optional = meta["optional-dependencies"]
    for extra in extras:
        listed += optional[extra]  # type: ignore[index]
    return [Requirement(text) for text in listed]


def test_constraints_pin_every_runtime_test_and_loadtool_dependency() -> None:
    """Each package named in pyproject (runtime, test, loadtest) has an exact pin."""
    pinned = pins()
    missing = [
        r.name
        for r in requirements("test", "loadtest")
        if canonicalize_name(r.name) not in pinned and (r.marker is None or r.marker.evaluate())
    ]
    assert missing == [], f"add these to constraints.txt (bash .ci/refresh-pins): {missing}"


def test_every_pin_lies_in_the_range_pyproject_allows() -> None:
    """A pin outside the tested range would make pip refuse the README's commands."""
    pinned = pins()
    outside = [
        f"{r.name}=={pinned[canonicalize_name(r.name)]} not in {r.specifier}"
        for r in requirements("test", "loadtest")
        if canonicalize_name(r.name) in pinned
        and not r.specifier.contains(pinned[canonicalize_name(r.name)], prereleases=True)
    ]
    assert outside == []


def test_runtime_dependencies_have_an_upper_bound() -> None:
    """Users of the library are not moved onto an untested major release."""
    unbounded = [str(r) for r in requirements() if not any(s.operator == "<" for s in r.specifier)]
    assert unbounded == []


def test_the_wheel_installs_broadcaster_only_under_its_own_distribution_name(
    tmp_path: Path,
) -> None:
    """No top-level `loadtest` in site-packages; the license and the static pages ship."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=100,
    )
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith("broadcaster_fanout-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    top_level = {name.split("/", 1)[0] for name in names} - {metadata.split("/", 1)[0]}
    assert top_level == {"broadcaster"}
    assert re.search(r"^Name: broadcaster-fanout$", text, re.M)
    assert re.search(r"^License-Expression: MIT$", text, re.M)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "broadcaster/static/broadcaster.js" in names
    assert "broadcaster/static/examples/tickers.html" in names  # served at /examples/
    assert "broadcaster/py.typed" in names
