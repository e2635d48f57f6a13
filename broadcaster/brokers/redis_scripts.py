"""The Redis side of the Redis broker: key names and the Lua scripts that keep seq honest.

Per channel C (with the configured prefix P, default "broadcaster:"):

- `Pmeta:C`, a hash: `epoch` (names this seq history) and `seq` (the last
  seq assigned);
- `Pstream:C`, a stream: one entry per message, fields `s` (seq), `e`
  (epoch) and `d` (the published data as JSON);
- `Pwake:NODE`, a tiny stream each node's reader also waits on, so that a
  node can interrupt its own blocking XREAD when the set of channels it
  reads changes (it expires by itself).

One Redis, not Redis Cluster: the scripts touch two keys per channel.

Unused channels expire: PUBLISH and SYNC set both keys to expire after the
channel's idle time (`[server] idle_channel_ttl`, at least its history_ttl;
0 = never), and every node refreshes the keys of the channels it reads
(`RedisBroker._refresh_expiry`). So a channel nobody reads or publishes to
is deleted by Redis itself and, used again, starts at seq 1 under a new
epoch, as on a lone in-memory node.

Why a script: the seq must be gap-free and in the stream's order. PUBLISH
increments the counter and appends the entry in one atomic step, so the
stream order and the seq order are the same order, whatever node published.
When the meta hash is missing (never published, FLUSHALL, a Redis restarted
without persistence) the script creates it with the caller's fresh epoch and
drops any orphaned stream: seq starts again from 1 under a new epoch.
"""

from __future__ import annotations

__all__ = ["PUBLISH", "SYNC", "Keys"]

# Creates the channel's epoch when missing (see the module docstring).
_ENSURE_EPOCH = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
"""

# `ttl_ms` > 0: both keys expire after that long without a publish, sync or refresh.
_EXPIRE = """
local function expire(ttl_ms)
  if tonumber(ttl_ms) > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl_ms)
    redis.call('PEXPIRE', KEYS[2], ttl_ms)
  end
end
"""

# KEYS: meta, stream. ARGV: fresh epoch, data (JSON), maxlen, ttl_ms.
# Returns the seq the message got.
PUBLISH = (
    _EXPIRE
    + _ENSURE_EPOCH
    + """
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 's', seq, 'e', epoch, 'd', ARGV[2])
expire(ARGV[4])
return seq
"""
)

# KEYS: meta, stream. ARGV: fresh epoch, ttl_ms.
# Returns {epoch, last seq, id of the stream's last entry or "0-0"}: where a
# node that starts reading the channel now starts, atomically with publishes.
SYNC = (
    _EXPIRE
    + _ENSURE_EPOCH
    + """
expire(ARGV[2])
local seq = redis.call('HGET', KEYS[1], 'seq')
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {epoch, seq, id}
"""
)


class Keys:
    """Key names under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def meta(self, channel: str) -> str:
        return f"{self.prefix}meta:{channel}"

    def stream(self, channel: str) -> str:
        return f"{self.prefix}stream:{channel}"

    def wake(self, node: str) -> str:
        return f"{self.prefix}wake:{node}"
