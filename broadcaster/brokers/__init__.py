"""Brokers: where a channel's seq is assigned and messages are shared between nodes.

`memory` (the default and the reference) keeps everything in this process;
other backends implement the same narrow interface in `base.Broker`.
"""

from __future__ import annotations

from broadcaster.brokers.base import Broker, BrokerStatus, MessageFactory
from broadcaster.brokers.memory import MemoryBroker

__all__ = ["Broker", "BrokerStatus", "MemoryBroker", "MessageFactory"]
