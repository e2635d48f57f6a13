"""Config loading: TOML, env vars and flags; every error names source, key and expectation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from broadcaster.config import (
    DEFAULT_TOML,
    Config,
    ServerConfig,
    env_overrides,
    load_config,
    parse_config,
)
from broadcaster.core.policy import ChannelPolicy
from broadcaster.core.strategies import Strategy
from broadcaster.errors import BroadcasterError, ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broadcaster.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, environ: dict[str, str] | None = None, **flags: Any) -> Config:
    return load_config(path, environ=environ or {}, flags=flags)


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, environ)
    return info.value


def same_meaning(a: Config, b: Config) -> bool:
    return dataclasses.replace(a, source="") == dataclasses.replace(b, source="")


# --- the defaults -------------------------------------------------------------------


def test_embedded_default_is_the_shipped_file_verbatim() -> None:
    """`broadcaster serve` without --config runs exactly configs/default.toml."""
    assert (REPO / "configs" / "default.toml").read_text(encoding="utf-8") == DEFAULT_TOML


def test_embedded_default_means_the_same_as_the_shipped_file() -> None:
    """Loading configs/default.toml gives the same configuration as the embedded default."""
    from_file = load(REPO / "configs" / "default.toml")
    assert same_meaning(from_file, Config.embedded_default())
    assert from_file.source.endswith("default.toml")


def test_no_path_loads_the_embedded_default() -> None:
    """Without a config file the embedded default is used."""
    config = load_config(None, environ={})
    assert config.source == "<embedded default>"
    assert same_meaning(config, Config.embedded_default())


def test_default_server_settings_match_the_protocol() -> None:
    """Default host 127.0.0.1, port 8765, 64 KiB send buffer, 1 MiB frames."""
    server = Config.embedded_default().server
    assert (server.host, server.port) == ("127.0.0.1", 8765)
    assert server.socket_send_buffer == 65536
    assert server.max_message_size == 65536
    assert not server.strict_channels


def test_default_config_runs_the_demo_ticker() -> None:
    """The default config feeds tickers.demo with the built-in demo source."""
    (source,) = Config.embedded_default().sources
    assert (source.name, source.kind, source.channel) == (
        "demo_ticker",
        "demo_ticker",
        "tickers.demo",
    )
    assert source.options["rate"] == 20


def test_empty_file_gives_built_in_defaults() -> None:
    """Every key is optional: an empty file is a valid config."""
    config = parse_config("", source="empty.toml")
    assert config.server == ServerConfig()
    assert config.policies.defaults == ChannelPolicy()
    assert config.policies.entries == ()
    assert config.broker.kind == "memory"


def test_config_is_immutable() -> None:
    """A loaded config cannot be changed while the server runs."""
    config = Config.embedded_default()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]


def test_config_error_is_a_broadcaster_error() -> None:
    """One `except BroadcasterError` catches config mistakes too."""
    assert issubclass(ConfigError, BroadcasterError)


# --- file contents ----------------------------------------------------------------------


def test_values_from_the_file(tmp_path: Path) -> None:
    """Keys set in the file are used."""
    config = load(
        write(
            tmp_path,
            '[server]\nport = 9001\nhost = "0.0.0.0"\n'
            '[defaults]\nstrategy = "drop-newest"\nqueue_size = 10\n'
            '[broker]\nkind = "redis"\nurl = "redis://h:1/2"\n',
        )
    )
    assert (config.server.port, config.server.host) == (9001, "0.0.0.0")
    assert config.policies.defaults.strategy is Strategy.DROP_NEWEST
    assert (config.broker.kind, config.broker.url) == ("redis", "redis://h:1/2")
    assert config.source == str(tmp_path / "broadcaster.toml")


def test_seconds_may_be_written_as_integers(tmp_path: Path) -> None:
    """`slow_consumer_timeout = 5` means 5.0 seconds."""
    config = load(
        write(tmp_path, "[defaults]\nslow_consumer_timeout = 2\n[server]\nshutdown_timeout = 3\n")
    )
    assert config.policies.defaults.slow_consumer_timeout == 2.0
    assert isinstance(config.policies.defaults.slow_consumer_timeout, float)
    assert isinstance(config.server.shutdown_timeout, float)


def test_channel_entries_keep_file_order_first_match_wins(tmp_path: Path) -> None:
    """[channels] entries are tried in file order."""
    config = load(
        write(
            tmp_path,
            '[channels."tickers.slow"]\nstrategy = "drop-newest"\n'
            '[channels."tickers.*"]\nstrategy = "block"\n',
        )
    )
    resolve = config.policies.resolve
    assert [p.strategy for p in (resolve("tickers.slow"), resolve("tickers.x")) if p] == [
        Strategy.DROP_NEWEST,
        Strategy.BLOCK,
    ]


def test_channel_entry_inherits_from_defaults(tmp_path: Path) -> None:
    """A [channels] entry only overrides what it sets; [defaults] fills the rest."""
    config = load(
        write(
            tmp_path,
            "[defaults]\nslow_consumer_timeout = 2.0\nhistory_size = 10\n"
            '[channels."orders"]\nstrategy = "block"\n',
        )
    )
    policy = config.policies.resolve("orders")
    assert policy is not None
    assert (policy.strategy, policy.slow_consumer_timeout, policy.history_size) == (
        Strategy.BLOCK,
        2.0,
        10,
    )
    assert policy.label == "orders"


def test_channel_watermarks_follow_its_own_queue_size(tmp_path: Path) -> None:
    """A channel that only changes its queue size gets watermarks derived from it."""
    config = load(write(tmp_path, '[channels."small"]\nqueue_size = 10\n'))
    policy = config.policies.resolve("small")
    assert policy is not None
    assert (policy.high, policy.low) == (10, 5)


def test_conflate_channel(tmp_path: Path) -> None:
    """A conflate channel with its key, fallback, snapshot and rate cap loads as written."""
    config = load(
        write(
            tmp_path,
            '[channels."tickers.*"]\nstrategy = "conflate"\nconflate_key = "symbol"\n'
            'conflate_fallback = "drop-newest"\nsnapshot = true\nmax_rate = 50\n',
        )
    )
    policy = config.policies.resolve("tickers.x")
    assert policy is not None
    assert (policy.conflate_key, policy.conflate_fallback) == ("symbol", Strategy.DROP_NEWEST)
    assert policy.snapshot
    assert policy.max_rate == 50.0


def test_strict_channels_makes_a_strict_table(tmp_path: Path) -> None:
    """`strict_channels = true` refuses channels matching no entry."""
    config = load(write(tmp_path, '[server]\nstrict_channels = true\n[channels."a"]\n'))
    assert config.policies.resolve("b") is None
    assert config.policies.resolve("a") is not None


def test_source_kind_defaults_to_its_name(tmp_path: Path) -> None:
    """[sources.NAME] uses NAME as its kind unless `kind` is given; other keys are options."""
    config = load(
        write(
            tmp_path,
            '[sources.demo_ticker]\nchannel = "x"\nrate = 5\n'
            '[sources.b]\nkind = "k"\nchannel = "y"\n',
        )
    )
    first, second = config.sources
    assert (first.kind, first.channel, dict(first.options)) == ("demo_ticker", "x", {"rate": 5})
    assert (second.name, second.kind) == ("b", "k")


# --- errors: source, key, expectation ---------------------------------------------------


def assert_names(error: ConfigError, source: str, key: str, expected: str) -> None:
    assert error.source == source
    assert error.key == key
    assert expected in error.expected
    text = str(error)
    assert text.startswith(f"{source}: {key}: expected ")
    assert expected in text


def test_missing_file(tmp_path: Path) -> None:
    """A config path that does not exist is reported against that path."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert_names(info.value, str(path), "(file)", "an existing TOML file")


