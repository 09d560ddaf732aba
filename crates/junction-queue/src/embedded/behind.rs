//! Which journal segments hold fast-path messages stuck long enough to move to redb.
//!
//! A hot message whose subscriber is paused keeps its journal segment on disk.
//! Once the journal has moved on (the segment is two or more behind the oldest
//! journal data otherwise needed), such messages are spilled into redb so the
//! segment can go. Only after a while, though: the journal also moves on while
//! messages are merely in flight (acknowledgements are journaled too, and a
//! drain loads overflowed messages from old segments), and a spilled message is
//! delivered by the slower redb path.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a segment may stay behind before its hot messages are spilled.
pub(super) const STUCK_AFTER: Duration = Duration::from_secs(10);

/// Since when each segment still used by hot messages has been behind.
#[derive(Debug, Default)]
pub(super) struct BehindSegments {
    since: BTreeMap<u64, Instant>,
}

impl BehindSegments {
    /// Takes the segments that are behind now (`behind`, used by hot messages), and
    /// returns the segment before which every one has been behind for `stuck_after`:
    /// hot messages journaled before it are to be spilled.
    pub fn stuck_before(
        &mut self,
        behind: impl IntoIterator<Item = u64>,
        now: Instant,
        stuck_after: Duration,
    ) -> u64 {
        let behind: BTreeSet<u64> = behind.into_iter().collect();
        self.since.retain(|seg, _| behind.contains(seg));
        for seg in behind {
            self.since.entry(seg).or_insert(now);
        }
        let mut before = 0;
        for (seg, t) in &self.since {
            if now.saturating_duration_since(*t) < stuck_after {
                break;
            }
            before = seg + 1;
        }
        before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(10);

    #[test]
    fn segments_are_stuck_only_after_being_behind_long_enough() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut b = BehindSegments::default();
        assert_eq!(b.stuck_before([3, 4], t0, AFTER), 0, "just fell behind");
        assert_eq!(b.stuck_before([3, 4, 5], s(9), AFTER), 0);
        assert_eq!(
            b.stuck_before([3, 4, 5], s(10), AFTER),
            5,
            "3 and 4 are stuck"
        );
        assert_eq!(b.stuck_before([3, 4, 5], s(18), AFTER), 5, "5 is not yet");
        assert_eq!(b.stuck_before([3, 4, 5], s(19), AFTER), 6);
    }

    #[test]
    fn a_segment_no_longer_behind_starts_over() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut b = BehindSegments::default();
        assert_eq!(b.stuck_before([7], t0, AFTER), 0);
        // Its last hot message completed: forgotten.
        assert_eq!(b.stuck_before([], s(5), AFTER), 0);
        assert_eq!(b.stuck_before([7], s(6), AFTER), 0);
        assert_eq!(
            b.stuck_before([7], s(15), AFTER),
            0,
            "behind again only since 6 s"
        );
        assert_eq!(b.stuck_before([7], s(16), AFTER), 8);
    }

    #[test]
    fn an_older_segment_not_yet_stuck_holds_back_the_newer_ones() {
        // Spilling "before a segment" takes every older one too, so the answer stops
        // at the first segment that has not been behind long enough.
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut b = BehindSegments::default();
        assert_eq!(b.stuck_before([5], t0, AFTER), 0);
        assert_eq!(b.stuck_before([2, 5], s(8), AFTER), 0);
        assert_eq!(
            b.stuck_before([2, 5], s(12), AFTER),
            0,
            "2 is behind for 4 s only"
        );
        assert_eq!(b.stuck_before([2, 5], s(18), AFTER), 6);
    }
}
