"""The embedded default configuration: what `broadcaster serve` runs with no --config.

It is configs/default.toml's text, embedded so an installed package (which
ships no configs/ directory) starts the same demo as a checkout; a test keeps
the two identical, so edit both together.
"""

from __future__ import annotations

__all__ = ["DEFAULT_TOML"]

# Kept identical to configs/default.toml by a test.
DEFAULT_TOML = """\
# broadcaster's default configuration: one process, no other service.
# Every key is documented in docs/configuration.md.

[server]
host = "127.0.0.1"
port = 8765
max_message_size = 65536       # bytes per incoming frame; larger -> close 1009
socket_send_buffer = 65536     # SO_SNDBUF per client socket; 0 = kernel autotuning
shutdown_timeout = 5.0         # seconds to drain queues on SIGTERM before close 1001
strict_channels = false        # true: channels matching no [channels] entry -> unknown_channel
allowed_origins = ["self"]     # browser origins allowed to connect (others: HTTP 403)
# tls_cert = "cert.pem"        # with tls_key: wss:// (and https:// for [api])
# tls_key = "key.pem"

[defaults]
strategy = "drop-oldest"       # drop-oldest | drop-newest | block | conflate
queue_size = 256               # messages per subscription
# high_watermark = 256         # default: queue_size
# low_watermark = 128          # default: queue_size / 2
slow_consumer_timeout = 5.0    # seconds at or above the high watermark -> close 4008
slow_consumer_share = 0.5      # block: share of time a subscriber may hold publishers -> 4008
# compression = "deflate"      # off | deflate: permessage-deflate, each message compressed once
# compression_min_size = 1024  # bytes: smaller messages go plain (they would shrink ~10%)
# compression_level = 6        # zlib 1 (fastest) .. 9 (smallest)

[channels."tickers.*"]          # a slow browser gets the latest price of every symbol
strategy = "conflate"
conflate_key = "symbol"        # field of `data` that names the key
conflate_fallback = "drop-oldest"  # for messages without that field
snapshot = true                # new subscribers first get the latest value per key
max_rate = 50                  # the most a subscriber may ask for with subscribe's max_rate

[broker]
kind = "memory"                # memory | redis

[limits]                       # the edge; see docs/security.md (0 = no limit)
max_connections = 10000        # open connections in total -> HTTP 503
connections_per_ip = 256       # open connections per address -> HTTP 429
connection_rate = 20           # new connections per second per address -> HTTP 429
exempt_networks = ["127.0.0.0/8", "::1/128"]  # skip the per-address limits (a local proxy)
max_subscriptions = 128        # per connection -> forbidden
publish_rate = 0               # publishes per second per connection -> rate_limited, then 4029
max_loop_lag = 1.0             # event-loop lag (s) -> HTTP 503, then shed with 1013
max_header_bytes = 16384       # request line + headers per request -> HTTP 431
max_half_open = 1024           # connections still sending their request, in total -> HTTP 503
half_open_per_ip = 32          # ... per address -> HTTP 429

# [auth]                       # JWTs: ?token= or the `auth` op (see docs/security.md)
# enabled = true
# secret_env = "BROADCASTER_JWT_SECRET"

# [admin]                      # /stats, /dashboard, /metrics, $sys.*: loopback only without it
# token_env = "BROADCASTER_ADMIN_TOKEN"

[api]                          # HTTP API: POST /api/publish, and the streams GET /sse, /stream
enabled = true
host = "127.0.0.1"             # no keys below: anyone who can reach it may publish; keep it private
port = 8766
keys = []                      # API keys for `Authorization: apikey KEY`; empty = no auth
publish_timeout = 5.0          # seconds to wait for room on block channels before 503
rate = 0                       # messages per second per publisher (key or IP); 0 = unlimited
header_timeout = 10.0          # seconds to send a request head (also the keep-alive idle time)
body_timeout = 10.0            # seconds to send the body once the head arrived -> HTTP 408
max_connections = 1024         # open connections to this port; more are closed at accept

[sources.demo_ticker]          # built-in simulated feed
channel = "tickers.demo"
symbols = ["AAPL", "MSFT", "NVDA", "GOOG", "AMZN"]
rate = 20                      # messages per second
"""
