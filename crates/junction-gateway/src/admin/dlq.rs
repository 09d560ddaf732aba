//! Which dead letters an operator means: the filters of `GET /admin/dlq` and
//! of the bulk replay and purge (topic, subscriber, reason, last status, time
//! range, chosen ids), and how a page or a bulk action is found with them.
//!
//! Backends filter by topic and subscriber themselves ([`DlqFilter`]); the
//! rest is applied here, over their pages, so every backend answers the same
//! filters the same way.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use junction_queue::{DeadLetter, DlqAction, DlqFilter, DlqPage, Ledger, QueueError};
use serde::Deserialize;

/// Dead letters one listing request reads from the backend at most; past it
/// the page is returned short, with a cursor to go on from.
const SCAN_ITEMS: usize = 20_000;
/// Time one listing request spends scanning at most.
const SCAN_TIME: Duration = Duration::from_secs(2);
/// Backend page size of a bulk action's scan.
const BULK_PAGE: usize = 500;

/// The filters, as the query string or a bulk action's JSON body gives them.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Filters {
    pub topic: Option<String>,
    pub subscriber: Option<String>,
    /// Case-insensitive part of the reason it died.
    pub reason: Option<String>,
    /// The last attempt's outcome: `503`, `5xx`, or a word (`timeout`).
    pub status: Option<String>,
    /// Died at or after (RFC 3339, or a duration ago like `1h`).
    pub since: Option<String>,
    /// Died before (same forms as `since`).
    pub until: Option<String>,
    /// Only these dead-letter ids (bulk actions only).
    pub ids: Option<Vec<String>>,
}

/// A checked [`Filters`].
#[derive(Debug, Default)]
pub(super) struct Selection {
    backend: DlqFilter,
    reason: Option<String>,
    status: Option<StatusMatch>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    ids: Option<HashSet<String>>,
}

/// What `status=` matches in the last attempt's outcome ("status 503", "timeout", ...).
#[derive(Debug, PartialEq)]
enum StatusMatch {
    Code(u16),
    /// `5xx`: the hundreds digit.
    Class(u16),
    /// Any other outcome text, case-insensitively.
    Word(String),
}

impl Filters {
    /// Checks the values; the error says which one is wrong and why.
    pub fn select(self, now: SystemTime) -> Result<Selection, String> {
        let time = |key: &str, v: Option<String>| -> Result<Option<u64>, String> {
            v.map(|v| parse_time(&v, now).map_err(|why| format!("{key}={v:?}: {why}")))
                .transpose()
        };
        Ok(Selection {
            since_ms: time("since", self.since)?,
            until_ms: time("until", self.until)?,
            status: self
                .status
                .map(|s| parse_status(&s).map_err(|why| format!("status={s:?}: {why}")))
                .transpose()?,
            reason: self.reason.map(|r| r.to_lowercase()),
            ids: self.ids.map(|ids| ids.into_iter().collect()),
            backend: DlqFilter {
                topic: self.topic,
                subscriber: self.subscriber,
            },
        })
    }
}

/// An RFC 3339 time, or a duration before `now` (`90s`, `1h`, `2d`), as unix ms.
fn parse_time(v: &str, now: SystemTime) -> Result<u64, String> {
    let at = match humantime::parse_rfc3339_weak(v) {
        Ok(t) => t,
        Err(_) => {
            let ago = humantime::parse_duration(v).map_err(|_| {
                "expected an RFC 3339 time (2026-12-04T10:00:00Z) or a duration ago (1h)".to_owned()
            })?;
            now.checked_sub(ago).unwrap_or(UNIX_EPOCH)
        }
    };
    Ok(unix_ms(at))
}

