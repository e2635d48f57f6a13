"""What the local bus holds per channel: epoch, seq, history, snapshot, interest.

Pure: time is an argument, no I/O; `BusServer` (workers/bus.py) applies the
frames to it and writes what it returns. The rules are the hub's
(core/hub.py), applied once for the whole server instead of once per process:

- seq: `last_seq + 1` per publish, whatever worker published it.
- epoch: `<token>` for a name first used in this bus run, `<token>.<frees>`
  for one created after any channel was freed (the token is random per bus
  run, so a restarted server's epochs never repeat).
- a channel that keeps no messages (no history, no snapshot) is freed as soon
  as no worker is interested in it (no worker has it prepared); its epoch and
  seq rest (`resting`, at most `RESTING_MAX`), so its next use goes on from
  them, as in one process.
- a channel that keeps messages is freed after `kept` seconds with no
  interested worker and no publish (`sweep`): its history has expired by
  then (kept >= history_ttl), and a later use starts a new epoch.
- with `kept` None (`idle_channel_ttl = 0`) no channel is ever freed.

`Spec` is what a worker tells the bus of a channel's policy with each publish
and subscribe (every worker runs the same config).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from broadcaster.core.channel import SNAPSHOT_MAX_KEYS
from broadcaster.core.hub import IDLE_SWEEP_BUDGET, RESTING_MAX, starting_point

__all__ = ["BusChannel", "BusChannels", "Entry", "Spec", "mark_full"]


@dataclass(frozen=True, slots=True)
class Spec:
    """A channel's policy as far as the bus needs it."""

    history_size: int = 0
    history_ttl: float = 0.0
    snapshot: bool = False
    kept: float | None = None
    """Seconds kept unused (`ChannelPolicy.kept_unused(idle_ttl)`); None: never freed."""

    @property
    def keeps_messages(self) -> bool:
        return self.history_size > 0 or self.snapshot


class Entry:
    """One sequenced message: its seq, the publisher's timestamp, its data as published."""

    __slots__ = ("created", "data", "seq", "stamped")

    def __init__(self, seq: int, created: float, data: bytes, stamped: float) -> None:
        self.seq = seq
        self.created = created
        """The publishing worker's monotonic time (the message's `created` everywhere)."""
        self.data = data
        self.stamped = stamped
        """The bus's time when it sequenced it: what its history_ttl counts from."""


class BusChannel:
    """One channel's shared state."""

    __slots__ = ("epoch", "history", "interested", "last_seq", "latest", "name", "spec", "used")

    def __init__(self, name: str, epoch: str, last_seq: int, spec: Spec, now: float) -> None:
        self.name = name
        self.epoch = epoch
        self.last_seq = last_seq
        self.spec = spec
        self.history: deque[Entry] = deque(maxlen=max(1, spec.history_size))
        self.latest: dict[bytes, Entry] | None = {} if spec.snapshot else None
        """Snapshot channels: the newest entry per conflation key (the key as JSON)."""
        self.interested: set[int] = set()
        """Workers that have the channel prepared: each gets every message."""
        self.used = now

    def adopt(self, spec: Spec) -> None:
        """Use the policy the newest frame carried (a config is the same on every worker)."""
        if spec == self.spec:
            return
        if spec.history_size != self.spec.history_size:
            self.history = deque(self.history, maxlen=max(1, spec.history_size))
            if not spec.history_size:
                self.history.clear()
        if spec.snapshot and self.latest is None:
            self.latest = {}
        elif not spec.snapshot:
            self.latest = None
        self.spec = spec

    def retained(self, now: float) -> list[Entry]:
        """The history still within history_ttl, oldest first."""
        history = self.history
        if not self.spec.history_size:
            return []
        cutoff = now - self.spec.history_ttl
        while history and history[0].stamped < cutoff:
            history.popleft()
        return list(history)

    def snapshot(self) -> list[Entry]:
        """The newest entry of every key, in seq order."""
        if not self.latest:
            return []
        return sorted(self.latest.values(), key=lambda entry: entry.seq)


