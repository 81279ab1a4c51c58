//! Run ids by filterable value ([`Facet`]), the in-memory store's answer to
//! PostgreSQL's B-tree and GIN indexes on the run filters.
//!
//! Every run is entered once under each of its facets: its status, alias,
//! definition, cluster, owner, engine and each `NAME=VALUE` pair of its env.
//! A [`RunQuery`] becomes [`Groups`]: one group per filter, a run matches a
//! group when it has any facet of it (`status=A&status=B`) and the query
//! when it matches every group. The store drives a list from the smallest
//! group, so a filter that selects 1% of the runs visits 1% of them.
//!
//! [`ENV_RUN_ID`] is not indexed: its value is the run's own id, one set per
//! run for a lookup `get_run` answers. A filter on it is checked run by run.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::model::{EnvVar, Run, RunStatus};
use crate::query::RunQuery;
use crate::service::ENV_RUN_ID;

/// One filterable value of a run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Facet {
    /// `status`.
    Status(RunStatus),
    /// `alias`.
    Alias(String),
    /// `definition_id`.
    Definition(String),
    /// `cluster`.
    Cluster(String),
    /// `owner`.
    Owner(String),
    /// `engine`.
    Engine(String),
    /// One `NAME=VALUE` pair of `env`.
    Env(String, String),
}

use foldhash::{HashMap, HashSet};

/// Run ids with one facet.
type Ids = HashSet<Arc<str>>;

/// The text facets, by position in [`FacetIndex::text`].
const ALIAS: usize = 0;
const DEFINITION: usize = 1;
const CLUSTER: usize = 2;
const OWNER: usize = 3;
const ENGINE: usize = 4;

/// `run`'s value of each text facet, in [`FacetIndex::text`] order.
fn texts(run: &Run) -> [&str; 5] {
    [
        &run.alias,
        &run.definition_id,
        &run.cluster,
        &run.owner,
        &run.engine,
    ]
}

/// The env pairs of `run` the index holds.
fn indexed_env(run: &Run) -> impl Iterator<Item = &EnvVar> {
    run.env.iter().filter(|e| e.name != ENV_RUN_ID)
}

/// Run ids by facet. Kept per kind, keyed by the values themselves, so
/// entering a run under facets that already exist allocates nothing but
/// the set entries.
#[derive(Debug, Default)]
pub(super) struct FacetIndex {
    status: HashMap<RunStatus, Ids>,
    /// Alias, definition, cluster, owner, engine: value → ids.
    text: [HashMap<String, Ids>; 5],
    /// Env name → value → ids.
    env: HashMap<String, HashMap<String, Ids>>,
}

fn add(map: &mut HashMap<String, Ids>, value: &str, id: &Arc<str>) {
    match map.get_mut(value) {
        Some(ids) => {
            ids.insert(Arc::clone(id));
        }
        None => {
            map.entry(value.to_owned())
                .or_default()
                .insert(Arc::clone(id));
        }
    }
}

fn remove(map: &mut HashMap<String, Ids>, value: &str, id: &Arc<str>) {
    if let Some(ids) = map.get_mut(value) {
        ids.remove(id);
        if ids.is_empty() {
            map.remove(value);
        }
    }
}

impl FacetIndex {
    /// Enters a new run under each of its facets.
    pub(super) fn insert(&mut self, run: &Run, id: &Arc<str>) {
        self.status
            .entry(run.status)
            .or_default()
            .insert(Arc::clone(id));
        for (map, value) in self.text.iter_mut().zip(texts(run)) {
            add(map, value, id);
        }
        for e in indexed_env(run) {
            let values = match self.env.get_mut(&e.name) {
                Some(values) => values,
                None => self.env.entry(e.name.clone()).or_default(),
            };
            add(values, &e.value, id);
        }
    }

    /// Moves a run from the facets of `old` to those of `new` (same id);
    /// facets both have are left alone.
    pub(super) fn update(&mut self, old: &Run, new: &Run, id: &Arc<str>) {
        if old.status != new.status {
            if let Some(ids) = self.status.get_mut(&old.status) {
                ids.remove(id);
            }
            self.status
                .entry(new.status)
                .or_default()
                .insert(Arc::clone(id));
        }
        for (i, (before, after)) in texts(old).into_iter().zip(texts(new)).enumerate() {
            if before != after {
                remove(&mut self.text[i], before, id);
                add(&mut self.text[i], after, id);
            }
        }
        if old.env != new.env {
            self.remove_env(old, id);
            for e in indexed_env(new) {
                add(self.env.entry(e.name.clone()).or_default(), &e.value, id);
            }
        }
    }

    fn remove_env(&mut self, run: &Run, id: &Arc<str>) {
        for e in indexed_env(run) {
            if let Some(values) = self.env.get_mut(&e.name) {
                remove(values, &e.value, id);
                if values.is_empty() {
                    self.env.remove(&e.name);
                }
            }
        }
    }

