//! Times as stored: INTEGER nanoseconds since the Unix epoch.
//!
//! Integers compare exactly and sort like the times they stand for; a
//! missing run time is [`MISSING`], which sorts after every real time, as
//! PostgreSQL's `NULLS LAST` (ascending) / `NULLS FIRST` (descending).

use chrono::{DateTime, Utc};
use flotilla::{Error, Result};

/// A missing time (`None`), larger than any real one.
pub(crate) const MISSING: i64 = i64::MAX;

/// Nanoseconds of `t`; times outside 1677..2262 are refused.
pub(crate) fn nanos(field: &str, t: DateTime<Utc>) -> Result<i64> {
    t.timestamp_nanos_opt()
        .filter(|n| *n != MISSING)
        .ok_or_else(|| Error::invalid(format!("{field}: time out of range (1677..2262)")))
}

/// Nanoseconds of an optional time, [`MISSING`] for `None`.
pub(crate) fn opt_nanos(field: &str, t: Option<DateTime<Utc>>) -> Result<i64> {
    t.map_or(Ok(MISSING), |t| nanos(field, t))
}

/// The time `n` nanoseconds after the epoch.
pub(crate) fn from_nanos(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}

/// Now, in nanoseconds (this machine's clock: every process on one file
/// shares it).
pub(crate) fn now_nanos() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(MISSING - 1)
}

/// `now + d` in nanoseconds, saturating.
pub(crate) fn after(now: i64, d: std::time::Duration) -> i64 {
    let d = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    now.saturating_add(d).min(MISSING - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_round_trip_and_missing_sorts_last() {
        let t = flotilla::model::now();
        let n = nanos("t", t).expect("in range");
        assert_eq!(from_nanos(n), t);
        assert!(opt_nanos("t", None).expect("none") > n);
        let far = DateTime::parse_from_rfc3339("2300-01-01T00:00:00Z")
            .expect("parse")
            .with_timezone(&Utc);
        let e = nanos("queued_at", far).expect_err("out of range");
        assert!(e.message().contains("queued_at"), "{e}");
        assert_eq!(
            after(MISSING - 5, std::time::Duration::from_secs(1)),
            MISSING - 1
        );
    }
}
