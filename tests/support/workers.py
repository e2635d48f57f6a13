"""In-process workers: one `BusServer` and N `Broadcaster(worker=...)` on free loopback ports."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from broadcaster.config import parse_config
from broadcaster.server.app import Broadcaster
from broadcaster.workers.bus import BusServer
from broadcaster.workers.identity import WorkerIdentity
from tests.support.servers import TEST_SERVER_TOML, server_config

__all__ = ["Workers"]


class Workers:
    """A bus and its workers, all on the test's loop; `stop` ends what was started."""

    def __init__(self) -> None:
        # Short: a Unix socket path must fit in 108 bytes (pytest's tmp_path may not).
        self.run_dir = Path(tempfile.mkdtemp(prefix="bus-"))
        self.bus: BusServer | None = None
        self.servers: list[Broadcaster] = []

    async def start(
        self, count: int, extra_toml: str = "", server_toml: str = TEST_SERVER_TOML
    ) -> list[Broadcaster]:
        """Start the bus (once) and `count` workers of a server of `count` workers."""
        if self.bus is None:
            self.bus = BusServer(self.run_dir / "bus.sock", workers=count)
            await self.bus.start()
        config = parse_config(server_config(extra_toml, server_toml), source="<test config>")
        started = []
        for index in range(count):
            server = Broadcaster(config, worker=WorkerIdentity(index, count, self.run_dir))
            await server.start()
            self.servers.append(server)
            started.append(server)
        return started

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()
        if self.bus is not None:
            await self.bus.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)
