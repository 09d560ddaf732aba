//! Delivery outcomes Redis could not take yet, kept in order and retried.
//!
//! Why: a dispatcher records each outcome (ack, retry, dead letter, release)
//! once. If Redis is unreachable at that moment and the outcome were dropped,
//! the delivery would stay leased until its lease expires, minutes later. Kept
//! here, it is recorded as soon as Redis answers again. Held in memory only:
//! if this process dies first, the lease expires and the delivery goes out
//! again, which at-least-once allows.

use std::collections::VecDeque;

use parking_lot::Mutex;

/// Most outcomes held; past it the oldest is dropped (its lease then expires).
const MAX_HELD: usize = 100_000;

/// Which script an outcome runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Settle,
    Release,
}

/// One outcome waiting for Redis.
#[derive(Debug)]
pub(super) struct Held {
    pub op: Op,
    /// The script's own arguments (after prefix, clock and retention).
    pub args: Vec<Vec<u8>>,
    /// Whose dispatchers to wake once it is recorded.
    pub subscriber: String,
}

/// Outcomes waiting for Redis, oldest first.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    held: Mutex<VecDeque<Held>>,
}

impl Backlog {
    /// Keeps an outcome for later; `false` if the oldest one had to be dropped.
    pub fn push(&self, outcome: Held) -> bool {
        let mut held = self.held.lock();
        held.push_back(outcome);
        if held.len() > MAX_HELD {
            held.pop_front();
            return false;
        }
        true
    }

    /// Everything held now, oldest first (the backlog is left empty).
    pub fn take(&self) -> VecDeque<Held> {
        std::mem::take(&mut *self.held.lock())
    }

    /// Puts back what could not be recorded, ahead of anything pushed meanwhile.
    pub fn put_back(&self, mut rest: VecDeque<Held>) {
        let mut held = self.held.lock();
        rest.append(&mut held);
        *held = rest;
    }

    /// How many outcomes wait.
    pub fn len(&self) -> usize {
        self.held.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(n: u8) -> Held {
        Held {
            op: Op::Settle,
            args: vec![vec![n]],
            subscriber: "s".into(),
        }
    }

    #[test]
    fn what_is_put_back_stays_ahead_of_newer_outcomes() {
        let b = Backlog::default();
        b.push(held(1));
        b.push(held(2));
        let mut taken = b.take();
        assert_eq!(b.len(), 0);
        taken.pop_front(); // recorded
        b.push(held(3));
        b.put_back(taken);
        let order: Vec<u8> = b.take().iter().map(|h| h.args[0][0]).collect();
        assert_eq!(order, [2, 3]);
    }
}
