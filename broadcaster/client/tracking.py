"""Per-channel seq bookkeeping: which messages were missed, what to ask for on resubscribe.

Pure (no socket, no loop), the same rules as the JS client's `SeqTracker`:
- a jump in `seq` is a gap of exactly the skipped count;
- a seq at or below the last one is a duplicate and is not delivered;
- conflate channels skip channel-wide detection (seqs only grow per key);
- after a resubscribe with `since`, `recovered: false` in the same epoch is one
  gap covering everything up to the reply's seq;
- a new epoch (a `subscribed` naming another epoch than the tracked one, or an
  in-band `subscribed` with `reset: true`) means the channel restarted from 1:
  what was known is forgotten (no false gap, and the new epoch's seqs are not
  mistaken for duplicates of the old one's) and a `Reset` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Gap", "Reset", "SeqTracker"]


@dataclass(frozen=True, slots=True)
class Gap:
    """`missed` messages of `channel` never arrived: seqs `from_seq`..`to_seq`."""

    channel: str
    missed: int
    from_seq: int
    to_seq: int


@dataclass(frozen=True, slots=True)
class Reset:
    """`channel`'s seq history restarted: seqs now count from 1 again under `epoch`.

    Redis lost the channel's stream, the server restarted, or the channel was
    freed after `idle_channel_ttl` and used again. Whatever this client had
    not received of the old history is lost with it: resync from your own
    source of truth.
    """

    channel: str
    old_epoch: str | None
    """The epoch this client knew (None if it never learnt one)."""
    epoch: str
    """The new epoch."""
    last_seq: int | None
    """The last seq of the old epoch this client saw (None if none)."""
    missed: int | None
    """How many messages of the old epoch after `last_seq` were lost; None: unknown.

    Known when the server names the epoch it replaced (`previous_epoch`,
    `previous_seq`: the Redis broker does) and it is the one this client
    followed: `previous_seq - last_seq`. Otherwise None (a freed channel, a
    restarted server): treat it as "possibly some", never as 0.
    """
    seq: int
    """The new epoch's seq when this client joined it: 0 on an in-band reset
    (every message of the new epoch follows, from seq 1); on a resubscribe,
    seqs 1..`seq` were published before it and will not be delivered."""


class SeqTracker:
    """The last seq and epoch seen on one channel."""

    __slots__ = ("conflate", "epoch", "seq")

    def __init__(self, since: int | None = None, epoch: str | None = None) -> None:
        self.seq = since
        self.epoch = epoch if since is not None else None
        self.conflate = False

    def resume_from(self) -> tuple[int, str | None] | None:
        """(since, epoch) for the next subscribe, or None when nothing was seen yet."""
        return None if self.seq is None else (self.seq, self.epoch)

    def subscribed(
        self, reply: dict[str, Any], since: int | None
    ) -> tuple[Gap | None, Reset | None]:
        """A `subscribed` reply to a subscribe sent with `since` (or None): (gap, reset)."""
        self.conflate = reply.get("strategy") == "conflate"
        last = int(reply["seq"])
        epoch = reply.get("epoch")
        new_epoch = isinstance(epoch, str) and self.epoch is not None and epoch != self.epoch
        reset = self._reset(str(reply["channel"]), reply, last) if new_epoch else None
        same_history = since is not None and not new_epoch
        gap = None
        if same_history and reply.get("recovered") is True:
            self.seq = since  # the missed messages follow, then the live stream
        else:
            if same_history and since is not None and last > since:
                gap = Gap(str(reply["channel"]), last - since, since + 1, last)
            self.seq = last
        self.epoch = epoch if isinstance(epoch, str) else None
        return gap, reset

    def reset(self, notice: dict[str, Any]) -> Reset:
        """An in-band `subscribed` with `reset: true`: seq starts again from 1 in a new epoch.

        Every message of the old epoch this node had delivered is ahead of
        the notice; the new epoch's messages follow it from seq 1.
        """
        self.conflate = notice.get("strategy") == "conflate"
        reset = self._reset(str(notice["channel"]), notice, 0)
        self.seq = 0
        self.epoch = reset.epoch
        return reset

    def _reset(self, channel: str, reply: dict[str, Any], last: int) -> Reset:
        previous_seq = reply.get("previous_seq")
        missed = None
        if (
            self.epoch is not None
            and reply.get("previous_epoch") == self.epoch
            and isinstance(previous_seq, int)
        ):
            missed = max(0, previous_seq - (self.seq or 0))
        return Reset(channel, self.epoch, str(reply.get("epoch", "")), self.seq, missed, last)

    def message(self, channel: str, seq: int, snapshot: bool = False) -> tuple[bool, Gap | None]:
        """(deliver, gap) for a message with `seq`."""
        if snapshot:
            return True, None  # seq <= LAST, sent before the live stream
        if self.conflate:
            if self.seq is None or seq > self.seq:
                self.seq = seq
            return True, None
        if self.seq is not None and seq <= self.seq:
            return False, None
        gap = None
        if self.seq is not None and seq > self.seq + 1:
            gap = Gap(channel, seq - self.seq - 1, self.seq + 1, seq - 1)
        self.seq = seq
        return True, gap
