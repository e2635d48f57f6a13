"""The HTTP publish API: POST /api/publish on its own port, with WebSocket subscribers receiving."""

from __future__ import annotations

from typing import Any

import pytest

from broadcaster.errors import ChannelBlocked
from broadcaster.server.app import Broadcaster
from tests.conftest import TOPOLOGIES, ConnectRaw, StartServer
from tests.support.api_client import ApiReply, post, post_json
from tests.support.clients import open_client
from tests.support.raw_client import RawClient
from tests.support.servers import last_seq

pytestmark = [
    pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True),
    pytest.mark.usefixtures("topology"),
]

API = """
[api]
enabled = true
port = 0
publish_timeout = 0.3
"""

CHANNELS = """
[channels."orders"]
strategy = "block"
queue_size = 8
slow_consumer_timeout = 30.0
"""

PAD = "x" * 1000


async def test_single_publish_returns_the_seq_and_subscribers_receive(
    serve: StartServer,
) -> None:
    """`{"channel", "data"}` answers `{"seq"}`; a WebSocket subscriber gets the message."""
    server = await serve(API)
    client = await open_client(server.url)
    await client.subscribe("prices")
    reply = await post_json(server.api_url, {"channel": "prices", "data": {"AAPL": 189.2}})
    assert (reply.status, reply.body) == (200, {"seq": 1})
    (message,) = await client.messages("prices", 1)
    assert (message["seq"], message["data"]) == (1, {"AAPL": 189.2})
    reply = await post_json(server.api_url, {"channel": "prices", "data": None})
    assert reply.body == {"seq": 2}
    (message,) = await client.messages("prices", 1)
    assert (message["seq"], message["data"]) == (2, None)


async def test_batch_publishes_in_order_and_returns_every_seq(serve: StartServer) -> None:
    """`{"messages": [...]}` publishes in order across channels and answers `{"seqs"}`."""
    server = await serve(API)
    client = await open_client(server.url)
    await client.subscribe("a")
    await client.subscribe("b")
    batch = [
        {"channel": "a", "data": 1},
        {"channel": "b", "data": 2},
        {"channel": "a", "data": 3},
    ]
    reply = await post_json(server.api_url, {"messages": batch})
    assert (reply.status, reply.body) == (200, {"seqs": [1, 1, 2]})
    # Order is per channel; how a's and b's messages interleave on one connection is not.
    events = [await client.recv_event("message") for _ in range(3)]
    got = [(m["channel"], m["seq"], m["data"]) for m in events]
    assert [m for m in got if m[0] == "a"] == [("a", 1, 1), ("a", 2, 3)]
    assert [m for m in got if m[0] == "b"] == [("b", 1, 2)]


BAD_BODIES: list[tuple[str, str]] = [
    ("{not json", "invalid_json"),
    ('{"channel": "a", "data": NaN}', "invalid_json"),
    ('{"channel": "a", "data": "\\ud800"}', "invalid_json"),
    ("[1, 2]", "invalid_message"),
    ('"a string"', "invalid_message"),
    ("{}", "invalid_message"),
    ('{"channel": "a"}', "invalid_message"),
    ('{"data": 1}', "invalid_message"),
    ('{"channel": 7, "data": 1}', "invalid_message"),
    ('{"channel": "", "data": 1}', "invalid_message"),
    ('{"channel": "' + "c" * 256 + '", "data": 1}', "invalid_message"),
    ('{"channel": "$sys.stats", "data": 1}', "forbidden"),
    ('{"messages": []}', "invalid_message"),
    ('{"messages": {"channel": "a", "data": 1}}', "invalid_message"),
    ('{"messages": [{"channel": "a", "data": 1}], "channel": "a", "data": 1}', "invalid_message"),
]


@pytest.mark.parametrize(("body", "code"), BAD_BODIES)
async def test_bad_input_is_400_with_the_protocol_code(
    serve: StartServer, body: str, code: str
) -> None:
    """Each malformed body is a 400 whose `error` is PROTOCOL.md's code; nothing is published."""
    server = await serve(API)
    reply = await post(server.api_url, body)
    assert reply.status == 400
    assert reply.body["error"] == code
    assert reply.body["message"]
    assert server.hub.channels.get("a") is None or server.hub.channels["a"].last_seq == 0


async def test_unknown_channel_is_400_when_channels_are_strict(serve: StartServer) -> None:
    """With strict_channels, a channel matching no entry is `unknown_channel`."""
    server = await serve(API + '[channels."known"]\n')
    strict = await serve(
        API + '[channels."known"]\n',
        server_toml='[server]\nhost = "127.0.0.1"\nport = 0\nstrict_channels = true\n',
    )
    assert (await post_json(server.api_url, {"channel": "other", "data": 1})).status == 200
    reply = await post_json(strict.api_url, {"channel": "other", "data": 1})
    assert (reply.status, reply.body["error"]) == (400, "unknown_channel")
    assert (await post_json(strict.api_url, {"channel": "known", "data": 1})).status == 200


