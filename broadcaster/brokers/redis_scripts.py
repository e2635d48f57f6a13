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

# KEYS: meta, stream. ARGV: fresh epoch, data (JSON), maxlen.
# Returns the seq the message got.
PUBLISH = (
    _ENSURE_EPOCH
    + """
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 's', seq, 'e', epoch, 'd', ARGV[2])
return seq
"""
)

# KEYS: meta, stream. ARGV: fresh epoch.
# Returns {epoch, last seq, id of the stream's last entry or "0-0"}: where a
# node that starts reading the channel now starts, atomically with publishes.
SYNC = (
    _ENSURE_EPOCH
    + """
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
