"""The core stays pure: standard library and orjson only, no I/O, no event loop, no clock."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import broadcaster.core

CORE = Path(broadcaster.core.__file__).parent
CORE_MODULES = sorted(CORE.glob("*.py"))

# Standard-library modules the core must not use even so: I/O, event loops, threads, clocks.
FORBIDDEN = frozenset(
    {
        "asyncio",
        "socket",
        "selectors",
        "ssl",
        "threading",
        "multiprocessing",
        "subprocess",
        "concurrent",
        "time",
        "datetime",
    }
)
THIRD_PARTY_ALLOWED = frozenset({"orjson"})
FIRST_PARTY_ALLOWED = ("broadcaster.core", "broadcaster.codes")


def imported_modules(source: str, package: str = "broadcaster.core") -> list[str]:
    """Every module `source` imports (absolute names), including lazy and dynamic imports."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module in ("broadcaster", "broadcaster.core") or not node.module:
                found.extend(f"{module}.{alias.name}" for alias in node.names)
            else:
                found.append(module)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in ("__import__", "import_module"):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append(arg.value)
                else:
                    found.append("<dynamic>")
    return found


def forbidden_imports(source: str) -> list[str]:
    """The imports of `source` a core module may not have."""
    bad: list[str] = []
    for module in imported_modules(source):
        top = module.split(".")[0]
        if module.startswith("broadcaster"):
            ok = any(module == p or module.startswith(p + ".") for p in FIRST_PARTY_ALLOWED)
        elif top in FORBIDDEN:
            ok = False
        else:
            ok = top in sys.stdlib_module_names or top in THIRD_PARTY_ALLOWED
        if not ok:
            bad.append(module)
    return bad


def test_every_core_module_is_checked() -> None:
    """The purity check sees the whole core, so it cannot pass by looking at nothing."""
    names = {path.stem for path in CORE_MODULES}
    assert names >= {
        "__init__",
        "message",
        "strategies",
        "flow_control",
        "slow_consumer",
        "subscription",
        "outbox",
        "channel",
        "hub",
        "policy",
        "history",
        "ops",
        "events",
        "stats",
    }


@pytest.mark.parametrize("path", CORE_MODULES, ids=[p.stem for p in CORE_MODULES])
def test_core_module_imports_only_stdlib_and_orjson(path: Path) -> None:
    """Each core module can run without sockets, an event loop, metrics or Redis."""
    assert forbidden_imports(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "from asyncio import Future",
        "import websockets",
        "from websockets.frames import Frame",
        "import prometheus_client",
        "import redis.asyncio",
        "from socket import socket",
        "import time",
        "from datetime import datetime",
        "import numpy",
        "from broadcaster.server import app",
        "from broadcaster import config",
        "from broadcaster.errors import ConfigError",
        "from ..server import app",
        "from .. import cli",
        "def f():\n    import asyncio",
        "if TYPE_CHECKING:\n    import websockets",
        "__import__('redis')",
        "importlib.import_module('asyncio')",
        "importlib.import_module(name)",
    ],
)
def test_checker_catches_forbidden_imports(source: str) -> None:
    """The checker itself flags every kind of forbidden import (so the test can fail)."""
    assert forbidden_imports(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import collections",
        "from collections.abc import Hashable",
        "import orjson",
        "from broadcaster.core import events",
        "from broadcaster.core.message import Message",
        "from broadcaster.codes import ErrorCode",
        "from . import events",
        "from .message import Message",
    ],
)
def test_checker_allows_what_the_core_may_use(source: str) -> None:
    """Standard library, orjson, other core modules and the codes table are allowed."""
    assert forbidden_imports(source) == []
