"""The pure core of broadcaster: no sockets, no event loop, time passed in.

Queues, strategies, watermarks, the slow-consumer rule and the channel
registry live here as plain objects, so a unit test drives every transition
in microseconds. This package imports the standard library and orjson only;
`tests/unit/test_core_purity.py` enforces it.
"""

from __future__ import annotations

from broadcaster.core.channel import Channel
from broadcaster.core.flow_control import FlowControl
from broadcaster.core.hub import Hub
from broadcaster.core.message import Message
from broadcaster.core.outbox import Outbox
from broadcaster.core.policy import ChannelPolicy, PolicyTable
from broadcaster.core.slow_consumer import SlowConsumerRule
from broadcaster.core.strategies import DropReason, Strategy
from broadcaster.core.subscription import Subscription

__all__ = [
    "Channel",
    "ChannelPolicy",
    "DropReason",
    "FlowControl",
    "Hub",
    "Message",
    "Outbox",
    "PolicyTable",
    "SlowConsumerRule",
    "Strategy",
    "Subscription",
]
