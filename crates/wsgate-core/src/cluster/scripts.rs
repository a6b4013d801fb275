//! The Lua scripts the fleet runs in Redis. Each runs atomically, reads the time from Redis
//! (`TIME`, one clock for every instance), and is one round trip (EVALSHA).
//!
//! Keys (`P` is `cluster.key_prefix`):
//! - `P:instances`: sorted set, instance name -> its lease's end (ms). An instance whose lease
//!   has ended is dead: its sessions stop counting.
//! - `P:sessions:<instance>`: hash, session id -> session JSON; expires with the lease.
//! - `P:revocations`: sorted set, `sub:<value>` / `jti:<value>` -> refused until (ms); the key
//!   expires with its last member.
//! - `P:subject:<route>:<sub>`: hash, slot -> owning instance.
//! - `P:rate:<route>:<ip>`: hash, a token bucket (`tokens`, `at`).
//! - `P:events`: the pub/sub channel revocations, lifts and kicks travel on.

use redis::Script;

/// KEYS: rate bucket, instances, [subject hash]. ARGV: ms per token, burst, subject cap, slot,
/// instance, lease ms, subject key horizon ms. Returns `{0, 0}` admitted, `{1, wait_ms}` over
/// the address's handshake rate, `{2, 0}` the subject holds its cap on live instances.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or burst
local at = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) / period)
if tokens < 1 then
  return {1, math.ceil((1 - tokens) * period)}
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * period) + 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[5])
if #KEYS < 3 then
  return {0, 0}
end
local fields = redis.call('HGETALL', KEYS[3])
local live, alive = 0, {}
for i = 1, #fields, 2 do
  local owner = fields[i + 1]
  if alive[owner] == nil then
    local lease = tonumber(redis.call('ZSCORE', KEYS[2], owner))
    alive[owner] = lease ~= nil and lease > now
  end
  if alive[owner] then
    live = live + 1
  else
    redis.call('HDEL', KEYS[3], fields[i])
  end
end
if live >= tonumber(ARGV[3]) then
  return {2, 0}
end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[7])
return {0, 0}
";

/// KEYS: revocations. ARGV: member, until ms, channel, event, force. Keeps the later of the
/// known and the given end; publishes the event when it changed anything, or when `force`
/// (an operator's revocation is always announced). Returns 1 when published.
const REVOKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local new = tonumber(ARGV[2])
if new <= now then
  return 0
end
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
local changed = old == nil or old < new
if changed then
  redis.call('ZADD', KEYS[1], new, ARGV[1])
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[1], math.ceil(tonumber(last[2])))
end
if changed or ARGV[5] == '1' then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
end
return 0
";

/// KEYS: revocations. Returns the members in force with their ends, flat.
const REVOCATIONS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
";

/// KEYS: instances, this instance's sessions hash. ARGV: instance, lease ms. Renews the
/// lease, forgets instances dead for an hour, returns how many are alive.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600000)
redis.call('PEXPIRE', KEYS[2], lease)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
";

/// KEYS: instances. ARGV: the sessions hash prefix (`P:sessions:`). Returns the session JSON
/// of every live instance.
const SESSIONS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  for _, session in ipairs(redis.call('HVALS', ARGV[1] .. name)) do
    out[#out + 1] = session
  end
end
return out
";

/// The scripts, hashed once.
pub(super) struct Scripts {
    pub(super) admit: Script,
    pub(super) revoke: Script,
    pub(super) revocations: Script,
    pub(super) renew: Script,
    pub(super) sessions: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            admit: Script::new(ADMIT),
            revoke: Script::new(REVOKE),
            revocations: Script::new(REVOCATIONS),
            renew: Script::new(RENEW),
            sessions: Script::new(SESSIONS),
        }
    }
}
