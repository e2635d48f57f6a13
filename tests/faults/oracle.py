"""The oracle of the fault suite: did every acknowledged publish reach every subscriber,
or was the subscriber told, with the exact count, that it missed it?

Input, read straight off the wire (no client library in between):

- the acknowledged publishes of one channel (`Ack`), in the order the
  publisher got the acks; unique data per publish; the epoch when known;
- per subscriber that stayed connected (or reconnected with `since`), the
  protocol events it received, in order (`subscribed` replies and in-band
  reset notices, `message`s).

The rules:

- per subscriber, per epoch, seqs strictly increase (in order, never twice);
- no seq is reused under one epoch: one (epoch, seq) carries one data, and a
  delivered ack carries the seq its publisher was told;
- every acknowledged publish the subscriber was there for (after its first
  `subscribed.seq`, or in a later epoch) is, for that subscriber, exactly one
  of: delivered once; inside a seq jump (a gap: the client knows the exact
  count); inside `(last seq received, previous_seq]` of a reset notice that
  names the epoch (`previous_epoch`), or before the seq of a
  `recovered: false` reply to a resubscribe (both told with the exact
  count); otherwise it is **lost**.

The epoch of an ack the publisher was not told: within one publisher's acks
seq only grows inside an epoch, so a seq that does not grow starts the next
epoch; each such run takes the epoch its delivered messages carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Ack", "Figures", "check"]


@dataclass(frozen=True, slots=True)
class Ack:
    """A publish the server acknowledged with `seq` (`published`)."""

    seq: int
    data: Any
    epoch: str | None = None


@dataclass(slots=True)
class Figures:
    """Counts over every (subscriber, acknowledged publish it was there for) pair."""

    acknowledged: int = 0
    expected: int = 0
    delivered: int = 0
    gap: int = 0
    reset: int = 0
    lost: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "acknowledged": self.acknowledged,
            "expected": self.expected,
            "delivered": self.delivered,
            "reported_gap": self.gap,
            "reported_reset": self.reset,
            "lost": self.lost,
        }


def _key(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


@dataclass(slots=True)
class _View:
    """What one subscriber saw, per epoch: delivered seqs and the told-missing ranges."""

    order: list[str] = field(default_factory=list)
    start: dict[str, int] = field(default_factory=dict)
    received: dict[bytes, list[tuple[str, int]]] = field(default_factory=dict)
    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    resets: list[tuple[str, int, int]] = field(default_factory=list)


def _read(name: str, channel: str, events: list[dict[str, Any]], figures: Figures) -> _View:
    view = _View()
    epoch: str | None = None
    last = 0

    def enter(new_epoch: str, seq: int) -> None:
        nonlocal epoch, last
        if new_epoch not in view.order:
            view.order.append(new_epoch)
            view.start.setdefault(new_epoch, seq)
        epoch, last = new_epoch, seq

    for event in events:
        if event.get("channel") != channel:
            continue
        kind = event.get("event")
        if kind == "subscribed":
            new_epoch, seq = str(event["epoch"]), int(event["seq"])
            if event.get("reset"):
                if epoch is not None and event.get("previous_epoch") == epoch:
                    told = int(event["previous_seq"])
                    if told > last:
                        view.resets.append((epoch, last + 1, told))
                enter(new_epoch, 0)
            elif epoch is None:
                enter(new_epoch, seq)
            elif new_epoch == epoch:
                # A resubscribe (`since` = last): recovered messages follow, or
                # `recovered: false` tells the client it missed (last, seq].
                if event.get("recovered") is False and seq > last:
                    view.gaps.append((epoch, last + 1, seq))
                    last = seq
            else:
                figures.problems.append(
                    f"{name}: resubscribed into epoch {new_epoch} without being told "
                    f"how many of epoch {epoch} it missed"
                )
                enter(new_epoch, seq)
        elif kind == "message":
            if epoch is None:
                figures.problems.append(f"{name}: a message before `subscribed`")
                continue
            seq = int(event["seq"])
            if seq <= last:
                figures.problems.append(
                    f"{name}: seq {seq} after {last} in epoch {epoch} (order or duplicate)"
                )
            elif seq > last + 1:
                view.gaps.append((epoch, last + 1, seq - 1))
            last = max(last, seq)
            view.received.setdefault(_key(event["data"]), []).append((epoch, seq))
    return view


def _ack_epochs(acks: list[Ack], views: list[_View]) -> list[str | None]:
    """Each ack's epoch: given, or that of its run (seq grows within an epoch)."""
    runs: list[list[int]] = []
    previous = 0
    for index, ack in enumerate(acks):
        if not runs or ack.seq <= previous:
            runs.append([])
        runs[-1].append(index)
        previous = ack.seq
    epochs: list[str | None] = [ack.epoch for ack in acks]
    for run in runs:
        found: set[str] = {
            epoch
            for index in run
            for view in views
            for epoch, _ in view.received.get(_key(acks[index].data), [])
        }
        for index in run:
            given = acks[index].epoch
            if given is not None:
                found.add(given)
        if len(found) == 1:
            (epoch,) = found
            for index in run:
                epochs[index] = epoch
    return epochs