def test_unreadable_file(tmp_path: Path) -> None:
    """A path that cannot be read as a file is reported against that path."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert_names(info.value, str(tmp_path), "(file)", "a readable UTF-8 file")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    """A config file in another encoding is reported, not crashed on."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert_names(info.value, str(path), "(file)", "UTF-8")


def test_toml_syntax_error(tmp_path: Path) -> None:
    """Broken TOML is reported with the file name and the parser's explanation."""
    error = config_error(tmp_path, "[server\nport = 1\n")
    assert_names(error, str(tmp_path / "broadcaster.toml"), "(syntax)", "valid TOML (")


def test_unknown_section(tmp_path: Path) -> None:
    """A misspelt section is named, with the sections that exist."""
    error = config_error(tmp_path, "[sever]\nport = 1\n")
    assert_names(error, str(tmp_path / "broadcaster.toml"), "[sever]", "one of the sections server")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nprot = 1\n", "[server] prot"),
        ("[defaults]\nqueue = 1\n", "[defaults] queue"),
        ("[broker]\nhost = 'x'\n", "[broker] host"),
        ('[channels."a"]\nsize = 1\n', '[channels."a"] size'),
    ],
)
def test_unknown_key(tmp_path: Path, text: str, key: str) -> None:
    """A misspelt key is named with its section, and the known keys are listed."""
    error = config_error(tmp_path, text)
    assert_names(error, str(tmp_path / "broadcaster.toml"), key, "one of the known keys: ")


