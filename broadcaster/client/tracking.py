"""Per-channel seq bookkeeping: which messages were missed, what to ask for on resubscribe.

Pure (no socket, no loop), the same rules as the JS client's `SeqTracker`:
- a jump in `seq` is a gap of exactly the skipped count;
- a seq at or below the last one is a duplicate and is not delivered;
- conflate channels skip channel-wide detection (seqs only grow per key);
- after a resubscribe with `since`, `recovered: false` in the same epoch is one
  gap covering everything up to the reply's seq; a new epoch means the channel
  restarted from 1, so what was known is forgotten (no false gap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Gap", "SeqTracker"]


@dataclass(frozen=True, slots=True)
class Gap:
    """`missed` messages of `channel` never arrived: seqs `from_seq`..`to_seq`."""

    channel: str
    missed: int
    from_seq: int
    to_seq: int


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

    def subscribed(self, reply: dict[str, Any], since: int | None) -> Gap | None:
        """A `subscribed` reply to a subscribe sent with `since` (or None)."""
        self.conflate = reply.get("strategy") == "conflate"
        last = int(reply["seq"])
        epoch = reply.get("epoch")
        same_history = since is not None and (self.epoch is None or epoch == self.epoch)
        gap = None
        if same_history and reply.get("recovered") is True:
            self.seq = since  # the missed messages follow, then the live stream
        else:
            if same_history and since is not None and last > since:
                gap = Gap(str(reply["channel"]), last - since, since + 1, last)
            self.seq = last
        self.epoch = epoch if isinstance(epoch, str) else None
        return gap

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
