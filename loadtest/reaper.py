"""Every child process the tool starts is registered here and killed on the way out.

Normal runs stop their children in ``finally`` blocks; this module is the backstop
for everything else (an exception between two steps, Ctrl-C, SIGTERM), so no
server or worker outlives the tool. Servers run in their own session so that a
wrapper command and whatever it started die together.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
from multiprocessing.process import BaseProcess
from types import FrameType

__all__ = ["install_signal_handlers", "kill_all", "register", "stop_popen", "unregister"]

_lock = threading.Lock()
_children: list[subprocess.Popen[bytes] | BaseProcess] = []


def register(child: subprocess.Popen[bytes] | BaseProcess) -> None:
    """Remember a child so :func:`kill_all` can end it."""
    with _lock:
        _children.append(child)


def unregister(child: subprocess.Popen[bytes] | BaseProcess) -> None:
    """Forget a child that has been stopped cleanly."""
    with _lock, contextlib.suppress(ValueError):
        _children.remove(child)


def stop_popen(proc: subprocess.Popen[bytes], grace: float = 3.0) -> int | None:
    """SIGTERM the child's process group, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
    else:
        # The leader is gone but a wrapper's children may remain in its group.
        _signal_group(proc.pid, signal.SIGKILL)
    unregister(proc)
    return proc.returncode


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_all() -> None:
    """Kill every registered child that is still running (idempotent)."""
    with _lock:
        children = list(_children)
        _children.clear()
    for child in children:
        if isinstance(child, subprocess.Popen):
            stop_popen(child, grace=1.0)
        elif child.is_alive():
            child.kill()
            child.join(timeout=2.0)


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so cleanup runs as for Ctrl-C."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


atexit.register(kill_all)