@pytest.mark.parametrize(
    ("text", "key", "expected", "got"),
    [
        ('[server]\nport = "8765"\n', "[server] port", "an integer", "8765"),
        ("[server]\nhost = 1\n", "[server] host", "a string", 1),
        ("[server]\nstrict_channels = 1\n", "[server] strict_channels", "true or false", 1),
        ("[server]\nshutdown_timeout = true\n", "[server] shutdown_timeout", "a number", True),
        ("[server]\nport = true\n", "[server] port", "an integer", True),
        ("[defaults]\nqueue_size = 1.5\n", "[defaults] queue_size", "an integer", 1.5),
        ('[defaults]\nsnapshot = "yes"\n', "[defaults] snapshot", "true or false", "yes"),
        ("[defaults]\nstrategy = 1\n", "[defaults] strategy", "a string", 1),
        ('[channels."a"]\nmax_rate = "fast"\n', '[channels."a"] max_rate', "a number", "fast"),
        ("[broker]\nurl = 6379\n", "[broker] url", "a string", 6379),
    ],
)
def test_wrong_type(tmp_path: Path, text: str, key: str, expected: str, got: object) -> None:
    """A value of the wrong type names the key, the expected type and the value found."""
    error = config_error(tmp_path, text)
    assert_names(error, str(tmp_path / "broadcaster.toml"), key, expected)
    assert error.got == got


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[server]\nport = 70000\n", "[server] port", "a TCP port 0-65535"),
        ("[server]\nport = -1\n", "[server] port", "a TCP port 0-65535"),
        ("[server]\nmax_message_size = 10\n", "[server] max_message_size", "bytes >= 64"),
        ("[server]\nsocket_send_buffer = -1\n", "[server] socket_send_buffer", "bytes >= 0"),
        ("[server]\nshutdown_timeout = 0\n", "[server] shutdown_timeout", "seconds > 0"),
        ("[server]\nclose_timeout = -1.0\n", "[server] close_timeout", "seconds > 0"),
        ("[server]\nping_interval = nan\n", "[server] ping_interval", "seconds > 0"),
        ('[broker]\nkind = "kafka"\n', "[broker] kind", '"memory" | "redis"'),
        (
            '[defaults]\nstrategy = "fastest"\n',
            "[defaults] strategy",
            '"drop-oldest" | "drop-newest"',
        ),
        ("[defaults]\nqueue_size = 0\n", "[defaults] queue_size", "an integer >= 1"),
        (
            "[defaults]\nslow_consumer_timeout = 0\n",
            "[defaults] slow_consumer_timeout",
            "seconds > 0",
        ),
        ('[defaults]\nstrategy = "conflate"\n', "[defaults] conflate_key", "a field name"),
        ('[channels."a"]\nlow_watermark = 300\n', '[channels."a"] low_watermark', "below high"),
        (
            '[channels."a"]\nconflate_fallback = "block"\n',
            '[channels."a"] conflate_fallback',
            "drop-oldest",
        ),
        (
            '[channels."a"]\nsnapshot = true\n',
            '[channels."a"] snapshot',
            "unless strategy is conflate",
        ),
        ("[channels]\na = 5\n", '[channels."a"]', "a table"),
        ("channels = 5\n", "[channels]", "tables such as"),
        ("sources = 5\n", "[sources]", "tables such as"),
        ("[sources]\nx = 5\n", "[sources.x]", "a table"),
        ("[sources.x]\nrate = 1\n", "[sources.x] channel", "a channel name"),
        ('[sources.x]\nchannel = "c"\nkind = 1\n', "[sources.x] kind", "a string"),
        ("server = 5\n", "[server]", "a table"),
    ],
)
def test_invalid_value(tmp_path: Path, text: str, key: str, expected: str) -> None:
    """An out-of-range or inconsistent value names its section, key and what was expected."""
    error = config_error(tmp_path, text)
    assert_names(error, str(tmp_path / "broadcaster.toml"), key, expected)


