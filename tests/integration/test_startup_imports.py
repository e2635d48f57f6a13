"""A server pays in memory only for the features its configuration uses.

redis-py, PyJWT (with cryptography) and aiohttp cost about 24 MB of RSS per
process together; a server whose configuration uses none of Redis, JWTs and
the HTTP API must not import them, even after serving a client. Checked in a
fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ("redis", "jwt", "cryptography", "aiohttp")

# Starts the server the way `broadcaster serve` does (the CLI module is
# imported, the config loaded from a file), serves one subscribe and one
# publish over a real WebSocket, then reports which heavy libraries it loaded.
PROBE = textwrap.dedent(
    """
    import asyncio, json, sys

    import broadcaster.cli
    from broadcaster import Broadcaster, load_config
    from websockets.asyncio.client import connect

    async def main() -> None:
        server = Broadcaster(load_config(sys.argv[1], environ={}))
        await server.start()
        try:
            async with connect(server.url) as ws:
                await ws.send(json.dumps({"op": "subscribe", "channel": "a"}))
                assert json.loads(await ws.recv())["event"] == "subscribed"
                await ws.send(json.dumps({"op": "publish", "channel": "a", "data": 1}))
                for _ in range(5):  # the message, perhaps after other events
                    if json.loads(await asyncio.wait_for(ws.recv(), 10)).get("data") == 1:
                        break
                else:
                    raise AssertionError("the published message did not arrive")
        finally:
            await server.stop()

    broadcaster.cli.run(main())
    print(json.dumps(sorted(m for m in sys.argv[2:] if m in sys.modules)))
    """
)

BASE_TOML = """
[server]
host = "127.0.0.1"
port = 0
"""


def _loaded(tmp_path: Path, toml: str) -> list[str]:
    config = tmp_path / "server.toml"
    config.write_text(toml)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(config), *HEAVY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_server_without_redis_jwt_or_api_does_not_import_them(tmp_path: Path) -> None:
    assert _loaded(tmp_path, BASE_TOML + "\n[api]\nenabled = false\n") == []


def test_the_http_api_still_loads_aiohttp_when_enabled(tmp_path: Path) -> None:
    """The other side of the check above: the probe does see a library a feature uses."""
    toml = BASE_TOML + '\n[api]\nenabled = true\nhost = "127.0.0.1"\nport = 0\n'
    assert "aiohttp" in _loaded(tmp_path, toml)
