//! Typed list queries and pages.
//!
//! Every filter is a value, never text to splice into a query; sort fields
//! come from closed enums (the whitelist). Ordering rules every store
//! follows, so pages agree across backends:
//! - the sort field first, then the id as tie-breaker, in the same direction;
//! - a missing value (`started_at` of a queued run) sorts after every
//!   present value in ascending order and before them in descending order
//!   (PostgreSQL's default `NULLS LAST`/`NULLS FIRST`);
//! - text compares byte-wise (`COLLATE "C"`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{EnvVar, Run, RunStatus};

mod templates;

pub use templates::{TemplateQuery, TemplateSortField};

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Smallest first.
    #[default]
    Asc,
    /// Largest first.
    Desc,
}

impl SortOrder {
    /// `asc` or `desc`.
    pub fn as_str(self) -> &'static str {
        match self {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        }
    }
}

impl FromStr for SortOrder {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "asc" => Ok(SortOrder::Asc),
            "desc" => Ok(SortOrder::Desc),
            _ => Err(Error::invalid(format!(
                "order: '{s}' is not a sort order (expected asc or desc)"
            ))),
        }
    }
}

impl fmt::Display for SortOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fields runs can be sorted by (the whitelist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RunSortField {
    /// Run id (time-ordered).
    RunId,
    /// Cluster name.
    ClusterName,
    /// Status name.
    Status,
    /// Queue time.
    QueuedAt,
    /// Start time.
    #[default]
    StartedAt,
    /// Finish time.
    FinishedAt,
    /// Definition alias.
    Alias,
}

impl RunSortField {
    /// All fields.
    pub const ALL: [RunSortField; 7] = [
        RunSortField::RunId,
        RunSortField::ClusterName,
        RunSortField::Status,
        RunSortField::QueuedAt,
        RunSortField::StartedAt,
        RunSortField::FinishedAt,
        RunSortField::Alias,
    ];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunSortField::RunId => "run_id",
            RunSortField::ClusterName => "cluster_name",
            RunSortField::Status => "status",
            RunSortField::QueuedAt => "queued_at",
            RunSortField::StartedAt => "started_at",
            RunSortField::FinishedAt => "finished_at",
            RunSortField::Alias => "alias",
        }
    }

    /// The column a SQL store orders by for this field (every SQL backend
    /// names its run columns so; the whitelist keeps input out of SQL).
    pub fn column(self) -> &'static str {
        match self {
            RunSortField::ClusterName => "cluster",
            other => other.as_str(),
        }
    }

    /// Whether the field is a time (missing on runs that have not got there).
    pub fn is_time(self) -> bool {
        matches!(
            self,
            RunSortField::QueuedAt | RunSortField::StartedAt | RunSortField::FinishedAt
        )
    }

    /// `run`'s value of the field, as keyset cursors page by it.
    pub fn value_of(self, run: &Run) -> SortValue<'_> {
        match self {
            RunSortField::RunId => SortValue::Text(&run.run_id),
            RunSortField::ClusterName => SortValue::Text(&run.cluster),
            RunSortField::Status => SortValue::Text(run.status.as_str()),
            RunSortField::QueuedAt => SortValue::Time(run.queued_at),
            RunSortField::StartedAt => SortValue::Time(run.started_at),
            RunSortField::FinishedAt => SortValue::Time(run.finished_at),
            RunSortField::Alias => SortValue::Text(&run.alias),
        }
    }
}

/// A run's value of a [`RunSortField`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortValue<'a> {
    /// A text field.
    Text(&'a str),
    /// A time field; `None` before the run got there.
    Time(Option<DateTime<Utc>>),
}

impl SortValue<'_> {
    /// The value as cursor text, times in RFC 3339 UTC at `precision`.
    pub fn to_cursor_text(self, precision: chrono::SecondsFormat) -> Option<String> {
        match self {
            SortValue::Text(s) => Some(s.to_string()),
            SortValue::Time(t) => t.map(|t| t.to_rfc3339_opts(precision, true)),
        }
    }
}

