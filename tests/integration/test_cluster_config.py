"""configs/cluster: the example cluster's files are valid as shipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from broadcaster.config import load_config

CLUSTER = Path(__file__).resolve().parents[2] / "configs" / "cluster"


def test_node_configs_form_one_cluster() -> None:
    configs = [load_config(CLUSTER / f"node{n}.toml", environ={}) for n in (1, 2, 3)]
    assert {c.broker.kind for c in configs} == {"redis"}
    assert len({c.broker.url for c in configs}) == 1
    assert len({c.broker.prefix for c in configs}) == 1, "one prefix: one set of channels"
    assert sorted(c.server.port for c in configs) == [8801, 8802, 8803]
    assert sum(len(c.sources) for c in configs) == 1, "one feed, not one per node"
    nginx = (CLUSTER / "nginx.conf").read_text()
    for port in (8801, 8802, 8803):
        assert f"127.0.0.1:{port}" in nginx


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")
def test_nginx_config_is_valid(tmp_path: Path) -> None:
    result = subprocess.run(
        ["nginx", "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(CLUSTER / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