async def test_a_bad_batch_item_publishes_nothing_and_names_its_index(
    serve: StartServer,
) -> None:
    """A batch is validated whole first: one bad item refuses the batch, naming the item."""
    server = await serve(API)
    client = await open_client(server.url)
    await client.subscribe("a")
    batch = [
        {"channel": "a", "data": 1},
        {"channel": "a", "data": 2},
        {"channel": "$sys.x", "data": 3},
    ]
    reply = await post_json(server.api_url, {"messages": batch})
    assert reply.status == 400
    assert (reply.body["error"], reply.body["index"]) == ("forbidden", 2)
    reply = await post_json(server.api_url, {"messages": [{"channel": "a", "data": "ok"}]})
    assert reply.body == {"seqs": [1]}, "the refused batch took no seq"
    (message,) = await client.messages("a", 1)
    assert message["data"] == "ok"


async def test_body_must_be_declared_json(serve: StartServer) -> None:
    """A body not sent as application/json is refused with 415 (a browser form cannot publish)."""
    server = await serve(API)
    body = '{"channel": "a", "data": 1}'
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        reply = await post(server.api_url, body, content_type=content_type)
        assert (reply.status, reply.body["error"]) == (415, "invalid_message")
    reply = await post(server.api_url, body, content_type="application/json; charset=utf-8")
    assert reply.status == 200


async def test_oversized_body_and_batch_are_refused(serve: StartServer) -> None:
    """Bodies above max_body_size get 413; batches above max_batch get 400."""
    server = await serve(API + "max_body_size = 1024\nmax_batch = 2\n")
    reply = await post_json(server.api_url, {"channel": "a", "data": "y" * 2000})
    assert (reply.status, reply.body["error"]) == (413, "invalid_message")
    batch = [{"channel": "a", "data": i} for i in range(3)]
    reply = await post_json(server.api_url, {"messages": batch})
    assert (reply.status, reply.body["error"]) == (400, "invalid_message")
    assert "at most 2" in reply.body["message"]


async def test_other_paths_and_methods_answer_json(serve: StartServer) -> None:
    """404 and 405 carry JSON bodies too."""
    server = await serve(API)
    base = server.api_url.removesuffix("/api/publish")
    reply = await post(base + "/api/nope", "{}")
    assert (reply.status, reply.body["error"]) == (404, "not_found")


# --- auth ---------------------------------------------------------------------------

KEYED = API + 'keys = ["k-one", "k-two"]\n'


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "apikey wrong"},
        {"Authorization": "Bearer k-one"},
        {"Authorization": "apikey"},
        {"Authorization": "apikey k-on"},
    ],
)
async def test_without_a_valid_key_the_answer_is_401(
    serve: StartServer, headers: dict[str, str]
) -> None:
    """With keys configured, a request without a valid `Authorization: apikey KEY` gets 401."""
    server = await serve(KEYED)
    reply = await post_json(server.api_url, {"channel": "a", "data": 1}, headers=headers)
    assert reply.status == 401
    assert reply.body["error"] == "unauthorized"
    assert reply.headers["WWW-Authenticate"] == "apikey"
    assert "a" not in server.hub.channels, "nothing was published"


async def test_every_configured_key_is_accepted(serve: StartServer) -> None:
    """Each key in [api] keys authenticates; the scheme is case-insensitive."""
    server = await serve(KEYED)
    # A subscriber keeps channel "a" (one nobody reads and keeping no history is
    # freed after each publish, so its seq would start at 1 each time).
    subscriber = await open_client(server.url)
    await subscriber.subscribe("a")
    one = await post_json(server.api_url, {"channel": "a", "data": 1}, key="k-one")
    two = await post_json(
        server.api_url, {"channel": "a", "data": 2}, headers={"Authorization": "ApiKey k-two"}
    )
    assert (one.status, one.body, two.status, two.body) == (200, {"seq": 1}, 200, {"seq": 2})


# --- rate limit -----------------------------------------------------------------------


async def test_over_the_rate_is_429_with_retry_after(serve: StartServer) -> None:
    """Past its burst a publisher gets 429 + Retry-After; nothing of that request is published."""
    server = await serve(API + "rate = 0.5\nburst = 3\n")
    for i in range(3):
        reply = await post_json(server.api_url, {"channel": "a", "data": i})
        assert reply.status == 200, reply.body
    reply = await post_json(server.api_url, {"channel": "a", "data": "over"})
    assert reply.status == 429
    assert reply.body["error"] == "rate_limited"
    assert 0 < reply.body["retry_after"] <= 2.0
    assert int(reply.headers["Retry-After"]) >= 1
    assert last_seq(server, "a") == 3


