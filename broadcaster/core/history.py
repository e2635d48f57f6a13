"""A channel's retained tail of messages, for `subscribe` with `since`.

Bounded by count (`history_size`) and by age (`history_ttl` seconds); time
is passed in so tests can age messages without sleeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from broadcaster.core.message import Message

__all__ = ["History", "Recovery"]


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

    def oldest_seq(self, *, last_seq: int, now: float) -> int:
        """The oldest seq still retained, or `last_seq + 1` when none is."""
        self.expire(now)
        return self._items[0].seq if self.size and self._items else last_seq + 1

    def since(self, seq: int, *, last_seq: int, now: float) -> Recovery:
        """Every retained message with a seq above `seq`, if history reaches back to seq + 1."""
        if seq == last_seq:
            return Recovery(recovered=True, messages=[], oldest_seq=last_seq + 1)
        if seq > last_seq:
            # The client is ahead of this channel (it restarted without a new
            # epoch reaching the client): it must resync from what is retained.
            oldest = self.oldest_seq(last_seq=last_seq, now=now)
            return Recovery(recovered=False, messages=[], oldest_seq=oldest)
        self.expire(now)
        items = self._items if self.size else deque[Message]()
        oldest = items[0].seq if items else last_seq + 1
        if oldest > seq + 1:
            return Recovery(recovered=False, messages=[], oldest_seq=oldest)
        missed = [m for m in items if m.seq > seq]
        return Recovery(recovered=True, messages=missed, oldest_seq=oldest)
