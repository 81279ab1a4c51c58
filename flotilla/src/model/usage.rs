//! A cluster's usage over the last hour: how many runs waited and ran,
//! sampled on every admission change into a bounded ring of 10-second
//! buckets.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Capacity;

/// Seconds per bucket of [`UsageRing`].
pub const USAGE_BUCKET_SECS: i64 = 10;
/// Buckets kept: one hour.
pub const USAGE_BUCKETS: usize = 360;

/// One bucket of a cluster's usage history.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSample {
    /// Start of the bucket.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: DateTime<Utc>,
    /// The most runs waiting for capacity (held by admission) in it.
    pub waiting: u32,
    /// The most runs active (PENDING or RUNNING) in it.
    pub running: u32,
}

/// A cluster's capacity, usage now and over the last hour.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterUsage {
    /// The cluster.
    pub cluster: String,
    /// The capacity admission uses (its own, else configured, else the
    /// engine's default).
    pub capacity: Capacity,
    /// Runs waiting for capacity now (held by this replica).
    pub waiting: u32,
    /// Runs active (PENDING or RUNNING) now.
    pub running: u32,
    /// Seconds per sample.
    pub bucket_seconds: u32,
    /// One sample per bucket over the last hour, oldest first, ending with
    /// the current bucket; a bucket without changes repeats the state
    /// before it.
    pub samples: Vec<UsageSample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    /// Bucket number: seconds since the epoch / [`USAGE_BUCKET_SECS`].
    n: i64,
    max: (u32, u32),
    end: (u32, u32),
}

/// At most [`USAGE_BUCKETS`] buckets of (waiting, running): the maximum in
/// each bucket and the state at its end.
#[derive(Debug, Clone, Default)]
pub(crate) struct UsageRing {
    buckets: VecDeque<Bucket>,
}

fn bucket_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(USAGE_BUCKET_SECS)
}

fn start_of(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(n.saturating_mul(USAGE_BUCKET_SECS), 0).unwrap_or_default()
}

impl UsageRing {
    /// Records the state (`waiting`, `running`) at `at`.
    pub(crate) fn record(&mut self, at: DateTime<Utc>, waiting: u32, running: u32) {
        let n = bucket_of(at);
        let now = (waiting, running);
        match self.buckets.back_mut() {
            Some(b) if b.n >= n => {
                b.max = (b.max.0.max(waiting), b.max.1.max(running));
                b.end = now;
            }
            last => {
                // A new bucket starts at the state the last one ended in.
                let before = last.map(|b| b.end).unwrap_or_default();
                self.buckets.push_back(Bucket {
                    n,
                    max: (before.0.max(waiting), before.1.max(running)),
                    end: now,
                });
            }
        }
        while self
            .buckets
            .front()
            .is_some_and(|b| b.n <= n - USAGE_BUCKETS as i64)
        {
            self.buckets.pop_front();
        }
    }

    /// The last hour up to `now`, one sample per bucket (gaps filled with
    /// the state before them).
    pub(crate) fn samples(&self, now: DateTime<Utc>) -> Vec<UsageSample> {
        let last = bucket_of(now);
        let first = last - USAGE_BUCKETS as i64 + 1;
        let mut out = Vec::with_capacity(USAGE_BUCKETS);
        let mut carried = (0, 0);
        let mut it = self.buckets.iter().peekable();
        while let Some(b) = it.next_if(|b| b.n < first) {
            carried = b.end;
        }
        for n in first..=last {
            let (waiting, running) = match it.next_if(|b| b.n == n) {
                Some(b) => {
                    carried = b.end;
                    b.max
                }
                None => carried,
            };
            out.push(UsageSample {
                at: start_of(n),
                waiting,
                running,
            });
        }
        out
    }

    /// How many buckets are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    #[test]
    fn a_bucket_keeps_its_peak_and_a_gap_repeats_the_state_before_it() {
        let mut r = UsageRing::default();
        r.record(t(0), 5, 1);
        r.record(t(1), 9, 2);
        r.record(t(2), 3, 2);
        let s = r.samples(t(35));
        assert_eq!(s.len(), USAGE_BUCKETS);
        let tail: Vec<(u32, u32)> = s[s.len() - 4..]
            .iter()
            .map(|x| (x.waiting, x.running))
            .collect();
        assert_eq!(tail, vec![(9, 2), (3, 2), (3, 2), (3, 2)]);
        assert!(s.windows(2).all(|w| w[0].at < w[1].at), "oldest first");
    }

    #[test]
    fn the_ring_holds_one_hour_at_most() {
        let mut r = UsageRing::default();
        for i in 0..10_000 {
            r.record(t(i * 5), (i % 7) as u32, 1);
        }
        assert!(r.len() <= USAGE_BUCKETS, "{} buckets", r.len());
        let s = r.samples(t(10_000 * 5 + 7200));
        assert!(
            s.iter()
                .all(|x| (x.waiting, x.running) == s[0].waiting_running()),
            "two hours later the hour is flat"
        );
    }

    impl UsageSample {
        fn waiting_running(&self) -> (u32, u32) {
            (self.waiting, self.running)
        }
    }
}
