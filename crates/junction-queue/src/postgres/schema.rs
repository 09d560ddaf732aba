//! The queue's tables, created and upgraded by versioned migrations.
//!
//! Migrations run at start (and by `junction migrate`) inside one transaction
//! holding an advisory lock, so instances starting together apply each one
//! once; a version already applied is never run again.
//!
//! Tables (in the configured schema):
//! - `messages`: one row per accepted message; `left_count` deliveries still
//!   pending, `dead_count` still in the dead-letter queue; the body is dropped
//!   once both are 0, the row once `completed_at_ms` is older than the retention;
//!   `subscribers` is newline-separated (names hold no newline);
//! - `deliveries`: one row per (message, subscriber): `state` `p` pending, `d`
//!   delivered, `x` dead; `due_at_ms`, `leased_until_ms` (the visibility
//!   timeout of a claim), `seq` (order within an ordering key), `in_dlq`;
//! - `idempotency`: `(topic, key)` unique, so a repeat on any instance finds the
//!   first message's id;
//! - `counters`: undelivered (`u`) and dead (`x`) messages per topic, kept in
//!   the same transactions as the changes they count, spread over 16 shard
//!   rows per (topic, kind) so concurrent acks do not queue on one row lock;
//! - `backlog` (version 2): pending deliveries per subscriber (what
//!   `max_depth` bounds), kept like `counters` (16 shard rows per subscriber,
//!   the sum is the backlog). Version 2 fills it from the pending deliveries
//!   already stored, so it applies to a schema in use; instances of a version
//!   before it do not keep it, so upgrade every instance sharing the schema
//!   together (a mix leaves the backlog counts wrong).

use tokio_postgres::Client;

use crate::types::QueueError;

use super::storage;

/// Every migration, in order; index + 1 is its version.
fn migrations(s: &str) -> Vec<String> {
    vec![
        format!(
            r#"
CREATE TABLE {s}.messages (
  id text PRIMARY KEY,
  topic text NOT NULL,
  body bytea,
  content_type text,
  headers jsonb NOT NULL,
  ordering_key text,
  subscribers text NOT NULL,
  enqueued_at_ms bigint NOT NULL,
  left_count int NOT NULL,
  dead_count int NOT NULL DEFAULT 0,
  completed_at_ms bigint
);
CREATE INDEX messages_completed ON {s}.messages (completed_at_ms) WHERE completed_at_ms IS NOT NULL;
CREATE SEQUENCE {s}.delivery_seq;
CREATE TABLE {s}.deliveries (
  message_id text NOT NULL REFERENCES {s}.messages (id) ON DELETE CASCADE,
  subscriber text NOT NULL,
  state text NOT NULL,
  seq bigint NOT NULL,
  ordering_key text,
  due_at_ms bigint NOT NULL,
  leased_until_ms bigint,
  attempts int NOT NULL DEFAULT 0,
  history jsonb NOT NULL DEFAULT '[]',
  in_dlq boolean NOT NULL DEFAULT false,
  reason text,
  dead_at_ms bigint,
  PRIMARY KEY (message_id, subscriber)
);
CREATE INDEX deliveries_due ON {s}.deliveries (subscriber, due_at_ms, seq) WHERE state = 'p';
CREATE INDEX deliveries_chain ON {s}.deliveries (subscriber, ordering_key, seq)
  WHERE state = 'p' AND ordering_key IS NOT NULL;
CREATE INDEX deliveries_dlq ON {s}.deliveries (message_id, subscriber) WHERE in_dlq;
CREATE TABLE {s}.idempotency (
  topic text NOT NULL,
  key text NOT NULL,
  message_id text NOT NULL,
  expires_at_ms bigint NOT NULL,
  PRIMARY KEY (topic, key)
);
CREATE INDEX idempotency_expiry ON {s}.idempotency (expires_at_ms);
CREATE TABLE {s}.counters (
  topic text NOT NULL,
  kind text NOT NULL,
  shard int NOT NULL,
  n bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (topic, kind, shard)
);
"#
        ),
        format!(
            r#"
CREATE TABLE {s}.backlog (
  subscriber text NOT NULL,
  shard int NOT NULL,
  n bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (subscriber, shard)
);
INSERT INTO {s}.backlog (subscriber, shard, n)
  SELECT subscriber, 0, count(*) FROM {s}.deliveries WHERE state = 'p' GROUP BY subscriber;
"#
        ),
    ]
}

/// Applies the migrations `schema` lacks; returns the versions applied now.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<Vec<i32>, QueueError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| storage("starting the migration", e))?;
    // One migrator at a time per schema, whatever the instance.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("junction-queue:{schema}")],
    )
    .await
    .map_err(|e| storage("locking the schema for migration", e))?;
    // `IF NOT EXISTS` on every start would otherwise log a NOTICE each time.
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning;
         CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_version (
           version int PRIMARY KEY,
           applied_at timestamptz NOT NULL DEFAULT now());"
    ))
    .await
    .map_err(|e| storage("creating the schema", e))?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_version"),
            &[],
        )
        .await
        .map_err(|e| storage("reading the schema version", e))?
        .get(0);
    let mut applied = Vec::new();
    for (i, sql) in migrations(schema).iter().enumerate() {
        let version = i as i32 + 1;
        if version <= current {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| storage(&format!("applying migration {version}"), e))?;
        tx.execute(
            &format!("INSERT INTO {schema}.schema_version (version) VALUES ($1)"),
            &[&version],
        )
        .await
        .map_err(|e| storage("recording the schema version", e))?;
        applied.push(version);
    }
    tx.commit()
        .await
        .map_err(|e| storage("committing the migration", e))?;
    Ok(applied)
}

/// Whether `schema` is a plain lowercase identifier (it is spliced into SQL).
pub fn valid_schema(schema: &str) -> bool {
    let mut chars = schema.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::valid_schema;

    #[test]
    fn only_plain_identifiers_are_schemas() {
        assert!(valid_schema("junction"));
        assert!(valid_schema("jq_test_01"));
        assert!(!valid_schema(""));
        assert!(!valid_schema("1abc"));
        assert!(!valid_schema("a;drop table x"));
        assert!(!valid_schema("Junction"));
        assert!(!valid_schema(&"a".repeat(64)));
    }
}
