//! The leases this instance holds, renewed while it holds them.
//!
//! Why: a lease must outlive a slow delivery but not a dead instance. So
//! leases are short ([`super::LEASE_TTL`]) and this instance pushes the expiry of
//! the ones it still holds forward every third of it. A lease nobody renews
//! (its instance died, or the reply that handed it out was lost on a broken
//! connection) expires and its delivery goes out again.
//!
//! A delivery stays here until its outcome is recorded in Redis, including
//! while the outcome waits in the backlog, so no other instance takes it
//! meanwhile.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

/// Delivery ids leased by this instance, per subscriber.
#[derive(Debug, Default)]
pub(super) struct HeldLeases {
    by_subscriber: Mutex<HashMap<String, HashSet<String>>>,
}

impl HeldLeases {
    /// Notes leases handed to this instance's dispatchers.
    pub fn add<'a>(&self, subscriber: &str, ids: impl IntoIterator<Item = &'a str>) {
        let mut held = self.by_subscriber.lock();
        let set = held.entry(subscriber.to_owned()).or_default();
        set.extend(ids.into_iter().map(str::to_owned));
    }

    /// Forgets a lease whose outcome is recorded.
    pub fn remove(&self, subscriber: &str, id: &str) {
        let mut held = self.by_subscriber.lock();
        if let Some(set) = held.get_mut(subscriber) {
            set.remove(id);
            if set.is_empty() {
                held.remove(subscriber);
            }
        }
    }

    /// How many leases are held.
    pub fn count(&self) -> usize {
        self.by_subscriber.lock().values().map(HashSet::len).sum()
    }

    /// What to renew: every subscriber's held ids.
    pub fn snapshot(&self) -> Vec<(String, Vec<String>)> {
        self.by_subscriber
            .lock()
            .iter()
            .map(|(sub, ids)| (sub.clone(), ids.iter().cloned().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_held_until_removed() {
        let h = HeldLeases::default();
        h.add("s", ["a", "b"]);
        h.add("t", ["c"]);
        h.remove("s", "a");
        h.remove("t", "c");
        assert_eq!(h.snapshot(), vec![("s".to_owned(), vec!["b".to_owned()])]);
    }
}
