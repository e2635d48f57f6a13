"""Configuration: one TOML file, environment variables and CLI flags, validated at start.

Precedence, highest first: CLI flags, environment variables, the file, the
built-in defaults. Every problem is reported as a `ConfigError` naming the
source (file or variable), the key and what was expected, so `broadcaster
serve` can print one paragraph and exit 2 instead of a traceback.

Environment variables: `BROADCASTER_<SECTION>_<KEY>` for the keys of
`[server]`, `[defaults]`, `[broker]`, `[api]`, `[auth]`, `[admin]` and
`[limits]` (for example
`BROADCASTER_SERVER_PORT=9000`, `BROADCASTER_DEFAULTS_QUEUE_SIZE=512`,
`BROADCASTER_BROKER_URL=redis://...`, `BROADCASTER_API_KEYS='["k1", "k2"]'`).
Any other `BROADCASTER_*` variable is refused like an unknown key, except the
few other commands read and those named by `*_env` keys (see `load.py`).

In code, `Config.build(server={...}, channels={...})` builds a config from
plain dicts with the same validation as a file, for embedding without TOML.

One module per idea; each section's module holds its dataclass (what every
key means, its default and unit), its key table and its validation:

- `server.py`, `broker.py`, `api.py`, `auth.py`, `admin.py`, `limits.py`: those sections.
- `policies.py`: `[defaults]` and `[channels."PATTERN"]` into a `PolicyTable`.
- `sources.py`: `[sources.NAME]` tables and `--source` flags.
- `default_toml.py`: the embedded default (configs/default.toml's text).
- `build.py`: `Config`, and `build_config` / `parse_config`, the one validation path.
- `load.py`: the file, environment variables and flags (`load_config`).
- `tables.py`, `secret.py`: key/type checks and `*_env` secrets, shared by the sections.

Import from `broadcaster.config`, not from these modules: they may move.
"""

from __future__ import annotations

from broadcaster.config.admin import MIN_ADMIN_TOKEN_CHARS as MIN_ADMIN_TOKEN_CHARS
from broadcaster.config.admin import AdminConfig
from broadcaster.config.api import ApiConfig
from broadcaster.config.auth import HMAC_ALGORITHMS as HMAC_ALGORITHMS
from broadcaster.config.auth import MIN_SECRET_BYTES as MIN_SECRET_BYTES
from broadcaster.config.auth import PUBLIC_KEY_ALGORITHMS as PUBLIC_KEY_ALGORITHMS
from broadcaster.config.auth import AuthConfig
from broadcaster.config.broker import BrokerConfig
from broadcaster.config.build import Config, build_config, parse_config
from broadcaster.config.default_toml import DEFAULT_TOML as DEFAULT_TOML
from broadcaster.config.limits import LimitsConfig
from broadcaster.config.load import ENV_PREFIX as ENV_PREFIX
from broadcaster.config.load import env_overrides as env_overrides
from broadcaster.config.load import env_var as env_var
from broadcaster.config.load import load_config
from broadcaster.config.server import ServerConfig
from broadcaster.config.sources import SourceConfig, source_from_flag

# The public API. The names imported `as` themselves above are not part of it
# but stay importable from here, as they were before this was a package
# (security.auth uses HMAC_ALGORITHMS; tests use DEFAULT_TOML and env_overrides).
__all__ = [
    "AdminConfig",
    "ApiConfig",
    "AuthConfig",
    "BrokerConfig",
    "Config",
    "LimitsConfig",
    "ServerConfig",
    "SourceConfig",
    "build_config",
    "load_config",
    "parse_config",
    "source_from_flag",
]
