//! Idempotency keys remembered by one instance, for brokers with no place to
//! keep them shared (RabbitMQ, SQS, Kafka): a repeat reaching the same instance
//! within the window gets the first id; one reaching another instance is
//! accepted again (the README's backend table says so).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

use crate::types::{now_ms, MessageId};

/// Keys remembered at most (when full, expired keys go first, then all).
const MAX_KEYS: usize = 100_000;

/// (topic, key) → (first id, expiry in unix ms).
#[derive(Default)]
pub(crate) struct LocalKeys {
    keys: Mutex<HashMap<(String, String), (MessageId, u64)>>,
}

impl LocalKeys {
    /// The id a live `key` of `topic` was first accepted under.
    pub fn known(&self, topic: &str, key: &str) -> Option<MessageId> {
        let keys = self.keys.lock();
        keys.get(&(topic.to_owned(), key.to_owned()))
            .filter(|(_, exp)| *exp > now_ms())
            .map(|(id, _)| id.clone())
    }

    /// Remembers `key` of `topic` as accepted under `id` for `ttl`.
    pub fn remember(&self, topic: &str, key: &str, id: &MessageId, ttl: Duration) {
        let mut keys = self.keys.lock();
        let now = now_ms();
        if keys.len() >= MAX_KEYS {
            keys.retain(|_, (_, exp)| *exp > now);
            if keys.len() >= MAX_KEYS {
                keys.clear();
            }
        }
        keys.insert(
            (topic.to_owned(), key.to_owned()),
            (id.clone(), now + ttl.as_millis() as u64),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_known_until_it_expires() {
        let keys = LocalKeys::default();
        let id = MessageId::from("m1".to_owned());
        keys.remember("t", "k", &id, Duration::from_secs(60));
        assert_eq!(keys.known("t", "k"), Some(id.clone()));
        assert_eq!(keys.known("other", "k"), None, "keys are per topic");
        keys.remember("t", "old", &id, Duration::ZERO);
        assert_eq!(keys.known("t", "old"), None, "expired");
    }
}