fn parse_status(v: &str) -> Result<StatusMatch, String> {
    let v = v.trim();
    if let Ok(code) = v.parse::<u16>() {
        return if (100..=599).contains(&code) {
            Ok(StatusMatch::Code(code))
        } else {
            Err("an HTTP status is 100 to 599".into())
        };
    }
    let b = v.as_bytes();
    if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b[1..].eq_ignore_ascii_case(b"xx") {
        return Ok(StatusMatch::Class(u16::from(b[0] - b'0')));
    }
    if v.is_empty() {
        return Err("expected a status (503), a class (5xx) or an outcome (timeout)".into());
    }
    Ok(StatusMatch::Word(v.to_lowercase()))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Selection {
    /// Whether filtering needs more than the backend does.
    fn beyond_backend(&self) -> bool {
        self.reason.is_some()
            || self.status.is_some()
            || self.since_ms.is_some()
            || self.until_ms.is_some()
            || self.ids.is_some()
    }

    /// Whether `d` is selected (the backend already matched topic and subscriber).
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&d.id))
            && self
                .reason
                .as_ref()
                .is_none_or(|r| d.reason.to_lowercase().contains(r))
            && self.since_ms.is_none_or(|s| d.dead_at_ms >= s)
            && self.until_ms.is_none_or(|u| d.dead_at_ms < u)
            && self.status.as_ref().is_none_or(|s| {
                let last = d.attempts.last().map_or("", |a| a.outcome.as_str());
                status_matches(s, last)
            })
    }

    /// A page of at most `limit` selected dead letters after `after`. Reads
    /// the backend's pages until the page is full, the DLQ ends or the scan
    /// budget is spent (then `next` says where to go on).
    pub async fn page(
        &self,
        ledger: &dyn Ledger,
        mut after: Option<String>,
        limit: usize,
    ) -> Result<DlqPage, QueueError> {
        if !self.beyond_backend() {
            return ledger.dlq_list(self.backend.clone(), after, limit).await;
        }
        let started = Instant::now();
        let mut items = Vec::new();
        let mut scanned = 0;
        loop {
            // Never more than the page still needs: every backend page is
            // read whole, so its cursor is where the next request goes on.
            let want = limit - items.len();
            let page = ledger.dlq_list(self.backend.clone(), after, want).await?;
            scanned += page.items.len();
            items.extend(page.items.into_iter().filter(|d| self.matches(d)));
            after = page.next;
            if after.is_none()
                || items.len() >= limit
                || scanned >= SCAN_ITEMS
                || started.elapsed() >= SCAN_TIME
            {
                return Ok(DlqPage { items, next: after });
            }
        }
    }

    /// Replays or purges every selected dead letter; returns how many.
    pub async fn apply(&self, ledger: &dyn Ledger, action: DlqAction) -> Result<u64, QueueError> {
        if !self.beyond_backend() {
            return ledger.dlq_apply_all(self.backend.clone(), action).await;
        }
        // The ids first, then the action: a replayed letter leaves the DLQ,
        // which would move a scan's cursor under it.
        let chosen: Vec<String> = match &self.ids {
            // Chosen ids and nothing else: no need to read the DLQ.
            Some(ids) if self.only_ids() => ids.iter().cloned().collect(),
            _ => {
                let mut chosen = Vec::new();
                let mut after = None;
                loop {
                    let page = ledger
                        .dlq_list(self.backend.clone(), after, BULK_PAGE)
                        .await?;
                    chosen.extend(
                        page.items
                            .iter()
                            .filter(|d| self.matches(d))
                            .map(|d| d.id.clone()),
                    );
                    after = page.next;
                    if after.is_none() {
                        break chosen;
                    }
                }
            }
        };
        let mut done = 0;
        for id in chosen {
            match ledger.dlq_apply(&id, action).await {
                Ok(()) => done += 1,
                // Replayed or purged meanwhile (another operator, another instance).
                Err(QueueError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Whether `ids` is the only filter set.
    fn only_ids(&self) -> bool {
        self.backend == DlqFilter::default()
            && self.reason.is_none()
            && self.status.is_none()
            && self.since_ms.is_none()
            && self.until_ms.is_none()
    }
}

/// Whether the outcome text of an attempt ("status 503", "timeout") matches.
fn status_matches(want: &StatusMatch, outcome: &str) -> bool {
    let code = outcome
        .strip_prefix("status ")
        .and_then(|c| c.trim().parse::<u16>().ok());
    match want {
        StatusMatch::Code(c) => code == Some(*c),
        StatusMatch::Class(h) => code.is_some_and(|c| c / 100 == *h),
        StatusMatch::Word(w) => outcome.to_lowercase().contains(w.as_str()),
    }
}

/// RFC 3339 (UTC, milliseconds) of a unix-ms time, as the admin JSON writes times.
pub(super) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_queue::{AttemptRecord, Message, MessageId};

    fn letter(id: &str, reason: &str, last: &str, dead_at_ms: u64) -> DeadLetter {
        DeadLetter {
            id: id.into(),
            message: Message {
                id: MessageId::new(id),
                topic: "t".into(),
                body: bytes::Bytes::from_static(b"{}"),
                content_type: None,
                headers: Vec::new(),
                ordering_key: None,
                enqueued_at_ms: 0,
                subscribers: vec!["s".into()],
            },
            subscriber: "s".into(),
            attempts: vec![AttemptRecord {
                attempt: 1,
                at_ms: dead_at_ms,
                outcome: last.into(),
                duration_ms: 1,
                response: None,
            }],
            reason: reason.into(),
            dead_at_ms,
        }
    }

    fn select(f: Filters) -> Selection {
        f.select(UNIX_EPOCH + Duration::from_secs(10_000)).unwrap()
    }

    #[test]
    fn status_matches_codes_classes_and_words() {
        let by = |s: &str| {
            select(Filters {
                status: Some(s.into()),
                ..Filters::default()
            })
        };
        let d503 = letter("a", "max attempts", "status 503", 0);
        let timeout = letter("b", "max attempts", "timeout", 0);
        assert!(by("503").matches(&d503));
        assert!(!by("500").matches(&d503));
        assert!(by("5xx").matches(&d503));
        assert!(by("5XX").matches(&d503));
        assert!(!by("4xx").matches(&d503));
        assert!(!by("5xx").matches(&timeout));
        assert!(by("Timeout").matches(&timeout));
    }

    #[test]
    fn reason_and_time_range_select() {
        let d = letter("a", "Rejected: status 410", "status 410", 5_000_000);
        let f = |reason: Option<&str>, since: Option<&str>, until: Option<&str>| {
            select(Filters {
                reason: reason.map(Into::into),
                since: since.map(Into::into),
                until: until.map(Into::into),
                ..Filters::default()
            })
            .matches(&d)
        };
        assert!(f(Some("rejected"), None, None));
        assert!(!f(Some("max attempts"), None, None));
        // now = 10 000 s; died at 5 000 s.
        assert!(f(None, Some("2h"), None), "died 5000 s ago, within 2 h");
        assert!(!f(None, Some("1h"), None));
        assert!(f(
            None,
            Some("1970-01-01T01:00:00Z"),
            Some("1970-01-01T02:00:00Z")
        ));
        assert!(!f(None, None, Some("1970-01-01T01:00:00Z")));
    }

    #[test]
    fn bad_values_are_named() {
        let e = Filters {
            since: Some("yesterday-ish".into()),
            ..Filters::default()
        }
        .select(SystemTime::now())
        .unwrap_err();
        assert!(e.starts_with("since=\"yesterday-ish\""), "{e}");
        let e = Filters {
            status: Some("999".into()),
            ..Filters::default()
        }
        .select(SystemTime::now())
        .unwrap_err();
        assert!(e.contains("100 to 599"), "{e}");
    }

    #[test]
    fn times_are_written_as_rfc3339_utc_millis() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
