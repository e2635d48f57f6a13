"""The Python asyncio client for broadcaster.

    from broadcaster.client import connect

    async with connect("ws://127.0.0.1:8765/ws") as client:
        async for msg in client.subscribe("tickers.demo"):
            print(msg.channel, msg.seq, msg.data)

It reconnects with exponential backoff and full jitter (a long wait after
close 4008 / 1013 / 4029 or HTTP 503 / 429, honouring Retry-After), resubscribes
with `since` so a server with history replays what was missed, reports what
could not be replayed as `gap` events with the exact count, reports a channel
whose seq history restarted (a new epoch) as a `reset` event, pings to detect a
dead connection, and holds publishes while the server pauses this publisher.
The events and rules are those of the browser client, clients/js/broadcaster.js.
"""

from __future__ import annotations

from broadcaster.client.backoff import Backoff, BackoffStep, close_policy, http_policy
from broadcaster.client.client import Client, connect
from broadcaster.client.errors import (
    ClientClosed,
    ClientError,
    ConnectFailed,
    ConnectionLost,
    QueueFull,
    ServerError,
)
from broadcaster.client.events import (
    Connected,
    Disconnected,
    Gap,
    Message,
    Pause,
    Reconnecting,
    Reset,
    Resume,
    Subscribed,
)
from broadcaster.client.subscription import Subscription
from broadcaster.client.tracking import SeqTracker

__all__ = [
    "Backoff",
    "BackoffStep",
    "Client",
    "ClientClosed",
    "ClientError",
    "ConnectFailed",
    "Connected",
    "ConnectionLost",
    "Disconnected",
    "Gap",
    "Message",
    "Pause",
    "QueueFull",
    "Reconnecting",
    "Reset",
    "Resume",
    "SeqTracker",
    "ServerError",
    "Subscribed",
    "Subscription",
    "close_policy",
    "connect",
    "http_policy",
]
