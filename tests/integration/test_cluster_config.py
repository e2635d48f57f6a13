"""configs/cluster: the example cluster's files are valid as shipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from broadcaster.config import load_config
from broadcaster.errors import ConfigError

CLUSTER = Path(__file__).resolve().parents[2] / "configs" / "cluster"
TOKEN = "cluster-admin-token-0123456789"


def test_node_config_is_a_redis_node_without_a_feed() -> None:
    """One file for every node: the feed is node 1's `--source` flag, not in the file."""
    config = load_config(CLUSTER / "node.toml", environ={"BROADCASTER_ADMIN_TOKEN": TOKEN})
    assert (config.broker.kind, config.broker.url) == ("redis", "redis://127.0.0.1:6379/0")
    assert config.sources == ()
    assert config.admin.token == TOKEN


def test_node_config_takes_redis_and_prefix_from_the_environment() -> None:
    config = load_config(
        CLUSTER / "node.toml",
        environ={
            "BROADCASTER_ADMIN_TOKEN": TOKEN,
            "BROADCASTER_BROKER_URL": "redis://10.0.0.5:6380/2",
            "BROADCASTER_BROKER_PREFIX": "second:",
        },
    )
    assert (config.broker.url, config.broker.prefix) == ("redis://10.0.0.5:6380/2", "second:")


def test_node_config_refuses_to_run_without_an_admin_token() -> None:
    """Behind nginx every client is loopback: without a token, /stats would be open to all."""
    with pytest.raises(ConfigError) as raised:
        load_config(CLUSTER / "node.toml", environ={})
    assert "BROADCASTER_ADMIN_TOKEN" in str(raised.value)


@pytest.mark.skipif(shutil.which("bash") is None, reason="run.sh is a bash script")
def test_run_sh_renders_a_valid_nginx_config(tmp_path: Path) -> None:
    """`run.sh --check` renders the template for the given ports and `nginx -t` accepts it."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed (apt-get install nginx)")
    result = subprocess.run(
        [
            str(CLUSTER / "run.sh"),
            *("--check", "--nodes", "4", "--base-port", "9101", "--nginx-port", "9100"),
            *("--nginx", nginx, "--run-dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered = (tmp_path / "nginx.conf").read_text()
    assert "listen 127.0.0.1:9100;" in rendered
    servers = [
        line.split()[1] for line in rendered.splitlines() if line.strip().startswith("server 1")
    ]
    assert servers == [f"127.0.0.1:{port}" for port in (9101, 9102, 9103, 9104)]
    assert "@" not in rendered.replace("@ signs", ""), "every placeholder replaced"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "--nodes"),
        (["--nginx-port", "8802"], "one of the nodes' ports"),
        (["--redis-url", "redis://x", "--redis-port", "6390"], "not both"),
        (["--admin-token", "short"], "at least 16 characters"),
        (["--base-port", "65535", "--nodes", "2"], "65535"),
    ],
)
def test_run_sh_refuses_bad_flags_and_says_why(args: list[str], message: str) -> None:
    result = subprocess.run(
        [str(CLUSTER / "run.sh"), *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr
