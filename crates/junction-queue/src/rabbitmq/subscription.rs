//! One consumer channel per dispatcher lane, and the settling of its deliveries.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use lapin::acker::Acker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;

use super::{now_ms, storage, Shared};
use crate::contract::*;
use crate::envelope::Envelope;
use crate::types::*;

/// Longest wait for a delivery before `next` returns an empty batch.
const IDLE: Duration = Duration::from_secs(1);

/// What a delivery's ack handle holds.
struct Token {
    acker: Acker,
    envelope: Envelope,
}

pub struct RabbitSubscription {
    shared: Arc<Shared>,
    topic: String,
    subscriber: String,
    prefetch: usize,
    consumer: Option<lapin::Consumer>,
    settler: Arc<dyn Settle>,
}

impl RabbitSubscription {
    pub fn new(shared: Arc<Shared>, topic: &str, subscriber: &str, prefetch: usize) -> Self {
        Self {
            settler: Arc::new(RabbitSettler {
                shared: shared.clone(),
            }),
            shared,
            topic: topic.to_owned(),
            subscriber: subscriber.to_owned(),
            prefetch,
            consumer: None,
        }
    }

    /// Declares the subscriber's queues and starts consuming on a channel of its own.
    pub async fn open(&mut self) -> Result<(), QueueError> {
        let ch = self.shared.consume.channel().await?;
        self.shared
            .topology
            .ensure(&ch, &self.topic, std::slice::from_ref(&self.subscriber))
            .await?;
        let prefetch = u16::try_from(self.prefetch.max(1)).unwrap_or(u16::MAX);
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| storage("setting prefetch", e))?;
        let consumer = ch
            .basic_consume(
                &self.shared.topology.queue(&self.topic, &self.subscriber),
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| storage("starting a rabbitmq consumer", e))?;
        self.consumer = Some(consumer);
        Ok(())
    }

    fn delivery(&self, d: lapin::message::Delivery) -> Delivery {
        let env = super::envelope_of(&d.properties, &self.topic);
        let message = Arc::new(env.message(d.data));
        Delivery::new(
            message,
            self.subscriber.clone(),
            env.attempts,
            env.enqueued_at_ms,
            AckToken::Other(Box::new(Token {
                acker: d.acker,
                envelope: env,
            })),
            self.settler.clone(),
        )
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        if self.consumer.is_none() {
            // The connection was lost: the broker requeued what this channel held.
            self.open().await?;
        }
        let consumer = self.consumer.as_mut().expect("opened above");
        let first = match tokio::time::timeout(IDLE, consumer.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => {
                self.consumer = None;
                return Err(storage("consuming from rabbitmq", e));
            }
            Ok(None) => {
                self.consumer = None;
                return Err(storage(
                    "consuming from rabbitmq",
                    std::io::Error::other("the consumer was cancelled"),
                ));
            }
        };
        let mut raw = vec![first];
        while raw.len() < max {
            match consumer.next().now_or_never() {
                Some(Some(Ok(d))) => raw.push(d),
                _ => break,
            }
        }
        Ok(raw.into_iter().map(|d| self.delivery(d)).collect())
    }
}

struct RabbitSettler {
    shared: Arc<Shared>,
}

#[async_trait]
impl Settle for RabbitSettler {
    async fn settle(&self, d: Delivery, how: Settlement) -> Result<(), QueueError> {
        let AckToken::Other(token) = d.token else {
            return Err(storage(
                "settling",
                std::io::Error::other("not a rabbitmq delivery"),
            ));
        };
        let Ok(token) = token.downcast::<Token>() else {
            return Err(storage(
                "settling",
                std::io::Error::other("not a rabbitmq delivery"),
            ));
        };
        let Token {
            acker,
            envelope: mut env,
        } = *token;
        let s = &self.shared;
        let topology = &s.topology;
        let forwarded = match how {
            Settlement::Ack { .. } => Ok(()),
            Settlement::Release => {
                return acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| storage("giving a delivery back", e));
            }
            Settlement::Retry { attempt, after } => {
                env.record(attempt);
                match s.link.publisher().await {
                    Ok(ch) => match topology
                        .ensure_delay(&ch, &env.topic, &d.subscriber, after.as_millis() as u64)
                        .await
                    {
                        Ok(delay) => s.publish("", &delay, &env, &d.message.body).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
            Settlement::Dead { attempt, reason } => {
                env.record(attempt);
                env.subscriber = Some(d.subscriber.clone());
                env.reason = Some(reason);
                env.dead_at_ms = Some(now_ms());
                let dlq = topology.dlq(&env.topic, &d.subscriber);
                s.publish("", &dlq, &env, &d.message.body).await
            }
        };
        if let Err(e) = forwarded {
            // Not recorded: give it back, so it is attempted again rather than lost.
            let _ = acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
            return Err(e);
        }
        acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| storage("acknowledging a delivery", e))
    }
}
