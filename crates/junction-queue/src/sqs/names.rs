//! SQS queue and SNS topic names, and message bodies as SQS accepts them.
//!
//! Queue names allow only letters, digits, `-` and `_`, at most 80 characters
//! (with `.fifo` for FIFO queues), so Junction's topic and subscriber names
//! are sanitized, cut, and told apart by a hash of the exact names.

/// Longest SQS queue name.
const MAX_QUEUE_NAME: usize = 80;
/// Longest SNS topic name.
const MAX_TOPIC_NAME: usize = 256;
/// Suffix of dead-letter queue names.
pub const DLQ_SUFFIX: &str = "-dlq";
/// Largest message SQS and SNS take, body and attributes together.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

/// `{prefix}-{parts...}` cut to `room`, then `-{hash of the exact names}`.
fn hashed(prefix: &str, parts: &[&str], room: usize) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(prefix.as_bytes());
    for p in parts {
        h.update(&[0]);
        h.update(p.as_bytes());
    }
    let mut base = sanitize(prefix);
    for p in parts {
        base.push('-');
        base.push_str(&sanitize(p));
    }
    base.truncate(room - 9);
    format!("{base}-{:08x}", h.finalize())
}

/// The SNS topic of a Junction topic.
pub fn topic(prefix: &str, topic: &str, fifo: bool) -> String {
    let suffix = if fifo { ".fifo" } else { "" };
    hashed(prefix, &[topic], MAX_TOPIC_NAME - suffix.len()) + suffix
}

/// The SQS queue of a subscriber of `topic`.
pub fn queue(prefix: &str, topic: &str, sub: &str, fifo: bool) -> String {
    let suffix = if fifo { ".fifo" } else { "" };
    hashed(prefix, &[topic, sub], MAX_QUEUE_NAME - suffix.len()) + suffix
}

/// The dead-letter queue of a subscriber of `topic` (a standard queue: dead
/// letters keep no order).
pub fn dlq(prefix: &str, topic: &str, sub: &str) -> String {
    hashed(prefix, &[topic, sub], MAX_QUEUE_NAME - DLQ_SUFFIX.len()) + DLQ_SUFFIX
}

/// The last segment of a queue URL (its name).
pub fn name_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Whether SQS takes `body` as a message body as it is (XML characters only:
/// tab, newline, carriage return, and from U+0020 on, less U+FFFE/U+FFFF and
/// surrogates, which UTF-8 cannot hold anyway).
fn is_sqs_text(body: &str) -> bool {
    body.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
            || c >= '\u{10000}'
    })
}

/// `body` as SQS message text, and whether it had to be base64-encoded. An
/// encoded body starts with `=` (SQS refuses an empty body; `=` alone is the
/// empty one).
pub fn encode_body(body: &[u8]) -> (String, bool) {
    use base64::Engine as _;
    match std::str::from_utf8(body) {
        Ok(text) if !text.is_empty() && is_sqs_text(text) => (text.to_owned(), false),
        _ => (
            format!(
                "={}",
                base64::engine::general_purpose::STANDARD.encode(body)
            ),
            true,
        ),
    }
}

/// The bytes of a message body [`encode_body`] wrote.
pub fn decode_body(text: &str, base64: bool) -> Vec<u8> {
    use base64::Engine as _;
    if base64 {
        let encoded = text.strip_prefix('=').unwrap_or(text);
        if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(encoded) {
            return b;
        }
    }
    text.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        let long = "x".repeat(200);
        for (q, fifo) in [
            (queue("junction", "orders", "inventory", false), false),
            (queue("junction", "orders.v2", &long, true), true),
            (dlq("junction", "orders", "inventory"), false),
        ] {
            assert!(q.len() <= MAX_QUEUE_NAME, "{q}");
            assert_eq!(q.ends_with(".fifo"), fifo, "{q}");
            let stem = q.trim_end_matches(".fifo");
            assert!(stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        }
        assert!(queue("junction", "orders", "inventory", false)
            .starts_with("junction-orders-inventory-"));
        // Sanitizing must not merge different names.
        assert_ne!(queue("j", "a.b", "c", false), queue("j", "a_b", "c", false));
        assert_ne!(queue("j", "a-b", "c", false), queue("j", "a", "b-c", false));
        assert!(dlq("j", "t", "s").ends_with(DLQ_SUFFIX));
        assert!(topic("j", "t", true).ends_with(".fifo"));
    }

    #[test]
    fn bodies_round_trip_as_text_or_base64() {
        for body in [
            &b"{\"order\":1}"[..],
            "h\u{e9}llo \u{1F600}".as_bytes(),
            &[0, 1, 2, 255][..],
            &b"nul \x00 inside"[..],
            &b""[..],
        ] {
            let (text, b64) = encode_body(body);
            assert_eq!(decode_body(&text, b64), body);
        }
        assert!(!encode_body(b"{\"order\":1}").1, "JSON travels as it is");
        assert!(encode_body(&[0, 159, 146, 150]).1, "bytes are encoded");
    }
}
