//! What an upstream's answer status means, decided once for every caller:
//! sync routes (idempotency records), async deliveries (retry or dead-letter).
//!
//! Why it exists: "may this be tried again?" was answered in several places
//! with different rules (a subscriber retried a 400 twenty times). The rule:
//! 2xx (and 1xx/3xx) is a final success; 408, 429 and 5xx are transient — the
//! same request may succeed later; any other 4xx says the request itself is
//! wrong, so repeating it cannot help.

/// The class of an answer status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 1xx–3xx: the request was handled.
    Success,
    /// 408, 429, 5xx: the same request may succeed later.
    Transient,
    /// Any other 4xx: the request is wrong; retrying cannot change the answer.
    Rejected,
}

/// Classifies `status` (see the module docs).
pub fn classify_status(status: u16) -> StatusClass {
    match status {
        408 | 429 => StatusClass::Transient,
        400..=499 => StatusClass::Rejected,
        500.. => StatusClass::Transient,
        _ => StatusClass::Success,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        use StatusClass::*;
        for (status, class) in [
            (200, Success),
            (204, Success),
            (304, Success),
            (400, Rejected),
            (401, Rejected),
            (404, Rejected),
            (409, Rejected),
            (422, Rejected),
            (408, Transient),
            (429, Transient),
            (500, Transient),
            (502, Transient),
            (503, Transient),
            (599, Transient),
        ] {
            assert_eq!(classify_status(status), class, "{status}");
        }
    }
}
