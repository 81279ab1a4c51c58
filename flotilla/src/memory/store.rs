//! [`MemoryStore`]: every [`Store`] operation on maps behind one lock.
//!
//! Runs are kept in a map by id with secondary indexes: run ids by each
//! filterable value ([`index::FacetIndex`]: status, alias, definition,
//! cluster, owner, engine, env pair — so the status worker's "every PENDING
//! or RUNNING run" lists touch only active runs, and an env filter only the
//! runs with that pair), run ids by idempotence key, and one ordered set of
//! `(sort value, run id)` per [`RunSortField`], maintained on create and
//! update.
//!
//! A list starts from its narrowest filter's ids. When that one filter is
//! the whole query (the history page's default, one cluster, one alias),
//! its size is the `total` and, when the page is near the front of a large
//! set, the list walks the ordered set of its sort field from the cursor
//! and stops after `offset + limit` matches. Otherwise it checks each
//! candidate, counts the matches (`total`), computes each match's sort key
//! once and selects only the requested page with a partial sort.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::{Error, Result};
use crate::model::{Cluster, Definition, EnvVar, Run, RunEvent, RunStatus, Template};
use crate::query::{
    Cursor, DefinitionQuery, DefinitionSortField, Page, RunQuery, RunSortField, SortOrder,
    TemplateQuery,
};
use crate::store::{Expected, Store};

use super::index::{FacetIndex, Groups};

/// In-memory [`Store`]: the embedded default and a test double.
///
/// Honours the whole [`Store`] contract, including compare-and-set updates,
/// keyset cursors and leases (timed with [`std::time::Instant`]). Nothing is
/// persisted: state lives as long as the value. All operations take one
/// `RwLock` briefly and never hold it across an `.await`.
///
/// A `limit` of 0 in a list query means "no limit".
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
    templates: super::templates::TemplateTable,
}

#[derive(Debug, Default)]
struct Inner {
    definitions: HashMap<String, Definition>,
    /// alias → definition id.
    aliases: HashMap<String, String>,
    /// run id → the run and its events. Boxed, so growing the map moves
    /// pointers, not whole runs: a resize at 100 000+ runs would otherwise
    /// copy hundreds of MB while every store call waits on the lock.
    runs: HashMap<String, Box<Slot>>,
    /// filterable value → run ids with it.
    facets: FacetIndex,
    /// idempotence key → run id.
    by_key: HashMap<String, String>,
    /// Per sort field (by [`slot`]): every run's `(sort value, run id)`,
    /// ascending in the order of [`cmp_keyed`].
    ordered: [BTreeSet<(SortVal, Arc<str>)>; SORT_FIELDS.len()],
    clusters: BTreeMap<String, Cluster>,
    leases: HashMap<String, Lease>,
}

/// A stored run with its events, oldest first.
#[derive(Debug)]
struct Slot {
    run: Run,
    events: Vec<RunEvent>,
}

#[derive(Debug)]
struct Lease {
    holder: String,
    until: Instant,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // (every write validates first, then mutates), so recover.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A sort value, compared the way every store compares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key<'a> {
    /// Text, byte-wise.
    Text(&'a str),
    /// Owned text (decoded from a cursor).
    Owned(String),
    /// A time.
    Time(DateTime<Utc>),
    /// A number.
    Int(i64),
}

impl Key<'_> {
    fn cmp_value(&self, other: &Key<'_>) -> Ordering {
        match (self, other) {
            (Key::Time(a), Key::Time(b)) => a.cmp(b),
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            (a, b) => match (a.text(), b.text()) {
                (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
                // Never mixed within one sort field.
                _ => a.cmp(b),
            },
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Key::Text(s) => Some(s),
            Key::Owned(s) => Some(s),
            _ => None,
        }
    }

    fn encode(&self) -> String {
        match self {
            Key::Text(s) => (*s).to_owned(),
            Key::Owned(s) => s.clone(),
            Key::Time(t) => t.to_rfc3339_opts(SecondsFormat::Micros, true),
            Key::Int(i) => i.to_string(),
        }
    }
}

/// Every run sort field, in [`slot`] order.
const SORT_FIELDS: [RunSortField; 7] = [
    RunSortField::RunId,
    RunSortField::ClusterName,
    RunSortField::Status,
    RunSortField::QueuedAt,
    RunSortField::StartedAt,
    RunSortField::FinishedAt,
    RunSortField::Alias,
];

/// The position of `field` in [`SORT_FIELDS`] and [`Inner::ordered`].
fn slot(field: RunSortField) -> usize {
    match field {
        RunSortField::RunId => 0,
        RunSortField::ClusterName => 1,
        RunSortField::Status => 2,
        RunSortField::QueuedAt => 3,
        RunSortField::StartedAt => 4,
        RunSortField::FinishedAt => 5,
        RunSortField::Alias => 6,
    }
}

/// An owned sort value in an ordered index. Ordered like [`cmp_keyed`]
/// orders values: text byte-wise, times chronologically, a missing value
/// after every present one.
#[derive(Debug, Clone)]
enum SortVal {
    /// Text held by the index.
    Str(Arc<str>),
    /// Static text (a status name).
    Static(&'static str),
    /// A time.
    Time(DateTime<Utc>),
    /// No value (a run not started or not finished yet).
    Missing,
}

impl SortVal {
    fn of(key: Option<Key<'_>>, field: RunSortField) -> SortVal {
        match key {
            None => SortVal::Missing,
            Some(Key::Time(t)) => SortVal::Time(t),
            Some(Key::Int(i)) => SortVal::Str(Arc::from(i.to_string())),
            Some(Key::Text(s)) if field == RunSortField::Status => {
                match RunStatus::ALL.iter().find(|st| st.as_str() == s) {
                    Some(st) => SortVal::Static(st.as_str()),
                    None => SortVal::Str(Arc::from(s)),
                }
            }
            Some(Key::Text(s)) => SortVal::Str(Arc::from(s)),
            Some(Key::Owned(s)) => SortVal::Str(Arc::from(s)),
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            SortVal::Str(s) => Some(s),
            SortVal::Static(s) => Some(s),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            SortVal::Str(_) | SortVal::Static(_) => 0,
            SortVal::Time(_) => 1,
            SortVal::Missing => 2,
        }
    }
}

impl Ord for SortVal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (SortVal::Time(a), SortVal::Time(b)) => a.cmp(b),
            _ => match (self.text(), other.text()) {
                (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
                _ => self.rank().cmp(&other.rank()),
            },
        }
    }
}

