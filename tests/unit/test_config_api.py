"""The [api] section, Config.build, --source specs and source options: errors name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broadcaster.codes import ErrorCode
from broadcaster.config import (
    ApiConfig,
    Config,
    SourceConfig,
    env_overrides,
    load_config,
    parse_config,
    source_from_flag,
)
from broadcaster.errors import ChannelBlocked, ConfigError, PublishError, RateLimited
from broadcaster.sources.base import build_source
from broadcaster.sources.file import FileSource
from broadcaster.sources.redis_pubsub import RedisPubSubSource
from broadcaster.sources.redis_stream import RedisStreamSource
from broadcaster.sources.stdin import StdinSource


def test_the_api_is_off_unless_a_config_turns_it_on() -> None:
    """No port opens unasked; configs/default.toml (the embedded default) turns it on."""
    assert parse_config("", source="empty.toml").api == ApiConfig()
    assert not ApiConfig().enabled
    api = Config.embedded_default().api
    assert (api.enabled, api.host, api.port, api.keys) == (True, "127.0.0.1", 8766, ())


def test_api_values_from_the_file() -> None:
    config = parse_config(
        '[api]\nenabled = true\nport = 9000\nkeys = ["a", "b"]\npublish_timeout = 2\n'
        "rate = 10\nmax_batch = 50\n",
        source="f.toml",
    )
    api = config.api
    assert (api.port, api.keys, api.publish_timeout, api.rate, api.max_batch) == (
        9000,
        ("a", "b"),
        2.0,
        10.0,
        50,
    )
    assert api.burst == 10.0, "burst defaults to the rate"


def test_keys_never_show_in_repr() -> None:
    """A logged config must not leak API keys (a value no key name contains)."""
    assert "k-7c1f9e" not in repr(Config.build(api={"keys": ["k-7c1f9e"]}))


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[api]\nport = 70000\n", "[api] port", "a TCP port"),
        ('[api]\nkeys = "k"\n', "[api] keys", "a list of strings"),
        ('[api]\nkeys = [""]\n', "[api] keys", "non-empty strings"),
        ("[api]\npublish_timeout = 0\n", "[api] publish_timeout", "seconds > 0"),
        ("[api]\nrate = -1\n", "[api] rate", "messages per second >= 0"),
        ("[api]\nburst = 0\n", "[api] burst", "messages >= 1"),
        ("[api]\nmax_batch = 0\n", "[api] max_batch", "messages >= 1"),
        ("[api]\nheader_timeout = 0\n", "[api] header_timeout", "seconds > 0"),
        ("[api]\nbody_timeout = -1\n", "[api] body_timeout", "seconds > 0"),
        ("[api]\nmax_connections = 0\n", "[api] max_connections", "connections >= 1"),
        ("[api]\nlisten = 1\n", "[api] listen", "one of the known keys"),
    ],
)
def test_invalid_api_values_name_the_key(text: str, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="f.toml")
    assert (info.value.source, info.value.key) == ("f.toml", key)
    assert expected in info.value.expected


def test_a_bad_key_is_not_echoed() -> None:
    """The error about a malformed key names the problem, not the secret."""
    with pytest.raises(ConfigError) as info:
        parse_config('[api]\nkeys = [" secret "]\n', source="f.toml")
    assert "secret" not in str(info.value)


def test_api_keys_and_port_from_the_environment_and_flags(tmp_path: Path) -> None:
    """Keys can stay out of the file: BROADCASTER_API_KEYS holds a TOML list."""
    env = {"BROADCASTER_API_KEYS": '["k1", "k2"]', "BROADCASTER_API_PORT": "0"}
    assert env_overrides(env) == {"api.keys": ["k1", "k2"], "api.port": 0}
    config = load_config(None, environ=env, flags={"api.enabled": False})
    assert (config.api.keys, config.api.port, config.api.enabled) == (("k1", "k2"), 0, False)
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, flags={"api.port": "x"})
    assert info.value.source == "--api-port"


def test_config_build_takes_python_values() -> None:
    """Tuples and nested mappings from code are accepted like the TOML equivalents."""
    config = Config.build(
        server={"port": 0},
        defaults={"queue_size": 16},
        channels={"orders": {"strategy": "block"}},
        api={"enabled": True, "keys": ("k",)},
        sources={"feed": {"kind": "stdin", "channel": "raw"}},
    )
    assert config.server.port == 0
    assert config.policies.defaults.queue_size == 16
    assert config.api.keys == ("k",)
    assert config.sources == (SourceConfig(name="feed", kind="stdin", channel="raw"),)
    with pytest.raises(ConfigError) as info:
        Config.build(server={"port": "nope"})
    assert (info.value.source, info.value.key) == ("<Config.build>", "[server] port")


@pytest.mark.parametrize(
    ("spec", "kind", "channel", "options"),
    [
        ("stdin:tickers.raw", "stdin", "tickers.raw", {}),
        ("file:/tmp/p.jsonl:prices", "file", "prices", {"path": "/tmp/p.jsonl"}),
        ("file:C:/x:y.jsonl:prices", "file", "prices", {"path": "C:/x:y.jsonl"}),
        ("demo_ticker:tickers.demo", "demo_ticker", "tickers.demo", {}),
    ],
)
def test_source_flags(spec: str, kind: str, channel: str, options: dict[str, Any]) -> None:
    source = source_from_flag(spec)
    assert (source.kind, source.channel, dict(source.options)) == (kind, channel, options)


@pytest.mark.parametrize(
    "spec", ["stdin", "stdin:", "file:/x", "kafka:x", "file::c", "demo_ticker:"]
)
def test_bad_source_flags_say_what_is_expected(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        source_from_flag(spec)
    assert info.value.source == "--source"
    assert "stdin:CHANNEL" in info.value.expected


def test_added_sources_need_unique_names() -> None:
    config = Config.build().with_sources(source_from_flag("stdin:a"))
    with pytest.raises(ConfigError):
        config.with_sources(source_from_flag("stdin:b"))
    assert len(config.with_sources(source_from_flag("stdin:b", index=1)).sources) == 2


def build(kind: str, **options: Any) -> object:
    return build_source(SourceConfig(name="s", kind=kind, channel="c", options=options), "f.toml")


def test_every_kind_builds_from_its_options() -> None:
    assert isinstance(build("file", path="/x", follow=True, start="end"), FileSource)
    assert isinstance(build("stdin"), StdinSource)
    stream = build("redis_stream", stream="s", start="0", count=10)
    assert isinstance(stream, RedisStreamSource)
    assert (stream.start, stream.count, stream.field) == ("0", 10, "data")
    assert isinstance(build("redis_pubsub", redis_pattern="p.*"), RedisPubSubSource)


@pytest.mark.parametrize(
    ("kind", "options", "key", "expected"),
    [
        ("file", {}, "[sources.s] path", "required"),
        ("file", {"path": "/x", "follow": "yes"}, "[sources.s] follow", "true or false"),
        ("file", {"path": "/x", "start": "middle"}, "[sources.s] start", '"beginning" | "end"'),
        ("file", {"path": "/x", "pth": 1}, "[sources.s] pth", "one of the keys"),
        ("redis_stream", {}, "[sources.s] stream", "required"),
        ("redis_stream", {"stream": "s", "start": "last"}, "[sources.s] start", "entry id"),
        ("redis_stream", {"stream": "s", "count": 0}, "[sources.s] count", ">= 1"),
        ("redis_pubsub", {}, "[sources.s] redis_channel", "exactly one of"),
        ("nope", {}, "[sources.s] kind", "one of demo_ticker, file, redis_pubsub"),
    ],
)
def test_bad_source_options_name_the_key(
    kind: str, options: dict[str, Any], key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build(kind, **options)
    assert (info.value.source, info.value.key) == ("f.toml", key)
    assert expected in info.value.expected


@pytest.mark.parametrize(
    ("exc", "code"),
    [(ChannelBlocked, ErrorCode.UNAVAILABLE), (RateLimited, ErrorCode.RATE_LIMITED)],
)
def test_new_publish_errors_carry_protocol_codes(exc: type[PublishError], code: ErrorCode) -> None:
    assert issubclass(exc, PublishError)
    assert exc.code == code.value


def test_channel_blocked_says_which_channel_and_when_to_retry() -> None:
    exc = ChannelBlocked("orders", 2.0, retry_after=1.0)
    assert (exc.channel, exc.timeout, exc.retry_after) == ("orders", 2.0, 1.0)
    assert "'orders'" in str(exc)