async def test_rate_buckets_are_per_key_and_a_batch_costs_its_size(serve: StartServer) -> None:
    """Each API key has its own bucket; a batch takes one token per message."""
    server = await serve(KEYED + "rate = 0.5\nburst = 3\n")
    batch = {"messages": [{"channel": "a", "data": i} for i in range(3)]}
    assert (await post_json(server.api_url, batch, key="k-one")).status == 200
    reply = await post_json(server.api_url, {"channel": "a", "data": 1}, key="k-one")
    assert reply.status == 429
    assert (await post_json(server.api_url, batch, key="k-two")).status == 200
    too_big = {"messages": [{"channel": "a", "data": i} for i in range(4)]}
    reply = await post_json(server.api_url, too_big, key="k-two")
    assert reply.status == 400, "a batch above the burst could never pass: refused outright"
    assert "burst" in reply.body["message"]


# --- backpressure: block channels ---------------------------------------------------------


async def fill_block_channel(server: Broadcaster, connect_raw: ConnectRaw) -> RawClient:
    """A TCP-stalled subscriber on `orders` whose queue stays full: publishes must wait.

    The kernel may still take a few more bytes from a stalled socket a moment
    after its queue first fills, so fill until a publish has waited a whole
    publish_timeout without room.
    """
    stalled = await connect_raw(server.port)
    await stalled.subscribe("orders")
    for i in range(1000):
        try:
            await server.publish("orders", {"i": i, "pad": PAD}, block_timeout=0.3)
        except ChannelBlocked:
            break
    assert server.hub.channels["orders"].full_count == 1, "the stalled subscriber's queue is full"
    return stalled


async def post_until_refused(url: str, document: Any, attempts: int = 20) -> list[ApiReply]:
    """POST until the answer is not 200 (a stalled socket settles after a few more)."""
    replies = []
    for _ in range(attempts):
        reply = await post_json(url, document)
        replies.append(reply)
        if reply.status != 200:
            return replies
    raise AssertionError(f"never refused in {attempts} attempts: {replies[-1]}")


async def test_blocked_channel_answers_503_with_retry_after_then_200_once_room_returns(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """A block channel without room within publish_timeout: 503 + Retry-After, nothing published."""
    server = await serve(API + CHANNELS)
    stalled = await fill_block_channel(server, connect_raw)
    channel = server.hub.channels["orders"]
    first = channel.last_seq
    replies = await post_until_refused(server.api_url, {"channel": "orders", "data": PAD})
    *accepted, reply = replies
    assert [r.body["seq"] for r in accepted] == list(range(first + 1, first + 1 + len(accepted)))
    last = channel.last_seq
    assert last == first + len(accepted), "the refused request published nothing"
    assert reply.status == 503
    assert reply.body["error"] == "unavailable"
    assert "blocked" in reply.body["message"]
    assert int(reply.headers["Retry-After"]) >= 1
    assert reply.body["retry_after"] > 0
    assert server.rooms.waiting(channel) == 0, "the timed-out waiter was removed"

    await stalled.read_until(lambda evs: any(e.get("seq") == last for e in evs))
    await stalled.read_until(lambda evs: not channel.full_count)
    reply = await post_json(server.api_url, {"channel": "orders", "data": {"i": "retry"}})
    assert (reply.status, reply.body) == (200, {"seq": last + 1})
    events = await stalled.read_until(lambda evs: any(e.get("seq") == last + 1 for e in evs))
    seqs = [e["seq"] for e in events if e.get("event") == "message"]
    assert seqs == list(range(1, last + 2)), "block lost nothing and reordered nothing"


async def test_blocked_batch_reports_what_was_published_before_it_stopped(
    serve: StartServer, connect_raw: ConnectRaw
) -> None:
    """A batch stops at the item that cannot get room: 503 with `index` and the `seqs` before it."""
    server = await serve(API + CHANNELS)
    await fill_block_channel(server, connect_raw)
    batch = [
        {"channel": "free", "data": 1},
        {"channel": "free", "data": 2},
        {"channel": "orders", "data": PAD},
        {"channel": "free", "data": 4},
    ]
    replies = await post_until_refused(server.api_url, {"messages": batch})
    *accepted, reply = replies
    assert reply.status == 503
    free_before = 3 * len(accepted)
    assert reply.body["index"] == 2
    assert reply.body["seqs"] == [free_before + 1, free_before + 2]
    assert last_seq(server, "free") == free_before + 2, (
        "the items after the blocked one were not sent"
    )
