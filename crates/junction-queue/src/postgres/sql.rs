//! Every statement of the PostgreSQL backend, written for one schema at connect.
//!
//! Each state change is one statement (data-modifying CTEs), so it is atomic
//! whatever other instances do, and costs one round trip. The counters they
//! touch (`counters` per topic, `backlog` per subscriber) are upserted in the
//! same statement; a publish, which runs several statements in one
//! transaction, upserts them last, in key order (see `publish`).

/// The statements, with the schema and wake-up channel spliced in.
pub struct Sql {
    pub lease: String,
    pub next_due: String,
    pub settle_ack: String,
    pub settle_retry: String,
    pub settle_dead: String,
    pub release: String,
    pub renew: String,
    pub replay: String,
    pub purge: String,
    pub idem_find: String,
    pub idem_claim: String,
    pub idem_release: String,
    pub lock_subscribers: String,
    pub backlog_of: String,
    pub evict_oldest: String,
    pub insert_messages: String,
    pub insert_deliveries: String,
    pub count_published: String,
    pub backlog_published: String,
    pub notify: String,
    pub counters: String,
    pub backlogs: String,
    pub message: String,
    pub message_deliveries: String,
    pub dlq_page: String,
    pub prune_messages: String,
    pub prune_keys: String,
    pub channel: String,
}

/// The attempt appended to a delivery's history (`$3` at, `$4` the JSON
/// object of its outcome and response sample, `$5` duration), the oldest
/// dropped past 20 (`MAX_HISTORY`).
const PUSH_HISTORY: &str =
    "history = CASE WHEN jsonb_array_length(history) >= 20 THEN history - 0 ELSE history END
      || jsonb_build_array(jsonb_build_object('attempt', attempts + 1, 'at_ms', $3::bigint,
           'duration_ms', $5::bigint) || ($4::text)::jsonb)";

/// Upsert of counter deltas selected by `rows` (topic, kind, delta; one row
/// per (topic, kind)) into a random one of 16 shard rows (the depth sums
/// them), in key order so that concurrent upserts cannot deadlock.
fn bump(s: &str, rows: &str) -> String {
    format!(
        "INSERT INTO {s}.counters (topic, kind, n, shard)
         SELECT b.*, floor(random() * 16)::int FROM ({rows}) AS b ORDER BY 1, 2
         ON CONFLICT (topic, kind, shard) DO UPDATE SET n = {s}.counters.n + excluded.n"
    )
}

/// Upsert of backlog deltas selected by `rows` (subscriber, delta; one row per
/// subscriber) into a random one of 16 shard rows, in subscriber order.
fn bump_backlog(s: &str, rows: &str) -> String {
    format!(
        "INSERT INTO {s}.backlog (subscriber, n, shard)
         SELECT b.*, floor(random() * 16)::int FROM ({rows}) AS b ORDER BY 1
         ON CONFLICT (subscriber, shard) DO UPDATE SET n = {s}.backlog.n + excluded.n"
    )
}

