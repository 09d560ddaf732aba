//! What travels with a message's body on a broker (RabbitMQ, NATS, SQS, Kafka): one JSON
//! header with the message's metadata and its delivery state for the queue or
//! subject it sits in.

use serde::{Deserialize, Serialize};

use crate::types::*;

/// Attempts whose response samples an envelope keeps (the latest ones).
const SAMPLED_ATTEMPTS: usize = 3;

/// The header holding the envelope.
pub const HEADER: &str = "x-junction";

/// A message's metadata and delivery state, as one JSON header.
///
/// Empty and absent fields are left out of the JSON (a fresh event's header is
/// a third shorter: the broker stores and moves it with every copy), and read
/// back as their defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub id: MessageId,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    pub enqueued_at_ms: u64,
    #[serde(default)]
    pub subscribers: Vec<String>,
    /// Attempts since the last replay.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptRecord>,
    /// Set in dead-letter queues: who gave up, why, when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_at_ms: Option<u64>,
    /// The body travels base64-encoded (brokers whose bodies must be text: SQS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_base64: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Envelope {
    pub fn new(id: &MessageId, req: &EnqueueRequest, subscribers: Vec<String>, now: u64) -> Self {
        Self {
            id: id.clone(),
            topic: req.topic.clone(),
            content_type: req.content_type.clone(),
            headers: req.headers.clone(),
            ordering_key: req.ordering_key.clone(),
            enqueued_at_ms: now,
            subscribers,
            attempts: 0,
            history: Vec::new(),
            subscriber: None,
            reason: None,
            dead_at_ms: None,
            body_base64: false,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope serializes")
    }

    /// The envelope in `header` (the [`HEADER`] value); a message Junction did
    /// not publish gets a fresh one (so it is delivered and settled like any other).
    pub fn parse(
        header: Option<&[u8]>,
        message_id: Option<String>,
        content_type: Option<String>,
        topic: &str,
        now: u64,
    ) -> Self {
        header
            .and_then(|h| serde_json::from_slice::<Envelope>(h).ok())
            .unwrap_or_else(|| Self {
                id: MessageId::new(message_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string())),
                topic: topic.to_owned(),
                content_type,
                headers: Vec::new(),
                ordering_key: None,
                enqueued_at_ms: now,
                subscribers: Vec::new(),
                attempts: 0,
                history: Vec::new(),
                subscriber: None,
                reason: None,
                dead_at_ms: None,
                body_base64: false,
            })
    }

    /// The envelope a dead letter is replayed with: its message and attempt
    /// history, and no delivery state.
    pub fn replay_of(letter: &DeadLetter) -> Self {
        let mut env = Self::of(&letter.message);
        env.history = letter.attempts.clone();
        env
    }

    /// The envelope of `m`, with no delivery state.
    pub fn of(m: &Message) -> Self {
        let mut env = Self::parse(None, None, None, &m.topic, 0);
        env.id = m.id.clone();
        env.content_type = m.content_type.clone();
        env.headers = m.headers.clone();
        env.ordering_key = m.ordering_key.clone();
        env.enqueued_at_ms = m.enqueued_at_ms;
        env.subscribers = m.subscribers.clone();
        env
    }

    /// Records an attempt (the broker's count: attempts so far + 1).
    pub fn record(&mut self, mut attempt: AttemptRecord) {
        self.attempts += 1;
        attempt.attempt = self.attempts;
        self.history.push(attempt);
        trim_history(&mut self.history);
    }

    /// Makes it `subscriber`'s dead letter: `attempt` recorded last, why, and
    /// when (unix ms).
    pub fn mark_dead(
        &mut self,
        attempt: AttemptRecord,
        subscriber: &str,
        reason: String,
        now: u64,
    ) {
        self.record(attempt);
        self.subscriber = Some(subscriber.to_owned());
        self.reason = Some(reason);
        self.dead_at_ms = Some(now);
    }

    /// Drops every response sample (a dead letter too large for its queue
    /// with them); whether there was any.
    pub fn drop_samples(&mut self) -> bool {
        let mut dropped = false;
        for a in &mut self.history {
            dropped |= a.response.take().is_some();
        }
        dropped
    }

    pub fn message(&self, body: Vec<u8>) -> Message {
        Message {
            id: self.id.clone(),
            topic: self.topic.clone(),
            body: body.into(),
            content_type: self.content_type.clone(),
            headers: self.headers.clone(),
            ordering_key: self.ordering_key.clone(),
            enqueued_at_ms: self.enqueued_at_ms,
            subscribers: self.subscribers.clone(),
        }
    }
}

/// Keeps a broker-carried history bounded: the last [`MAX_HISTORY`] attempts,
/// response samples on the last [`SAMPLED_ATTEMPTS`] only (the envelope rides
/// in a broker header: SQS allows 256 KiB with the body).
pub(crate) fn trim_history(history: &mut Vec<AttemptRecord>) {
    if history.len() > MAX_HISTORY {
        let drop = history.len() - MAX_HISTORY;
        history.drain(..drop);
    }
    let older = history.len().saturating_sub(SAMPLED_ATTEMPTS);
    for earlier in &mut history[..older] {
        earlier.response = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResponseSample;

    #[test]
    fn only_the_latest_attempts_keep_their_response_samples() {
        let mut env = Envelope::parse(None, Some("m-1".into()), None, "orders", 0);
        for i in 0..6u64 {
            env.record(AttemptRecord {
                attempt: 0,
                at_ms: i,
                outcome: "status 503".into(),
                duration_ms: 1,
                response: Some(ResponseSample::new(503, [], b"down")),
            });
        }
        let sampled: Vec<bool> = env.history.iter().map(|a| a.response.is_some()).collect();
        assert_eq!(sampled, [false, false, false, true, true, true]);
        assert_eq!(env.history.last().unwrap().attempt, 6);
        let back = Envelope::parse(Some(env.to_json().as_bytes()), None, None, "orders", 0);
        assert_eq!(back.history, env.history, "samples survive the header");
    }

    #[test]
    fn a_fresh_envelope_leaves_its_empty_fields_out_and_older_headers_still_read() {
        let env = Envelope::parse(None, Some("m-1".into()), None, "orders", 7);
        let json = env.to_json();
        assert_eq!(
            json,
            r#"{"id":"m-1","topic":"orders","enqueued_at_ms":7,"subscribers":[]}"#
        );
        let back = Envelope::parse(Some(json.as_bytes()), None, None, "other", 0);
        assert_eq!(
            (back.id.as_str(), back.attempts, back.reason),
            ("m-1", 0, None)
        );
        // What earlier versions wrote (every field, nulls included) reads the same.
        let older = r#"{"id":"m-2","topic":"orders","content_type":null,"headers":[],"ordering_key":null,"enqueued_at_ms":7,"subscribers":["a"],"attempts":2,"history":[],"subscriber":null,"reason":null,"dead_at_ms":null}"#;
        let back = Envelope::parse(Some(older.as_bytes()), None, None, "other", 0);
        assert_eq!(
            (back.id.as_str(), back.attempts, back.subscribers),
            ("m-2", 2, vec!["a".to_string()])
        );
    }
}
