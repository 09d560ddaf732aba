//! The Lua scripts of the Redis backend: every state change of a message is
//! one script, so it is atomic whatever other instances do at the same time.
//!
//! Every script gets `ARGV[1]` the key prefix, `ARGV[2]` the wall clock (unix
//! ms, for leases and completion), `ARGV[3]` how long completed records are
//! kept (ms); its own arguments follow. A script that changed the depth
//! counters ends its reply with the depth hash (`HGETALL`), so the caller's
//! depth snapshot is exact after its own changes; others end it with false.
//!
//! Keys (`P` = prefix):
//! - `P:m:{id}` hash: `topic`, `okey` (ordering key or ''), `meta` (JSON the
//!   scripts never read), `body`, `subs` (newline-separated), `left`
//!   (deliveries still pending), `dead`, `done` (completion time);
//! - `P:d:{id}:{sub}` hash: `st` (`p` pending, `d` delivered, `x` dead), `at`
//!   (next attempt), `n` (attempts since the last replay), `ls` (1 while
//!   leased), `why`, `dead_at`; `P:h:{id}:{sub}` list: attempt history,
//!   `attempt|at_ms|duration_ms|outcome[\x1f response sample JSON]` (see `codec::attempt_record`), the newest [`MAX_HISTORY`] kept;
//! - `P:due:{sub}` zset of leasable ids by due time; `P:lease:{sub}` zset of
//!   leased ids by lease expiry;
//! - `P:c:{sub}:{key}` zset (all scores 0, so ordered by id = by time): the
//!   undelivered messages of one ordering key; `P:kh:{sub}` hash key → the id
//!   of that key currently in the due set or leased (only one per key);
//! - `P:dlq` zset (scores 0, ordered by dead-letter id = by message id);
//! - `P:i:{topic}:{key}` idempotency keys; `P:depth` hash: `u:{topic}`
//!   undelivered messages, `x:{topic}` dead letters, `_u` and `_x` totals;
//! - `P:wake` pub/sub channel: a subscriber's name when it has new work.
//!
//! [`MAX_HISTORY`]: crate::MAX_HISTORY

/// Shared by every script: names, and the helpers that keep the invariants.
const PRELUDE: &str = r"
local P, NOW, KEEP = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local DEPTH = P .. ':depth'
local function mkey(id) return P .. ':m:' .. id end
local function dkey(id, sub) return P .. ':d:' .. id .. ':' .. sub end
local function hkey(id, sub) return P .. ':h:' .. id .. ':' .. sub end
local function depth() return redis.call('HGETALL', DEPTH) end
-- Announces new work for a subscriber to every instance (their dispatchers wake).
local function wake(sub) redis.call('PUBLISH', P .. ':wake', sub) end
local function count(field, by)
  redis.call('HINCRBY', DEPTH, field, by)
end
-- Keeps exactly the oldest undelivered message of (sub, key) leasable, unless
-- the one placed before it is still leased (its outcome decides what is next).
local function promote(sub, key)
  local chain = P .. ':c:' .. sub .. ':' .. key
  local khead = P .. ':kh:' .. sub
  local due = P .. ':due:' .. sub
  local head = redis.call('ZRANGE', chain, 0, 0)[1]
  local cur = redis.call('HGET', khead, key)
  if cur and cur == head then return end
  if cur then
    if redis.call('HGET', dkey(cur, sub), 'ls') == '1' and redis.call('ZSCORE', chain, cur) then
      return
    end
    redis.call('ZREM', due, cur)
  end
  if head then
    redis.call('HSET', khead, key, head)
    redis.call('ZADD', due, redis.call('HGET', dkey(head, sub), 'at'), head)
  else
    redis.call('HDEL', khead, key)
  end
end
-- A pending delivery is due now: behind its key's chain when it has an
-- ordering key, else in the due set; every instance is told.
local function make_due(id, sub, okey)
  if okey ~= '' then
    redis.call('ZADD', P .. ':c:' .. sub .. ':' .. okey, 0, id)
    promote(sub, okey)
  else
    redis.call('ZADD', P .. ':due:' .. sub, NOW, id)
  end
  wake(sub)