impl FromStr for RunSortField {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        RunSortField::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "sort_by: '{s}' is not sortable (expected one of run_id, cluster_name, status, queued_at, started_at, finished_at, alias)"
                ))
            })
    }
}

/// Fields definitions can be sorted by (the whitelist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DefinitionSortField {
    /// Alias.
    #[default]
    Alias,
    /// Image.
    Image,
    /// Group.
    GroupName,
    /// Memory (missing sorts as described in the module docs).
    Memory,
}

impl DefinitionSortField {
    /// All fields.
    pub const ALL: [DefinitionSortField; 4] = [
        DefinitionSortField::Alias,
        DefinitionSortField::Image,
        DefinitionSortField::GroupName,
        DefinitionSortField::Memory,
    ];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            DefinitionSortField::Alias => "alias",
            DefinitionSortField::Image => "image",
            DefinitionSortField::GroupName => "group_name",
            DefinitionSortField::Memory => "memory",
        }
    }
}

impl FromStr for DefinitionSortField {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        DefinitionSortField::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "sort_by: '{s}' is not sortable (expected one of alias, image, group_name, memory)"
                ))
            })
    }
}

/// A time range; both ends inclusive, either open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TimeRange {
    /// From (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Until (inclusive).
    pub until: Option<DateTime<Utc>>,
}

impl TimeRange {
    /// Whether no bound is set.
    pub fn is_open(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// Whether `t` is inside; a missing time is outside any bounded range.
    pub fn contains(&self, t: Option<DateTime<Utc>>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(t) = t else { return false };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }
}

/// A list query over runs. Empty lists mean "any".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunQuery {
    /// Status in this set.
    pub statuses: Vec<RunStatus>,
    /// Alias in this set (exact).
    pub aliases: Vec<String>,
    /// Definition id.
    pub definition_id: Option<String>,
    /// Cluster in this set.
    pub clusters: Vec<String>,
    /// Owner in this set.
    pub owners: Vec<String>,
    /// Engine name.
    pub engine: Option<String>,
    /// Every one of these `NAME=VALUE` pairs is in the run's env.
    pub env: Vec<EnvVar>,
    /// Queue time range.
    pub queued: TimeRange,
    /// Start time range.
    pub started: TimeRange,
    /// Finish time range.
    pub finished: TimeRange,
    /// Sort field.
    pub sort_by: RunSortField,
    /// Sort direction.
    pub order: SortOrder,
    /// Page size.
    pub limit: usize,
    /// Rows to skip (ignored when `cursor` is set).
    pub offset: usize,
    /// Keyset cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Leave [`Page::total`] uncounted: the store answers
    /// [`RunQuery::uncounted_total`] instead of counting every match, for
    /// callers that only walk the pages (workers); counting a large
    /// backlog on every page is most of such a list's cost.
    #[serde(default)]
    pub skip_total: bool,
    /// Count at most this many matches for [`Page::total`]: when at least
    /// `n` runs match, a store may stop counting and answer `n` (the
    /// PostgreSQL and SQLite stores do; a store whose count costs little
    /// may answer the exact count). `None` counts every match. A page that
    /// shows its exact total (the last page by offset) still answers it.
    #[serde(default)]
    pub count_limit: Option<u64>,
}

impl RunQuery {
    /// Pages of this query count at most `n` matches
    /// ([`RunQuery::count_limit`]).
    pub fn counting_up_to(mut self, n: u64) -> Self {
        self.count_limit = Some(n);
        self
    }

    /// Whether `total`, answered for this query, may be a bound
    /// ([`RunQuery::count_limit`]) rather than the count: true when it
    /// reached the limit.
    pub fn total_at_limit(&self, total: u64) -> bool {
        self.count_limit.is_some_and(|n| total >= n)
    }

    /// Pages of this query leave their `total` uncounted
    /// ([`RunQuery::skip_total`]).
    pub fn without_total(mut self) -> Self {
        self.skip_total = true;
        self
    }

