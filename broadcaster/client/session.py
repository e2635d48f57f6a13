"""One open connection of a `Client`: its reader, its writer and its heartbeat.

The reader turns server events into messages, events and acks. The writer
sends, in order, control ops (subscribe, unsubscribe, ping) and then the
client's held publishes while the server has not paused this publisher
(`flow.pause` with reason "channel blocked": the server stops reading our
frames, so anything we sent would only sit in buffers). The heartbeat sends
`ping` and, with no frame back within `ping_timeout`, aborts the connection;
it does not judge while the server holds us as a blocked publisher or while
our own reader waits on a full subscription (either way, silence is expected).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from broadcaster.client.errors import ConnectionLost, ServerError
from broadcaster.client.events import Connected, Message, Pause, Resume, Subscribed

if TYPE_CHECKING:
    from broadcaster.client.client import ChannelState, Client, PendingPublish

__all__ = ["Session"]

logger = logging.getLogger("broadcaster.client")

BLOCKED = "channel blocked"


class Session:
    """Serves one connection until it closes; `run` returns its close code and reason."""

    def __init__(self, client: Client, ws: ClientConnection, token: str | None = None) -> None:
        self.client = client
        self.ws = ws
        self.token = token
        self.open = True
        self.blocked: set[str] = set()
        self.control: deque[str] = deque()
        self.pending: dict[str, PendingPublish] = {}
        self.sub_ids: dict[str, ChannelState] = {}
        self._wake = asyncio.Event()
        self._alive = asyncio.Event()
        self._stalled = False
        self._dead = False

    async def run(self, connected: Connected) -> tuple[int, str]:
        client = self.client
        if self.token is not None:
            # First, so that the subscribes behind it are judged with its grant
            # (the server answers ops in order).
            self.send_control({"op": "auth", "token": self.token, "id": client.next_id("a")})
        for state in client.channels.values():
            self.send_subscribe(state)
        tasks = [asyncio.create_task(self._write(), name="broadcaster-client writer")]
        if client.ping_interval > 0:
            tasks.append(asyncio.create_task(self._heartbeat(), name="broadcaster-client ping"))
        client.events.emit("connected", connected)
        try:
            await self._read()
        finally:
            self.open = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            lost = ConnectionLost("broadcaster: disconnected before the publish was acknowledged")
            for item in self.pending.values():
                if not item.future.done():
                    item.future.set_exception(lost)
            self.pending.clear()
            for state in client.channels.values():
                state.active = False
        if self._dead:
            return 1006, "ping timeout"
        return self.ws.close_code or 1006, self.ws.close_reason or ""

    async def close(self) -> None:
        """Close the connection normally (1000); `run` then returns."""
        await self.ws.close(1000, "client closed")

    # --- sending ----------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def send_control(self, op: dict[str, Any]) -> None:
        self.control.append(orjson.dumps(op).decode())
        self._wake.set()

    def send_subscribe(self, state: ChannelState) -> None:
        op_id = self.client.next_id("s")
        op: dict[str, Any] = {"op": "subscribe", "channel": state.name, "id": op_id}
        resume = state.tracker.resume_from()
        if resume is not None:
            op["since"] = resume[0]
            if resume[1] is not None:
                op["epoch"] = resume[1]
        if state.max_rate is not None:
            op["max_rate"] = state.max_rate
        state.sub_id = op_id
        state.sent_since = resume[0] if resume is not None else None
        state.active = False
        self.sub_ids[op_id] = state
        self.send_control(op)

    async def _write(self) -> None:
        held = self.client.held
        while True:
            if self.control:
                if not await self._send(self.control.popleft()):
                    return
            elif held and not self.blocked:
                item = held.popleft()
                if item.future.done():  # the caller gave up waiting
                    continue
                self.pending[item.id] = item
                if not await self._send(item.frame):
                    # Not written: it goes out on the next connection, in order.
                    del self.pending[item.id]
                    held.appendleft(item)
                    return
            else:
                self._wake.clear()
                await self._wake.wait()

    async def _send(self, frame: str) -> bool:
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            return False
        return True

    # --- heartbeat -------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        client = self.client
        while True:
            await asyncio.sleep(client.ping_interval)
            if self.blocked or self._stalled:
                continue
            self._alive.clear()
            self.send_control({"op": "ping", "id": client.next_id("h")})
            try:
                await asyncio.wait_for(self._alive.wait(), client.ping_timeout)
            except TimeoutError:
                if self.blocked or self._stalled:
                    continue
                self._dead = True
                self.ws.transport.abort()  # a dead link may never deliver a close frame
                return

    # --- receiving ----------------------------------------------------------------

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                self._alive.set()
                await self._dispatch(raw)

    async def _dispatch(self, raw: str | bytes) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._report(ServerError("the server sent a non-JSON frame", code="invalid_json"))
            return
        if not isinstance(msg, dict):
            return
        event = msg.get("event")
        if event == "message":
            await self._message(msg)
        elif event == "subscribed":
            self._subscribed(msg)
        elif event == "published":
            item = self.pending.pop(_op_id(msg), None)
            if item is not None and not item.future.done():
                item.future.set_result(int(msg["seq"]))
        elif event == "flow.pause":
            if msg.get("reason") == BLOCKED:
                self.blocked.add(msg["channel"])
            self.client.events.emit(
                "pause", Pause(msg["channel"], msg["depth"], msg["limit"], msg["reason"])
            )
        elif event == "flow.resume":
            if msg["channel"] in self.blocked:
                self.blocked.discard(msg["channel"])
                self._wake.set()
            self.client.events.emit("resume", Resume(msg["channel"], msg["dropped"]))
        elif event == "error":
            self._error(msg)
        # pong, unsubscribed, authenticated: nothing to do (any frame proves liveness)

    async def _message(self, msg: dict[str, Any]) -> None:
        channel = msg["channel"]
        state = self.client.channels.get(channel)
        if state is None or not state.active:
            return  # not (or not yet again) subscribed
        seq = int(msg["seq"])
        snapshot = msg.get("snapshot") is True
        deliver, gap = state.tracker.message(channel, seq, snapshot)
        if gap is not None:
            self.client.events.emit("gap", gap)
        if not deliver:
            return
        message = Message(channel, seq, msg.get("data"), snapshot)
        for sub in list(state.subscriptions):
            inbox = sub.inbox
            if not inbox.full():
                await inbox.put(message)
                continue
            # A consumer is behind: stop reading until it takes a message (backpressure).
            self._stalled = True
            try:
                await inbox.put(message)
            finally:
                self._stalled = False

    def _subscribed(self, msg: dict[str, Any]) -> None:
        if msg.get("reset") is True and "id" not in msg:
            self._reset(msg)
            return
        state = self.sub_ids.pop(_op_id(msg), None)
        if state is None or self.client.channels.get(state.name) is not state:
            return
        state.active = True
        gap, reset = state.tracker.subscribed(msg, state.sent_since)
        self.client.events.emit(
            "subscribed",
            Subscribed(
                state.name,
                int(msg["seq"]),
                str(msg.get("epoch", "")),
                str(msg.get("strategy", "")),
                msg.get("recovered"),
                msg.get("oldest_seq"),
            ),
        )
        if reset is not None:
            self.client.events.emit("reset", reset)
        if gap is not None:
            self.client.events.emit("gap", gap)

    def _reset(self, msg: dict[str, Any]) -> None:
        """The server's in-band notice that the channel's seq history restarted (PROTOCOL.md).

        Without this, the new epoch's seqs 1, 2, ... would look like
        duplicates of the old epoch's and be dropped until they passed it.
        """
        state = self.client.channels.get(str(msg.get("channel")))
        if state is None or not state.active:
            return  # a subscription we are leaving, or one whose reply has not come yet
        self.client.events.emit("reset", state.tracker.reset(msg))

    def _error(self, msg: dict[str, Any]) -> None:
        retry_after = msg.get("retry_after")
        error = ServerError(
            str(msg.get("message", "")),
            code=str(msg.get("code", "error")),
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        )
        op_id = _op_id(msg)
        item = self.pending.pop(op_id, None)
        if item is not None:
            if not item.future.done():
                item.future.set_exception(error)
            return
        state = self.sub_ids.pop(op_id, None)
        if state is not None and self.client.channels.get(state.name) is state:
            # The server refused the subscription: its iterators end with the error.
            error.channel = state.name
            del self.client.channels[state.name]
            for sub in state.subscriptions:
                sub.inbox.end(error)
        self._report(error)

    def _report(self, error: ServerError) -> None:
        if self.client.events.has("error"):
            self.client.events.emit("error", error)
        else:
            logger.warning("broadcaster client: %s: %s", error.code, error)


def _op_id(msg: dict[str, Any]) -> str:
    """The echoed op id ("" when absent: the client's ids are never empty)."""
    op_id = msg.get("id")
    return op_id if isinstance(op_id, str) else ""
