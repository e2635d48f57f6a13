"""Compressed fan-out: each message compressed at most once, shared by compressing subscribers.

The frames here are real WebSocket frames (the server's framer and deflater),
decoded with websockets' own extension as a client that negotiated
permessage-deflate with no context takeover would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from broadcaster.brokers.base import MessageFactory
from broadcaster.config import load_config
from broadcaster.core import events
from broadcaster.core.channel import Channel
from broadcaster.core.hub import Hub
from broadcaster.core.outbox import Outbox
from broadcaster.core.policy import ChannelPolicy, Compression, PolicyTable
from broadcaster.core.strategies import Strategy
from broadcaster.errors import ConfigError
from broadcaster.server.websocket import deflater, frame_text

BOOK = {"bids": [[f"{189 - i / 100:.2f}", f"{i * 3.7:.4f}"] for i in range(60)]}
"""An order book event of about 1.7 KB: over the default threshold."""
TICK = {"symbol": "AAPL", "price": 189.5, "change": 0.1, "ts": 1}
"""A ticker event of about 110 B: under it."""


class CountingDeflater:
    """The server's deflater, counting how many payloads it compresses."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, level: int) -> Callable[[bytes], bytes]:
        deflate = deflater(level)

        def counted(payload: bytes) -> bytes:
            self.calls += 1
            return deflate(payload)

        return counted


class Server:
    """A hub, a message factory with the counting deflater, and connections that write."""

    def __init__(self, policy: ChannelPolicy | None = None) -> None:
        self.deflater = CountingDeflater()
        self.factory = MessageFactory(frame_text, lambda: 0.0, self.deflater)
        self.hub = Hub(PolicyTable(policy or ChannelPolicy()), epoch="e")
        channel = self.hub.channel("c")
        assert channel is not None
        self.channel: Channel = channel
        self.seq = 0

    def connect(self, *, deflate: bool) -> Outbox:
        outbox = Outbox(len(self.hub.outboxes) + 1, on_schedule=lambda _o: None)
        outbox.deflate = deflate
        self.hub.add_outbox(outbox)
        self.hub.subscribe(outbox, self.channel, now=0.0)
        return outbox

    def publish(self, data: Any) -> None:
        self.seq += 1
        self.channel.fan_out(self.factory.build(self.channel, self.seq, data))


def write(outbox: Outbox) -> list[bytes]:
    """One flush whose bytes all reach the kernel."""
    batch = outbox.take_batch()
    outbox.written(0)
    return batch


def client_reads(frame: bytes) -> tuple[bool, Any]:
    """(RSV1 set, the JSON event) as a client with no-context-takeover inflate reads it."""
    rsv1 = bool(frame[0] & 0x40)
    length = frame[1] & 0x7F
    offset = 2 if length < 126 else 4 if length == 126 else 10
    parsed = Frame(Opcode(frame[0] & 0x0F), frame[offset:], rsv1=rsv1)
    inflate = PerMessageDeflate(True, True, 15, 15)
    return rsv1, orjson.loads(inflate.decode(parsed, max_size=1 << 20).data)


def test_one_compressed_frame_per_message_shared_by_every_compressing_subscriber() -> None:
    """Three compressing subscribers get the very same compressed bytes, built once; a plain
    subscriber on the same channel gets the plain frame; both decode to the same event."""
    server = Server()
    compressing = [server.connect(deflate=True) for _ in range(3)]
    plain = server.connect(deflate=False)
    server.publish(BOOK)
    frames = [write(outbox) for outbox in compressing]
    assert server.deflater.calls == 1
    assert frames[0][0] is frames[1][0] is frames[2][0]
    (plain_frame,) = write(plain)
    assert client_reads(frames[0][0]) == (True, orjson.loads(plain_frame[4:]))
    assert not plain_frame[0] & 0x40
    assert len(frames[0][0]) < len(plain_frame) * 0.6


def test_batches_of_several_messages_share_the_compressed_frames() -> None:
    """A subscriber that fell behind takes its backlog as the same shared compressed frames."""
    server = Server()
    ahead = server.connect(deflate=True)
    behind = server.connect(deflate=True)
    server.publish(BOOK)
    first = write(ahead)
    server.publish(BOOK)
    second = write(ahead)
    late = write(behind)
    assert server.deflater.calls == 2
    assert len(late) == 2
    assert late[0] is first[0]
    assert late[1] is second[0]
    assert [client_reads(f)[1]["seq"] for f in late] == [1, 2]


