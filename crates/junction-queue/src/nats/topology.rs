//! The streams and consumers of a topic, created when first needed: the
//! topic's stream with each subscriber's own durable consumer, and, once the
//! topic carries keyed events, each subscriber's ordering-partition consumers
//! (see the module doc of [`super`]).

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};

use super::{partition_consumer, storage, token, Shared};
use crate::types::QueueError;

impl Shared {
    /// The topic's stream and each subscriber's durable consumer.
    pub(super) async fn ensure(&self, topic: &str, subs: &[String]) -> Result<(), QueueError> {
        let name = self.stream_name(topic);
        let stream = if self.declared.lock().contains(&name)
            && subs
                .iter()
                .all(|s| self.pairs.lock().contains(&(topic.to_owned(), s.clone())))
        {
            return Ok(());
        } else {
            self.js
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![self.subject(topic, ">")],
                    retention: stream::RetentionPolicy::Interest,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| storage("creating a jetstream stream", e))?
        };
        self.declared.lock().insert(name);
        for sub in subs {
            stream
                .get_or_create_consumer(
                    &token(sub),
                    consumer::pull::Config {
                        durable_name: Some(token(sub)),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: self.cfg.ack_wait,
                        max_deliver: -1,
                        max_ack_pending: 10_000,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| storage("creating a jetstream consumer", e))?;
            self.pairs.lock().insert((topic.to_owned(), sub.clone()));
        }
        Ok(())
    }

    /// Each subscriber's consumers of `topic`'s ordering partitions, created
    /// once: partition `i` is the subject `k.{i}`, and `max_ack_pending: 1`
    /// makes JetStream hand out one of its messages at a time, across every
    /// instance, holding the next until this one is acked or dead (a `nak` with
    /// delay keeps it pending, so a retry holds its place).
    pub(super) async fn ensure_ordered(
        &self,
        topic: &str,
        subs: &[String],
    ) -> Result<(), QueueError> {
        let missing: Vec<String> = {
            let ordered = self.ordered.lock();
            subs.iter()
                .filter(|s| !ordered.contains(&(topic.to_owned(), (*s).clone())))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let stream = self
            .js
            .get_stream(self.stream_name(topic))
            .await
            .map_err(|e| storage("opening a jetstream stream", e))?;
        for sub in missing {
            for i in 0..self.cfg.ordering_partitions {
                let name = partition_consumer(&sub, i);
                let _: consumer::PullConsumer = stream
                    .get_or_create_consumer(
                        &name,
                        consumer::pull::Config {
                            durable_name: Some(name.clone()),
                            filter_subject: self.subject(topic, &format!("k.{i}")),
                            ack_policy: consumer::AckPolicy::Explicit,
                            ack_wait: self.cfg.ack_wait,
                            max_deliver: -1,
                            max_ack_pending: 1,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| storage("creating a jetstream partition consumer", e))?;
            }
            self.ordered.lock().insert((topic.to_owned(), sub));
        }
        Ok(())
    }

    /// Whether `sub` has partition consumers on `topic` (created by any
    /// instance). Asks the server at most once per `every` for all of this
    /// instance's lanes of the pair.
    pub(super) async fn has_ordered(&self, topic: &str, sub: &str, every: Duration) -> bool {
        let pair = (topic.to_owned(), sub.to_owned());
        if self.ordered.lock().contains(&pair) {
            return true;
        }
        {
            let mut probed = self.probed.lock();
            let now = std::time::Instant::now();
            match probed.get(&pair) {
                Some(at) if now.duration_since(*at) < every => return false,
                _ => probed.insert(pair, now),
            };
        }
        match self.js.get_stream(self.stream_name(topic)).await {
            Ok(stream) => stream
                .consumer_info(partition_consumer(sub, 0))
                .await
                .is_ok(),
            Err(_) => false,
        }
    }
}