end
-- Every delivery is final: stamp completion; without dead letters, drop the
-- body and let the record expire after KEEP.
local function finish(id)
  local m = mkey(id)
  redis.call('HSET', m, 'done', NOW)
  if tonumber(redis.call('HGET', m, 'dead')) == 0 then
    redis.call('HDEL', m, 'body')
    redis.call('PEXPIRE', m, KEEP)
    for sub in string.gmatch(redis.call('HGET', m, 'subs'), '[^\n]+') do
      redis.call('PEXPIRE', dkey(id, sub), KEEP)
      redis.call('PEXPIRE', hkey(id, sub), KEEP)
    end
  end
end
-- Counts a delivery leaving (-1) or re-entering (+1) the pending state;
-- true when that changed the depth counters.
local function pending_delta(id, topic, by)
  local left = redis.call('HINCRBY', mkey(id), 'left', by)
  if by < 0 and left == 0 then
    count('u:' .. topic, -1)
    count('_u', -1)
    finish(id)
    return true
  elseif by > 0 and left == 1 then
    count('u:' .. topic, 1)
    count('_u', 1)
    redis.call('HDEL', mkey(id), 'done')
    return true
  end
  return false
end
";

/// ARGV[4..]: id, topic, ordering key (''), meta, body, idempotency key (''),
/// idempotency ttl ms, max depth (0: none), then the distinct subscribers.
/// Reply: `{'ok', id, depth}`, `{'dup', prior id, depth}` or `{'full', undelivered, depth}`.
const ENQUEUE: &str = r"
local id, topic, okey, meta, body = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local ikey, ittl, maxd = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local idem = P .. ':i:' .. topic .. ':' .. ikey
if ikey ~= '' then
  local prior = redis.call('GET', idem)
  if prior then return {'dup', prior, depth()} end
end
local subs = {}
for i = 12, #ARGV do subs[#subs + 1] = ARGV[i] end
if maxd > 0 and #subs > 0 then
  local undelivered = tonumber(redis.call('HGET', DEPTH, '_u') or '0')
  if undelivered >= maxd then return {'full', tostring(undelivered), depth()} end
