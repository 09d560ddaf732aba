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
//! - `P:bl:{sub}` zset (scores 0, ordered by id = by enqueue time): the
//!   subscriber's backlog, every id whose delivery to it is pending (waiting,
//!   retrying or leased), whatever the topic; added by `ENQUEUE` and `REPLAY`,
//!   removed when the delivery is delivered or dead (`SETTLE`, or `ENQUEUE`
//!   dead-lettering the oldest to make room);
//! - `P:dlq` zset (scores 0, ordered by dead-letter id = by message id);
//! - `P:i:{topic}:{key}` idempotency keys; `P:depth` hash: `u:{topic}`
//!   undelivered messages, `x:{topic}` dead letters, `_u` and `_x` totals,
//!   `s:{sub}` the size of `P:bl:{sub}` (set to its `ZCARD` after each change,
//!   so it is exact and never negative; it stays at 0 once emptied);
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
-- A subscriber's backlog: its pending deliveries (ids, oldest first).
local function blkey(sub) return P .. ':bl:' .. sub end
-- Copies the size of a subscriber's backlog into the depth hash.
local function sync_backlog(sub)
  redis.call('HSET', DEPTH, 's:' .. sub, redis.call('ZCARD', blkey(sub)))
end
-- A delivery to `sub` is pending again (new or replayed): it joins its backlog.
local function join_backlog(id, sub)
  redis.call('ZADD', blkey(sub), 0, id)
  sync_backlog(sub)
end
-- Appends an attempt (`at_ms|duration_ms|outcome`) to a delivery's history,
-- numbered after the attempts so far; the newest 20 are kept.
local function record_attempt(id, sub, attempt)
  local n = redis.call('HINCRBY', dkey(id, sub), 'n', 1)
  local h = hkey(id, sub)
  if redis.call('RPUSH', h, n .. '|' .. attempt) > 20 then redis.call('LTRIM', h, -20, -1) end
end
-- Marks a delivery dead and lists it in the dead-letter queue.
local function mark_dead(id, sub, topic, reason)
  redis.call('HSET', dkey(id, sub), 'st', 'x', 'ls', 0, 'why', reason, 'dead_at', NOW)
  redis.call('ZADD', P .. ':dlq', 0, id .. ':' .. sub)
  count('x:' .. topic, 1)
  count('_x', 1)
  redis.call('HINCRBY', mkey(id), 'dead', 1)
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
-- A pending delivery became final (delivered or dead, its state already
-- set): it leaves the due set, its key's chain (the key's next one becomes
-- due) and its subscriber's backlog; true when the topic counters changed.
local function leave_pending(id, sub, topic, okey)
  redis.call('ZREM', P .. ':due:' .. sub, id)
  if okey and okey ~= '' then
    redis.call('ZREM', P .. ':c:' .. sub .. ':' .. okey, id)
    promote(sub, okey)
  end
  redis.call('ZREM', blkey(sub), id)
  sync_backlog(sub)
  return pending_delta(id, topic, -1)
end
";

/// ARGV[4..]: id, topic, ordering key (''), meta, body, idempotency key (''),
/// idempotency ttl ms, max depth (0: none), on full (`reject` or `oldest`),
/// the dead-letter reason of a full backlog split around its count (head,
/// tail), the outcome recorded for a delivery shed unattempted, then the
/// distinct subscribers.
///
/// With a max depth, each subscriber whose backlog (`P:bl:{sub}`) is at it
/// sheds: `oldest` dead-letters its oldest pending delivery no dispatcher
/// holds and takes the new one; `reject` (or `oldest` with every pending one
/// leased) gets the new one as a dead letter at once. When every subscriber
/// sheds the new one, nothing is stored. A repeated idempotency key is
/// answered first, full or not.
/// Reply: `{'ok', id, depth}`, `{'dup', prior id, depth}` or `{'full', smallest
/// backlog of them, depth}`.
const ENQUEUE: &str = r"
local id, topic, okey, meta, body = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local ikey, ittl, maxd = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local on_full, why_head, why_tail, shed_outcome = ARGV[12], ARGV[13], ARGV[14], ARGV[15]
local idem = P .. ':i:' .. topic .. ':' .. ikey
if ikey ~= '' then
  local prior = redis.call('GET', idem)
  if prior then return {'dup', prior, depth()} end
