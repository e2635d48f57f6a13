"""`broadcaster sub` and `broadcaster pub`: the client for a human at a terminal.

Messages go to stdout, one per line (`CHANNEL #SEQ DATA`), so they can be piped;
what happens to the connection (pauses, resumes, gaps, resets, reconnects) goes to
stderr as `# ...` lines, so it is seen but does not pollute the data.
Exit status: 0 ok, 1 connection failure (one line saying why), 2 bad input.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, TextIO

import orjson

from broadcaster.client.client import Client, connect
from broadcaster.client.errors import ClientClosed, ClientError, ConnectFailed
from broadcaster.client.events import (
    Connected,
    Disconnected,
    Gap,
    Message,
    Pause,
    Reconnecting,
    Reset,
    Resume,
    Subscribed,
)
from broadcaster.client.subscription import Subscription

__all__ = [
    "DEFAULT_URL",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "default_token",
    "default_url",
    "pub",
    "pub_lines",
    "sub",
]

DEFAULT_URL = "ws://127.0.0.1:8765/ws"
EXIT_FAILURE = 1
EXIT_USAGE = 2


def default_url() -> str:
    return os.environ.get("BROADCASTER_URL") or DEFAULT_URL


def default_token() -> str | None:
    """`BROADCASTER_TOKEN`, sent in an `auth` op (an environment variable, not a flag:
    flags show up in `ps` and shell history)."""
    return os.environ.get("BROADCASTER_TOKEN") or None


def _say(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def format_message(message: Message) -> str:
    data = orjson.dumps(message.data).decode()
    suffix = " (snapshot)" if message.snapshot else ""
    return f"{message.channel} #{message.seq} {data}{suffix}"


def _narrate(client: Client, err: TextIO) -> None:
    """Tell the human on stderr what happens to the connection."""

    def connected(e: Connected) -> None:
        _say(err, f"# {'reconnected' if e.reconnect else 'connected'} to {e.url}")

    def disconnected(e: Disconnected) -> None:
        _say(err, f"# disconnected: {e.code} {e.reason}".rstrip())

    def reconnecting(e: Reconnecting) -> None:
        why = f"HTTP {e.status}" if e.status else f"close {e.code}"
        _say(err, f"# reconnecting in {e.delay:.1f} s ({why}, attempt {e.attempt + 1})")

    def subscribed(e: Subscribed) -> None:
        text = f"# subscribed to {e.channel} at seq {e.seq}"
        if e.recovered is True:
            text += " (missed messages recovered)"
        elif e.recovered is False:
            text += f" (could not recover missed messages; oldest kept: {e.oldest_seq})"
        _say(err, text)

    def pause(e: Pause) -> None:
        _say(err, f"# paused {e.channel}: {e.reason} (depth {e.depth}, limit {e.limit})")

    def resume(e: Resume) -> None:
        _say(err, f"# resumed {e.channel}: {e.dropped} dropped")

    def gap(e: Gap) -> None:
        _say(err, f"# gap on {e.channel}: missed {e.missed} (seq {e.from_seq}..{e.to_seq})")

    def reset(e: Reset) -> None:
        lost = "an unknown number" if e.missed is None else str(e.missed)
        text = f"# reset of {e.channel}: epoch {e.old_epoch} -> {e.epoch}, seq starts again"
        text += f" (last seq seen {e.last_seq}; {lost} of the old epoch's messages may be lost"
        if e.seq:
            text += f"; seq 1..{e.seq} of the new epoch came before this subscription"
        _say(err, text + ")")

    def error(e: ClientError) -> None:
        _say(err, f"# error {e.code}: {e}")

    client.on("connected", connected)
    client.on("disconnected", disconnected)
    client.on("reconnecting", reconnecting)
    client.on("subscribed", subscribed)
    client.on("pause", pause)
    client.on("resume", resume)
    client.on("gap", gap)
    client.on("reset", reset)
    client.on("error", error)


async def _print_stream(stream: Subscription, out: TextIO) -> None:
    async for message in stream:
        _say(out, format_message(message))


async def sub(url: str, channels: list[str], *, out: TextIO, err: TextIO) -> int:
    """Print every message of `channels` until interrupted."""
    client = connect(url, token=default_token())
    _narrate(client, err)
    try:
        async with client:
            tasks = [
                asyncio.create_task(_print_stream(client.subscribe(ch), out)) for ch in channels
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for task in tasks:
                    task.cancel()
            for task in done:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
    except (ConnectFailed, ClientClosed) as exc:
        _say(err, f"broadcaster sub: {exc}")
        return EXIT_FAILURE
    except ClientError as exc:  # a refused subscription
        _say(err, f"broadcaster sub: {exc.channel or ''}: {exc.code}: {exc}")
        return EXIT_FAILURE
    return 0


async def pub(url: str, channel: str, data: Any, *, out: TextIO, err: TextIO) -> int:
    """Publish one message and print its seq."""
    try:
        async with connect(url, token=default_token()) as client:
            seq = await client.publish(channel, data)
    except ClientError as exc:
        _say(err, f"broadcaster pub: {exc.code}: {exc}")
        return EXIT_FAILURE
    _say(out, str(seq))
    return 0


async def pub_lines(
    url: str, channel: str, readline: Callable[[], bytes], *, out: TextIO, err: TextIO
) -> int:
    """Publish one JSON value per line; print each seq; report bad lines and go on.

    Publishing waits for each ack, so a publisher the server pauses (a block
    channel) simply waits: the client holds the next publish until flow.resume.
    """
    bad = failed = 0
    try:
        async with connect(url, token=default_token()) as client:
            number = 0
            while line := await asyncio.to_thread(readline):
                number += 1
                if not line.strip():
                    continue
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    _say(err, f"line {number}: invalid JSON: {exc}")
                    bad += 1
                    continue
                try:
                    seq = await client.publish(channel, data)
                except ClientClosed:
                    raise
                except ClientError as exc:
                    _say(err, f"line {number}: {exc.code}: {exc}")
                    failed += 1
                    continue
                _say(out, str(seq))
    except (ConnectFailed, ClientClosed) as exc:
        _say(err, f"broadcaster pub: {exc}")
        return EXIT_FAILURE
    if bad or failed:
        _say(err, f"# {bad} invalid line(s), {failed} refused")
    return EXIT_FAILURE if failed else EXIT_USAGE if bad else 0