class BusChannels:
    """Every channel the bus knows, and the rules that create and free them."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.channels: dict[str, BusChannel] = {}
        self.resting: dict[str, tuple[str, int]] = {}
        """Channels freed early: name -> (epoch, last_seq), oldest first."""
        self.freed = 0
        # Keeping channels nobody is interested in: candidates for `sweep`.
        self._idle: dict[str, None] = {}

    def _get(self, name: str, spec: Spec, now: float) -> BusChannel:
        channel = self.channels.get(name)
        if channel is None:
            epoch, last_seq = starting_point(self.resting, name, self.token, self.freed)
            channel = self.channels[name] = BusChannel(name, epoch, last_seq, spec, now)
        else:
            channel.adopt(spec)
        return channel

    def publish(
        self,
        name: str,
        spec: Spec,
        data: bytes,
        created: float,
        now: float,
        key: bytes | None = None,
    ) -> BusChannel:
        """Sequence one message; the caller sends it to `channel.interested` (seq = last_seq).

        The returned channel may have been freed already (it keeps nothing and
        nobody is interested): its fields are still the message's.
        """
        channel = self._get(name, spec, now)
        seq = channel.last_seq = channel.last_seq + 1
        channel.used = now
        if spec.history_size or channel.latest is not None:
            entry = Entry(seq, created, data, now)
            if spec.history_size:
                channel.history.append(entry)
            latest = channel.latest
            if latest is not None and key is not None:
                latest.pop(key, None)
                latest[key] = entry
                if len(latest) > SNAPSHOT_MAX_KEYS:
                    del latest[next(iter(latest))]
        self._settle(channel)
        return channel

    def subscribe(self, name: str, worker: int, spec: Spec, now: float) -> BusChannel:
        """`worker` prepares the channel: from the reply on it gets every message."""
        channel = self._get(name, spec, now)
        channel.interested.add(worker)
        self._idle.pop(name, None)
        return channel

    def unsubscribe(self, name: str, worker: int, now: float) -> None:
        """`worker` freed its copy of the channel."""
        channel = self.channels.get(name)
        if channel is None or worker not in channel.interested:
            return
        channel.interested.discard(worker)
        channel.used = now
        self._settle(channel)

    def worker_gone(self, worker: int, now: float) -> None:
        """A worker's connection ended: it is interested in nothing any more."""
        for channel in [c for c in self.channels.values() if worker in c.interested]:
            channel.interested.discard(worker)
            channel.used = now
            self._settle(channel)

    def _settle(self, channel: BusChannel) -> None:
        """Free a channel nobody is interested in that keeps nothing; watch a keeping one."""
        if channel.interested or channel.spec.kept is None:
            return
        if channel.spec.keeps_messages:
            self._idle[channel.name] = None
            return
        if self.channels.get(channel.name) is channel:
            self._free(channel)
            resting = self.resting
            resting[channel.name] = (channel.epoch, channel.last_seq)
            if len(resting) > RESTING_MAX:
                del resting[next(iter(resting))]

    def sweep(self, now: float, budget: int = IDLE_SWEEP_BUDGET) -> list[str]:
        """Free keeping channels unused (no interest, no publish) for their `kept` seconds.

        Looks at up to `budget` candidates (round-robin); returns the names freed.
        """
        freed: list[str] = []
        idle = self._idle
        for name in list(itertools.islice(idle, budget)):
            del idle[name]
            channel = self.channels.get(name)
            if channel is None or channel.interested or channel.spec.kept is None:
                continue
            if now >= channel.used + channel.spec.kept:
                self._free(channel)
                freed.append(name)
            else:
                idle[name] = None
        return freed

    def _free(self, channel: BusChannel) -> None:
        del self.channels[channel.name]
        self._idle.pop(channel.name, None)
        self.freed += 1


def mark_full(full: dict[str, set[int]], name: str, worker: int, is_full: bool) -> bool:
    """Record that `worker` has (or no longer has) a full subscriber of `name`.

    The bus and every worker keep this map of `block` channels; a report
    repeated or about a worker not recorded changes nothing. Returns whether
    it changed (only a change is relayed or counted into the channel).
    """
    workers = full.get(name)
    if is_full:
        if workers is None:
            workers = full[name] = set()
        if worker in workers:
            return False
        workers.add(worker)
        return True
    if workers is None or worker not in workers:
        return False
    workers.discard(worker)
    if not workers:
        del full[name]
    return True
