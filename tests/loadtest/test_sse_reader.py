"""The load tool's SSE reader counts exactly what the WebSocket clients count.

It decodes only the latency-sampled events (it jumps from chunk to chunk and
reads the seqs from the `id:` lines), so these tests hold it against the
per-frame reference, `SubscriberRecord.on_frame`, on the same events: every
delivery, gap, duplicate, out-of-order seq, flow notice, close code and
latency sample must agree, however the bytes are split into reads. One real
run over `/sse` checks the whole path against the server.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from broadcaster.core.streams import chunk
from loadtest.accounting import SubscriberRecord, SubscriberResult, Timeline
from loadtest.clients import SseSubscriber, _SseProtocol
from loadtest.runner import run_scenario
from loadtest.scenarios import get_scenario
from loadtest.targets import parse_target

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _message(seq: int) -> dict[str, Any]:
    return {"event": "message", "channel": "c", "seq": seq, "data": {"t": time.time_ns()}}


def _sse(event: dict[str, Any] | bytes) -> bytes:
    """One event as broadcaster writes it (core/streams.py): a chunk, messages with an id."""
    if isinstance(event, bytes):  # a comment or a retry hint, as is
        return chunk(event)
    payload = orjson.dumps(event)
    if event["event"] == "message":
        return chunk(b"id: 5f3a:%d\ndata: %b\n\n" % (event["seq"], payload))
    return chunk(b"data: " + payload + b"\n\n")


EVENTS: list[dict[str, Any] | bytes] = [
    {"event": "subscribed", "channel": "c", "seq": 10, "strategy": "drop-oldest"},
    *(_message(s) for s in range(11, 40)),  # a long run: the one-call path
    {"event": "flow.pause", "channel": "c", "depth": 4, "limit": 4},
    _message(43),  # a gap of 3
    b": heartbeat\n\n",
    {"event": "flow.resume", "channel": "c", "dropped": 3},
    *(_message(s) for s in range(44, 60)),
    _message(59),  # a duplicate
    _message(57),  # out of order
    *(_message(s) for s in range(60, 70)),
    *(_message(s) for s in (70, 71, 71, 73)),  # spans 4 values in 4 events: not a run
    *(_message(s) for s in (74, 76, 75, 77)),  # the same, reordered
    *(_message(s) for s in range(78, 100)),
    {"event": "error", "code": "x", "message": "y"},
    {"event": "close", "code": 4008, "reason": "slow consumer"},
    b"retry: 10000\n\n",
]


def _reference(latency_every: int) -> SubscriberRecord:
    record = SubscriberRecord(0, "c", "fast", Timeline(0), latency_every)
    record.connected = True  # as the WebSocket clients mark it on connect
    for event in EVENTS:
        if isinstance(event, bytes):
            continue
        if event["event"] == "close":
            record.on_close(int(event["code"]))
        else:
            record.on_frame(orjson.dumps(event))
    return record


def _counts(record: SubscriberRecord) -> tuple[SubscriberResult, int]:
    result = record.result()
    result.closed_at_s = None
    samples = sum(h.count for h in record.timeline.seconds.values())
    return result, samples


def _read(reads: list[bytes], latency_every: int) -> SubscriberRecord:
    record = SubscriberRecord(0, "c", "fast", Timeline(0), latency_every)
    protocol = _SseProtocol(SseSubscriber("ws://127.0.0.1:1/ws", record, 0.0, False))
    for data in reads:
        protocol.data_received(data)
    return record


STREAM = HEAD + b"".join(_sse(e) for e in EVENTS)


@pytest.mark.parametrize("latency_every", [1, 3, 16])
async def test_whole_stream_in_one_read_counts_as_frame_by_frame(latency_every: int) -> None:
    expected = _counts(_reference(latency_every))
    assert _counts(_read([STREAM], latency_every)) == expected
    result = expected[0]
    assert (result.gaps, result.gap_missed) == (3, 5)
    assert (result.duplicates, result.out_of_order) == (2, 2)
    assert (result.pauses, result.resumes, result.resume_dropped, result.errors) == (1, 1, 3, 1)
    assert result.close_code == 4008


@pytest.mark.parametrize("latency_every", [1, 16])
async def test_every_split_of_the_stream_counts_the_same(latency_every: int) -> None:
    """Reads cut anywhere (inside a head, a chunk size, an id, between the two LFs)."""
    expected = _counts(_reference(latency_every))
    for size in (1, 2, 7, 64, 333, 1000):
        reads = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
        assert _counts(_read(reads, latency_every)) == expected, size
    for cut in range(len(HEAD) - 3, len(STREAM), 37):
        assert _counts(_read([STREAM[:cut], STREAM[cut:]], latency_every)) == expected, cut


async def test_a_run_of_messages_is_sampled_one_in_n_as_frame_by_frame() -> None:
    """The sampled deliveries are the same ones, so latency means the same on both clients."""
    for every in (1, 2, 5, 16):
        reads = [HEAD + _sse(EVENTS[0])]
        reads += [b"".join(_sse(_message(s)) for s in range(n, n + 7)) for n in range(11, 200, 7)]
        record = _read(reads, every)
        reference = SubscriberRecord(0, "c", "fast", Timeline(0), every)
        reference.connected = True
        reference.on_frame(orjson.dumps(EVENTS[0]))
        for s in range(11, 200):
            reference.on_frame(orjson.dumps(_message(s)))
        assert _counts(record) == _counts(reference)
        assert record.received == 189
        assert _counts(record)[1] == -(-189 // every)  # the first, then one in `every`


async def test_a_refused_stream_closes_the_record() -> None:
    record = _read([b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"], 1)
    assert not record.connected
    assert not record.subscribed
    assert record.closed_at_ns is not None


async def test_short_run_over_sse_accounts_for_every_message() -> None:
    """The real server, subscribers over GET /sse (one of them a throttled slow reader)."""
    scenario = get_scenario("custom").override(
        subscribers=4,
        processes=1,
        channels=2,
        publishers=2,
        rate=150.0,
        size=200,
        duration=1.0,
        drain=5.0,
        slow=1,
        slow_rate=2000.0,
        client="sse",
    )
    result = await run_scenario(scenario, parse_target("broadcaster-sse"))
    subs = result["per_subscriber"]
    assert len(subs) == 4
    assert all(s["subscribed"] and s["connected"] for s in subs)
    published = result["published"]["per_channel"]
    for s in subs:
        expected = published[s["channel"]]["final_seq"] - s["base_seq"]
        assert s["received"] + s["gap_missed"] == expected, s
    assert result["accounting"]["checked"] == 4
    assert result["accounting"]["failed"] == 0
    assert result["latency_ms"]["count"] > 0
    assert result["deliveries"]["reader_cpu_us_per_delivery"] > 0
