//! The admin side over SQS: dead letters are the messages of the `…-dlq`
//! queues. SQS cannot browse a queue, so a scan receives every message with a
//! visibility timeout (hiding it from other scans meanwhile), then deletes what
//! it replayed or purged and makes the rest visible again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, QueueAttributeName};

use super::{names, storage, visibility_secs, Shared};
use crate::contract::Ledger;
use crate::envelope::{self, Envelope};
use crate::types::*;

/// How long a scan hides the dead letters it read (if it cannot give them back).
const SCAN_HOLD: Duration = Duration::from_secs(30);
/// Most dead letters one scan reads per queue.
const MAX_SCAN: usize = 10_000;

/// A dead letter a scan holds.
struct Held {
    url: String,
    receipt: String,
    letter: Option<DeadLetter>,
}

pub struct SqsLedger {
    shared: Arc<Shared>,
}

impl SqsLedger {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The dead-letter queues a scan for `filter` reads.
    async fn dlq_urls(&self, filter: &DlqFilter) -> Result<Vec<String>, QueueError> {
        let s = &self.shared;
        if let (Some(topic), Some(sub)) = (&filter.topic, &filter.subscriber) {
            let name = names::dlq(&s.cfg.prefix, topic, sub);
            return match s.sqs.get_queue_url().queue_name(name).send().await {
                Ok(o) => Ok(o.queue_url().map(str::to_owned).into_iter().collect()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_queue_does_not_exist()) =>
                {
                    Ok(Vec::new())
                }
                Err(e) => Err(storage("finding a dead-letter queue", e)),
            };
        }
        Ok(s.list_queues()
            .await?
            .into_iter()
            .filter(|u| names::name_of(u).ends_with(names::DLQ_SUFFIX))
            .collect())
    }

    /// Receives every message of the dead-letter queue at `url`.
    async fn scan_queue(&self, url: String) -> Result<Vec<Held>, QueueError> {
        let s = &self.shared;
        let mut out = Vec::new();
        let mut waited = false;
        while out.len() < MAX_SCAN {
            let got = s
                .sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .visibility_timeout(visibility_secs(SCAN_HOLD))
                // Short polls may miss messages; one long poll confirms the end.
                .wait_time_seconds(if waited { 1 } else { 0 })
                .message_attribute_names(envelope::HEADER)
                .send()
                .await
                .map_err(|e| storage("reading a dead-letter queue", e))?;
            if got.messages().is_empty() {
                if waited {
                    break;
                }
                waited = true;
                continue;
            }
            for m in got.messages() {
                let Some(receipt) = m.receipt_handle() else {
                    continue;
                };
                let header = m
                    .message_attributes()
                    .and_then(|a| a.get(envelope::HEADER))
                    .and_then(|v| v.string_value())
                    .map(str::as_bytes);
                let env = Envelope::parse(header, m.message_id().map(str::to_owned), None, "", 0);
                let sub = env.subscriber.clone().unwrap_or_default();
                // Only letters this prefix wrote to this very queue (another
                // prefix may start with this one).
                let ours = names::name_of(&url) == names::dlq(&s.cfg.prefix, &env.topic, &sub);
                let letter = ours.then(|| DeadLetter {
                    id: dead_letter_id(env.id.as_str(), &sub),
                    subscriber: sub,
                    attempts: env.history.clone(),
                    reason: env.reason.clone().unwrap_or_default(),
                    dead_at_ms: env.dead_at_ms.unwrap_or(0),
                    message: env.message(names::decode_body(
                        m.body().unwrap_or_default(),
                        env.body_base64,
                    )),
                });
                out.push(Held {
                    url: url.clone(),
                    receipt: receipt.to_owned(),
                    letter,
                });
            }
        }
        Ok(out)
    }