def check(
    channel: str, acks: list[Ack], subscribers: dict[str, list[dict[str, Any]]]
) -> Figures:
    """Apply the rules above; `Figures.problems` lists every violation (lost ones too)."""
    figures = Figures(acknowledged=len(acks))
    views = {name: _read(name, channel, events, figures) for name, events in subscribers.items()}
    epochs = _ack_epochs(acks, list(views.values()))
    epoch_order: list[str] = []
    for epoch in epochs:
        if epoch is not None and epoch not in epoch_order:
            epoch_order.append(epoch)

    # One (epoch, seq) carries one data, across every subscriber and every ack.
    carried: dict[tuple[str, int], bytes] = {}
    for name, view in views.items():
        for data, places in view.received.items():
            for place in places:
                if carried.setdefault(place, data) != data:
                    figures.problems.append(f"{name}: seq {place[1]} of epoch {place[0]} reused")
    for ack, epoch in zip(acks, epochs, strict=True):
        if epoch is not None:
            data = _key(ack.data)
            if carried.setdefault((epoch, ack.seq), data) != data:
                figures.problems.append(f"ack seq {ack.seq} of epoch {epoch} reused")

    for name, view in views.items():
        first_epoch = view.order[0] if view.order else None
        for ack, epoch in zip(acks, epochs, strict=True):
            places = view.received.get(_key(ack.data), [])
            if epoch is None:
                if not places:
                    figures.expected += 1
                    figures.lost += 1
                    figures.problems.append(
                        f"{name}: ack seq {ack.seq} ({ack.data}) in an epoch nobody saw: lost"
                    )
                    continue
                epoch = places[0][0]
            # Was the subscriber there? Epochs before its first are not its business.
            if first_epoch is None or (
                epoch in epoch_order
                and first_epoch in epoch_order
                and epoch_order.index(epoch) < epoch_order.index(first_epoch)
            ):
                continue
            if epoch == first_epoch and ack.seq <= view.start[first_epoch]:
                continue
            figures.expected += 1
            if places:
                figures.delivered += 1
                if len(places) > 1:
                    figures.problems.append(f"{name}: ack {ack.data} delivered {len(places)} times")
                if places[0] != (epoch, ack.seq):
                    figures.problems.append(
                        f"{name}: ack seq {ack.seq} of epoch {epoch} arrived as {places[0]}"
                    )
            elif any(e == epoch and lo <= ack.seq <= hi for e, lo, hi in view.gaps):
                figures.gap += 1
            elif any(e == epoch and lo <= ack.seq <= hi for e, lo, hi in view.resets):
                figures.reset += 1
            else:
                figures.lost += 1
                figures.problems.append(
                    f"{name}: ack seq {ack.seq} of epoch {epoch} ({ack.data}) neither "
                    "delivered nor reported: lost"
                )
    return figures
