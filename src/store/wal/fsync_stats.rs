//! How long WAL fsyncs take: the latency every acknowledged write waits for, as a histogram
//! with fixed buckets (stats.json `wal.fsync_seconds`, `.iocfs/metrics`).
//!
//! Recorded by the thread that holds the WAL and read by stats without it, so it is plain
//! atomics: an observation costs three relaxed increments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

/// Upper bounds of the buckets, in seconds: from a fast NVMe fdatasync to a stalled disk.
pub const BOUNDS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Debug, Default)]
pub struct FsyncHistogram {
    /// Observations per bucket (not cumulative); the last slot holds those above 1 s.
    counts: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl FsyncHistogram {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = BOUNDS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BOUNDS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// `{"buckets": [[le, cumulative count], …], "sum": seconds, "count": n}`. The count is
    /// the buckets' total, so a read racing an observation still gives a valid histogram.
    pub fn to_json(&self) -> Value {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(BOUNDS.len());
        for (i, le) in BOUNDS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            buckets.push(json!([le, cumulative]));
        }
        cumulative += self.counts[BOUNDS.len()].load(Ordering::Relaxed);
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        json!({"buckets": buckets, "sum": sum, "count": cumulative})
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = FsyncHistogram::default();
        h.observe(Duration::from_micros(100)); // exactly on the first bound
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2)); // above every bound: only in +Inf
        let v = h.to_json();
        let at = |le: f64| {
            v["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b[0].as_f64() == Some(le))
                .and_then(|b| b[1].as_u64())
                .unwrap()
        };
        assert_eq!(at(0.0001), 1);
        assert_eq!(at(0.0005), 1);
        assert_eq!(at(0.001), 2);
        assert_eq!(at(0.0025), 2);
        assert_eq!(at(0.005), 3);
        assert_eq!(at(1.0), 3);
        assert_eq!(v["count"], 4);
        assert_eq!(h.count(), 4);
        let sum = v["sum"].as_f64().unwrap();
        assert!((sum - 2.0038).abs() < 1e-9, "sum {sum}");
    }
}