    /// The `total` of an uncounted page of `len` items (`more`: another
    /// page follows): the page's rows, the rows its `offset` skipped (none
    /// after a cursor) and one more when more follow — a lower bound,
    /// exact on a last page read by offset.
    pub fn uncounted_total(&self, len: usize, more: bool) -> u64 {
        let before = if self.cursor.is_some() {
            0
        } else {
            self.offset
        };
        u64::try_from(before.saturating_add(len).saturating_add(usize::from(more)))
            .unwrap_or(u64::MAX)
    }

    /// A query for every run, `limit` at a time, sorted by `run_id` asc.
    pub fn all(limit: usize) -> Self {
        RunQuery {
            limit,
            sort_by: RunSortField::RunId,
            order: SortOrder::Asc,
            ..Default::default()
        }
    }

    /// Restricts to these statuses.
    pub fn with_statuses(mut self, statuses: &[RunStatus]) -> Self {
        self.statuses = statuses.to_vec();
        self
    }
}

/// A list query over definitions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DefinitionQuery {
    /// Alias contains this (case-insensitive).
    pub alias: Option<String>,
    /// Group equals this.
    pub group_name: Option<String>,
    /// Image contains this (case-insensitive).
    pub image: Option<String>,
    /// Every one of these `NAME=VALUE` pairs is in the definition's env.
    pub env: Vec<EnvVar>,
    /// Sort field.
    pub sort_by: DefinitionSortField,
    /// Sort direction.
    pub order: SortOrder,
    /// Page size.
    pub limit: usize,
    /// Rows to skip.
    pub offset: usize,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// How many items match, over all pages.
    pub total: u64,
    /// This page.
    pub items: Vec<T>,
    /// Cursor for the next page when more may follow (keyset paging).
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// An empty page.
    pub fn empty() -> Self {
        Page {
            total: 0,
            items: Vec::new(),
            next_cursor: None,
        }
    }
}

/// A keyset cursor: the sort value and id of the last row of a page.
///
/// Encoded as hex of a small JSON document, so it is opaque, URL-safe and
/// stable across backends. `value` is `None` for a missing sort value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort field the cursor was made for.
    pub sort_by: RunSortField,
    /// The direction it was made for.
    pub order: SortOrder,
    /// The last row's sort value as text (RFC 3339 for times).
    pub value: Option<String>,
    /// The last row's id.
    pub id: String,
}

impl Cursor {
    /// Encodes the cursor.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        json.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Decodes a cursor made for `sort_by`/`order`.
    pub fn decode(s: &str, sort_by: RunSortField, order: SortOrder) -> Result<Self> {
        let bad = || Error::invalid("cursor: not a cursor from this server");
        if !s.len().is_multiple_of(2) || s.len() > 4096 {
            return Err(bad());
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|_| bad())?;
        let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if c.sort_by != sort_by || c.order != order {
            return Err(Error::invalid(
                "cursor: made for another sort; start again without a cursor",
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            sort_by: RunSortField::QueuedAt,
            order: SortOrder::Desc,
            value: Some("2026-01-01T00:00:00Z".into()),
            id: "abc".into(),
        };
        let s = c.encode();
        assert_eq!(
            Cursor::decode(&s, RunSortField::QueuedAt, SortOrder::Desc).expect("decode"),
            c
        );
        assert!(Cursor::decode(&s, RunSortField::RunId, SortOrder::Desc).is_err());
        assert!(Cursor::decode("zz", RunSortField::QueuedAt, SortOrder::Desc).is_err());
        assert!(Cursor::decode("' OR 1=1 --", RunSortField::QueuedAt, SortOrder::Desc).is_err());
    }

    #[test]
    fn sort_whitelists() {
        assert_eq!(
            "alias".parse::<RunSortField>().expect("alias"),
            RunSortField::Alias
        );
        assert!("alias; drop table runs".parse::<RunSortField>().is_err());
        assert!("cpu".parse::<DefinitionSortField>().is_err());
        assert_eq!("DESC".parse::<SortOrder>().expect("desc"), SortOrder::Desc);
    }

    #[test]
    fn time_ranges() {
        let t = chrono::Utc::now();
        let r = TimeRange {
            since: Some(t),
            until: None,
        };
        assert!(r.contains(Some(t)));
        assert!(!r.contains(None));
        assert!(TimeRange::default().contains(None));
    }
}