impl PartialOrd for SortVal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SortVal {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SortVal {}

/// Ascending order of `(value, id)` with a missing value after every present
/// one; descending order is exactly its reverse (missing values first).
fn cmp_keyed(a: (&Option<Key<'_>>, &str), b: (&Option<Key<'_>>, &str)) -> Ordering {
    let by_value = match (a.0, b.0) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp_value(y),
    };
    by_value.then_with(|| a.1.as_bytes().cmp(b.1.as_bytes()))
}

fn directed(ord: Ordering, order: SortOrder) -> Ordering {
    match order {
        SortOrder::Asc => ord,
        SortOrder::Desc => ord.reverse(),
    }
}

fn run_key(run: &Run, field: RunSortField) -> Option<Key<'_>> {
    match field {
        RunSortField::RunId => Some(Key::Text(&run.run_id)),
        RunSortField::ClusterName => Some(Key::Text(&run.cluster)),
        RunSortField::Status => Some(Key::Text(run.status.as_str())),
        RunSortField::QueuedAt => run.queued_at.map(Key::Time),
        RunSortField::StartedAt => run.started_at.map(Key::Time),
        RunSortField::FinishedAt => run.finished_at.map(Key::Time),
        RunSortField::Alias => Some(Key::Text(&run.alias)),
    }
}

fn definition_key(def: &Definition, field: DefinitionSortField) -> Option<Key<'_>> {
    match field {
        DefinitionSortField::Alias => Some(Key::Text(&def.alias)),
        DefinitionSortField::Image => Some(Key::Text(&def.image)),
        DefinitionSortField::GroupName => Some(Key::Text(&def.group_name)),
        DefinitionSortField::Memory => def.memory.map(Key::Int),
    }
}

/// The cursor's sort value as a key of the field's type.
fn cursor_key(cursor: &Cursor) -> Result<Option<Key<'static>>> {
    let Some(value) = &cursor.value else {
        return Ok(None);
    };
    let key = match cursor.sort_by {
        RunSortField::QueuedAt | RunSortField::StartedAt | RunSortField::FinishedAt => {
            let t = DateTime::parse_from_rfc3339(value)
                .map_err(|_| Error::invalid("cursor: not a cursor from this server"))?;
            Key::Time(t.with_timezone(&Utc))
        }
        RunSortField::RunId
        | RunSortField::ClusterName
        | RunSortField::Status
        | RunSortField::Alias => Key::Owned(value.clone()),
    };
    Ok(Some(key))
}

fn env_matches(env: &[EnvVar], wanted: &[EnvVar]) -> bool {
    wanted
        .iter()
        .all(|w| env.iter().any(|e| e.name == w.name && e.value == w.value))
}

fn run_matches(run: &Run, q: &RunQuery) -> bool {
    (q.statuses.is_empty() || q.statuses.contains(&run.status))
        && (q.aliases.is_empty() || q.aliases.contains(&run.alias))
        && q.definition_id
            .as_ref()
            .is_none_or(|d| *d == run.definition_id)
        && (q.clusters.is_empty() || q.clusters.contains(&run.cluster))
        && (q.owners.is_empty() || q.owners.contains(&run.owner))
        && q.engine.as_ref().is_none_or(|e| *e == run.engine)
        && env_matches(&run.env, &q.env)
        && q.queued.contains(run.queued_at)
        && q.started.contains(run.started_at)
        && q.finished.contains(run.finished_at)
}

fn contains_ci(haystack: &str, needle: &Option<String>) -> bool {
    needle
        .as_ref()
        .is_none_or(|n| haystack.to_lowercase().contains(&n.to_lowercase()))
}

fn definition_matches(def: &Definition, q: &DefinitionQuery) -> bool {
    contains_ci(&def.alias, &q.alias)
        && contains_ci(&def.image, &q.image)
        && q.group_name.as_ref().is_none_or(|g| *g == def.group_name)
        && env_matches(&def.env, &q.env)
}

/// Sorts `rows` just enough to return `rows[offset..offset + limit]` in
/// order (limit 0: everything after `offset`).
fn page_of<T>(
    mut rows: Vec<T>,
    offset: usize,
    limit: usize,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> Vec<T> {
    if offset >= rows.len() {
        return Vec::new();
    }
    let take = if limit == 0 { usize::MAX } else { limit };
    let want = offset.saturating_add(take);
    if want < rows.len() {
        rows.select_nth_unstable_by(want, &cmp);
        rows.truncate(want);
    }
    rows.sort_unstable_by(&cmp);
    rows.into_iter().skip(offset).collect()
}

/// Distinct values, sorted byte-wise, optionally filtered by a
/// case-insensitive substring, paged.
fn distinct_page<'a>(
    values: impl Iterator<Item = &'a str>,
    name_contains: Option<&str>,
    limit: usize,
    offset: usize,
) -> Page<String> {
    let needle = name_contains.map(str::to_lowercase);
    let set: BTreeSet<&str> = values
        .filter(|v| !v.is_empty())
        .filter(|v| {
            needle
                .as_ref()
                .is_none_or(|n| v.to_lowercase().contains(n.as_str()))
        })
        .collect();
    let take = if limit == 0 { usize::MAX } else { limit };
    Page {
        total: set.len() as u64,
        items: set
            .into_iter()
            .skip(offset)
            .take(take)
            .map(str::to_owned)
            .collect(),
        next_cursor: None,
    }
}

