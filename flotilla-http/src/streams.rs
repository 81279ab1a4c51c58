//! Caps on concurrent log streams (SSE): per identity and in total.
//!
//! Each open stream holds a [`StreamPermit`]; opening one beyond
//! `http.max_streams_per_caller` for the same identity, or beyond
//! `http.max_streams` in total, is a 429 naming the setting. The permit is
//! released when the stream ends (the run stopped, the time limit, the
//! client went away, shutdown). Without authentication every caller is the
//! same anonymous identity, so the per-caller cap applies to all together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, ErrorKind};

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_caller: HashMap<String, usize>,
}

/// The open-stream counts of one server.
#[derive(Debug, Clone, Default)]
pub struct StreamLimiter {
    counts: Arc<Mutex<Counts>>,
}

/// One open stream; dropping it frees its place.
#[derive(Debug)]
pub struct StreamPermit {
    counts: Arc<Mutex<Counts>>,
    caller: String,
}

impl StreamLimiter {
    /// A place for one more stream of `caller`, or 429.
    pub fn acquire(
        &self,
        caller: &str,
        per_caller: usize,
        total: usize,
    ) -> Result<StreamPermit, Error> {
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mine = c.by_caller.get(caller).copied().unwrap_or(0);
        if mine >= per_caller {
            return Err(Error::new(
                ErrorKind::Service(flotilla::ErrorKind::RateLimited),
                format!(
                    "too many log streams: '{caller}' has {mine} open \
                     (http.max_streams_per_caller = {per_caller}); close one or retry later"
                ),
            ));
        }
        if c.total >= total {
            return Err(Error::new(
                ErrorKind::Service(flotilla::ErrorKind::RateLimited),
                format!(
                    "too many log streams: {} open on this server (http.max_streams = {total}); \
                     retry later",
                    c.total
                ),
            ));
        }
        c.total += 1;
        *c.by_caller.entry(caller.to_string()).or_insert(0) += 1;
        Ok(StreamPermit {
            counts: self.counts.clone(),
            caller: caller.to_string(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .total
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_caller.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_caller_and_in_total_and_frees_on_drop() {
        let l = StreamLimiter::default();
        let a1 = l.acquire("a", 2, 3).expect("a1");
        let _a2 = l.acquire("a", 2, 3).expect("a2");
        let e = l.acquire("a", 2, 3).expect_err("a3");
        assert!(e.message().contains("max_streams_per_caller"), "{e}");
        let _b1 = l.acquire("b", 2, 3).expect("b1");
        let e = l.acquire("b", 2, 3).expect_err("total");
        assert!(e.message().contains("http.max_streams ="), "{e}");
        drop(a1);
        assert_eq!(l.open(), 2);
        l.acquire("b", 2, 3).expect("freed");
    }
}