    fn set(&self, facet: &Facet) -> Option<&Ids> {
        let text = |i: usize, v: &str| self.text[i].get(v);
        match facet {
            Facet::Status(s) => self.status.get(s),
            Facet::Alias(v) => text(ALIAS, v),
            Facet::Definition(v) => text(DEFINITION, v),
            Facet::Cluster(v) => text(CLUSTER, v),
            Facet::Owner(v) => text(OWNER, v),
            Facet::Engine(v) => text(ENGINE, v),
            Facet::Env(n, v) => self.env.get(n).and_then(|values| values.get(v)),
        }
    }

    /// The ids of runs with `facet`.
    pub(super) fn ids(&self, facet: &Facet) -> impl Iterator<Item = &Arc<str>> {
        self.set(facet).into_iter().flatten()
    }

    /// How many runs have `facet`.
    pub(super) fn len(&self, facet: &Facet) -> usize {
        self.set(facet).map_or(0, HashSet::len)
    }

    /// How many runs have any facet of `group` (a run has one value of each
    /// kind but env, and a group holds one kind, so the sets are disjoint).
    pub(super) fn group_len(&self, group: &[Facet]) -> usize {
        group.iter().map(|f| self.len(f)).sum()
    }

    /// The ids of runs with any facet of `group`, each once.
    pub(super) fn group_ids<'a>(
        &'a self,
        group: &'a [Facet],
    ) -> impl Iterator<Item = &'a Arc<str>> {
        group.iter().flat_map(|f| self.ids(f))
    }

    /// Every `(facet, id)` entry, for consistency checks.
    #[cfg(test)]
    pub(super) fn entries(&self) -> Vec<(Facet, Arc<str>)> {
        let mut out = Vec::new();
        for (s, ids) in &self.status {
            out.extend(ids.iter().map(|id| (Facet::Status(*s), Arc::clone(id))));
        }
        let kinds: [fn(String) -> Facet; 5] = [
            Facet::Alias,
            Facet::Definition,
            Facet::Cluster,
            Facet::Owner,
            Facet::Engine,
        ];
        for (map, kind) in self.text.iter().zip(kinds) {
            for (v, ids) in map {
                out.extend(ids.iter().map(|id| (kind(v.clone()), Arc::clone(id))));
            }
        }
        for (n, values) in &self.env {
            for (v, ids) in values {
                out.extend(
                    ids.iter()
                        .map(|id| (Facet::Env(n.clone(), v.clone()), Arc::clone(id))),
                );
            }
        }
        out
    }
}

/// A query's indexed filters: every group must match, any facet of a group
/// does.
#[derive(Debug, Default)]
pub(super) struct Groups {
    /// One group per filter the query sets, each group's facets distinct.
    pub(super) groups: Vec<Vec<Facet>>,
    /// Whether the query also filters by something no facet covers (the
    /// time ranges, [`ENV_RUN_ID`]): then only a run-by-run check gives the
    /// total.
    pub(super) residual: bool,
}

impl Groups {
    /// The groups of `q`.
    pub(super) fn of(q: &RunQuery) -> Groups {
        fn group<T: Ord + Clone>(values: &[T], facet: impl Fn(T) -> Facet) -> Option<Vec<Facet>> {
            let distinct: BTreeSet<T> = values.iter().cloned().collect();
            (!distinct.is_empty()).then(|| distinct.into_iter().map(facet).collect())
        }
        let mut groups: Vec<Vec<Facet>> = [
            group(&q.statuses, Facet::Status),
            group(&q.aliases, Facet::Alias),
            group(q.definition_id.as_slice(), Facet::Definition),
            group(&q.clusters, Facet::Cluster),
            group(&q.owners, Facet::Owner),
            group(q.engine.as_slice(), Facet::Engine),
        ]
        .into_iter()
        .flatten()
        .collect();
        let env: BTreeSet<(String, String)> = q
            .env
            .iter()
            .filter(|e| e.name != ENV_RUN_ID)
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        groups.extend(env.into_iter().map(|(n, v)| vec![Facet::Env(n, v)]));
        let unindexed_env = q.env.iter().any(|e| e.name == ENV_RUN_ID);
        let times = q.queued.is_open() && q.started.is_open() && q.finished.is_open();
        Groups {
            groups,
            residual: unindexed_env || !times,
        }
    }

    /// The group with the fewest runs, if the query has any.
    pub(super) fn narrowest<'a>(&'a self, index: &FacetIndex) -> Option<&'a [Facet]> {
        self.groups
            .iter()
            .min_by_key(|g| index.group_len(g))
            .map(Vec::as_slice)
    }

    /// Whether matching the one group is matching the whole query, so the
    /// group's size is the query's total.
    pub(super) fn is_single(&self) -> bool {
        self.groups.len() <= 1 && !self.residual
    }
}