fn has_key(key: &Option<String>) -> Option<&str> {
    key.as_deref().filter(|k| !k.is_empty())
}

/// Whether an update moves a run between facets (most only change times
/// and outcome fields, which no facet holds).
fn facets_differ(old: &Run, new: &Run) -> bool {
    old.status != new.status
        || old.alias != new.alias
        || old.definition_id != new.definition_id
        || old.cluster != new.cluster
        || old.owner != new.owner
        || old.engine != new.engine
        || old.env != new.env
}

impl Inner {
    fn index_key(&mut self, run: &Run) {
        if let Some(k) = has_key(&run.idempotence_key) {
            self.by_key.insert(k.to_owned(), run.run_id.clone());
        }
    }

    fn unindex_key(&mut self, run: &Run) {
        if let Some(k) = has_key(&run.idempotence_key)
            && self.by_key.get(k) == Some(&run.run_id)
        {
            self.by_key.remove(k);
        }
    }

    /// Enters a new run in the facet index and every ordered index.
    fn order_run(&mut self, run: &Run) {
        let id: Arc<str> = Arc::from(run.run_id.as_str());
        self.facets.insert(run, &id);
        for field in SORT_FIELDS {
            let val = SortVal::of(run_key(run, field), field);
            self.ordered[slot(field)].insert((val, Arc::clone(&id)));
        }
    }

    /// Moves a run whose sort values changed from `old` to `new` in the
    /// ordered indexes (same run id).
    fn reorder_run(&mut self, old: &Run, new: &Run) {
        let mut id: Option<Arc<str>> = None;
        if facets_differ(old, new) {
            let id = id.get_or_insert_with(|| Arc::from(old.run_id.as_str()));
            self.facets.update(old, new, id);
        }
        for field in SORT_FIELDS {
            let (before, after) = (run_key(old, field), run_key(new, field));
            let same = match (&before, &after) {
                (None, None) => true,
                (Some(a), Some(b)) => a.cmp_value(b) == Ordering::Equal,
                _ => false,
            };
            if same {
                continue;
            }
            let id = id.get_or_insert_with(|| Arc::from(old.run_id.as_str()));
            let set = &mut self.ordered[slot(field)];
            set.remove(&(SortVal::of(before, field), Arc::clone(id)));
            set.insert((SortVal::of(after, field), Arc::clone(id)));
        }
    }

