//! `on_full: reject` for one subscriber at a time.
//!
//! RabbitMQ's own `x-overflow: reject-publish` nacks the whole publish when
//! any one bound queue is full, although the other queues took the message:
//! the producer gets a 503 and its retry duplicates the event for the healthy
//! subscribers (quorum queues have no `reject-publish-dlx` either). So the
//! publisher decides before publishing: it keeps each target queue's ready
//! count (read from the broker, plus what this instance published or is
//! publishing since), and when that reaches `max_depth` it reads the queue's
//! count again (a queue the broker said full stays full for [`FRESH`]; a
//! burst may read it several times at once) and, if the broker says full, publishes the
//! event for that subscriber into its `.dlq` (reason "backlog full", one "not
//! attempted" attempt) and for the others straight to their queues: one publish through
//! the default exchange, the first queue as routing key and the rest in the
//! `BCC` header (RabbitMQ's sender-selected distribution; the broker removes
//! `BCC` before delivery). An event whose every subscriber is full is refused
//! (`Full`, 503 + Retry-After); so is one the broker refused (below). A count
//! that cannot be read leaves the decision to the broker's bound.
//!
//! The count is approximate: consumption is seen at the next read (the depth
//! refresher's, every 2 s, or the re-read of a queue that looks full), and
//! other instances' publishes too. An instance whose count is behind publishes
//! through the exchange and meets the queues' own bound, `reject-publish`,
//! kept as the hard limit: the broker may refuse that publish whole (503; the
//! counts are then marked stale, so the retry is routed on fresh ones) or, as
//! a quorum queue was seen to do, take it one past the bound. Keeping the
//! queues' arguments also means no redeclare (RabbitMQ refuses changed
//! arguments with 406) for queues declared before.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How old a count may be before a queue that looks full is read again.
pub const FRESH: Duration = Duration::from_millis(250);

/// Ready counts of target queues, per queue name.
#[derive(Default)]
pub struct Fill {
    queues: Mutex<HashMap<String, Seen>>,
}

#[derive(Clone, Copy)]
struct Seen {
    /// Ready messages at the last read.
    ready: u64,
    /// When it was read (`None`: marked stale).
    at: Option<Instant>,
    /// Published here to it since.
    since: u64,
}

/// What the publisher should do about one target queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Below the bound (by what is known).
    Room,
    /// At the bound by a count read within [`FRESH`]: this many waiting.
    Full(u64),
    /// Never read, full only by counting this instance's publishes since the
    /// last read, or said full longer ago than [`FRESH`]: read it again.
    Read,
}

impl Fill {
    /// Whether `queue` has room below `max`; `Room` counts the event as
    /// published to it at once (a reservation: concurrent publishes each see
    /// the ones before them, so they do not all walk into the broker's bound).
    pub fn verdict(&self, queue: &str, max: u64) -> Verdict {
        match self.queues.lock().get_mut(queue) {
            None | Some(Seen { at: None, .. }) => Verdict::Read,
            Some(s) => {
                if s.ready + s.since < max {
                    s.since += 1;
                    Verdict::Room
                } else if s.since == 0 && s.at.is_some_and(|at| at.elapsed() < FRESH) {
                    // The broker itself said full, lately.
                    Verdict::Full(s.ready)
                } else {
                    // Full only by counting what was published here since
                    // (some of it may be consumed), or said full a while ago.
                    Verdict::Read
                }
            }
        }
    }

    /// Records a count read from the broker (what was published here before
    /// the read is in it).
    pub fn read(&self, queue: &str, ready: u64) {
        self.queues.lock().insert(
            queue.to_owned(),
            Seen {
                ready,
                at: Some(Instant::now()),
                since: 0,
            },
        );
    }

    /// The broker refused a publish to `queues` (one of them at the bound):
    /// read them all again before the next verdict.
    pub fn stale<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        let mut map = self.queues.lock();
        for q in queues {
            if let Some(s) = map.get_mut(q) {
                s.at = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_queues_are_read_first() {
        assert_eq!(Fill::default().verdict("q", 3), Verdict::Read);
    }

    #[test]
    fn publishes_here_count_until_the_next_read() {
        let f = Fill::default();
        f.read("q", 1);
        assert_eq!(f.verdict("q", 3), Verdict::Room, "reserves the 2nd place");
        assert_eq!(f.verdict("q", 3), Verdict::Room, "and the 3rd");
        assert_eq!(f.verdict("q", 3), Verdict::Read, "full only by our count");
        f.read("q", 0);
        assert_eq!(f.verdict("q", 3), Verdict::Room, "consumed meanwhile");
        f.read("q", 3);
        assert_eq!(f.verdict("q", 3), Verdict::Full(3), "the broker said full");
    }

    #[test]
    fn an_old_full_count_is_read_again() {
        let f = Fill::default();
        f.read("q", 5);
        f.queues.lock().get_mut("q").unwrap().at = Some(Instant::now() - FRESH * 2);
        assert_eq!(f.verdict("q", 3), Verdict::Read);
    }

    #[test]
    fn a_refused_publish_makes_its_queues_read_again() {
        let f = Fill::default();
        f.read("a", 0);
        f.read("b", 0);
        f.stale(["a", "b"]);
        assert_eq!(f.verdict("a", 3), Verdict::Read);
        assert_eq!(f.verdict("b", 3), Verdict::Read);
    }
}