def test_inherited_problem_says_where_the_value_came_from(tmp_path: Path) -> None:
    """A channel broken by a value it inherits is told to set that key itself."""
    error = config_error(
        tmp_path, '[defaults]\nhigh_watermark = 200\n[channels."small"]\nqueue_size = 100\n'
    )
    assert error.key == '[channels."small"] high_watermark'
    assert "inherited from [defaults]" in error.expected
    assert 'set high_watermark in [channels."small"]' in error.expected


# --- environment variables and flags -----------------------------------------------------


def test_env_overrides_the_file(tmp_path: Path) -> None:
    """`BROADCASTER_SERVER_PORT` beats the port in the file."""
    config = load(write(tmp_path, "[server]\nport = 9001\n"), {"BROADCASTER_SERVER_PORT": "9000"})
    assert config.server.port == 9000


def test_env_overrides_defaults_and_derived_watermarks(tmp_path: Path) -> None:
    """`BROADCASTER_DEFAULTS_QUEUE_SIZE` resizes queues, watermarks following."""
    config = load(write(tmp_path, ""), {"BROADCASTER_DEFAULTS_QUEUE_SIZE": "512"})
    defaults = config.policies.defaults
    assert (defaults.queue_size, defaults.high, defaults.low) == (512, 512, 256)


def test_env_override_reaches_channels_that_inherit(tmp_path: Path) -> None:
    """A [defaults] override from the environment applies to channels that do not set the key."""
    config = load(
        write(tmp_path, '[channels."orders"]\nstrategy = "block"\n'),
        {"BROADCASTER_DEFAULTS_SLOW_CONSUMER_TIMEOUT": "1.5"},
    )
    policy = config.policies.resolve("orders")
    assert policy is not None
    assert policy.slow_consumer_timeout == 1.5


@pytest.mark.parametrize(
    ("var", "text", "section", "key", "value"),
    [
        ("BROADCASTER_SERVER_HOST", "0.0.0.0", "server", "host", "0.0.0.0"),
        ("BROADCASTER_SERVER_STRICT_CHANNELS", "true", "server", "strict_channels", True),
        ("BROADCASTER_SERVER_SHUTDOWN_TIMEOUT", "2.5", "server", "shutdown_timeout", 2.5),
        ("BROADCASTER_DEFAULTS_STRATEGY", "drop-newest", "defaults", "strategy", "drop-newest"),
        ("BROADCASTER_DEFAULTS_HISTORY_SIZE", "100", "defaults", "history_size", 100),
        ("BROADCASTER_BROKER_URL", "redis://x:1/0", "broker", "url", "redis://x:1/0"),
        ("BROADCASTER_BROKER_KIND", "redis", "broker", "kind", "redis"),
    ],
)
def test_env_variables_are_parsed_by_type(
    var: str, text: str, section: str, key: str, value: object
) -> None:
    """Strings are taken verbatim, other values parsed as TOML values."""
    assert env_overrides({var: text}) == {f"{section}.{key}": value}


def test_unrelated_env_variables_are_not_overrides() -> None:
    """Only BROADCASTER_<SECTION>_<KEY> for known keys becomes an override."""
    assert env_overrides({"PORT": "2", "BROADCASTER_URL": "x"}) == {}


@pytest.mark.parametrize(
    ("var", "suggestion"),
    [
        ("BROADCASTER_SERVER_PROT", "BROADCASTER_SERVER_PORT"),
        ("BROADCASTER_DEFAULTS_QUEUE_SISE", "BROADCASTER_DEFAULTS_QUEUE_SIZE"),
        ("BROADCASTER_SERVR_HOST", "BROADCASTER_SERVER_HOST"),
        ("BROADCASTER_LOGLEVEL", "BROADCASTER_LOG_LEVEL"),
        ("BROADCASTER_SOMETHING_ELSE", None),
    ],
)
def test_misspelt_env_variable_is_refused_naming_the_likely_one(
    tmp_path: Path, var: str, suggestion: str | None
) -> None:
    """A BROADCASTER_* variable nothing reads is an error, like an unknown key in the file."""
    error = config_error(tmp_path, "", {var: "9000"})
    assert error.source == var
    assert str(error).startswith(f"{var}: ")
    if suggestion is not None:
        assert f"did you mean {suggestion}?" in str(error)
    else:
        assert "did you mean" not in str(error)


