"""The Redis side of the Redis broker: key names and the Lua scripts that keep seq honest.

Per channel C (with the configured prefix P, default "broadcaster:"):

- `Pmeta:C`, a hash: `epoch` (names this seq history), `seq` (the last seq
  assigned), `run` and `durable` (the Redis process that last assigned a
  seq, and whether it fsynced every write), and after a reset `pe` / `ps`
  (the previous epoch and the highest seq it is known to have reached);
- `Pstream:C`, a stream: one entry per message, fields `s` (seq), `e`
  (epoch) and `d` (the published data as JSON); the first entry of an epoch
  that replaced another also carries `pe` and `ps`;
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

Why the epoch check (`_CHECK_EPOCH`, in PUBLISH and SYNC): a seq handed out
twice under one epoch would make every node skip the second message as a
duplicate, silently. Redis gives out an already used seq whenever it comes
back with older data than it acknowledged: restarted without persistence
(the meta hash is missing), from an RDB snapshot or an `everysec` AOF that
missed the last writes, or a replica promoted while it lagged. The script
cannot see what was lost, so it starts a new epoch (seq from 1, the old
stream dropped) whenever:

- the meta hash is missing (never used, FLUSHALL, evicted, restarted empty);
- a different Redis process (run_id) assigns the next seq than the one that
  assigned the last, unless the last one fsynced every write (`appendonly
  yes`, `appendfsync always`) and the current one loaded that data from its
  own files (a primary, never promoted from replica): only then can nothing
  acknowledged be missing;
- the calling node already saw a higher seq of this epoch than the meta
  hash holds (a rollback the run_id rule did not catch).

The calling node passes the run_id it checked (and the durability it saw);
if Redis now runs another process, the script answers `{"run", run_id}`
and the node checks the new process before trying again, so the decision
is always about the process that runs the script.

The new epoch records the previous one (`pe`) and the highest seq it is
known to have reached (`ps`: the meta's seq, raised to what the calling
node saw, and later to what any node that still knew the old epoch saw
when it publishes or syncs): subscribers are told how many they missed.
"""

from __future__ import annotations

__all__ = ["PUBLISH", "ROLLBACK_FIELDS", "SYNC", "Keys"]

# Fields of the reset bookkeeping, for tests and tools that inspect the meta hash.
ROLLBACK_FIELDS = ("pe", "ps", "run", "durable")

# ARGV[1] fresh epoch, ARGV[2] run_id the caller checked, ARGV[3] "1" when that
# process fsyncs every write, ARGV[4] "1" when it may continue a durable
# predecessor's seqs (durable and never promoted), ARGV[5] / ARGV[6] the epoch
# and highest seq the caller saw ("" / 0 when it saw none).
# Leaves `epoch`, `seq`, `pe`, `ps` set, or returns {"run", run_id} early.
_CHECK_EPOCH = """
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if run ~= ARGV[2] then return {'run', run} end
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'run', 'durable', 'pe', 'ps')
local epoch, seq = m[1], tonumber(m[2] or '0')
local pe, ps = m[5], tonumber(m[6] or '0')
local known_epoch, known_seq = ARGV[5], tonumber(ARGV[6])
local reset = false
if not epoch then
  reset = true
  pe, ps = known_epoch, 0
elseif (m[3] and m[3] ~= run and not (m[4] == '1' and ARGV[4] == '1'))
    or (known_epoch == epoch and seq < known_seq) then
  reset = true
  pe, ps = epoch, seq
end
if reset then
  if pe == known_epoch and known_seq > ps then ps = known_seq end
  epoch, seq = ARGV[1], 0
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  if pe ~= '' then redis.call('HSET', KEYS[1], 'pe', pe, 'ps', ps) end
elseif pe and pe == known_epoch and known_seq > ps then
  ps = known_seq
  redis.call('HSET', KEYS[1], 'ps', ps)
end
if reset or m[3] ~= run or m[4] ~= ARGV[3] then
  redis.call('HSET', KEYS[1], 'run', run, 'durable', ARGV[3])
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

# KEYS: meta, stream. ARGV[1..6]: as _CHECK_EPOCH; ARGV[7] data (JSON),
# ARGV[8] maxlen, ARGV[9] ttl_ms.
# Returns {"ok", epoch, seq}: the seq the message got, and under which epoch.
PUBLISH = (
    _EXPIRE
    + _CHECK_EPOCH
    + """
seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
if seq == 1 and pe and pe ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*',
    's', seq, 'e', epoch, 'd', ARGV[7], 'pe', pe, 'ps', ps)
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 's', seq, 'e', epoch, 'd', ARGV[7])
end
expire(ARGV[9])
return {'ok', epoch, seq}
"""
)

# KEYS: meta, stream. ARGV[1..6]: as _CHECK_EPOCH; ARGV[7] ttl_ms.
# Returns {"ok", epoch, last seq, id of the stream's last entry or "0-0"}:
# where a node that starts reading the channel now starts, atomically with
# publishes.
SYNC = (
    _EXPIRE
    + _CHECK_EPOCH
    + """
expire(ARGV[7])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {'ok', epoch, seq, id}
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