end
if ikey ~= '' and ittl > 0 then redis.call('SET', idem, id, 'PX', ittl) end
redis.call('HSET', mkey(id), 'topic', topic, 'okey', okey, 'meta', meta, 'body', body,
  'left', #subs, 'dead', 0, 'subs', table.concat(subs, '\n'))
for _, sub in ipairs(subs) do
  redis.call('HSET', dkey(id, sub), 'st', 'p', 'at', NOW, 'n', 0, 'ls', 0)
  make_due(id, sub, okey)
end
if #subs > 0 then
  count('u:' .. topic, 1)
  count('_u', 1)
else
  finish(id)
end
return {'ok', id, depth()}
";

/// ARGV[4..]: subscriber, due-by time, most to lease, lease ttl ms. Leases
/// past their expiry (a dispatcher that died) are made due again first.
/// Reply: `{{id, meta, body, attempts, topic, ordering key}, ...}`.
const LEASE: &str = r"
local sub, due_by, max, ttl = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local due, lease = P .. ':due:' .. sub, P .. ':lease:' .. sub
for _, id in ipairs(redis.call('ZRANGEBYSCORE', lease, '-inf', NOW)) do
  redis.call('ZREM', lease, id)
  local dk = dkey(id, sub)
  if redis.call('HGET', dk, 'st') == 'p' then
    redis.call('HSET', dk, 'ls', 0)
    redis.call('ZADD', due, redis.call('HGET', dk, 'at'), id)
  end
end
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', due_by, 'LIMIT', 0, max)) do
  redis.call('ZREM', due, id)
  local dk = dkey(id, sub)
  local f = redis.call('HMGET', mkey(id), 'meta', 'body', 'topic', 'okey')
  local d = redis.call('HMGET', dk, 'st', 'n')
  if f[1] and d[1] == 'p' then
    redis.call('ZADD', lease, NOW + ttl, id)
    redis.call('HSET', dk, 'ls', 1)
    out[#out + 1] = {id, f[1], f[2] or '', d[2], f[3], f[4]}
  end
end
return out
";

/// ARGV[4..]: id, subscriber, mode (`ack`, `retry`, `dead`), the attempt as
/// `at_ms|duration_ms|outcome[\x1f sample]`, next attempt time (retry), reason (dead).
/// Reply: `{'ok' | 'noop', depth or false when it did not change}`.
const SETTLE: &str = r"
local id, sub, mode, attempt = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local dk, m = dkey(id, sub), mkey(id)
redis.call('ZREM', P .. ':lease:' .. sub, id)
if redis.call('HGET', dk, 'st') ~= 'p' then return {'noop', false} end
local n = redis.call('HINCRBY', dk, 'n', 1)
local h = hkey(id, sub)
if redis.call('RPUSH', h, n .. '|' .. attempt) > 20 then redis.call('LTRIM', h, -20, -1) end
local f = redis.call('HMGET', m, 'topic', 'okey')
local topic, okey = f[1], f[2]
if mode == 'retry' then
  redis.call('HSET', dk, 'at', ARGV[8], 'ls', 0)
  redis.call('ZADD', P .. ':due:' .. sub, ARGV[8], id)
  wake(sub)
  return {'ok', false}
end
local changed = false
if mode == 'ack' then
  redis.call('HSET', dk, 'st', 'd', 'ls', 0)
else
  redis.call('HSET', dk, 'st', 'x', 'ls', 0, 'why', ARGV[9], 'dead_at', NOW)
  redis.call('ZADD', P .. ':dlq', 0, id .. ':' .. sub)
  count('x:' .. topic, 1)
  count('_x', 1)
  redis.call('HINCRBY', m, 'dead', 1)
  changed = true
end
if okey and okey ~= '' then
  redis.call('ZREM', P .. ':c:' .. sub .. ':' .. okey, id)
  promote(sub, okey)
end
if pending_delta(id, topic, -1) then changed = true end
if changed then return {'ok', depth()} end
return {'ok', false}
";

/// ARGV[4..]: id, subscriber. Gives a lease back; the delivery is due at its time.
const RELEASE: &str = r"
local id, sub = ARGV[4], ARGV[5]
local dk = dkey(id, sub)
if redis.call('ZREM', P .. ':lease:' .. sub, id) == 1 and redis.call('HGET', dk, 'st') == 'p' then
  redis.call('HSET', dk, 'ls', 0)
  redis.call('ZADD', P .. ':due:' .. sub, redis.call('HGET', dk, 'at'), id)
end
return {'ok', false}
";

/// ARGV[4..]: id, subscriber. A dead delivery is pending again, due now,
/// attempts reset (history kept). Reply: `{'ok' | 'missing', depth}`.
const REPLAY: &str = r"
local id, sub = ARGV[4], ARGV[5]
if redis.call('ZREM', P .. ':dlq', id .. ':' .. sub) == 0 then return {'missing', depth()} end
local dk, m = dkey(id, sub), mkey(id)
local topic, okey = redis.call('HGET', m, 'topic'), redis.call('HGET', m, 'okey')
redis.call('HSET', dk, 'st', 'p', 'n', 0, 'at', NOW, 'ls', 0)
redis.call('HDEL', dk, 'why', 'dead_at')
count('x:' .. topic, -1)
count('_x', -1)
redis.call('HINCRBY', m, 'dead', -1)
pending_delta(id, topic, 1)
make_due(id, sub, okey)
return {'ok', depth()}
";

/// ARGV[4..]: id, subscriber. Discards a dead letter: the delivery stays dead
/// (its status says it was purged), the message expires once nothing else holds it.
const PURGE: &str = r"
local id, sub = ARGV[4], ARGV[5]
if redis.call('ZREM', P .. ':dlq', id .. ':' .. sub) == 0 then return {'missing', depth()} end
local m = mkey(id)
local topic = redis.call('HGET', m, 'topic')
redis.call('HSET', dkey(id, sub), 'why', 'purged: ' .. (redis.call('HGET', dkey(id, sub), 'why') or ''))
count('x:' .. topic, -1)
count('_x', -1)
redis.call('HINCRBY', m, 'dead', -1)
if tonumber(redis.call('HGET', m, 'left')) == 0 then finish(id) end
return {'ok', depth()}
";

/// The backend's scripts, each with the prelude prepended.
pub struct Scripts {
    pub enqueue: redis::Script,
    pub lease: redis::Script,
    pub settle: redis::Script,
    pub release: redis::Script,
    pub replay: redis::Script,
    pub purge: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        let with_prelude = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Self {
            enqueue: with_prelude(ENQUEUE),
            lease: with_prelude(LEASE),
            settle: with_prelude(SETTLE),
            release: with_prelude(RELEASE),
            replay: with_prelude(REPLAY),
            purge: with_prelude(PURGE),
        }
    }
}
