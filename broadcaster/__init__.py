"""broadcaster: a WebSocket fan-out server for live data.

The public API::

    from broadcaster import Broadcaster, Config, load_config
"""

from __future__ import annotations

from broadcaster.config import Config, load_config
from broadcaster.errors import (
    BroadcasterError,
    BrokerUnavailable,
    ChannelBlocked,
    ConfigError,
    ForbiddenChannel,
    InvalidPublish,
    PublishError,
    RateLimited,
    ServerStateError,
    UnknownChannel,
)
from broadcaster.server.app import Broadcaster

__version__ = "0.1.0"

__all__ = [
    "Broadcaster",
    "BroadcasterError",
    "BrokerUnavailable",
    "ChannelBlocked",
    "Config",
    "ConfigError",
    "ForbiddenChannel",
    "InvalidPublish",
    "PublishError",
    "RateLimited",
    "ServerStateError",
    "UnknownChannel",
    "__version__",
    "load_config",
]