impl Sql {
    pub fn new(s: &str) -> Self {
        let channel = format!("{s}_wake");
        let finish_message = |dead: bool| {
            format!(
                "UPDATE {s}.messages SET left_count = left_count - 1,
                   dead_count = dead_count + {d},
                   completed_at_ms = CASE WHEN left_count = 1 THEN $6::bigint END,
                   body = CASE WHEN left_count = 1 AND dead_count + {d} = 0 THEN NULL ELSE body END
                 FROM d WHERE id = d.message_id RETURNING topic, left_count",
                d = i32::from(dead)
            )
        };
        Self {
            // The oldest due rows nobody holds; a keyed row only when no older
            // row of its key is pending (leased, retrying or due) for this subscriber.
            lease: format!(
                "WITH c AS (
                   SELECT d.message_id FROM {s}.deliveries d
                   WHERE d.subscriber = $1 AND d.state = 'p' AND d.due_at_ms <= $2
                     AND (d.leased_until_ms IS NULL OR d.leased_until_ms <= $2)
                     AND (d.ordering_key IS NULL OR NOT EXISTS (
                       SELECT 1 FROM {s}.deliveries o
                       WHERE o.subscriber = $1 AND o.state = 'p'
                         AND o.ordering_key = d.ordering_key AND o.seq < d.seq))
                   ORDER BY d.due_at_ms, d.seq LIMIT $3
                   FOR UPDATE OF d SKIP LOCKED),
                 u AS (
                   UPDATE {s}.deliveries d SET leased_until_ms = $4 FROM c
                   WHERE d.message_id = c.message_id AND d.subscriber = $1
                   RETURNING d.message_id, d.attempts, d.seq)
                 SELECT m.id, m.topic, m.body, m.content_type, m.headers, m.ordering_key,
                        m.subscribers, m.enqueued_at_ms, u.attempts
                 FROM u JOIN {s}.messages m ON m.id = u.message_id ORDER BY u.seq"
            ),
            next_due: format!(
                "SELECT min(greatest(due_at_ms, coalesce(leased_until_ms, 0)))
                 FROM {s}.deliveries d
                 WHERE subscriber = $1 AND state = 'p'
                   AND (leased_until_ms IS NULL OR leased_until_ms <= $2)
                   AND (d.ordering_key IS NULL OR NOT EXISTS (
                     SELECT 1 FROM {s}.deliveries o
                     WHERE o.subscriber = $1 AND o.state = 'p'
                       AND o.ordering_key = d.ordering_key AND o.seq < d.seq))"
            ),
            settle_ack: format!(
                "WITH d AS (
                   UPDATE {s}.deliveries SET state = 'd', leased_until_ms = NULL,
                     attempts = attempts + 1, {PUSH_HISTORY}
                   WHERE message_id = $1 AND subscriber = $2 AND state = 'p'
                   RETURNING message_id),
                 m AS ({fm}),
                 c AS ({b}),
                 k AS ({k})
                 SELECT topic, left_count FROM m",
                fm = finish_message(false),
                b = bump(s, "SELECT topic, 'u', -1 FROM m WHERE left_count = 0"),
                k = bump_backlog(s, "SELECT $2::text, -1::bigint FROM d"),
            ),
            settle_retry: format!(
                "WITH d AS (
                   UPDATE {s}.deliveries SET leased_until_ms = NULL, due_at_ms = $6,
                     attempts = attempts + 1, {PUSH_HISTORY}
                   WHERE message_id = $1 AND subscriber = $2 AND state = 'p'
                   RETURNING message_id)
                 SELECT pg_notify('{channel}', $2) FROM d"
            ),
            settle_dead: format!(
                "WITH d AS (
                   UPDATE {s}.deliveries SET state = 'x', leased_until_ms = NULL, in_dlq = true,
                     reason = $7, dead_at_ms = $6, attempts = attempts + 1, {PUSH_HISTORY}
                   WHERE message_id = $1 AND subscriber = $2 AND state = 'p'
                   RETURNING message_id),
                 m AS ({fm}),
                 c AS ({b}),
                 k AS ({k})
                 SELECT topic, left_count, pg_notify('{channel}', $2) FROM m",
                fm = finish_message(true),
                b = bump(
                    s,
                    "SELECT topic, 'x', 1 FROM m UNION ALL SELECT topic, 'u', -1 FROM m WHERE left_count = 0"
                ),
                k = bump_backlog(s, "SELECT $2::text, -1::bigint FROM d"),
            ),
            release: format!(
                "UPDATE {s}.deliveries SET leased_until_ms = NULL
                 WHERE message_id = $1 AND subscriber = $2 AND state = 'p'"
            ),
            renew: format!(
                "UPDATE {s}.deliveries SET leased_until_ms = $3
                 WHERE message_id = ANY($1) AND subscriber = ANY($2) AND state = 'p'
                   AND leased_until_ms IS NOT NULL"
            ),
            // Back to pending at the end of its key's chain, attempts reset.
            replay: format!(
                "WITH d AS (
                   UPDATE {s}.deliveries SET state = 'p', in_dlq = false, attempts = 0,
                     due_at_ms = $3, leased_until_ms = NULL, reason = NULL, dead_at_ms = NULL,
                     seq = nextval('{s}.delivery_seq')
                   WHERE message_id = $1 AND subscriber = $2 AND in_dlq
                   RETURNING message_id),
                 m AS (
                   UPDATE {s}.messages SET left_count = left_count + 1,
                     dead_count = dead_count - 1, completed_at_ms = NULL
                   FROM d WHERE id = d.message_id RETURNING topic, left_count),
                 c AS ({b}),
                 k AS ({k})
                 SELECT topic, left_count, pg_notify('{channel}', $2) FROM m",
                b = bump(
                    s,
                    "SELECT topic, 'x', -1 FROM m UNION ALL SELECT topic, 'u', 1 FROM m WHERE left_count = 1"
                ),
                k = bump_backlog(s, "SELECT $2::text, 1::bigint FROM d"),
            ),
            purge: format!(
                "WITH d AS (
                   UPDATE {s}.deliveries SET in_dlq = false, reason = 'purged: ' || coalesce(reason, '')
                   WHERE message_id = $1 AND subscriber = $2 AND in_dlq
                   RETURNING message_id),
                 m AS (
                   UPDATE {s}.messages SET dead_count = dead_count - 1,
                     body = CASE WHEN left_count = 0 AND dead_count = 1 THEN NULL ELSE body END
                   FROM d WHERE id = d.message_id RETURNING topic),
                 c AS ({b})
                 SELECT topic FROM m",
                b = bump(s, "SELECT topic, 'x', -1 FROM m"),
            ),
            idem_find: format!(
                "SELECT message_id FROM {s}.idempotency
                 WHERE topic = $1 AND key = $2 AND expires_at_ms > $3"
            ),
            // Claims the key unless a live claim exists; answers the claim's id.
            idem_claim: format!(
                "INSERT INTO {s}.idempotency AS i (topic, key, message_id, expires_at_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (topic, key) DO UPDATE SET
                   message_id = CASE WHEN i.expires_at_ms <= $5 THEN excluded.message_id ELSE i.message_id END,
                   expires_at_ms = CASE WHEN i.expires_at_ms <= $5 THEN excluded.expires_at_ms ELSE i.expires_at_ms END
                 RETURNING message_id"
            ),
            // Serializes the publishes to these subscribers across instances (while
            // `max_depth` is checked), each lock taken in one global order.
            idem_release: format!(
                "DELETE FROM {s}.idempotency WHERE topic = $1 AND key = $2 AND message_id = $3"
            ),
            lock_subscribers: format!(
                "SELECT count(pg_advisory_xact_lock(hashtext('{s}'), k)) FROM (
                   SELECT DISTINCT hashtext(sub) AS k FROM unnest($1::text[]) AS t(sub)
                   ORDER BY 1) AS l"
            ),
            backlog_of: format!(
                "SELECT subscriber, sum(n)::bigint FROM {s}.backlog
                 WHERE subscriber = ANY($1) GROUP BY subscriber"
            ),
            // Dead-letters `$1`'s oldest pending delivery nobody holds (by due
            // time: the one it would be given next), with the attempt `$3..$5`
            // and reason `$6` at `$2`; its message's row, for the counters.
            evict_oldest: format!(
                "WITH o AS (
                   SELECT message_id FROM {s}.deliveries
                   WHERE subscriber = $1 AND state = 'p'
                     AND (leased_until_ms IS NULL OR leased_until_ms <= $2)
                   ORDER BY due_at_ms, seq LIMIT 1
                   FOR UPDATE SKIP LOCKED),
                 d AS (
                   UPDATE {s}.deliveries d SET state = 'x', leased_until_ms = NULL, in_dlq = true,
                     reason = $6, dead_at_ms = $2, attempts = attempts + 1, {PUSH_HISTORY}
                   FROM o WHERE d.message_id = o.message_id AND d.subscriber = $1
                   RETURNING d.message_id)
                 UPDATE {s}.messages SET left_count = left_count - 1, dead_count = dead_count + 1,
                   completed_at_ms = CASE WHEN left_count = 1 THEN $2 END
                 FROM d WHERE id = d.message_id RETURNING topic, left_count"
            ),
            insert_messages: format!(
                "INSERT INTO {s}.messages (id, topic, body, content_type, headers, ordering_key,
                   subscribers, enqueued_at_ms, left_count, completed_at_ms, dead_count)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::jsonb[],
                   $6::text[], $7::text[], $8::bigint[], $9::int[], $10::bigint[], $11::int[])
                   AS t(id, topic, body, ct, h, ok, subs, at, n, done, dead)"
            ),
            // A delivery with a reason (`$5`) is dead on arrival (a full backlog
            // shed it): in the dead-letter queue with the one attempt `$6`.
            insert_deliveries: format!(
                "INSERT INTO {s}.deliveries (message_id, subscriber, state, seq, ordering_key,
                   due_at_ms, in_dlq, reason, dead_at_ms, history)
                 SELECT id, sub, CASE WHEN why IS NULL THEN 'p' ELSE 'x' END,
                   nextval('{s}.delivery_seq'), ok, at, why IS NOT NULL, why,
                   CASE WHEN why IS NOT NULL THEN at END,
                   CASE WHEN why IS NULL THEN '[]'::jsonb ELSE ($6::text)::jsonb END
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
                   WITH ORDINALITY AS t(id, sub, ok, at, why, i) ORDER BY i"
            ),
            count_published: bump(
                s,
                "SELECT topic, kind, sum(n)::bigint
                 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(topic, kind, n)
                 GROUP BY topic, kind",
            ),
            backlog_published: bump_backlog(
                s,
                "SELECT sub, sum(n)::bigint FROM unnest($1::text[], $2::bigint[]) AS t(sub, n)
                 GROUP BY sub",
            ),
            notify: format!("SELECT pg_notify('{channel}', sub) FROM unnest($1::text[]) AS t(sub)"),
            counters: format!("SELECT topic, kind, sum(n)::bigint FROM {s}.counters GROUP BY topic, kind"),
            backlogs: format!("SELECT subscriber, sum(n)::bigint FROM {s}.backlog GROUP BY subscriber"),
            message: format!(
                "SELECT id, topic, ordering_key, enqueued_at_ms, completed_at_ms
                 FROM {s}.messages WHERE id = $1"
            ),
            message_deliveries: format!(
                "SELECT subscriber, state, attempts, history, due_at_ms, leased_until_ms, reason
                 FROM {s}.deliveries WHERE message_id = $1 ORDER BY subscriber"
            ),
            dlq_page: format!(
                "SELECT d.message_id, d.subscriber, d.history, d.reason, d.dead_at_ms,
                        m.id, m.topic, m.body, m.content_type, m.headers, m.ordering_key,
                        m.subscribers, m.enqueued_at_ms
                 FROM {s}.deliveries d JOIN {s}.messages m ON m.id = d.message_id
                 WHERE d.in_dlq AND ($1::text IS NULL OR m.topic = $1)
                   AND ($2::text IS NULL OR d.subscriber = $2)
                   AND (d.message_id, d.subscriber) > ($3::text, $4::text)
                 ORDER BY d.message_id, d.subscriber LIMIT $5"
            ),
            prune_messages: format!(
                "DELETE FROM {s}.messages WHERE id IN (
                   SELECT id FROM {s}.messages
                   WHERE completed_at_ms < $1 AND dead_count = 0 LIMIT 1000)"
            ),
            prune_keys: format!(
                "DELETE FROM {s}.idempotency WHERE ctid IN (
                   SELECT ctid FROM {s}.idempotency WHERE expires_at_ms <= $1 LIMIT 1000)"
            ),
            channel,
        }
    }
}
