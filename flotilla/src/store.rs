//! The `Store` trait: durable state of definitions, runs, events, clusters
//! and leases.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{Cluster, Definition, Run, RunEvent, RunStatus, Template};
use crate::query::{DefinitionQuery, Page, RunQuery, TemplateQuery};

/// What a compare-and-set update expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The status the stored run must have.
    pub status: RunStatus,
    /// The version the stored run must have.
    pub version: u64,
}

impl Expected {
    /// What `run` says: its status and version as read.
    pub fn of(run: &Run) -> Self {
        Expected {
            status: run.status,
            version: run.version,
        }
    }
}

/// One compare-and-set of a batch given to [`Store::update_runs`]: the
/// arguments of one [`Store::update_run`] call.
#[derive(Debug, Clone, PartialEq)]
pub struct RunUpdate {
    /// The run to store (its `version` is ignored: the store writes
    /// `expected.version + 1`).
    pub run: Run,
    /// What the stored run must be for this item to apply.
    pub expected: Expected,
    /// The event appended with the change, if any.
    pub event: Option<RunEvent>,
}

impl RunUpdate {
    /// An item storing `run` if the stored run is still `expected`.
    pub fn new(run: Run, expected: Expected, event: Option<RunEvent>) -> Self {
        RunUpdate {
            run,
            expected,
            event,
        }
    }
}