def test_no_compressing_subscriber_compresses_nothing() -> None:
    """Compression is lazy: a channel whose subscribers all read plain pays no zlib work."""
    server = Server()
    outboxes = [server.connect(deflate=False) for _ in range(2)]
    server.publish(BOOK)
    for outbox in outboxes:
        write(outbox)
    assert server.deflater.calls == 0


@pytest.mark.parametrize(
    ("policy", "data"),
    [
        (ChannelPolicy(), TICK),
        (ChannelPolicy(compression=Compression.OFF), BOOK),
        (ChannelPolicy(compression_min_size=4096), BOOK),
    ],
    ids=["under-the-threshold", "compression-off", "raised-threshold"],
)
def test_plain_frame_when_the_channel_does_not_compress_this_message(
    policy: ChannelPolicy, data: Any
) -> None:
    """Small messages and channels with compression off reach compressing clients plain."""
    server = Server(policy)
    outbox = server.connect(deflate=True)
    server.publish(data)
    (frame,) = write(outbox)
    assert server.deflater.calls == 0
    assert not frame[0] & 0x40
    assert frame == frame_text(events.message("c", 1, data))


def test_conflated_snapshot_is_compressed_once_too() -> None:
    """The `"snapshot": true` variant of a large message is compressed, once, for all joiners."""
    server = Server(ChannelPolicy(strategy=Strategy.CONFLATE, conflate_key="k", snapshot=True))
    message = server.factory.build(server.channel, 1, {"k": "AAPL", **BOOK})
    first = server.factory.snapshot(message)
    assert server.factory.snapshot(message) is first
    frame = first.compressed()
    assert first.compressed() is frame
    assert server.deflater.calls == 1
    rsv1, event = client_reads(frame)
    assert rsv1
    assert event["snapshot"] is True


def test_bytes_saved_are_counted_per_channel() -> None:
    """The channel's counters hold the plain and sent bytes of compressing subscribers' frames."""
    server = Server()
    compressing = server.connect(deflate=True)
    plain = server.connect(deflate=False)
    server.publish(BOOK)
    server.publish(TICK)
    sent = write(compressing)
    plain_frames = write(plain)
    counters = server.channel.counters
    assert counters.deflate_wire == sum(map(len, sent))
    assert counters.deflate_plain == sum(map(len, plain_frames))
    assert counters.deflate_saved > 0


def test_control_frames_stay_plain() -> None:
    """Acks and flow notices are never compressed, whatever the connection negotiated."""
    server = Server()
    outbox = server.connect(deflate=True)
    outbox._framer = frame_text  # the server's framer for control frames
    outbox.send_control(orjson.dumps({"event": "pong", "pad": "x" * 2000}))
    (frame,) = write(outbox)
    assert not frame[0] & 0x40
    assert server.deflater.calls == 0


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broadcaster.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_compression_settings_from_the_config(tmp_path: Path) -> None:
    """[defaults] and [channels] set the mode, threshold and level; entries inherit."""
    path = write_config(
        tmp_path,
        "[defaults]\ncompression_min_size = 512\ncompression_level = 1\n"
        '[channels."chat.*"]\ncompression = "off"\n',
    )
    policies = load_config(path, environ={}, flags={}).policies
    book = policies.resolve("books.x")
    chat = policies.resolve("chat.x")
    assert book is not None
    assert chat is not None
    assert (book.compression, book.compression_min_size, book.compression_level) == (
        Compression.DEFLATE,
        512,
        1,
    )
    assert chat.compression is Compression.OFF
    assert chat.compression_level == 1
    assert policies.compresses()
    off = write_config(tmp_path, '[defaults]\ncompression = "off"\n')
    assert not load_config(off, environ={}, flags={}).policies.compresses()


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('[defaults]\ncompression = "gzip"\n', "[defaults] compression", '"off" | "deflate"'),
        ("[defaults]\ncompression_level = 0\n", "[defaults] compression_level", "1 to 9"),
        (
            '[channels."a"]\ncompression_min_size = -1\n',
            '[channels."a"] compression_min_size',
            "an integer >= 0",
        ),
    ],
)
def test_invalid_compression_settings_name_the_key(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    """A wrong compression setting is refused at load, naming the key and what is allowed."""
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, text), environ={}, flags={})
    assert key in str(info.value)
    assert expected in str(info.value)
