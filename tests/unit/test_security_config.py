"""[auth], [admin], [limits], the new [server] keys and channel permissions in the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from broadcaster.config import Config, LimitsConfig, load_config, parse_config
from broadcaster.core.policy import Access
from broadcaster.errors import ConfigError
from tests.support.security import ADMIN_TOKEN, SECRET, make_tls, rsa_keys

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_documented_ones() -> None:
    config = Config.embedded_default()
    assert config.server.allowed_origins == ("self",)
    assert config.server.allow_no_origin
    assert not config.auth.enabled
    assert config.admin.token == ""
    assert config.limits == LimitsConfig()
    assert config.limits.max_connections == 10_000
    assert config.limits.exempt_networks == ("127.0.0.0/8", "::1/128")
    assert config.policies.defaults.subscribe is Access.ANYONE
    assert config.policies.defaults.publish is Access.ANYONE


def test_a_full_security_config() -> None:
    config = Config.build(
        server={"allowed_origins": ["self", "HTTPS://App.Example.com/"]},
        auth={"enabled": True, "secret_env": "JWT_SECRET", "audience": "bc", "leeway": 2},
        admin={"token_env": "ADMIN"},
        limits={"publish_rate": 10, "connection_rate": 5, "exempt_networks": ["10.0.0.0/8"]},
        defaults={"publish": "token"},
        channels={"public.*": {"subscribe": "anyone", "publish": "none"}},
        environ={"JWT_SECRET": SECRET, "ADMIN": ADMIN_TOKEN},
    )
    assert config.server.allowed_origins == ("self", "https://app.example.com")
    assert (config.auth.secret, config.auth.leeway, config.admin.token) == (
        SECRET,
        2.0,
        ADMIN_TOKEN,
    )
    assert (config.limits.publish_burst, config.limits.connection_burst) == (20.0, 10.0)
    policy = config.policies.resolve("public.x")
    assert policy is not None
    assert (policy.subscribe, policy.publish) == (Access.ANYONE, Access.NONE)
    assert config.policies.defaults.publish is Access.TOKEN
    shown = repr(config)
    assert SECRET not in shown
    assert ADMIN_TOKEN not in shown


def test_env_overrides_reach_the_new_sections(tmp_path: Path) -> None:
    config = load_config(
        None,
        environ={
            "BROADCASTER_LIMITS_MAX_CONNECTIONS": "50",
            "BROADCASTER_AUTH_ENABLED": "true",
            "BROADCASTER_AUTH_SECRET": SECRET,
            "BROADCASTER_SERVER_ALLOWED_ORIGINS": '["*"]',
        },
    )
    assert config.limits.max_connections == 50
    assert config.auth.enabled
    assert config.server.allowed_origins == ("*",)


def test_internet_config_starts_with_its_documented_variables(tmp_path: Path) -> None:
    """configs/internet.toml says `export BROADCASTER_ADMIN_TOKEN=...`: the variable its
    `token_env` names is also the automatic override of `[admin] token`, not a second token."""
    tls = make_tls(tmp_path)
    config = load_config(
        REPO / "configs" / "internet.toml",
        environ={
            "BROADCASTER_JWT_SECRET": SECRET,
            "BROADCASTER_ADMIN_TOKEN": ADMIN_TOKEN,
            "BROADCASTER_SERVER_TLS_CERT": str(tls.cert),
            "BROADCASTER_SERVER_TLS_KEY": str(tls.key),
        },
    )
    assert (config.auth.secret, config.admin.token) == (SECRET, ADMIN_TOKEN)


def test_an_inline_token_and_token_env_still_conflict() -> None:
    with pytest.raises(ConfigError, match="not both"):
        load_config(
            None,
            environ={
                "BROADCASTER_ADMIN_TOKEN": ADMIN_TOKEN,
                "BROADCASTER_ADMIN_TOKEN_ENV": "OTHER",
            },
        )


def test_rs256_reads_the_public_key_file(tmp_path: Path) -> None:
    keys = rsa_keys(tmp_path)
    config = Config.build(
        auth={"enabled": True, "algorithms": ["RS256"], "public_key_file": str(keys.public_file)}
    )
    assert config.auth.public_key.startswith("-----BEGIN PUBLIC KEY-----")


def test_tls_files(tmp_path: Path) -> None:
    files = make_tls(tmp_path)
    config = Config.build(server={"tls_cert": str(files.cert), "tls_key": str(files.key)})
    assert config.server.tls_cert == str(files.cert)


@pytest.mark.parametrize(
    ("sections", "key", "expected"),
    [
        ({"server": {"allowed_origins": ["example.com"]}}, "[server] allowed_origins", "origin"),
        ({"server": {"allowed_origins": "self"}}, "allowed_origins", "a list of strings"),
        ({"server": {"tls_cert": "/nonexistent.pem"}}, "[server] tls_key", "both"),
        (
            {"server": {"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.pem"}},
            "[server] tls_cert",
            "an existing PEM file",
        ),
        ({"auth": {"enabled": True}}, "[auth] secret_env", "environment variable"),
        ({"auth": {"enabled": True, "secret": "short"}}, "[auth] secret", "at least 32 bytes"),
        (
            {"auth": {"enabled": True, "algorithms": ["HS512"], "secret": SECRET}},
            "[auth] secret",
            "at least 64 bytes",
        ),
        ({"auth": {"enabled": True, "secret": SECRET, "secret_env": "X"}}, "secret", "not both"),
        ({"auth": {"algorithms": ["none"]}}, "[auth] algorithms", "HS256"),
        ({"auth": {"enabled": True, "algorithms": ["RS256"]}}, "public_key_file", "PEM"),
        ({"auth": {"leeway": -1}}, "[auth] leeway", ">= 0"),
        ({"admin": {"token": "short"}}, "[admin] token", "16 characters"),
        ({"admin": {"token_env": "NOPE"}}, "[admin] token_env", "NOPE"),
        ({"limits": {"max_connections": -1}}, "[limits] max_connections", ">= 0"),
        ({"limits": {"publish_burst": 0.5}}, "[limits] publish_burst", ">= 1"),
        ({"limits": {"shed_fraction": 2}}, "[limits] shed_fraction", "<= 1"),
        ({"limits": {"exempt_networks": ["lan"]}}, "[limits] exempt_networks", "networks"),
        ({"limits": {"rate_limit_strikes": 0}}, "[limits] rate_limit_strikes", ">= 1"),
        ({"limits": {"retry_after": 0}}, "[limits] retry_after", "> 0"),
        ({"limits": {"max_header_bytes": 100}}, "[limits] max_header_bytes", ">= 1024"),
        ({"limits": {"max_half_open": -1}}, "[limits] max_half_open", ">= 0"),
        ({"limits": {"half_open_per_ip": -1}}, "[limits] half_open_per_ip", ">= 0"),
        ({"defaults": {"publish": "everyone"}}, "[defaults] publish", '"anyone"'),
        ({"defaults": {"subscribe": "token"}}, "[defaults] subscribe", "[auth] enabled"),
        (
            {"channels": {"x": {"publish": "token"}}},
            '[channels."x"] publish',
            "[auth] enabled",
        ),
    ],
)
def test_mistakes_name_the_key(sections: dict[str, object], key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Config.build(**sections, environ={})  # type: ignore[arg-type]
    assert key in raised.value.key
    assert expected in raised.value.expected


def test_a_bad_public_key_file(tmp_path: Path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="PEM public key"):
        Config.build(auth={"enabled": True, "algorithms": ["RS256"], "public_key_file": str(bad)})


def test_secrets_are_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config('[admin]\ntoken = "tiny-secret"\n', source="f.toml")
    assert "tiny-secret" not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        parse_config('[auth]\nenabled = true\nsecret = "tiny-secret"\n', source="f.toml")
    assert "tiny-secret" not in str(raised.value)


def test_the_internet_example_config_loads_and_warns_about_nothing(tmp_path: Path) -> None:
    """configs/internet.toml (with real files for its TLS paths) is valid and, on 0.0.0.0,
    leaves nothing for the exposure warnings."""
    from broadcaster.security.exposure import exposure_warnings

    files = make_tls(tmp_path)
    text = (REPO / "configs" / "internet.toml").read_text(encoding="utf-8")
    text = text.replace("/etc/broadcaster/fullchain.pem", str(files.cert))
    text = text.replace("/etc/broadcaster/privkey.pem", str(files.key))
    config = parse_config(
        text,
        source="internet.toml",
        environ={"BROADCASTER_JWT_SECRET": SECRET, "BROADCASTER_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    assert config.auth.enabled
    assert config.limits.publish_rate == 20
    assert exposure_warnings(config) == []
