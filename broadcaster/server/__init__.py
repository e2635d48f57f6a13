"""The I/O adapters around the pure core: WebSocket, HTTP, the writer, the app."""

from __future__ import annotations

from broadcaster.server.app import Broadcaster

__all__ = ["Broadcaster"]