end
local subs = {}
for i = 16, #ARGV do subs[#subs + 1] = ARGV[i] end
-- The oldest of a subscriber's pending deliveries that no dispatcher holds.
local function oldest_unleased(sub)
  local from = 0
  while true do
    local ids = redis.call('ZRANGE', blkey(sub), from, from + 99)
    if #ids == 0 then return nil end
    for _, v in ipairs(ids) do
      local d = redis.call('HMGET', dkey(v, sub), 'st', 'ls')
      if d[1] == 'p' and d[2] ~= '1' then return v end
    end
    from = from + #ids
  end
end
local shed, nshed, victims, least = {}, 0, {}, nil
if maxd > 0 then
  for _, sub in ipairs(subs) do
    local backlog = redis.call('ZCARD', blkey(sub))
    if backlog >= maxd then
      local reason = why_head .. backlog .. why_tail
      local victim = nil
      if on_full == 'oldest' then victim = oldest_unleased(sub) end
      if victim then
        victims[#victims + 1] = {victim, sub, reason}
      else
        shed[sub] = reason
        nshed = nshed + 1
        if not least or backlog < least then least = backlog end
      end
    end
  end
  if #subs > 0 and nshed == #subs then return {'full', tostring(least), depth()} end
end
local unattempted = NOW .. '|0|' .. shed_outcome
for _, v in ipairs(victims) do
  local vid, sub, reason = v[1], v[2], v[3]
  local f = redis.call('HMGET', mkey(vid), 'topic', 'okey')
  record_attempt(vid, sub, unattempted)
  mark_dead(vid, sub, f[1], reason)
  leave_pending(vid, sub, f[1], f[2])
end
if ikey ~= '' and ittl > 0 then redis.call('SET', idem, id, 'PX', ittl) end
local left = #subs - nshed
redis.call('HSET', mkey(id), 'topic', topic, 'okey', okey, 'meta', meta, 'body', body,
  'left', left, 'dead', 0, 'subs', table.concat(subs, '\n'))
for _, sub in ipairs(subs) do
  if shed[sub] then
    -- Dead on arrival: never attempted (attempt 0), straight to the dead letters.
    redis.call('HSET', dkey(id, sub), 'at', NOW, 'n', 0)
    redis.call('RPUSH', hkey(id, sub), '0|' .. unattempted)
    mark_dead(id, sub, topic, shed[sub])
    sync_backlog(sub)
  else
    redis.call('HSET', dkey(id, sub), 'st', 'p', 'at', NOW, 'n', 0, 'ls', 0)
    make_due(id, sub, okey)
    join_backlog(id, sub)
  end
end
if left > 0 then
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
/// Reply: `{'ok' | 'noop', depth, or false when it did not change (a retry)}`.
const SETTLE: &str = r"
local id, sub, mode, attempt = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local dk, m = dkey(id, sub), mkey(id)
redis.call('ZREM', P .. ':lease:' .. sub, id)
if redis.call('HGET', dk, 'st') ~= 'p' then return {'noop', false} end
record_attempt(id, sub, attempt)
local f = redis.call('HMGET', m, 'topic', 'okey')
local topic, okey = f[1], f[2]
if mode == 'retry' then
  redis.call('HSET', dk, 'at', ARGV[8], 'ls', 0)
  redis.call('ZADD', P .. ':due:' .. sub, ARGV[8], id)
  wake(sub)
  return {'ok', false}
end
if mode == 'ack' then
  redis.call('HSET', dk, 'st', 'd', 'ls', 0)
else
  mark_dead(id, sub, topic, ARGV[9])
end
leave_pending(id, sub, topic, okey)
return {'ok', depth()}
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
join_backlog(id, sub)
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