    fn list_runs(&self, q: &RunQuery) -> Result<Page<Run>> {
        let cursor = q
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(c, q.sort_by, q.order))
            .transpose()?;
        let after = match &cursor {
            Some(c) => Some((cursor_key(c)?, c.id.as_str())),
            None => None,
        };
        let groups = Groups::of(q);
        let driver = groups.narrowest(&self.facets);
        let candidates = driver.map_or(self.runs.len(), |g| self.facets.group_len(g));
        if groups.is_single()
            && self.walk_is_cheaper(q, candidates)
            && let Some(page) = self.walk_runs(q, driver.is_some(), candidates, after.clone())
        {
            return Ok(page);
        }
        let pool: Box<dyn Iterator<Item = &Run> + '_> = match driver {
            None => Box::new(self.runs.values().map(|r| &r.run)),
            Some(group) => Box::new(
                self.facets
                    .group_ids(group)
                    .filter_map(|id| self.runs.get(&**id).map(|r| &r.run)),
            ),
        };
        let candidates: Vec<&Run> = pool.filter(|r| run_matches(r, q)).collect();
        let total = candidates.len() as u64;
        let (field, order) = (q.sort_by, q.order);
        // Each key computed once, next to its run, for the comparisons.
        let mut matches: Vec<(Option<Key<'_>>, &Run)> = candidates
            .into_iter()
            .map(|r| (run_key(r, field), r))
            .collect();
        let offset = match &after {
            Some((key, id)) => {
                matches.retain(|(k, r)| {
                    directed(cmp_keyed((k, &r.run_id), (key, id)), order) == Ordering::Greater
                });
                0
            }
            None => q.offset,
        };
        let page = page_of(matches, offset, q.limit, |a, b| {
            directed(cmp_keyed((&a.0, &a.1.run_id), (&b.0, &b.1.run_id)), order)
        });
        let page: Vec<&Run> = page.into_iter().map(|(_, r)| r).collect();
        Ok(self.page_from(q, total, page))
    }

    /// Whether walking the sort field's ordered set (about `runs /
    /// candidates` entries per match, `offset + limit` matches) should visit
    /// at most an eighth of the runs that checking and sorting all
    /// `candidates` would (matches are rarely spread evenly: a sort by
    /// `started_at desc` meets every unstarted run first).
    fn walk_is_cheaper(&self, q: &RunQuery, candidates: usize) -> bool {
        let runs = self.runs.len();
        if candidates == 0 || candidates.saturating_mul(4) >= runs {
            return candidates > 0 || runs == 0;
        }
        let take = if q.limit == 0 { usize::MAX } else { q.limit };
        let skip = if q.cursor.is_some() { 0 } else { q.offset };
        let visits = skip.saturating_add(take).saturating_mul(runs / candidates);
        visits.saturating_mul(8) <= candidates
    }

    /// A page of a list whose one filter is the whole query (or that has no
    /// filter), read off the ordered index of the sort field: starts after
    /// the cursor, skips `offset` matches and stops once the page is full.
    ///
    /// A filtered walk gives up (`None`) after visiting a quarter of
    /// `total` entries beyond the page without filling it — the matches sit
    /// late in this order — so a wasted walk costs at most a quarter of the
    /// check of the `total` candidates that replaces it.
    fn walk_runs(
        &self,
        q: &RunQuery,
        filtered: bool,
        total: usize,
        after: Option<(Option<Key<'static>>, &str)>,
    ) -> Option<Page<Run>> {
        let set = &self.ordered[slot(q.sort_by)];
        let start = after.map(|(key, id)| (SortVal::of(key, q.sort_by), Arc::<str>::from(id)));
        let entries: Box<dyn Iterator<Item = &(SortVal, Arc<str>)> + '_> = match (q.order, start) {
            (SortOrder::Asc, None) => Box::new(set.iter()),
            (SortOrder::Desc, None) => Box::new(set.iter().rev()),
            (SortOrder::Asc, Some(s)) => {
                Box::new(set.range((Bound::Excluded(s), Bound::Unbounded)))
            }
            (SortOrder::Desc, Some(s)) => {
                Box::new(set.range((Bound::Unbounded, Bound::Excluded(s))).rev())
            }
        };
        let offset = if q.cursor.is_some() { 0 } else { q.offset };
        let take = if q.limit == 0 { usize::MAX } else { q.limit };
        let page: Vec<&Run> = if !filtered {
            entries
                .skip(offset)
                .take(take)
                .filter_map(|(_, id)| self.runs.get(&**id).map(|r| &r.run))
                .collect()
        } else {
            let budget = (total / 4).saturating_add(offset).saturating_add(take);
            let mut visited = 0usize;
            let mut page = Vec::new();
            let mut skipped = 0usize;
            for (_, id) in entries {
                if page.len() == take {
                    break;
                }
                visited += 1;
                if visited > budget {
                    return None;
                }
                let Some(run) = self.runs.get(&**id).map(|r| &r.run) else {
                    continue;
                };
                if !run_matches(run, q) {
                    continue;
                }
                if skipped < offset {
                    skipped += 1;
                } else {
                    page.push(run);
                }
            }
            page
        };
        Some(self.page_from(q, total as u64, page))
    }

    /// The page of `items`, with a next cursor when the page is full.
    fn page_from(&self, q: &RunQuery, total: u64, items: Vec<&Run>) -> Page<Run> {
        let next_cursor = match items.last() {
            Some(last) if q.limit > 0 && items.len() == q.limit => Some(
                Cursor {
                    sort_by: q.sort_by,
                    order: q.order,
                    value: run_key(last, q.sort_by).map(|k| k.encode()),
                    id: last.run_id.clone(),
                }
                .encode(),
            ),
            _ => None,
        };
        Page {
            total,
            items: items.into_iter().cloned().collect(),
            next_cursor,
        }
    }

    fn list_definitions(&self, q: &DefinitionQuery) -> Page<Definition> {
        let matches: Vec<&Definition> = self
            .definitions
            .values()
            .filter(|d| definition_matches(d, q))
            .collect();
        let total = matches.len() as u64;
        let (field, order) = (q.sort_by, q.order);
        let page = page_of(matches, q.offset, q.limit, |a, b| {
            directed(
                cmp_keyed(
                    (&definition_key(a, field), &a.definition_id),
                    (&definition_key(b, field), &b.definition_id),
                ),
                order,
            )
        });
        Page {
            total,
            items: page.into_iter().cloned().collect(),
            next_cursor: None,
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_template(&self, template: &Template) -> Result<()> {
        self.templates.create(template)
    }

    async fn get_template(&self, template_id: &str) -> Result<Template> {
        self.templates.get(template_id)
    }

    async fn get_template_by_name(&self, name: &str, version: Option<u32>) -> Result<Template> {
        self.templates.get_by_name(name, version)
    }

    async fn list_templates(&self, query: &TemplateQuery) -> Result<Page<Template>> {
        Ok(self.templates.list(query))
    }

    async fn create_definition(&self, def: &Definition) -> Result<()> {
        let mut s = self.write();
        if s.aliases.contains_key(&def.alias) {
            return Err(Error::conflict(format!(
                "alias: a definition named '{}' already exists",
                def.alias
            )));
        }
        if s.definitions.contains_key(&def.definition_id) {
            return Err(Error::conflict(format!(
                "definition_id: '{}' already exists",
                def.definition_id
            )));
        }
        s.aliases
            .insert(def.alias.clone(), def.definition_id.clone());
        s.definitions.insert(def.definition_id.clone(), def.clone());
        Ok(())
    }

    async fn get_definition(&self, definition_id: &str) -> Result<Definition> {
        self.read()
            .definitions
            .get(definition_id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("definition '{definition_id}' not found")))
    }

    async fn get_definition_by_alias(&self, alias: &str) -> Result<Definition> {
        let s = self.read();
        s.aliases
            .get(alias)
            .and_then(|id| s.definitions.get(id))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("definition with alias '{alias}' not found")))
    }

    async fn update_definition(&self, def: &Definition) -> Result<()> {
        let mut s = self.write();
        let Some(stored) = s.definitions.get_mut(&def.definition_id) else {
            return Err(Error::not_found(format!(
                "definition '{}' not found",
                def.definition_id
            )));
        };
        let alias = std::mem::take(&mut stored.alias);
        *stored = def.clone();
        stored.alias = alias;
        Ok(())
    }

    async fn delete_definition(&self, definition_id: &str) -> Result<()> {
        let mut s = self.write();
        let Some(def) = s.definitions.remove(definition_id) else {
            return Err(Error::not_found(format!(
                "definition '{definition_id}' not found"
            )));
        };
        s.aliases.remove(&def.alias);
        Ok(())
    }

    async fn list_definitions(&self, query: &DefinitionQuery) -> Result<Page<Definition>> {
        Ok(self.read().list_definitions(query))
    }

    async fn create_run(&self, run: &Run, event: &RunEvent) -> Result<()> {
        // Copied before the lock is taken: the critical section only moves.
        let mut stored = run.clone();
        stored.version = 0;
        let id = stored.run_id.clone();
        let slot = Box::new(Slot {
            run: stored,
            events: vec![event.clone()],
        });
        let mut s = self.write();
        if s.runs.contains_key(&run.run_id) {
            return Err(Error::conflict(format!(
                "run_id: '{}' already exists",
                run.run_id
            )));
        }
        if let Some(k) = has_key(&run.idempotence_key)
            && s.by_key.contains_key(k)
        {
            return Err(Error::conflict(format!(
                "idempotence_key: '{k}' is taken by another run"
            )));
        }
        s.index_key(&slot.run);
        s.order_run(&slot.run);
        s.runs.insert(id, slot);
        Ok(())
    }

    async fn get_run(&self, run_id: &str) -> Result<Run> {
        self.read()
            .runs
            .get(run_id)
            .map(|r| r.run.clone())
            .ok_or_else(|| Error::not_found(format!("run '{run_id}' not found")))
    }

    async fn update_run(
        &self,
        run: &Run,
        expected: Expected,
        event: Option<&RunEvent>,
    ) -> Result<Run> {
        // Copies are made before the lock is taken and the replaced run is
        // dropped after it is released, so the critical section only moves
        // values and updates indexes.
        let mut stored = run.clone();
        stored.version = expected.version + 1;
        let returned = stored.clone();
        let event = event.cloned();
        let old = {
            let mut s = self.write();
            let inner = &mut *s;
            let Some(slot) = inner.runs.get_mut(&run.run_id) else {
                return Err(Error::not_found(format!("run '{}' not found", run.run_id)));
            };
            let current = &slot.run;
            if current.status != expected.status || current.version != expected.version {
                return Err(Error::conflict(format!(
                    "run '{}' changed: expected {} version {}, found {} version {}",
                    run.run_id, expected.status, expected.version, current.status, current.version
                )));
            }
            if let Some(k) = has_key(&run.idempotence_key)
                && inner
                    .by_key
                    .get(k)
                    .is_some_and(|owner| *owner != run.run_id)
            {
                return Err(Error::conflict(format!(
                    "idempotence_key: '{k}' is taken by another run"
                )));
            }
            if let Some(e) = event {
                slot.events.push(e);
            }
            let old = std::mem::replace(&mut slot.run, stored);
            // `returned` is an identical copy of what was stored.
            if old.idempotence_key != returned.idempotence_key {
                inner.unindex_key(&old);
                inner.index_key(&returned);
            }
            inner.reorder_run(&old, &returned);
            old
        };
        drop(old);
        Ok(returned)
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<Run>> {
        self.read().list_runs(query)
    }

    async fn find_run_by_idempotence_key(&self, key: &str) -> Result<Option<Run>> {
        let s = self.read();
        Ok(s.by_key
            .get(key)
            .and_then(|id| s.runs.get(id))
            .map(|r| r.run.clone()))
    }

    async fn run_events(&self, run_id: &str) -> Result<Vec<RunEvent>> {
        Ok(self
            .read()
            .runs
            .get(run_id)
            .map(|r| r.events.clone())
            .unwrap_or_default())
    }

    async fn list_groups(
        &self,
        name_contains: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Page<String>> {
        let s = self.read();
        let groups = s.definitions.values().map(|d| d.group_name.as_str());
        Ok(distinct_page(groups, name_contains, limit, offset))
    }

    async fn list_tags(
        &self,
        name_contains: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Page<String>> {
        let s = self.read();
        let tags = s
            .definitions
            .values()
            .flat_map(|d| d.tags.iter().map(String::as_str));
        Ok(distinct_page(tags, name_contains, limit, offset))
    }

    async fn put_cluster(&self, cluster: &Cluster) -> Result<()> {
        self.write()
            .clusters
            .insert(cluster.name.clone(), cluster.clone());
        Ok(())
    }

    async fn get_cluster(&self, name: &str) -> Result<Cluster> {
        self.read()
            .clusters
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("cluster '{name}' not found")))
    }

    async fn delete_cluster(&self, name: &str) -> Result<()> {
        self.write()
            .clusters
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| Error::not_found(format!("cluster '{name}' not found")))
    }

    async fn list_clusters(&self) -> Result<Vec<Cluster>> {
        Ok(self.read().clusters.values().cloned().collect())
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let until = now
            .checked_add(ttl.min(Duration::from_secs(100 * 365 * 24 * 3600)))
            .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
            .unwrap_or(now);
        let mut s = self.write();
        match s.leases.get_mut(name) {
            Some(lease) if lease.holder != holder && lease.until > now => Ok(false),
            Some(lease) => {
                lease.holder = holder.to_owned();
                lease.until = until;
                Ok(true)
            }
            None => {
                s.leases.insert(
                    name.to_owned(),
                    Lease {
                        holder: holder.to_owned(),
                        until,
                    },
                );
                Ok(true)
            }
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let mut s = self.write();
        if s.leases.get(name).is_some_and(|l| l.holder == holder) {
            s.leases.remove(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::index::Facet;
    use crate::model::{self, NewDefinition};
    use crate::query::TimeRange;

    fn run(status: RunStatus, key: Option<&str>) -> Run {
        let mut def = NewDefinition::new("a", "i").into_definition();
        def.definition_id = "d".into();
        let mut r = Run::queued(&def, "c", "local", "o");
        r.status = status;
        r.idempotence_key = key.map(str::to_owned);
        r
    }

    fn ev(r: &Run) -> RunEvent {
        RunEvent {
            run_id: r.run_id.clone(),
            at: model::now(),
            from: None,
            to: r.status,
            attempt: 1,
            reason: None,
        }
    }

    fn index_is_consistent(s: &MemoryStore) {
        let inner = s.read();
        let mut indexed = 0;
        for (facet, id) in inner.facets.entries() {
            let facet = &facet;
            let run = &inner.runs.get(&*id).expect("indexed run exists").run;
            let has = match facet {
                Facet::Status(s) => run.status == *s,
                Facet::Alias(a) => run.alias == *a,
                Facet::Definition(d) => run.definition_id == *d,
                Facet::Cluster(c) => run.cluster == *c,
                Facet::Owner(o) => run.owner == *o,
                Facet::Engine(e) => run.engine == *e,
                Facet::Env(n, v) => run.env.iter().any(|e| e.name == *n && e.value == *v),
            };
            assert!(has, "{facet:?} indexes a run that has it");
            indexed += 1;
        }
        let expected: usize = inner
            .runs
            .values()
            .map(|r| {
                let pairs: BTreeSet<(&str, &str)> = r
                    .run
                    .env
                    .iter()
                    .filter(|e| e.name != crate::service::ENV_RUN_ID)
                    .map(|e| (e.name.as_str(), e.value.as_str()))
                    .collect();
                6 + pairs.len()
            })
            .sum();
        assert_eq!(indexed, expected, "every run under each of its facets once");
        for field in SORT_FIELDS {
            let set = &inner.ordered[slot(field)];
            assert_eq!(set.len(), inner.runs.len(), "{field:?}: every run once");
            for (val, id) in set {
                let run = inner.runs.get(&**id).expect("indexed run exists");
                assert!(
                    *val == SortVal::of(run_key(&run.run, field), field),
                    "{field:?}: index value is the run's"
                );
            }
        }
    }

    /// Every page of `q`, followed by cursor and by offset: ids and totals.
    async fn pages(s: &MemoryStore, q: &RunQuery) -> (Vec<String>, Vec<String>, u64) {
        let mut by_cursor = Vec::new();
        let mut q1 = q.clone();
        let mut total = None;
        loop {
            let p = s.list_runs(&q1).await.expect("list");
            assert!(*total.get_or_insert(p.total) == p.total, "total is stable");
            by_cursor.extend(p.items.iter().map(|r| r.run_id.clone()));
            match p.next_cursor {
                Some(c) => q1.cursor = Some(c),
                None => break,
            }
        }
        let mut by_offset = Vec::new();
        let mut q2 = q.clone();
        loop {
            let p = s.list_runs(&q2).await.expect("list");
            if p.items.is_empty() {
                break;
            }
            by_offset.extend(p.items.iter().map(|r| r.run_id.clone()));
            q2.offset += q.limit;
        }
        (by_cursor, by_offset, total.unwrap_or(0))
    }

    #[tokio::test]
    async fn index_walk_and_filtered_sort_agree() {
        let s = MemoryStore::new();
        let base = model::now();
        let statuses = [
            RunStatus::Queued,
            RunStatus::Pending,
            RunStatus::Running,
            RunStatus::Stopped,
        ];
        let mut runs = Vec::new();
        for i in 0..300i64 {
            let mut r = run(RunStatus::Queued, None);
            r.cluster = format!("c{}", i % 3);
            r.alias = format!("a{}", i % 5);
            // Ties on purpose: equal times, broken by run id.
            r.queued_at = Some(base + chrono::Duration::microseconds(i % 37));
            s.create_run(&r, &ev(&r)).await.expect("create");
            runs.push(r);
        }
        // Move runs through statuses so the indexes follow updates.
        for (i, r) in runs.iter().enumerate() {
            let status = statuses[i % statuses.len()];
            if status == RunStatus::Queued {
                continue;
            }
            let mut next = r.clone();
            next.status = status;
            if matches!(status, RunStatus::Running | RunStatus::Stopped) {
                next.started_at = Some(base + chrono::Duration::microseconds((i % 11) as i64));
            }
            if status == RunStatus::Stopped {
                next.finished_at = Some(base + chrono::Duration::seconds((i % 7) as i64));
            }
            s.update_run(&next, Expected::of(r), None)
                .await
                .expect("update");
        }
        index_is_consistent(&s);
        let filters: [&[RunStatus]; 4] = [
            &[],
            &[RunStatus::Stopped],
            &[RunStatus::Running, RunStatus::Pending],
            &[RunStatus::Queued],
        ];
        for field in SORT_FIELDS {
            for order in [SortOrder::Asc, SortOrder::Desc] {
                for wanted in filters {
                    let walked = RunQuery {
                        sort_by: field,
                        order,
                        limit: 7,
                        ..RunQuery::default()
                    }
                    .with_statuses(wanted);
                    // Every run is owned by "o": same rows, the sort path.
                    let sorted = RunQuery {
                        owners: vec!["o".into()],
                        ..walked.clone()
                    };
                    let a = pages(&s, &walked).await;
                    let b = pages(&s, &sorted).await;
                    let label = format!("{field:?} {order:?} {wanted:?}");
                    assert_eq!(a, b, "{label}");
                    assert_eq!(a.0, a.1, "{label}: cursor and offset pages agree");
                    assert_eq!(a.0.len() as u64, a.2, "{label}: total");
                    let mut want: Vec<&Run> = runs
                        .iter()
                        .filter(|r| {
                            let st = s.read().runs.get(&r.run_id).map(|x| x.run.status);
                            wanted.is_empty() || st.is_some_and(|st| wanted.contains(&st))
                        })
                        .collect();
                    want.sort_by(|x, y| x.run_id.cmp(&y.run_id));
                    let mut got = a.0.clone();
                    got.sort();
                    let want: Vec<String> = want.iter().map(|r| r.run_id.clone()).collect();
                    assert_eq!(got, want, "{label}: the right runs");
                }
            }
        }
    }

    /// Every combination of indexed filters lists what a check of every run
    /// finds, in the order the unindexed sort path gives (a `queued` range
    /// that holds every run forces that path), paged by cursor and offset
    /// alike — whichever of walking, driving from a facet or scanning the
    /// store picks.
    #[tokio::test]
    async fn every_filter_combination_lists_what_a_scan_finds() {
        let s = MemoryStore::new();
        let base = model::now();
        let mut runs = Vec::new();
        for i in 0..400i64 {
            let mut r = run(RunStatus::Queued, None);
            r.cluster = format!("c{}", i % 3);
            r.alias = format!("a{}", i % 5);
            r.owner = format!("o{}", i % 2);
            r.env = vec![
                EnvVar::new("K", format!("v{}", i % 4)),
                EnvVar::new(crate::service::ENV_RUN_ID, format!("id{i}")),
            ];
            if i % 10 == 0 {
                r.env.push(EnvVar::new("RARE", "yes"));
            }
            r.queued_at = Some(base + chrono::Duration::microseconds(i % 37));
            s.create_run(&r, &ev(&r)).await.expect("create");
            runs.push(r);
        }
        // Half move on, then one in seven to another cluster: the facets
        // follow status changes and changes of nothing else.
        for (i, r) in runs.iter_mut().enumerate() {
            let mut next = r.clone();
            if i % 2 == 1 {
                next.status = RunStatus::Stopped;
                next.finished_at = Some(base + chrono::Duration::seconds((i % 7) as i64));
            } else if i % 7 == 0 {
                next.cluster = "moved".into();
            } else {
                continue;
            }
            let stored = s
                .update_run(&next, Expected::of(r), None)
                .await
                .expect("update");
            *r = stored;
        }
        index_is_consistent(&s);
        let every = TimeRange {
            since: Some(base - chrono::Duration::days(1)),
            until: None,
        };
        let clusters: [&[&str]; 4] = [&[], &["c1"], &["c0", "c2", "c0"], &["moved"]];
        let aliases: [&[&str]; 2] = [&[], &["a1"]];
        let envs: [&[(&str, &str)]; 5] = [
            &[],
            &[("K", "v2")],
            &[("RARE", "yes")],
            &[("K", "v2"), ("RARE", "yes")],
            &[("FLOTILLA_RUN_ID", "id30")],
        ];
        let statuses: [&[RunStatus]; 3] = [
            &[],
            &[RunStatus::Stopped],
            &[RunStatus::Queued, RunStatus::Running],
        ];
        let owners: [&[&str]; 2] = [&[], &["o1"]];
        let mut checked = 0;
        for c in clusters {
            for a in aliases {
                for e in envs {
                    for st in statuses {
                        for o in owners {
                            for field in [
                                RunSortField::RunId,
                                RunSortField::QueuedAt,
                                RunSortField::FinishedAt,
                            ] {
                                for order in [SortOrder::Asc, SortOrder::Desc] {
                                    let q = RunQuery {
                                        statuses: st.to_vec(),
                                        clusters: c.iter().map(|x| x.to_string()).collect(),
                                        aliases: a.iter().map(|x| x.to_string()).collect(),
                                        owners: o.iter().map(|x| x.to_string()).collect(),
                                        env: e.iter().map(|(n, v)| EnvVar::new(*n, *v)).collect(),
                                        sort_by: field,
                                        order,
                                        limit: 9,
                                        ..RunQuery::default()
                                    };
                                    let label = format!("{q:?}");
                                    let want: BTreeSet<&str> = runs
                                        .iter()
                                        .filter(|r| {
                                            (c.is_empty() || c.contains(&r.cluster.as_str()))
                                                && (a.is_empty() || a.contains(&r.alias.as_str()))
                                                && (o.is_empty() || o.contains(&r.owner.as_str()))
                                                && (st.is_empty() || st.contains(&r.status))
                                                && e.iter().all(|(n, v)| {
                                                    r.env
                                                        .iter()
                                                        .any(|x| x.name == *n && x.value == *v)
                                                })
                                        })
                                        .map(|r| r.run_id.as_str())
                                        .collect();
                                    let got = pages(&s, &q).await;
                                    let scanned = pages(
                                        &s,
                                        &RunQuery {
                                            queued: every,
                                            ..q.clone()
                                        },
                                    )
                                    .await;
                                    assert_eq!(got, scanned, "{label}: same pages as the scan");
                                    assert_eq!(
                                        got.0, got.1,
                                        "{label}: cursor and offset pages agree"
                                    );
                                    assert_eq!(got.2, want.len() as u64, "{label}: total");
                                    let ids: BTreeSet<&str> =
                                        got.0.iter().map(String::as_str).collect();
                                    assert_eq!(ids, want, "{label}: the right runs");
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 4 * 2 * 5 * 3 * 2 * 3 * 2);
    }

    /// Matches that all sit at the end of the sort order (a third of the
    /// runs, queued last): the walk gives up after its budget and the page
    /// comes from the candidates, the same as a scan's.
    #[tokio::test]
    async fn a_filter_whose_matches_sort_last_lists_what_a_scan_finds() {
        let s = MemoryStore::new();
        let base = model::now();
        for i in 0..300i64 {
            let mut r = run(RunStatus::Queued, None);
            r.alias = if i >= 200 { "late" } else { "early" }.into();
            r.queued_at = Some(base + chrono::Duration::seconds(i));
            s.create_run(&r, &ev(&r)).await.expect("create");
        }
        for (offset, limit) in [(0, 5), (20, 10), (95, 10), (0, 0)] {
            let q = RunQuery {
                aliases: vec!["late".into()],
                sort_by: RunSortField::QueuedAt,
                order: SortOrder::Asc,
                offset,
                limit,
                ..RunQuery::default()
            };
            let scanned = RunQuery {
                queued: TimeRange {
                    since: Some(base - chrono::Duration::days(1)),
                    until: None,
                },
                ..q.clone()
            };
            let (a, b) = (
                s.list_runs(&q).await.expect("list"),
                s.list_runs(&scanned).await.expect("list"),
            );
            let ids = |p: &Page<Run>| p.items.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>();
            assert_eq!(
                (a.total, ids(&a)),
                (b.total, ids(&b)),
                "offset {offset} limit {limit}"
            );
            assert_eq!(a.total, 100);
            assert!(a.items.iter().all(|r| r.alias == "late"));
        }
    }

    #[tokio::test]
    async fn status_index_follows_updates_at_scale() {
        let s = MemoryStore::new();
        let n = 20_000;
        let mut active = Vec::new();
        for i in 0..n {
            let status = if i % 100 == 0 {
                RunStatus::Queued
            } else {
                RunStatus::Stopped
            };
            let r = run(status, None);
            s.create_run(&r, &ev(&r)).await.expect("create");
            if status == RunStatus::Queued {
                active.push(r);
            }
        }
        for (i, r) in active.iter().enumerate() {
            let mut next = r.clone();
            next.status = if i % 2 == 0 {
                RunStatus::Pending
            } else {
                RunStatus::Running
            };
            s.update_run(&next, Expected::of(r), None)
                .await
                .expect("update");
        }
        index_is_consistent(&s);
        let mut q = RunQuery::all(70).with_statuses(&[RunStatus::Pending, RunStatus::Running]);
        let mut seen = Vec::new();
        loop {
            let p = s.list_runs(&q).await.expect("list");
            assert_eq!(p.total, (n / 100) as u64);
            seen.extend(p.items.iter().map(|r| r.run_id.clone()));
            match p.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        let mut want: Vec<String> = active.iter().map(|r| r.run_id.clone()).collect();
        want.sort();
        assert_eq!(seen, want, "every active run once, in id order");
    }

    #[tokio::test]
    async fn idempotence_key_index_follows_updates() {
        let s = MemoryStore::new();
        let a = run(RunStatus::Queued, Some("k1"));
        let b = run(RunStatus::Queued, Some("k2"));
        s.create_run(&a, &ev(&a)).await.expect("create");
        s.create_run(&b, &ev(&b)).await.expect("create");
        let mut moved = a.clone();
        moved.idempotence_key = Some("k3".into());
        let a1 = s
            .update_run(&moved, Expected::of(&a), None)
            .await
            .expect("update");
        assert!(
            s.find_run_by_idempotence_key("k1")
                .await
                .expect("find")
                .is_none()
        );
        assert_eq!(
            s.find_run_by_idempotence_key("k3")
                .await
                .expect("find")
                .map(|r| r.run_id),
            Some(a.run_id.clone())
        );
        let mut taken = a1.clone();
        taken.idempotence_key = Some("k2".into());
        let e = s
            .update_run(&taken, Expected::of(&a1), None)
            .await
            .expect_err("k2 is b's");
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        // An empty key is no key.
        let c = run(RunStatus::Queued, Some(""));
        let d = run(RunStatus::Queued, Some(""));
        s.create_run(&c, &ev(&c)).await.expect("create");
        s.create_run(&d, &ev(&d)).await.expect("create");
        assert!(
            s.find_run_by_idempotence_key("")
                .await
                .expect("find")
                .is_none()
        );
        index_is_consistent(&s);
    }

    #[tokio::test]
    async fn a_lease_for_duration_max_is_held() {
        let s = MemoryStore::new();
        assert!(s.try_lease("l", "a", Duration::MAX).await.expect("lease"));
        assert!(!s.try_lease("l", "b", Duration::MAX).await.expect("lease"));
    }

    #[tokio::test]
    async fn limit_zero_means_everything() {
        let s = MemoryStore::new();
        for _ in 0..5 {
            let r = run(RunStatus::Queued, None);
            s.create_run(&r, &ev(&r)).await.expect("create");
        }
        let p = s.list_runs(&RunQuery::all(0)).await.expect("list");
        assert_eq!((p.total, p.items.len()), (5, 5));
        assert!(p.next_cursor.is_none());
        let p = s
            .list_runs(&RunQuery {
                offset: 3,
                ..RunQuery::all(0)
            })
            .await
            .expect("list");
        assert_eq!((p.total, p.items.len()), (5, 2));
    }

    #[tokio::test]
    async fn cursors_with_times_round_trip_microseconds() {
        let s = MemoryStore::new();
        let mut runs = Vec::new();
        for i in 0..6 {
            let mut r = run(RunStatus::Running, None);
            r.started_at = (i % 3 != 0).then(|| model::now() + chrono::Duration::microseconds(i));
            s.create_run(&r, &ev(&r)).await.expect("create");
            runs.push(r);
        }
        for order in [SortOrder::Asc, SortOrder::Desc] {
            let mut q = RunQuery {
                sort_by: RunSortField::StartedAt,
                order,
                limit: 1,
                ..Default::default()
            };
            let mut seen = BTreeSet::new();
            while let Some(c) = {
                let p = s.list_runs(&q).await.expect("list");
                for r in p.items {
                    assert!(seen.insert(r.run_id), "no duplicates");
                }
                p.next_cursor
            } {
                q.cursor = Some(c);
            }
            assert_eq!(seen.len(), 6, "{order:?}");
        }
    }
}
