"""`[server] workers` (file, BROADCASTER_SERVER_WORKERS, `--workers`) and the restart back-off."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from broadcaster.cli import build_parser
from broadcaster.config import Config, load_config
from broadcaster.errors import ConfigError
from broadcaster.workers.worker import worker_config

CORES = len(os.sched_getaffinity(0))


def load(
    tmp_path: Path, text: str, environ: dict[str, str] | None = None, **flags: object
) -> Config:
    path = tmp_path / "broadcaster.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ=environ or {}, flags=flags)


def test_one_worker_by_default() -> None:
    """Without the key a server is one process, as before workers existed."""
    assert Config.embedded_default().server.workers == 1
    assert Config().server.workers == 1


@pytest.mark.parametrize(("value", "expected"), [("3", 3), ('"auto"', CORES)])
def test_workers_from_the_file(tmp_path: Path, value: str, expected: int) -> None:
    """`workers = 3` runs three; `workers = "auto"` one per usable core."""
    config = load(tmp_path, f"[server]\nport = 9000\nworkers = {value}\n")
    assert config.server.workers == expected


@pytest.mark.parametrize(("text", "expected"), [("4", 4), ("auto", CORES), ('"auto"', CORES)])
def test_workers_from_the_environment(tmp_path: Path, text: str, expected: int) -> None:
    """BROADCASTER_SERVER_WORKERS=4 or =auto (bare or quoted) overrides the file."""
    config = load(tmp_path, "[server]\nworkers = 2\n", {"BROADCASTER_SERVER_WORKERS": text})
    assert config.server.workers == expected


@pytest.mark.parametrize(("flag", "expected"), [("5", 5), ("auto", CORES)])
def test_workers_flag_overrides_the_environment(tmp_path: Path, flag: str, expected: int) -> None:
    """`--workers N|auto` wins over the variable and the file."""
    from broadcaster.cli import _workers_flag

    args = build_parser().parse_args(["serve", "--workers", flag])
    config = load(
        tmp_path,
        "[server]\nworkers = 2\n",
        {"BROADCASTER_SERVER_WORKERS": "3"},
        **{"server.workers": _workers_flag(args.workers)},
    )
    assert config.server.workers == expected


@pytest.mark.parametrize("value", ["0", "-1", '"many"', "1.5", "true"])
def test_bad_workers_are_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    """Anything but an integer >= 1 or "auto" stops the server, naming [server] workers."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[server]\nworkers = {value}\n")
    assert "workers" in info.value.key


def test_bad_workers_variable_names_the_variable(tmp_path: Path) -> None:
    """A wrong value in the environment names the variable, not the file."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "", {"BROADCASTER_SERVER_WORKERS": "lots"})
    assert info.value.source == "BROADCASTER_SERVER_WORKERS"
    assert 'an integer >= 1 or "auto"' in str(info.value)


def test_bad_workers_flag_names_the_flag(tmp_path: Path) -> None:
    """`--workers 0` is refused naming --workers."""
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, flags={"server.workers": 0})
    assert info.value.source == "--workers"


def test_port_0_is_refused_with_several_workers(tmp_path: Path) -> None:
    """Each worker would get a different ephemeral port: refused, saying so."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "[server]\nport = 0\nworkers = 2\n")
    assert info.value.key == "[server] port"
    assert "each worker would listen on a different port" in str(info.value)


def test_api_port_0_is_refused_with_several_workers(tmp_path: Path) -> None:
    """The HTTP API port is shared too: port 0 is refused there as well."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "[server]\nport = 9000\nworkers = 2\n[api]\nenabled = true\nport = 0\n")
    assert info.value.key == "[api] port"


def test_port_0_is_fine_with_one_worker(tmp_path: Path) -> None:
    """One process may still take an ephemeral port (tests, embedding)."""
    assert load(tmp_path, "[server]\nport = 0\nworkers = 1\n").server.port == 0


def test_the_config_reaches_a_worker_exactly() -> None:
    """The supervisor hands the built config over as it is (pickled), sources to worker 0 only."""
    config = Config.embedded_default()
    assert config.sources, "the default config runs the demo ticker"
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config
    assert worker_config(copy, 0) == config
    assert worker_config(copy, 1).sources == ()
    assert worker_config(copy, 1).server == config.server


def test_a_dying_worker_is_restarted_with_back_off() -> None:
    """0.2 s, then doubling while it keeps dying, at most 5 s; back to 0.2 s once it stayed up."""
    from broadcaster.workers.supervisor import restart_delay

    failures = 0
    delays = []
    for _ in range(7):
        failures, delay = restart_delay(failures, lived=0.5)
        delays.append(delay)
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert restart_delay(failures, lived=60.0) == (1, 0.2)
