//! Deadlock victims run again.
//!
//! PostgreSQL breaks a cycle of transactions waiting on each other's row locks
//! by aborting one of them (SQLSTATE 40P01). The cycles here are between a
//! publish batch (its backlog-counter upserts) and outcome statements of other
//! instances touching the same counters in another order. The aborted work was
//! rolled back whole, so running it again is safe and is what the victim's
//! caller wants: an outcome not lost until its lease expires, an accept not
//! refused with 503 by a healthy broker.

use crate::types::QueueError;

/// How many times work PostgreSQL aborted as a deadlock victim runs again.
pub(super) const RETRIES: u32 = 3;

/// Whether PostgreSQL aborted this statement to break a deadlock.
pub(super) fn is_deadlock(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
}

/// Whether this queue error is a deadlock abort (its source a PostgreSQL error saying so).
pub(super) fn was_deadlock(e: &QueueError) -> bool {
    let QueueError::Storage(s) = e else {
        return false;
    };
    std::error::Error::source(s)
        .and_then(|src| src.downcast_ref::<tokio_postgres::Error>())
        .is_some_and(is_deadlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::storage;
    use std::time::Duration;

    async fn connect(url: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("postgres must be running for this test");
        tokio::spawn(conn);
        client
    }

    /// Two transactions locking two rows in opposite orders: PostgreSQL aborts
    /// one; that abort, wrapped as the queue wraps it, is recognised, and
    /// another error is not.
    #[tokio::test]
    async fn a_real_deadlock_abort_is_recognised_and_nothing_else() {
        let url = std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let table = format!("jq_deadlock_{}", uuid::Uuid::new_v4().simple());
        let (mut a, mut b) = (connect(&url).await, connect(&url).await);
        a.batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY); INSERT INTO {table} VALUES (1), (2)"
        ))
        .await
        .unwrap();
        let ta = a.transaction().await.unwrap();
        let tb = b.transaction().await.unwrap();
        let lock = |id: i32| format!("UPDATE {table} SET id = id WHERE id = {id}");
        ta.batch_execute(&lock(1)).await.unwrap();
        tb.batch_execute(&lock(2)).await.unwrap();
        // Each now waits for the other's row; PostgreSQL aborts one within its
        // deadlock_timeout (1 s by default).
        let (ra, rb) = tokio::time::timeout(
            Duration::from_secs(20),
            futures::future::join(ta.batch_execute(&lock(2)), tb.batch_execute(&lock(1))),
        )
        .await
        .expect("postgres breaks the deadlock");
        let victim = match (ra, rb) {
            (Err(e), Ok(())) | (Ok(()), Err(e)) => e,
            other => panic!("exactly one transaction is aborted, got {other:?}"),
        };
        assert!(is_deadlock(&victim), "{victim:?}");
        assert!(was_deadlock(&storage("publishing", victim)));
        drop((ta, tb));
        let other = a.batch_execute("SELECT nonsense FROM").await.unwrap_err();
        assert!(!was_deadlock(&storage("publishing", other)));
        assert!(!was_deadlock(&QueueError::Closed));
        a.batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
    }
}