def test_env_variables_read_elsewhere_are_allowed(tmp_path: Path) -> None:
    """The client CLI's, the command's and the secrets' variables are not mistakes."""
    config = load(
        write(tmp_path, '[admin]\ntoken_env = "BROADCASTER_MY_ADMIN_SECRET"\n'),
        {
            "BROADCASTER_URL": "ws://127.0.0.1:1/ws",
            "BROADCASTER_TOKEN": "t",
            "BROADCASTER_CONFIG": "x.toml",
            "BROADCASTER_LOG_LEVEL": "DEBUG",
            "BROADCASTER_PYTHON": "/usr/bin/python3",
            "BROADCASTER_MY_ADMIN_SECRET": "a" * 32,
            "BROADCASTER_SERVER_PORT": "9000",
        },
    )
    assert config.server.port == 9000
    assert config.admin.token == "a" * 32


@pytest.mark.parametrize(
    ("var", "text", "key", "expected"),
    [
        ("BROADCASTER_SERVER_PORT", "abc", "port", "an integer"),
        ("BROADCASTER_SERVER_PORT", "", "port", "an integer"),
        ("BROADCASTER_SERVER_PORT", "80.5", "port", "an integer"),
        ("BROADCASTER_SERVER_STRICT_CHANNELS", "1", "strict_channels", "true or false"),
        ("BROADCASTER_DEFAULTS_QUEUE_SIZE", '"512"', "queue_size", "an integer"),
    ],
)
def test_env_type_error_names_the_variable(var: str, text: str, key: str, expected: str) -> None:
    """A malformed variable is reported against the variable, not the file."""
    with pytest.raises(ConfigError) as info:
        env_overrides({var: text})
    assert (info.value.source, info.value.key) == (var, key)
    assert expected in info.value.expected
    assert str(info.value).startswith(f"{var}: ")


@pytest.mark.parametrize(
    ("var", "text", "expected"),
    [
        ("BROADCASTER_BROKER_TIMEOUT", "0", "seconds > 0"),
        ("BROADCASTER_BROKER_BREAKER_COOLDOWN", "-1", "seconds > 0"),
        ("BROADCASTER_BROKER_BREAKER_THRESHOLD", "0", "an integer >= 1"),
        ("BROADCASTER_BROKER_STREAM_MAXLEN", "0", "an integer >= 1"),
        ("BROADCASTER_SERVER_IDLE_CHANNEL_TTL", "-1", "seconds >= 0"),
    ],
)
def test_env_value_error_names_the_variable(
    tmp_path: Path, var: str, text: str, expected: str
) -> None:
    """A well-typed but out-of-range variable is blamed on the variable, not the file."""
    error = config_error(tmp_path, "", {var: text})
    assert error.source == var
    assert expected in error.expected


def test_load_config_reads_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an explicit environ, the process environment applies."""
    monkeypatch.setenv("BROADCASTER_SERVER_PORT", "9100")
    assert load_config(write(tmp_path, "")).server.port == 9100


def test_flags_beat_env_and_file(tmp_path: Path) -> None:
    """CLI flags have the last word."""
    config = load_config(
        write(tmp_path, "[server]\nport = 9001\n"),
        environ={"BROADCASTER_SERVER_PORT": "9000"},
        flags={"server.port": 9002, "server.host": None},
    )
    assert config.server.port == 9002
    assert config.server.host == "127.0.0.1"


def test_flags_apply_to_the_embedded_default() -> None:
    """Flags work without a config file too."""
    config = load_config(None, environ={}, flags={"server.port": 9003})
    assert config.server.port == 9003


def test_env_value_out_of_range_names_the_variable(tmp_path: Path) -> None:
    """A bad value from an environment variable is reported against that variable."""
    error = config_error(tmp_path, "[server]\nport = 9001\n", {"BROADCASTER_SERVER_PORT": "70000"})
    assert error.source == "BROADCASTER_SERVER_PORT"


def test_env_policy_value_invalid_names_the_variable(tmp_path: Path) -> None:
    """A bad [defaults] value from an environment variable is reported against that variable."""
    error = config_error(tmp_path, "", {"BROADCASTER_DEFAULTS_STRATEGY": "fastest"})
    assert error.source == "BROADCASTER_DEFAULTS_STRATEGY"
