"""The in-memory broker: one process, seq per channel, history in a ring buffer.

It is both the default and the reference for other brokers: publish assigns
`last_seq + 1` and fans out synchronously, so nothing can interleave between
the seq assignment and the delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broadcaster.brokers.base import BrokerStatus, MessageFactory
from broadcaster.core.channel import Channel
from broadcaster.core.history import History, Recovery

__all__ = ["MemoryBroker"]


class MemoryBroker:
    """Seq and history of this process's channels; the epoch names the seq history.

    A channel the hub frees starts again at seq 1 when used later, under the
    new epoch the hub gives it.
    """

    name = "memory"

    def __init__(self, factory: MessageFactory, clock: Callable[[], float]) -> None:
        self._factory = factory
        self._clock = clock
        self._history: dict[str, History] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._history.clear()

    def history_of(self, channel: Channel) -> History | None:
        return self._history.get(channel.name)

    async def publish(self, channel: Channel, data: Any) -> int:
        seq = channel.last_seq + 1
        message = self._factory.build(channel, seq, data)
        policy = channel.policy
        if policy.history_size:
            history = self._history.get(channel.name)
            if history is None:
                history = self._history[channel.name] = History(
                    policy.history_size, policy.history_ttl
                )
            history.append(message)
        channel.fan_out(message)
        return seq

    async def prepare(self, channel: Channel) -> None:
        """Nothing to do: this process assigns every seq itself."""
        return None

    async def recover(self, channel: Channel, since: int, epoch: str | None) -> Recovery:
        last = channel.last_seq
        history = self._history.get(channel.name) or History(0, channel.policy.history_ttl)
        if epoch is not None and epoch != channel.epoch:
            oldest = history.oldest_seq(last_seq=last, now=self._clock())
            return Recovery(recovered=False, messages=[], oldest_seq=oldest)
        return history.since(since, last_seq=last, now=self._clock())

    def status(self) -> BrokerStatus:
        return BrokerStatus(kind=self.name, up=True)

    def channel_active(self, channel: Channel) -> None:
        return None

    def channel_idle(self, channel: Channel) -> None:
        return None

    def channel_room(self, channel: Channel) -> None:
        return None

    def channel_freed(self, channel: Channel) -> None:
        # Freed only after history_ttl without a publish: nothing in it is still retained.
        self._history.pop(channel.name, None)
