//! The [`IndexedStore`] methods of [`PostgresBroker`]: publishing goes to the
//! group-commit publisher (`publish.rs`), claims and outcomes are one
//! statement each, the admin reads are in `read.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{prepared, read, storage, DepthDelta, PostgresBroker};
use crate::store::IndexedStore;
use crate::types::*;

#[async_trait]
impl IndexedStore for PostgresBroker {
    async fn health(&self) -> Result<(), QueueError> {
        self.check_open()?;
        let conn = self.conn().await?;
        conn.simple_query("SELECT 1")
            .await
            .map_err(|e| storage("checking postgres", e))?;
        Ok(())
    }

    async fn enqueue(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError> {
        self.check_open()?;
        // The publisher applies the batch's counts to the snapshot itself.
        let (outcome, subscribers) = self.publisher.publish(req).await?;
        if let EnqueueOutcome::Accepted(_) = &outcome {
            for s in &subscribers {
                self.wake_local(s);
            }
        }
        Ok(outcome)
    }

    async fn lease_due(
        &self,
        subscriber: &str,
        now_ms: u64,
        max: usize,
    ) -> Result<Vec<Lease>, QueueError> {
        self.check_open()?;
        let conn = self.settle_conn().await?;
        let until = (now_ms + self.cfg.lease_ttl.as_millis() as u64) as i64;
        let rows = conn
            .query(
                &prepared(&conn, &self.sql.lease).await?,
                &[&subscriber, &(now_ms as i64), &(max as i64), &until],
            )
            .await
            .map_err(|e| storage("claiming deliveries", e))?;
        let leases: Vec<Lease> = rows
            .iter()
            .map(|row| read::lease_from(row, subscriber))
            .collect::<Result<_, _>>()?;
        let mut held = self.held.lock();
        for l in &leases {
            held.insert((l.message.id.as_str().to_owned(), subscriber.to_owned()));
        }
        Ok(leases)
    }

    async fn next_due_at(&self, subscriber: &str) -> Result<Option<u64>, QueueError> {
        self.check_open()?;
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                &prepared(&conn, &self.sql.next_due).await?,
                &[&subscriber, &(now_ms() as i64)],
            )
            .await
            .map_err(|e| storage("reading the next due time", e))?;
        Ok(row.get::<_, Option<i64>>(0).map(|v| v.max(0) as u64))
    }

    async fn ack(&self, d: &Lease, attempt: AttemptRecord) -> Result<(), QueueError> {
        let rows = self
            .settle(
                "recording a delivery",
                &self.sql.settle_ack,
                d,
                &attempt,
                None,
            )
            .await?;
        // A row: it was pending (its message is finished when none is left).
        if let Some(row) = rows.first() {
            let left: i32 = row.get(1);
            self.bump_local(
                DepthDelta::default()
                    .topic(&row.get::<_, String>(0), -i64::from(left == 0), 0)
                    .subscriber(&d.subscriber, -1),
            );
        }
        Ok(())
    }

    async fn retry_later(
        &self,
        d: &Lease,
        attempt: AttemptRecord,
        next_attempt_at_ms: u64,
    ) -> Result<(), QueueError> {
        let at = next_attempt_at_ms as i64;
        self.settle(
            "scheduling a retry",
            &self.sql.settle_retry,
            d,
            &attempt,
            Some((at, None)),
        )
        .await?;
        self.wake_local(&d.subscriber);
        Ok(())
    }

    async fn dead_letter(
        &self,
        d: &Lease,
        attempt: AttemptRecord,
        reason: String,
    ) -> Result<(), QueueError> {
        let now = now_ms() as i64;
        let rows = self
            .settle(
                "dead-lettering a delivery",
                &self.sql.settle_dead,
                d,
                &attempt,
                Some((now, Some(&reason))),
            )
            .await?;
        if let Some(row) = rows.first() {
            let left: i32 = row.get(1);
            self.bump_local(
                DepthDelta::default()
                    .topic(&row.get::<_, String>(0), -i64::from(left == 0), 1)
                    .subscriber(&d.subscriber, -1),
            );
        }
        Ok(())
    }

    async fn release(&self, d: &Lease) {
        let (id, sub) = (d.message.id.as_str(), d.subscriber.as_str());
        self.held.lock().remove(&(id.to_owned(), sub.to_owned()));
        let released = async {
            let conn = self.settle_conn().await?;
            conn.execute(&prepared(&conn, &self.sql.release).await?, &[&id, &sub])
                .await
                .map_err(|e| storage("releasing a claim", e))
        };
        match released.await {
            Ok(_) => self.wake_local(sub),
            Err(e) => {
                tracing::warn!(error = %e, "could not release a claim; it comes due after the visibility timeout")
            }
        }
    }

    async fn message_status(&self, id: &str) -> Result<Option<MessageStatus>, QueueError> {
        let conn = self.conn().await?;
        read::message_status(&conn, &self.sql, id, now_ms()).await
    }

    async fn dlq_list(
        &self,
        filter: DlqFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<DlqPage, QueueError> {
        let conn = self.conn().await?;
        read::dlq_page(&conn, &self.sql, &filter, after.as_deref(), limit).await
    }

    async fn dlq_apply(&self, dead_letter_id: &str, action: DlqAction) -> Result<(), QueueError> {
        self.check_open()?;
        let (id, sub) = split_dead_letter_id(dead_letter_id).ok_or(QueueError::NotFound)?;
        if self.settle_dead(id, sub, action).await? {
            Ok(())
        } else {
            Err(QueueError::NotFound)
        }
    }

    async fn dlq_apply_all(&self, filter: DlqFilter, action: DlqAction) -> Result<u64, QueueError> {
        self.check_open()?;
        let (mut after, mut done) = (None::<String>, 0u64);
        loop {
            let page = self.dlq_list(filter.clone(), after.clone(), 500).await?;
            for letter in &page.items {
                if self
                    .settle_dead(letter.message.id.as_str(), &letter.subscriber, action)
                    .await?
                {
                    done += 1;
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(done),
            }
        }
    }

    fn depth(&self) -> DepthSnapshot {
        self.depth.read().clone()
    }

    fn notifier(&self, subscriber: &str) -> Arc<Notify> {
        self.notifier_of(subscriber)
    }

    async fn close(&self) -> Result<(), QueueError> {
        // Every publish already answered is committed; later ones are refused.
        self.closed.store(true, Ordering::Release);
        self.publisher.close().await;
        self.pool.close();
        self.settle_pool.close();
        Ok(())
    }
}