/// Durable state.
///
/// # Contract
/// - **Definitions**: `create_definition` fails with `Conflict` when the
///   alias (or id) is taken; `get_*`, `update_definition`,
///   `delete_definition` fail with `NotFound` for an unknown id/alias.
///   `update_definition` never changes the alias.
/// - **Runs**: `create_run` fails with `Conflict` when the id, or a non-empty
///   `idempotence_key`, is taken; it stores `version` 0 and appends the
///   creation event (`from: None`). `update_run` is a compare-and-set: it
///   replaces the stored run with `run` only if the stored status and
///   version equal `expected`, stores `version = expected.version + 1`,
///   appends `event` (when given) in the same atomic step and returns the
///   stored run; otherwise `Conflict` (or `NotFound`) and nothing changes.
///   The store does not judge transitions — the service checks them with
///   [`crate::state::check_transition`] before calling.
/// - **Batched runs**: `get_runs(ids)` answers position by position
///   (`None` for an unknown id), exactly as `get_run` would for each.
///   `update_runs(items)` applies each item as `update_run` would, and
///   answers position by position: **every item is its own
///   compare-and-set**. An item whose run changed (or is unknown) gets
///   `Conflict` (or `NotFound`) and nothing of it is stored — neither the
///   run nor its event — while the other items still apply; an invalid item
///   gets `InvalidInput` and does not stop the others. A run id given more
///   than once in one batch: the first item is applied as if alone, the
///   later ones fail with `InvalidInput`. An `Err` of the whole call
///   (`Unavailable`: the database was unreachable) means no item was
///   applied by a store that writes the batch atomically, and says nothing
///   about each item otherwise: callers re-read before trying again, as
///   after any failed `update_run`.
/// - **Lists** honour every filter of the query, the ordering rules of
///   [`crate::query`], `limit`/`offset`, and keyset `cursor`s; `total`
///   counts all matches, except for a run query with `skip_total`, where it
///   may instead be [`crate::RunQuery::uncounted_total`] (any value from
///   that lower bound to the count), and one with `count_limit = Some(n)`,
///   where it is the count when fewer than `n` match and may be `n` (or the
///   count) otherwise. Filters are values: a quote or SQL
///   fragment in a filter only ever matches nothing.
/// - **Events** come back in the order they were appended.
/// - **Leases**: `try_lease(name, holder, ttl)` returns true if `holder` now
///   holds `name` until `ttl` from now — it was free, expired, or already
///   held by `holder` (a renewal). Two holders never both get `true` for an
///   unexpired lease. `release_lease` frees it if `holder` holds it.
/// - **Templates** are immutable versions: `create_template` fails with
///   `Conflict` when the id, or the `(template_name, version)` pair, is
///   taken, so two writers racing for the next version of a name never both
///   succeed (the loser reads the latest again and retries).
///   `get_template_by_name(name, None)` is the highest version of the name;
///   unknown ids, names or versions are `NotFound`. `list_templates`
///   honours `template_name`, `latest_only` (the highest version of each
///   name), the sort (the field, then the other of name and version, in the
///   same direction), `limit`/`offset`, and counts every match in `total`.
/// - Transient failures are `Unavailable`; callers retry.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a new definition.
    async fn create_definition(&self, def: &Definition) -> Result<()>;
    /// A definition by id.
    async fn get_definition(&self, definition_id: &str) -> Result<Definition>;
    /// A definition by alias.
    async fn get_definition_by_alias(&self, alias: &str) -> Result<Definition>;
    /// Replaces a stored definition (same id).
    async fn update_definition(&self, def: &Definition) -> Result<()>;
    /// Deletes a definition; its runs stay.
    async fn delete_definition(&self, definition_id: &str) -> Result<()>;
    /// Lists definitions.
    async fn list_definitions(&self, query: &DefinitionQuery) -> Result<Page<Definition>>;

    /// Stores a new run and its creation event.
    async fn create_run(&self, run: &Run, event: &RunEvent) -> Result<()>;
    /// A run by id.
    async fn get_run(&self, run_id: &str) -> Result<Run>;
    /// Compare-and-set update; see the contract.
    async fn update_run(
        &self,
        run: &Run,
        expected: Expected,
        event: Option<&RunEvent>,
    ) -> Result<Run>;
    /// Runs by id, position by position (`None`: unknown); see the
    /// contract. The default reads them one by one.
    async fn get_runs(&self, run_ids: &[String]) -> Result<Vec<Option<Run>>> {
        let mut out = Vec::with_capacity(run_ids.len());
        for id in run_ids {
            match self.get_run(id).await {
                Ok(r) => out.push(Some(r)),
                Err(e) if e.kind() == crate::ErrorKind::NotFound => out.push(None),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
    /// A batch of independent compare-and-set updates, answered position
    /// by position; see the contract. The default calls `update_run` for
    /// each item in turn (one round trip each); stores that can write many
    /// rows in one statement override it.
    async fn update_runs(&self, items: &[RunUpdate]) -> Result<Vec<Result<Run>>> {
        let mut out = Vec::with_capacity(items.len());
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        for u in items {
            if !seen.insert(u.run.run_id.as_str()) {
                out.push(Err(repeated_run(&u.run.run_id)));
                continue;
            }
            out.push(self.update_run(&u.run, u.expected, u.event.as_ref()).await);
        }
        Ok(out)
    }
    /// Lists runs.
    async fn list_runs(&self, query: &RunQuery) -> Result<Page<Run>>;
    /// The run with this idempotence key, if any.
    async fn find_run_by_idempotence_key(&self, key: &str) -> Result<Option<Run>>;
    /// The run's events, oldest first.
    async fn run_events(&self, run_id: &str) -> Result<Vec<RunEvent>>;

    /// Distinct definition groups, sorted, paged.
    async fn list_groups(
        &self,
        name_contains: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Page<String>>;
    /// Distinct definition tags, sorted, paged.
    async fn list_tags(
        &self,
        name_contains: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Page<String>>;

    /// Stores a new template version; see the contract.
    async fn create_template(&self, template: &Template) -> Result<()>;
    /// A template version by id.
    async fn get_template(&self, template_id: &str) -> Result<Template>;
    /// Version `version` of the template named `name`; the latest when
    /// `None`.
    async fn get_template_by_name(&self, name: &str, version: Option<u32>) -> Result<Template>;
    /// Lists template versions.
    async fn list_templates(&self, query: &TemplateQuery) -> Result<Page<Template>>;

    /// Creates or replaces a cluster.
    async fn put_cluster(&self, cluster: &Cluster) -> Result<()>;
    /// A cluster by name.
    async fn get_cluster(&self, name: &str) -> Result<Cluster>;
    /// Deletes a cluster.
    async fn delete_cluster(&self, name: &str) -> Result<()>;
    /// All clusters, by name.
    async fn list_clusters(&self) -> Result<Vec<Cluster>>;

    /// Takes or renews a named lease; see the contract.
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;
    /// Gives a lease up.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    /// An id shared with a [`crate::Queue`] that can enqueue in the same
    /// transaction as this store writes. When a store's and a queue's
    /// domains are equal, the service calls [`Store::create_run_enqueued`]
    /// instead of `create_run` followed by `Queue::enqueue`.
    fn transaction_domain(&self) -> Option<&str> {
        None
    }

    /// Creates the run and enqueues `(run_id, attempt)` on `queue` of the
    /// queue sharing this store's transaction domain, atomically.
    async fn create_run_enqueued(&self, run: &Run, event: &RunEvent, queue: &str) -> Result<()> {
        let _ = (run, event, queue);
        Err(crate::Error::unsupported(
            "this store cannot enqueue transactionally",
        ))
    }
}

/// The error of a [`Store::update_runs`] item naming a run an earlier item
/// of the batch names too (the contract applies the first only).
pub fn repeated_run(run_id: &str) -> crate::Error {
    crate::Error::invalid(format!("run {run_id}: given more than once in one batch"))
}
