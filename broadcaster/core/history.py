"""A channel's retained tail of messages, for `subscribe` with `since`.

Bounded by count (`history_size`) and by age (`history_ttl` seconds); time
is passed in so tests can age messages without sleeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from broadcaster.core.message import Message

__all__ = ["History", "Recovery", "reaches_back"]


@dataclass(frozen=True, slots=True)
class Recovery:
    """The answer to "what did I miss since seq K?".

    `recovered` is true when every message after K is in `messages` (possibly
    none); otherwise `oldest_seq` is the oldest seq still retained (LAST + 1
    when nothing is) and the client must resync from its source of truth.
    """

    recovered: bool
    messages: list[Message]
    oldest_seq: int


def reaches_back(since: int, *, last_seq: int, oldest_retained: int | None) -> tuple[bool, int]:
    """Whether retained history covers every seq in (since, last_seq], and the oldest seq.

    The one rule both brokers apply (the memory broker to its ring buffer,
    the Redis broker to the stream's tail): returns (recovered, oldest_seq),
    where oldest_seq is the oldest retained seq, or `last_seq + 1` when
    nothing is retained.
    """
    oldest = last_seq + 1 if oldest_retained is None else oldest_retained
    if since == last_seq:
        return True, last_seq + 1
    if since > last_seq:
        # The client is ahead of this channel (it restarted without the new
        # epoch reaching the client): it resyncs from what is retained.
        return False, oldest
    return oldest <= since + 1, oldest


class History:
    """A ring buffer of the last `size` messages of one channel, each kept at most `ttl` s."""

    __slots__ = ("_items", "size", "ttl")

    def __init__(self, size: int, ttl: float) -> None:
        if size < 0:
            raise ValueError(f"history_size must be >= 0, got {size}")
        self.size = size
        self.ttl = ttl
        self._items: deque[Message] = deque(maxlen=size or 1)

    def __len__(self) -> int:
        return len(self._items) if self.size else 0

    def append(self, message: Message) -> None:
        if self.size:
            self._items.append(message)

    def expire(self, now: float) -> None:
        """Forget messages older than `ttl`."""
        items = self._items
        cutoff = now - self.ttl
        while items and items[0].created < cutoff:
            items.popleft()

    def retained(self, now: float) -> list[Message]:
        """The messages still retained at `now`, oldest first."""
        self.expire(now)
        return list(self._items) if self.size else []

    def oldest_seq(self, *, last_seq: int, now: float) -> int:
        """The oldest seq still retained, or `last_seq + 1` when none is."""
        self.expire(now)
        return self._items[0].seq if self.size and self._items else last_seq + 1

    def since(self, seq: int, *, last_seq: int, now: float) -> Recovery:
        """Every retained message with a seq above `seq`, if history reaches back to seq + 1."""
        self.expire(now)
        items = self._items if self.size else deque[Message]()
        recovered, oldest = reaches_back(
            seq, last_seq=last_seq, oldest_retained=items[0].seq if items else None
        )
        if not recovered or seq >= last_seq:
            return Recovery(recovered=recovered, messages=[], oldest_seq=oldest)
        missed = [m for m in items if m.seq > seq]
        return Recovery(recovered=True, messages=missed, oldest_seq=oldest)