    /// Every dead letter the queues for `filter` hold, oldest first; the
    /// caller gives back (or deletes) each.
    async fn scan(&self, filter: &DlqFilter) -> Result<Vec<Held>, QueueError> {
        let urls = self.dlq_urls(filter).await?;
        let scans = futures::future::join_all(urls.into_iter().map(|u| self.scan_queue(u))).await;
        let mut held = Vec::new();
        let mut failed = None;
        for scan in scans {
            match scan {
                Ok(h) => held.extend(h),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            self.give_back(held).await;
            return Err(e);
        }
        held.sort_by_key(|h| h.letter.as_ref().map(|l| (l.dead_at_ms, l.id.clone())));
        Ok(held)
    }

    /// Makes `held` visible again (else they come back after [`SCAN_HOLD`]).
    async fn give_back(&self, held: Vec<Held>) {
        let mut by_queue: std::collections::HashMap<String, Vec<String>> = Default::default();
        for h in held {
            by_queue.entry(h.url).or_default().push(h.receipt);
        }
        for (url, receipts) in by_queue {
            for chunk in receipts.chunks(10) {
                let entries = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        ChangeMessageVisibilityBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(r)
                            .visibility_timeout(0)
                            .build()
                            .expect("id and receipt are set")
                    })
                    .collect();
                if let Err(e) = self
                    .shared
                    .sqs
                    .change_message_visibility_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                {
                    tracing::debug!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "dead letters stay hidden until the scan's hold ends");
                }
            }
        }
    }

    /// Replays (to the subscriber's queue) or purges one held dead letter.
    async fn apply(&self, held: &Held, action: DlqAction) -> Result<(), QueueError> {
        let s = &self.shared;
        let letter = held.letter.as_ref().expect("only letters are applied");
        if action == DlqAction::Replay {
            let mut env = Envelope::replay_of(letter);
            let url = s
                .queue_url(&letter.message.topic, &letter.subscriber)
                .await?;
            s.send(&url, &mut env, &letter.message.body, s.cfg.fifo)
                .await?;
        }
        s.sqs
            .delete_message()
            .queue_url(&held.url)
            .receipt_handle(&held.receipt)
            .send()
            .await
            .map_err(|e| storage("removing a dead letter", e))?;
        Ok(())
    }
}

/// Per topic the largest subscriber backlog (visible, in flight and delayed),
/// and the dead letters.
pub async fn read_depth(s: &Shared) -> Result<DepthSnapshot, QueueError> {
    let counts = |url: String| async move {
        let out = s
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| storage("reading an sqs queue's counts", e))?;
        Ok::<u64, QueueError>(
            out.attributes()
                .map(|a| a.values().filter_map(|v| v.parse::<u64>().ok()).sum())
                .unwrap_or(0),
        )
    };
    let mut snap = DepthSnapshot::default();
    let queues: Vec<((String, String), String)> = s
        .queues
        .lock()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for ((topic, sub), url) in queues {
        let backlog = counts(url).await?;
        *snap.subscribers.entry(sub).or_default() += backlog;
        let t = snap.topics.entry(topic).or_default();
        *t = (*t).max(backlog);
    }
    let dlqs: Vec<String> = s.dlqs.lock().values().cloned().collect();
    for url in dlqs {
        snap.dlq_total += counts(url).await?;
    }
    snap.total = snap.topics.values().sum();
    Ok(snap)
}

#[async_trait]
impl Ledger for SqsLedger {
    async fn message_status(&self, _id: &str) -> Result<Option<MessageStatus>, QueueError> {
        Err(QueueError::Unsupported(
            "the sqs backend keeps no per-message status: see /admin/dlq and the delivery metrics",
        ))
    }

    async fn dlq_list(
        &self,
        filter: DlqFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<DlqPage, QueueError> {
        let held = self.scan(&filter).await?;
        let all: Vec<&DeadLetter> = held
            .iter()
            .filter_map(|h| h.letter.as_ref())
            .filter(|l| filter.matches(&l.message.topic, &l.subscriber))
            .collect();
        let page = DlqPage::from_sorted(&all, after.as_deref(), limit);
        self.give_back(held).await;
        Ok(page)
    }

    async fn dlq_apply(&self, dead_letter_id: &str, action: DlqAction) -> Result<(), QueueError> {
        let (_, sub) = split_dead_letter_id(dead_letter_id).ok_or(QueueError::NotFound)?;
        let filter = DlqFilter {
            topic: None,
            subscriber: Some(sub.to_owned()),
        };
        let mut held = self.scan(&filter).await?;
        let found = held
            .iter()
            .position(|h| h.letter.as_ref().is_some_and(|l| l.id == dead_letter_id));
        let result = match found {
            Some(i) => {
                let h = held.swap_remove(i);
                let applied = self.apply(&h, action).await;
                if applied.is_err() {
                    held.push(h);
                }
                applied
            }
            None => Err(QueueError::NotFound),
        };
        self.give_back(held).await;
        result
    }

    async fn dlq_apply_all(&self, filter: DlqFilter, action: DlqAction) -> Result<u64, QueueError> {
        let held = self.scan(&filter).await?;
        let mut done = 0;
        let mut rest = Vec::new();
        let mut failed = None;
        for h in held {
            let matches = h
                .letter
                .as_ref()
                .is_some_and(|l| filter.matches(&l.message.topic, &l.subscriber));
            if !matches || failed.is_some() {
                rest.push(h);
                continue;
            }
            match self.apply(&h, action).await {
                Ok(()) => done += 1,
                Err(e) => {
                    failed = Some(e);
                    rest.push(h);
                }
            }
        }
        self.give_back(rest).await;
        match failed {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    fn depth(&self) -> DepthSnapshot {
        self.shared.depth.read().clone()
    }
}
