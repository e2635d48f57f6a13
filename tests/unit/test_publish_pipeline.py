"""PublishPipeline: a connection's publishes in flight, answered strictly in the order added."""

from __future__ import annotations

import asyncio

import pytest

from broadcaster.errors import BusUnavailable
from broadcaster.server.pipeline import PublishPipeline


def answered_into(log: list[tuple[str, object]]) -> PublishPipeline[str]:
    """A pipeline that records each answer as (op, seq or the exception's code)."""

    def answer(future: asyncio.Future[int], op: str) -> None:
        if future.cancelled():
            log.append((op, "cancelled"))
            return
        exc = future.exception()
        log.append((op, future.result() if exc is None else getattr(exc, "code", exc)))

    return PublishPipeline(answer, limit=3)


async def settle() -> None:
    """Let the futures' done callbacks run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_answers_come_in_the_order_added_whatever_order_the_futures_complete() -> None:
    log: list[tuple[str, object]] = []
    pipeline = answered_into(log)
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    for name, future in zip("abc", futures, strict=True):
        pipeline.add(future, name)
    futures[2].set_result(3)
    futures[1].set_exception(BusUnavailable("gone"))
    await settle()
    assert log == [], "nothing answered while the oldest is in flight"
    assert len(pipeline) == 3
    futures[0].set_result(1)
    await settle()
    assert log == [("a", 1), ("b", "unavailable"), ("c", 3)]
    assert len(pipeline) == 0


async def test_an_error_in_the_middle_is_answered_in_its_place() -> None:
    log: list[tuple[str, object]] = []
    pipeline = answered_into(log)
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    for name, future in zip("abc", futures, strict=True):
        pipeline.add(future, name)
    futures[0].set_result(1)
    await settle()
    assert log == [("a", 1)]
    futures[1].cancel()
    futures[2].set_result(2)
    await settle()
    assert log == [("a", 1), ("b", "cancelled"), ("c", 2)]


async def test_at_the_limit_the_reader_waits_until_the_oldest_is_answered() -> None:
    log: list[tuple[str, object]] = []
    pipeline = answered_into(log)
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    for name, future in zip("abc", futures, strict=True):
        pipeline.add(future, name)
    assert pipeline.full
    waiting = asyncio.create_task(pipeline.wait_for_room())
    futures[1].set_result(2)  # not the oldest: still no room
    await settle()
    assert not waiting.done()
    futures[0].set_result(1)
    await asyncio.wait_for(waiting, 5)
    assert not pipeline.full
    assert log == [("a", 1), ("b", 2)]


async def test_drain_returns_when_every_publish_is_answered() -> None:
    log: list[tuple[str, object]] = []
    pipeline = answered_into(log)
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(2)]
    for name, future in zip("ab", futures, strict=True):
        pipeline.add(future, name)
    draining = asyncio.create_task(pipeline.drain())
    futures[0].set_result(1)
    await settle()
    assert not draining.done()
    futures[1].set_result(2)
    await asyncio.wait_for(draining, 5)
    assert log == [("a", 1), ("b", 2)]
    await asyncio.wait_for(pipeline.drain(), 5)  # empty: returns at once


async def test_a_cancelled_wait_leaves_the_publishes_futures_alone() -> None:
    """The connection closing cancels its reader; the acks are still the bus's to complete."""
    log: list[tuple[str, object]] = []
    pipeline = answered_into(log)
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    pipeline.add(future, "a")
    draining = asyncio.create_task(pipeline.drain())
    await settle()
    draining.cancel()
    with pytest.raises(asyncio.CancelledError):
        await draining
    assert not future.cancelled()
    future.set_result(1)
    await settle()
    assert log == [("a", 1)]


async def test_after_close_nothing_is_answered_and_waits_end() -> None:
    log: list[tuple[str, object]] = []
    pipeline = answered_into(log)
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    pipeline.add(future, "a")
    draining = asyncio.create_task(pipeline.drain())
    await settle()
    pipeline.close()
    await asyncio.wait_for(draining, 5)
    future.set_result(1)
    await settle()
    assert log == []
    assert len(pipeline) == 0


def test_a_pipeline_needs_room_for_one_publish() -> None:
    with pytest.raises(ValueError, match="room for one"):
        PublishPipeline(lambda future, op: None, limit=0)
