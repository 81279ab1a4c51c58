//! Run ids by filterable value ([`Facet`]), the in-memory store's answer to
//! PostgreSQL's B-tree and GIN indexes on the run filters.
//!
//! Every run is entered once under each of its facets: its status, alias,
//! definition, cluster, owner, engine and each `NAME=VALUE` pair of its env.
//! A [`RunQuery`] becomes [`Groups`]: one group per filter, a run matches a
//! group when it has any facet of it (`status=A&status=B`) and the query
//! when it matches every group. The store drives a list from the smallest
//! group, so a filter that selects 1% of the runs visits 1% of them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::model::{Run, RunStatus};
use crate::query::RunQuery;

/// One filterable value of a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// The facets of `run`, each once.
fn facets(run: &Run) -> BTreeSet<Facet> {
    let mut out = BTreeSet::from([
        Facet::Status(run.status),
        Facet::Alias(run.alias.clone()),
        Facet::Definition(run.definition_id.clone()),
        Facet::Cluster(run.cluster.clone()),
        Facet::Owner(run.owner.clone()),
        Facet::Engine(run.engine.clone()),
    ]);
    out.extend(
        run.env
            .iter()
            .map(|e| Facet::Env(e.name.clone(), e.value.clone())),
    );
    out
}

/// Run ids by facet.
#[derive(Debug, Default)]
pub(super) struct FacetIndex {
    sets: HashMap<Facet, HashSet<Arc<str>>>,
}

impl FacetIndex {
    /// Enters a new run under each of its facets.
    pub(super) fn insert(&mut self, run: &Run, id: &Arc<str>) {
        for facet in facets(run) {
            self.add(facet, id);
        }
    }

    /// Moves a run from the facets of `old` to those of `new` (same id);
    /// facets both have are left alone.
    pub(super) fn update(&mut self, old: &Run, new: &Run, id: &Arc<str>) {
        let (before, after) = (facets(old), facets(new));
        for gone in before.difference(&after) {
            self.remove(gone, id);
        }
        for came in after.difference(&before) {
            self.add(came.clone(), id);
        }
    }

    fn add(&mut self, facet: Facet, id: &Arc<str>) {
        self.sets.entry(facet).or_default().insert(Arc::clone(id));
    }

    fn remove(&mut self, facet: &Facet, id: &Arc<str>) {
        if let Some(set) = self.sets.get_mut(facet) {
            set.remove(id);
            if set.is_empty() {
                self.sets.remove(facet);
            }
        }
    }

    /// The ids of runs with `facet`.
    pub(super) fn ids(&self, facet: &Facet) -> impl Iterator<Item = &Arc<str>> {
        self.sets.get(facet).into_iter().flatten()
    }

    /// How many runs have `facet`.
    pub(super) fn len(&self, facet: &Facet) -> usize {
        self.sets.get(facet).map_or(0, HashSet::len)
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
    pub(super) fn entries(&self) -> impl Iterator<Item = (&Facet, &Arc<str>)> {
        self.sets
            .iter()
            .flat_map(|(f, ids)| ids.iter().map(move |id| (f, id)))
    }
}

/// A query's indexed filters: every group must match, any facet of a group
/// does.
#[derive(Debug, Default)]
pub(super) struct Groups {
    /// One group per filter the query sets, each group's facets distinct.
    pub(super) groups: Vec<Vec<Facet>>,
    /// Whether the query also filters by something no facet covers (the
    /// time ranges): then only a run-by-run check gives the total.
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
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        groups.extend(env.into_iter().map(|(n, v)| vec![Facet::Env(n, v)]));
        Groups {
            groups,
            residual: !(q.queued.is_open() && q.started.is_open() && q.finished.is_open()),
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
