"""Resident memory of `broadcaster serve` right after start-up, per configuration.

What a process holds before its first client is paid once per process (and
per node of a cluster); most of it is the libraries it imports. This starts
the server with each configuration in turn (interleaved, `--repeat` rounds),
waits for `/healthz` to answer, lets it settle, reads `VmRSS` from
/proc/PID/status and stops it; it prints the median per configuration.

    python -m loadtest.startup_rss --config default --config loadtest/configs/drop-oldest.toml

`default` means no `--config` (the built-in default configuration, with the
HTTP API and the demo ticker). Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

from loadtest.targets import free_port

__all__ = ["main", "startup_rss_kb"]

STARTUP_TIMEOUT = 20.0
SETTLE = 1.0


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def startup_rss_kb(config: str) -> int:
    """RSS (KiB) of one `broadcaster serve` with `config` ("default": none) once it answers."""
    port, api_port = free_port(), free_port()
    command = [sys.executable, "-m", "broadcaster", "--log-level", "WARNING", "serve"]
    if config != "default":
        command += ["--config", config]
    command += ["--port", str(port), "--api-port", str(api_port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                errors = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"server exited: {errors}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no answer within {STARTUP_TIMEOUT} s") from None
                time.sleep(0.05)
        time.sleep(SETTLE)
        return _rss_kb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.startup_rss", description=__doc__)
    parser.add_argument(
        "--config", action="append", required=True, help="a config path, or default"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    samples: dict[str, list[int]] = {c: [] for c in args.config}
    for _ in range(args.repeat):
        for config in args.config:
            samples[config].append(startup_rss_kb(config))
    for config, values in samples.items():
        print(
            f"{config}: median {statistics.median(values) / 1024:.1f} MiB "
            f"(runs: {', '.join(f'{v / 1024:.1f}' for v in values)})"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
