"""System channels (`$sys.*`): owned by the server, local to this node.

Clients may subscribe (the dashboard listens on `$sys.stats`) but never
publish (`forbidden`, enforced in the session). What the server publishes
there describes *this* process, so it goes straight to the local
subscribers, never through the broker: with a shared broker every node
would otherwise mix its statistics into every other node's stream.

System channels have their own policy, ahead of every `[channels]` entry:
a short drop-oldest queue, because a viewer only needs the newest document
and a dashboard on a slow link must not make the server hold many of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broadcaster.core.channel import Channel
from broadcaster.core.ops import SYSTEM_PREFIX
from broadcaster.core.policy import ChannelPolicy, PolicyTable
from broadcaster.core.strategies import Strategy

if TYPE_CHECKING:
    from broadcaster.brokers.base import MessageFactory

__all__ = [
    "STATS_CHANNEL",
    "SYSTEM_PATTERN",
    "SYSTEM_POLICY",
    "SYSTEM_PREFIX",
    "is_system",
    "publish_local",
    "with_system_policy",
]

# Defined with the op rules (core.ops) and re-exported here for the adapters.
SYSTEM_PATTERN = "$sys.*"
STATS_CHANNEL = "$sys.stats"

SYSTEM_POLICY = ChannelPolicy(
    strategy=Strategy.DROP_OLDEST,
    queue_size=4,
    slow_consumer_timeout=10.0,
    label=SYSTEM_PATTERN,
)


def is_system(name: str) -> bool:
    return name.startswith(SYSTEM_PREFIX)


def with_system_policy(table: PolicyTable) -> PolicyTable:
    """`table` with the `$sys.*` entry first: strict configs accept it, nothing overrides it."""
    return PolicyTable(
        table.defaults, ((SYSTEM_PATTERN, SYSTEM_POLICY), *table.entries), table.strict
    )


def publish_local(factory: MessageFactory, channel: Channel, data: Any) -> int:
    """Publish `data` to this node's subscribers of a system channel only; returns its seq."""
    seq = channel.last_seq + 1
    channel.fan_out(factory.build(channel, seq, data))
    return seq
