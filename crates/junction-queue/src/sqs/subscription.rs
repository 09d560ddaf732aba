//! Receives from a subscriber's SQS queue (long polling), and settles by
//! deleting, hiding or moving the message.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageSystemAttributeName;

use super::leases::Lease;
use super::{names, storage, visibility_secs, Shared};
use crate::contract::*;
use crate::envelope::{self, Envelope};
use crate::types::*;

/// Long-polling wait of one receive (the contract: `next` returns within about a second).
const WAIT_SECS: i32 = 1;
/// Most messages one receive returns (SQS's limit).
const MAX_BATCH: usize = 10;
/// How long a message whose dead-lettering failed stays hidden.
const DEAD_LETTER_BACKOFF: Duration = Duration::from_secs(5);

/// What a delivery's ack handle holds.
struct Token {
    receipt: String,
    sqs_id: String,
    envelope: Envelope,
    /// Keeps the message hidden until settled.
    lease: Lease,
}

pub struct SqsSubscription {
    shared: Arc<Shared>,
    topic: String,
    subscriber: String,
    url: String,
    settler: Arc<SqsSettler>,
}

impl SqsSubscription {
    pub fn new(shared: Arc<Shared>, topic: &str, subscriber: &str, url: String) -> Self {
        Self {
            settler: Arc::new(SqsSettler {
                shared: shared.clone(),
                url: url.clone(),
            }),
            shared,
            topic: topic.to_owned(),
            subscriber: subscriber.to_owned(),
            url,
        }
    }
}

#[async_trait]
impl Subscription for SqsSubscription {
    async fn next(&mut self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let s = &self.shared;
        s.check_open()?;
        let out = s
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(WAIT_SECS)
            // The timeout the leases extend by, whatever the queue was created with.
            .visibility_timeout(visibility_secs(s.cfg.visibility_timeout))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names(envelope::HEADER)
            .send()
            .await
            .map_err(|e| storage("receiving from sqs", e))?;
        let mut groups = HashSet::new();
        let mut deliveries = Vec::new();
        for m in out.messages() {
            let (Some(receipt), Some(sqs_id)) = (m.receipt_handle(), m.message_id()) else {
                continue;
            };
            let header = m
                .message_attributes()
                .and_then(|a| a.get(envelope::HEADER))
                .and_then(|v| v.string_value())
                .map(|v| v.as_bytes());
            let env = Envelope::parse(header, Some(sqs_id.to_owned()), None, &self.topic, now_ms());
            if !env.subscribers.is_empty() && !env.subscribers.contains(&self.subscriber) {
                // Published before this subscriber was dropped from the route: not its.
                self.settler.delete(receipt).await?;
                continue;
            }
            if s.cfg.fifo && !groups.insert(super::group_of(&env)) {
                // A later message of a group already in this batch: back, so
                // the group's messages go out one at a time.
                self.settler
                    .hide(receipt, sqs_id, Duration::ZERO, true)
                    .await?;
                continue;
            }
            let received: u32 = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let released = s.released(sqs_id);
            let attempts = received.saturating_sub(1).saturating_sub(released);
            let body = names::decode_body(m.body().unwrap_or_default(), env.body_base64);
            let message = Arc::new(env.message(body));
            deliveries.push(Delivery::new(
                message,
                self.subscriber.clone(),
                attempts,
                env.enqueued_at_ms,
                AckToken::Other(Box::new(Token {
                    lease: s.leases.take(&self.url, receipt),
                    receipt: receipt.to_owned(),
                    sqs_id: sqs_id.to_owned(),
                    envelope: env,
                })),
                self.settler.clone(),
            ));
        }
        Ok(deliveries)
    }
}

struct SqsSettler {
    shared: Arc<Shared>,
    url: String,
}

impl SqsSettler {
    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.shared
            .sqs
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| storage("deleting an sqs message", e))?;
        Ok(())
    }

    /// Hides the message for `after` (0: visible at once); `release` counts it
    /// as not attempted.
    async fn hide(
        &self,
        receipt: &str,
        sqs_id: &str,
        after: Duration,
        release: bool,
    ) -> Result<(), QueueError> {
        if release {
            self.shared.count_release(sqs_id);
        }
        self.shared
            .sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(visibility_secs(after))
            .send()
            .await
            .map_err(|e| storage("changing an sqs message's visibility", e))?;
        Ok(())
    }
}

#[async_trait]
impl Settle for SqsSettler {
    async fn settle(&self, d: Delivery, how: Settlement) -> Result<(), QueueError> {
        let AckToken::Other(token) = d.token else {
            return Err(QueueError::Unsupported("not an sqs delivery"));
        };
        let Ok(token) = token.downcast::<Token>() else {
            return Err(QueueError::Unsupported("not an sqs delivery"));
        };
        let Token {
            receipt,
            sqs_id,
            envelope: mut env,
            lease,
        } = *token;
        // Not extended any more. What shortens the visibility waits for a
        // round that may still include this receipt; a delete need not.
        match how {
            Settlement::Retry { .. } | Settlement::Release | Settlement::Dead { .. } => {
                self.shared.leases.end(lease).await
            }
            Settlement::Ack { .. } => drop(lease),
        }
        match how {
            Settlement::Ack { .. } => {}
            Settlement::Retry { after, .. } => {
                return self.hide(&receipt, &sqs_id, after, false).await;
            }
            Settlement::Release => return self.hide(&receipt, &sqs_id, Duration::ZERO, true).await,
            Settlement::Dead { attempt, reason } => {
                env.attempts = d.attempts;
                env.mark_dead(attempt, &d.subscriber, reason, now_ms());
                let moved = async {
                    let dlq = self.shared.dlq_url(&env.topic, &d.subscriber).await?;
                    match self
                        .shared
                        .send(&dlq, &mut env, &d.message.body, false)
                        .await
                    {
                        // A body near SQS's limit leaves no room for the
                        // subscriber's answers: the dead letter goes without them.
                        Err(QueueError::TooLarge { .. }) if env.drop_samples() => {
                            self.shared
                                .send(&dlq, &mut env, &d.message.body, false)
                                .await
                        }
                        sent => sent,
                    }
                }
                .await;
                if let Err(e) = moved {
                    // Not recorded: give it back (after a pause, so a refusing
                    // dead-letter queue is not a busy loop) rather than lose it.
                    let _ = self
                        .hide(&receipt, &sqs_id, DEAD_LETTER_BACKOFF, false)
                        .await;
                    return Err(e);
                }
            }
        }
        self.shared.released.lock().remove(&sqs_id);
        self.delete(&receipt).await
    }
}
