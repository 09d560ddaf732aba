//! Call chains: the endpoints one caller request goes through, found by the
//! trace id the caller sends with each of its calls.
//!
//! A chain is *sequential* when each call starts after the previous one
//! ended: the caller waits for the sum of them, the pattern that made the
//! ERP order sync take 4.2 s.

use std::collections::{HashMap, VecDeque};

/// Traces seen, bounded (oldest dropped).
#[derive(Debug, Default)]
pub struct Traces {
    max: usize,
    by_id: HashMap<String, Trace>,
    order: VecDeque<String>,
}

/// The calls of one trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Who called.
    pub caller: String,
    /// (endpoint index, start ms, end ms), in arrival order.
    pub hops: Vec<(usize, u64, u64)>,
}

/// Calls of a trace kept at most.
const MAX_HOPS: usize = 32;

/// Traces of one caller that went through the same endpoints in the same order.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The caller.
    pub caller: String,
    /// Endpoint indexes, in call order.
    pub hops: Vec<usize>,
    /// Traces seen.
    pub count: u64,
    /// Of those, how many called one after the other (no overlap).
    pub sequential: u64,
    /// Mean time from the first call's start to the last one's end (ms).
    pub mean_total_ms: f64,
}

impl Traces {
    /// Keeps at most `max` traces.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            ..Default::default()
        }
    }

    /// Records a call of `trace`.
    pub fn hop(&mut self, trace: &str, caller: &str, endpoint: usize, start: u64, end: u64) {
        if let Some(t) = self.by_id.get_mut(trace) {
            if t.hops.len() < MAX_HOPS {
                t.hops.push((endpoint, start, end));
            }
            return;
        }
        if self.by_id.len() >= self.max {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        self.order.push_back(trace.to_owned());
        self.by_id.insert(
            trace.to_owned(),
            Trace {
                caller: caller.to_owned(),
                hops: vec![(endpoint, start, end)],
            },
        );
    }

    /// Traces of two calls or more, grouped by caller and endpoint sequence,
    /// most frequent first.
    pub fn chains(&self) -> Vec<Chain> {
        let mut groups: HashMap<(String, Vec<usize>), (u64, u64, f64)> = HashMap::new();
        for t in self.by_id.values() {
            if t.hops.len() < 2 {
                continue;
            }
            let mut hops = t.hops.clone();
            hops.sort_by_key(|h| h.1);
            // 1 ms of slack: log timestamps are rounded to milliseconds.
            let sequential = hops.windows(2).all(|w| w[1].1 + 1 >= w[0].2);
            let first = hops[0].1;
            let last = hops.iter().map(|h| h.2).max().unwrap_or(first);
            let key = (t.caller.clone(), hops.iter().map(|h| h.0).collect());
            let g = groups.entry(key).or_default();
            g.0 += 1;
            g.1 += u64::from(sequential);
            g.2 += (last - first) as f64;
        }
        let mut out: Vec<Chain> = groups
            .into_iter()
            .map(|((caller, hops), (count, sequential, total))| Chain {
                caller,
                hops,
                count,
                sequential,
                mean_total_ms: total / count as f64,
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.hops.cmp(&b.hops)));
        out
    }

    /// Traces held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// An upper bound of the memory held, in bytes.
    pub fn approx_bytes(&self) -> usize {
        self.by_id
            .iter()
            .map(|(k, t)| 2 * k.capacity() + t.caller.capacity() + t.hops.capacity() * 24 + 96)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_calls_of_one_trace_form_a_chain() {
        let mut t = Traces::new(100);
        for i in 0..10u64 {
            let id = format!("trace-{i}");
            let base = i * 10_000;
            t.hop(&id, "erp", 0, base, base + 900);
            t.hop(&id, "erp", 1, base + 900, base + 2_500);
            t.hop(&id, "erp", 2, base + 2_500, base + 3_600);
        }
        // Overlapping calls: a fan-out in parallel, not sequential.
        t.hop("p", "erp", 0, 0, 100);
        t.hop("p", "erp", 1, 10, 100);
        let chains = t.chains();
        assert_eq!(chains[0].hops, vec![0, 1, 2]);
        assert_eq!(chains[0].count, 10);
        assert_eq!(chains[0].sequential, 10);
        assert!((chains[0].mean_total_ms - 3_600.0).abs() < 1e-9);
        assert_eq!(chains[1].sequential, 0);
    }

    #[test]
    fn the_oldest_trace_goes_when_full() {
        let mut t = Traces::new(3);
        for i in 0..5 {
            t.hop(&format!("t{i}"), "c", 0, 0, 1);
        }
        assert_eq!(t.len(), 3);
        assert!(!t.by_id.contains_key("t0") && t.by_id.contains_key("t4"));
    }
}
