//! `SqliteStore`: the `Store` trait on SQLite.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flotilla::query::Cursor;
use flotilla::{
    Cluster, Definition, DefinitionQuery, DefinitionSortField, EnvVar, Error, Expected, Message,
    Page, Result, Run, RunEvent, RunQuery, RunSortField, RunStatus, SortOrder, Store, Template,
    TemplateQuery,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use crate::SqliteOptions;
use crate::db::Db;
use crate::error::{check_text, conflict_as, from_json, from_sqlx};
use crate::queue::{SqliteQueue, check_queue, insert_messages};
use crate::time::{MISSING, from_nanos, nanos, now_nanos, opt_nanos};

/// Durable state in one SQLite file.
///
/// Cheap to clone (clones share the connections). A store and the
/// [`SqliteQueue`] made by [`SqliteStore::queue`] share one transaction
/// domain: the service then inserts a run and enqueues it atomically.
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Db>,
    domain: Arc<str>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("domain", &self.domain)
            .field("db", &self.db)
            .finish()
    }
}

impl SqliteStore {
    /// Opens the database file at `path` (created, with its directory, when
    /// missing) and runs the migrations when `opts.migrate`. A file that is
    /// not a database, or cannot be created, fails naming `path`.
    pub async fn open(path: impl AsRef<Path>, opts: SqliteOptions) -> Result<SqliteStore> {
        let db = Db::open(path.as_ref(), &opts).await?;
        Ok(SqliteStore {
            db: Arc::new(db),
            domain: Arc::from(format!("sqlite:{}", uuid::Uuid::now_v7())),
        })
    }

    /// The queue in the same file and transaction domain.
    pub fn queue(&self) -> SqliteQueue {
        SqliteQueue::new(self.db.clone(), self.domain.clone())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// The pool of reading connections (`PRAGMA query_only`), for
    /// inspection.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.db.read
    }

    /// Finishes the writes in flight and closes every connection of this
    /// store and its queues; the file can then be opened again. Later calls
    /// fail with `Unavailable`.
    pub async fn close(&self) {
        self.db.close().await;
    }
}

// ------------------------------------------------------------ conversions

fn to_doc<T: serde::Serialize>(what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::internal(format!("{what}: cannot encode: {e}")))
}

fn env_json(env: &[EnvVar]) -> String {
    serde_json::Value::Array(
        env.iter()
            .map(|e| serde_json::json!({"name": e.name, "value": e.value}))
            .collect(),
    )
    .to_string()
}

fn env_pairs(env: &[EnvVar]) -> Vec<(String, String)> {
    env.iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect()
}

fn to_i64(field: &str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid(format!("{field}: out of range")))
}

fn usize_i64(field: &str, v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid(format!("{field}: out of range")))
}

/// A page size: 0 means no limit (SQLite's `LIMIT -1`).
fn opt_limit(limit: usize) -> Result<i64> {
    match limit {
        0 => Ok(-1),
        n => usize_i64("limit", n),
    }
}

fn count_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

/// Nanoseconds of a filter bound; bounds beyond the storable range clamp
/// to its ends (they still compare correctly with every stored time).
fn bound_nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() > 0 {
        MISSING - 1
    } else {
        i64::MIN
    })
}

fn run_from_row(row: &SqliteRow) -> Result<Run> {
    let doc: String = row.try_get("doc").map_err(from_sqlx)?;
    let version: i64 = row.try_get("version").map_err(from_sqlx)?;
    let mut run: Run = serde_json::from_str(&doc).map_err(|e| from_json("run", e))?;
    run.version = u64::try_from(version).unwrap_or_default();
    Ok(run)
}

fn def_from_row(row: &SqliteRow) -> Result<Definition> {
    let doc: String = row.try_get("doc").map_err(from_sqlx)?;
    serde_json::from_str(&doc).map_err(|e| from_json("definition", e))
}

/// A run as bound to the `runs` columns.
struct RunRow {
    run_id: String,
    definition_id: String,
    alias: String,
    cluster: String,
    engine: String,
    status: &'static str,
    owner: String,
    queued_at: i64,
    started_at: i64,
    finished_at: i64,
    env: String,
    env_pairs: Vec<(String, String)>,
    idempotence_key: Option<String>,
    version: i64,
    doc: String,
}

impl RunRow {
    /// `run` as stored with `version`.
    fn new(run: &Run, version: u64) -> Result<RunRow> {
        check_text("run_id", &run.run_id)?;
        check_text("definition_id", &run.definition_id)?;
        check_text("alias", &run.alias)?;
        check_text("cluster", &run.cluster)?;
        check_text("engine", &run.engine)?;
        check_text("owner", &run.owner)?;
        flotilla::validate::check_env_no_nul("env", &run.env)?;
        if let Some(k) = &run.idempotence_key {
            check_text("idempotence_key", k)?;
        }
        let mut stored = run.clone();
        stored.version = version;
        Ok(RunRow {
            run_id: run.run_id.clone(),
            definition_id: run.definition_id.clone(),
            alias: run.alias.clone(),
            cluster: run.cluster.clone(),
            engine: run.engine.clone(),
            status: run.status.as_str(),
            owner: run.owner.clone(),
            queued_at: opt_nanos("queued_at", run.queued_at)?,
            started_at: opt_nanos("started_at", run.started_at)?,
            finished_at: opt_nanos("finished_at", run.finished_at)?,
            env: env_json(&run.env),
            env_pairs: env_pairs(&run.env),
            // An empty idempotence key is no key.
            idempotence_key: run.idempotence_key.clone().filter(|k| !k.is_empty()),
            version: to_i64("version", version)?,
            doc: to_doc("run", &stored)?,
        })
    }
}

/// An event as bound to the `run_events` columns.
struct EventRow {
    run_id: String,
    at: i64,
    from: Option<&'static str>,
    to: &'static str,
    attempt: i64,
    reason: Option<String>,
}

impl EventRow {
    fn new(event: &RunEvent) -> Result<EventRow> {
        check_text("run_id", &event.run_id)?;
        if let Some(r) = &event.reason {
            check_text("reason", r)?;
        }
        Ok(EventRow {
            run_id: event.run_id.clone(),
            at: nanos("at", event.at)?,
            from: event.from.map(|s| s.as_str()),
            to: event.to.as_str(),
            attempt: i64::from(event.attempt),
            reason: event.reason.clone(),
        })
    }
}

async fn insert_env(
    conn: &mut SqliteConnection,
    run_id: &str,
    pairs: &[(String, String)],
) -> Result<()> {
    for (name, value) in pairs {
        sqlx::query("INSERT INTO run_env (run_id, name, value) VALUES (?, ?, ?)")
            .bind(run_id)
            .bind(name)
            .bind(value)
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    }
    Ok(())
}

async fn insert_event(conn: &mut SqliteConnection, ev: &EventRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO run_events (run_id, at, from_status, to_status, attempt, reason) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&ev.run_id)
    .bind(ev.at)
    .bind(ev.from)
    .bind(ev.to)
    .bind(ev.attempt)
    .bind(&ev.reason)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// Inserts the run, its env rows and its creation event (part of the
/// writer's transaction).
async fn insert_run(conn: &mut SqliteConnection, r: &RunRow, ev: &EventRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO runs (run_id, definition_id, alias, cluster, engine, status, owner, \
         queued_at, started_at, finished_at, env, idempotence_key, version, doc) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.run_id)
    .bind(&r.definition_id)
    .bind(&r.alias)
    .bind(&r.cluster)
    .bind(&r.engine)
    .bind(r.status)
    .bind(&r.owner)
    .bind(r.queued_at)
    .bind(r.started_at)
    .bind(r.finished_at)
    .bind(&r.env)
    .bind(&r.idempotence_key)
    .bind(r.version)
    .bind(&r.doc)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        conflict_as(e, || {
            format!(
                "run {}: a run with this id or idempotence key exists",
                r.run_id
            )
        })
    })?;
    insert_env(conn, &r.run_id, &r.env_pairs).await?;
    insert_event(conn, ev).await
}

/// The compare-and-set: checks the stored status and version, replaces the
/// run, rewrites its env rows when the env changed, appends the event.
async fn update_run_row(
    conn: &mut SqliteConnection,
    r: &RunRow,
    expected: Expected,
    ev: Option<&EventRow>,
) -> Result<()> {
    let found: Option<(String, i64, String)> =
        sqlx::query_as("SELECT status, version, env FROM runs WHERE run_id = ?")
            .bind(&r.run_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    let Some((status, version, env)) = found else {
        return Err(Error::not_found(format!("run {} not found", r.run_id)));
    };
    if status != expected.status.as_str() || u64::try_from(version).ok() != Some(expected.version) {
        return Err(Error::conflict(format!(
            "run {}: expected {} version {}, found {} version {}",
            r.run_id, expected.status, expected.version, status, version
        )));
    }
    sqlx::query(
        "UPDATE runs SET definition_id = ?, alias = ?, cluster = ?, engine = ?, status = ?, \
         owner = ?, queued_at = ?, started_at = ?, finished_at = ?, env = ?, \
         idempotence_key = ?, version = ?, doc = ? WHERE run_id = ?",
    )
    .bind(&r.definition_id)
    .bind(&r.alias)
    .bind(&r.cluster)
    .bind(&r.engine)
    .bind(r.status)
    .bind(&r.owner)
    .bind(r.queued_at)
    .bind(r.started_at)
    .bind(r.finished_at)
    .bind(&r.env)
    .bind(&r.idempotence_key)
    .bind(r.version)
    .bind(&r.doc)
    .bind(&r.run_id)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    if env != r.env {
        sqlx::query("DELETE FROM run_env WHERE run_id = ?")
            .bind(&r.run_id)
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
        insert_env(conn, &r.run_id, &r.env_pairs).await?;
    }
    if let Some(ev) = ev {
        insert_event(conn, ev).await?;
    }
    Ok(())
}

// ------------------------------------------------------------ run lists

fn push_in(qb: &mut QueryBuilder<Sqlite>, column: &str, values: Vec<String>) {
    qb.push(format_args!(" AND {column} IN ("));
    let mut list = qb.separated(", ");
    for v in values {
        list.push_bind(v);
    }
    list.push_unseparated(")");
}

fn push_time_range(qb: &mut QueryBuilder<Sqlite>, column: &str, range: &flotilla::TimeRange) {
    if range.is_open() {
        return;
    }
    // A missing time is outside any bounded range.
    qb.push(format_args!(" AND {column} <> "))
        .push_bind(MISSING);
    if let Some(s) = range.since {
        qb.push(format_args!(" AND {column} >= "))
            .push_bind(bound_nanos(s));
    }
    if let Some(u) = range.until {
        qb.push(format_args!(" AND {column} <= "))
            .push_bind(bound_nanos(u));
    }
}

/// Every pair must be in the env: one indexed lookup on
/// `run_env (name, value)` per pair.
fn push_env(qb: &mut QueryBuilder<Sqlite>, table: &str, id: &str, env: &[EnvVar]) {
    for e in env {
        qb.push(format_args!(
            " AND {id} IN (SELECT {id} FROM {table} WHERE name = "
        ))
        .push_bind(e.name.clone())
        .push(" AND value = ")
        .push_bind(e.value.clone())
        .push(")");
    }
}

fn push_run_filters(qb: &mut QueryBuilder<Sqlite>, q: &RunQuery) -> Result<()> {
    qb.push(" WHERE 1");
    if !q.statuses.is_empty() {
        let v = q.statuses.iter().map(|s| s.as_str().to_string()).collect();
        push_in(qb, "status", v);
    }
    if !q.aliases.is_empty() {
        for a in &q.aliases {
            check_text("alias", a)?;
        }
        push_in(qb, "alias", q.aliases.clone());
    }
    if let Some(d) = &q.definition_id {
        check_text("definition_id", d)?;
        qb.push(" AND definition_id = ").push_bind(d.clone());
    }
    if !q.clusters.is_empty() {
        for c in &q.clusters {
            check_text("cluster_name", c)?;
        }
        push_in(qb, "cluster", q.clusters.clone());
    }
    if !q.owners.is_empty() {
        for o in &q.owners {
            check_text("owner", o)?;
        }
        push_in(qb, "owner", q.owners.clone());
    }
    if let Some(e) = &q.engine {
        check_text("engine", e)?;
        qb.push(" AND engine = ").push_bind(e.clone());
    }
    if !q.env.is_empty() {
        flotilla::validate::check_env_no_nul("env", &q.env)?;
        push_env(qb, "run_env", "run_id", &q.env);
    }
    push_time_range(qb, "queued_at", &q.queued);
    push_time_range(qb, "started_at", &q.started);
    push_time_range(qb, "finished_at", &q.finished);
    Ok(())
}

/// ` ORDER BY` the query's sort field, `run_id` breaking ties.
fn push_order(qb: &mut QueryBuilder<Sqlite>, q: &RunQuery) {
    let col = q.sort_by.column();
    let dir = direction(q.order);
    if col == "run_id" {
        qb.push(format_args!(" ORDER BY run_id {dir}"));
    } else {
        qb.push(format_args!(" ORDER BY {col} {dir}, run_id {dir}"));
    }
}

/// Rows strictly after the cursor row in the query's order: a row-value
/// comparison on `(column, run_id)`, an index range scan.
fn push_cursor(qb: &mut QueryBuilder<Sqlite>, q: &RunQuery, c: &Cursor) -> Result<()> {
    let bad = || Error::invalid("cursor: not a cursor from this server");
    check_text("cursor", &c.id)?;
    let op = match q.order {
        SortOrder::Asc => ">",
        SortOrder::Desc => "<",
    };
    if q.sort_by == RunSortField::RunId {
        qb.push(format_args!(" AND run_id {op} "))
            .push_bind(c.id.clone());
        return Ok(());
    }
    let col = q.sort_by.column();
    qb.push(format_args!(" AND ({col}, run_id) {op} ("));
    if q.sort_by.is_time() {
        let n = match &c.value {
            None => MISSING,
            Some(v) => {
                let t = DateTime::parse_from_rfc3339(v)
                    .map_err(|_| bad())?
                    .with_timezone(&Utc);
                nanos("cursor", t).map_err(|_| bad())?
            }
        };
        qb.push_bind(n);
    } else {
        let v = c.value.clone().ok_or_else(bad)?;
        check_text("cursor", &v)?;
        qb.push_bind(v);
    }
    qb.push(", ").push_bind(c.id.clone()).push(")");
    Ok(())
}

fn direction(o: SortOrder) -> &'static str {
    match o {
        SortOrder::Asc => "ASC",
        SortOrder::Desc => "DESC",
    }
}

// ------------------------------------------------------------ definitions

/// A definition as bound to its columns.
struct DefRow {
    definition_id: String,
    alias: String,
    group_name: String,
    image: String,
    memory: Option<i64>,
    env: Vec<(String, String)>,
    tags: Vec<String>,
    created_at: i64,
    updated_at: i64,
    def: Definition,
}

impl DefRow {
    fn new(def: &Definition) -> Result<DefRow> {
        check_text("definition_id", &def.definition_id)?;
        check_text("alias", &def.alias)?;
        check_text("group_name", &def.group_name)?;
        check_text("image", &def.image)?;
        flotilla::validate::check_env_no_nul("env", &def.env)?;
        for t in &def.tags {
            check_text("tags", t)?;
        }
        if let Some(c) = &def.command {
            check_text("command", c)?;
        }
        Ok(DefRow {
            definition_id: def.definition_id.clone(),
            alias: def.alias.clone(),
            group_name: def.group_name.clone(),
            image: def.image.clone(),
            memory: def.memory,
            env: env_pairs(&def.env),
            tags: def.tags.clone(),
            created_at: nanos("created_at", def.created_at)?,
            updated_at: nanos("updated_at", def.updated_at)?,
            def: def.clone(),
        })
    }
}

/// (Re)writes a definition's env and tag rows.
async fn write_def_children(conn: &mut SqliteConnection, d: &DefRow, replace: bool) -> Result<()> {
    if replace {
        for sql in [
            "DELETE FROM definition_env WHERE definition_id = ?",
            "DELETE FROM definition_tags WHERE definition_id = ?",
        ] {
            sqlx::query(sql)
                .bind(&d.definition_id)
                .execute(&mut *conn)
                .await
                .map_err(from_sqlx)?;
        }
    }
    for (name, value) in &d.env {
        sqlx::query("INSERT INTO definition_env (definition_id, name, value) VALUES (?, ?, ?)")
            .bind(&d.definition_id)
            .bind(name)
            .bind(value)
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    }
    for tag in &d.tags {
        sqlx::query("INSERT INTO definition_tags (definition_id, tag, tag_lower) VALUES (?, ?, ?)")
            .bind(&d.definition_id)
            .bind(tag)
            .bind(tag.to_lowercase())
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    }
    Ok(())
}

fn def_sort(f: DefinitionSortField, o: SortOrder) -> &'static str {
    match (f, o) {
        (DefinitionSortField::Alias, SortOrder::Asc) => "alias ASC, definition_id ASC",
        (DefinitionSortField::Alias, SortOrder::Desc) => "alias DESC, definition_id DESC",
        (DefinitionSortField::Image, SortOrder::Asc) => "image ASC, definition_id ASC",
        (DefinitionSortField::Image, SortOrder::Desc) => "image DESC, definition_id DESC",
        (DefinitionSortField::GroupName, SortOrder::Asc) => "group_name ASC, definition_id ASC",
        (DefinitionSortField::GroupName, SortOrder::Desc) => "group_name DESC, definition_id DESC",
        // Missing memory sorts last ascending, first descending.
        (DefinitionSortField::Memory, SortOrder::Asc) => "memory ASC NULLS LAST, definition_id ASC",
        (DefinitionSortField::Memory, SortOrder::Desc) => {
            "memory DESC NULLS FIRST, definition_id DESC"
        }
    }
}

fn push_def_filters(qb: &mut QueryBuilder<Sqlite>, q: &DefinitionQuery) -> Result<()> {
    qb.push(" WHERE 1");
    if let Some(a) = &q.alias {
        check_text("alias", a)?;
        qb.push(" AND instr(alias_lower, ")
            .push_bind(a.to_lowercase())
            .push(") > 0");
    }
    if let Some(g) = &q.group_name {
        check_text("group_name", g)?;
        qb.push(" AND group_name = ").push_bind(g.clone());
    }
    if let Some(i) = &q.image {
        check_text("image", i)?;
        qb.push(" AND instr(image_lower, ")
            .push_bind(i.to_lowercase())
            .push(") > 0");
    }
    if !q.env.is_empty() {
        flotilla::validate::check_env_no_nul("env", &q.env)?;
        push_env(qb, "definition_env", "definition_id", &q.env);
    }
    Ok(())
}

/// Lists distinct non-empty values of `column` in `table` whose lowercase
/// (`lower_column`) contains `name_contains` lowercased.
async fn distinct_page(
    pool: &SqlitePool,
    table: &str,
    column: &str,
    lower_column: &str,
    name_contains: Option<&str>,
    limit: usize,
    offset: usize,
) -> Result<Page<String>> {
    if let Some(c) = name_contains {
        check_text("name", c)?;
    }
    let needle = name_contains.map(str::to_lowercase).unwrap_or_default();
    let filter = format!("WHERE {column} <> '' AND instr({lower_column}, ?) > 0");
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(DISTINCT {column}) FROM {table} {filter}"
    )))
    .bind(&needle)
    .fetch_one(pool)
    .await
    .map_err(from_sqlx)?;
    let items: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT {column} FROM {table} {filter} ORDER BY {column} LIMIT ? OFFSET ?"
    )))
    .bind(&needle)
    .bind(opt_limit(limit)?)
    .bind(usize_i64("offset", offset)?)
    .fetch_all(pool)
    .await
    .map_err(from_sqlx)?;
    Ok(Page {
        total: count_u64(total),
        items,
        next_cursor: None,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_template(&self, template: &Template) -> Result<()> {
        crate::templates::create(&self.db, template).await
    }

    async fn get_template(&self, template_id: &str) -> Result<Template> {
        crate::templates::get(&self.db, template_id).await
    }

    async fn get_template_by_name(&self, name: &str, version: Option<u32>) -> Result<Template> {
        crate::templates::get_by_name(&self.db, name, version).await
    }

    async fn list_templates(&self, query: &TemplateQuery) -> Result<Page<Template>> {
        crate::templates::list(&self.db, query).await
    }

    async fn create_definition(&self, def: &Definition) -> Result<()> {
        let d = DefRow::new(def)?;
        let doc = to_doc("definition", def)?;
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO definitions (definition_id, alias, alias_lower, group_name, \
                         group_lower, image, image_lower, memory, doc, created_at, updated_at) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&d.definition_id)
                    .bind(&d.alias)
                    .bind(d.alias.to_lowercase())
                    .bind(&d.group_name)
                    .bind(d.group_name.to_lowercase())
                    .bind(&d.image)
                    .bind(d.image.to_lowercase())
                    .bind(d.memory)
                    .bind(&doc)
                    .bind(d.created_at)
                    .bind(d.updated_at)
                    .execute(&mut *c)
                    .await
                    .map_err(|e| {
                        conflict_as(e, || {
                            format!(
                                "alias: a definition with alias '{}' (or id {}) exists",
                                d.alias, d.definition_id
                            )
                        })
                    })?;
                    write_def_children(c, &d, false).await
                })
            })
            .await
    }

    async fn get_definition(&self, definition_id: &str) -> Result<Definition> {
        check_text("definition_id", definition_id)?;
        let row = sqlx::query("SELECT doc FROM definitions WHERE definition_id = ?")
            .bind(definition_id)
            .fetch_optional(&self.db.read)
            .await
            .map_err(from_sqlx)?
            .ok_or_else(|| Error::not_found(format!("definition {definition_id} not found")))?;
        def_from_row(&row)
    }

    async fn get_definition_by_alias(&self, alias: &str) -> Result<Definition> {
        check_text("alias", alias)?;
        let row = sqlx::query("SELECT doc FROM definitions WHERE alias = ?")
            .bind(alias)
            .fetch_optional(&self.db.read)
            .await
            .map_err(from_sqlx)?
            .ok_or_else(|| {
                Error::not_found(format!("definition with alias '{alias}' not found"))
            })?;
        def_from_row(&row)
    }

    async fn update_definition(&self, def: &Definition) -> Result<()> {
        let mut d = DefRow::new(def)?;
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    // The alias never changes: the stored one is kept.
                    let alias: Option<String> =
                        sqlx::query_scalar("SELECT alias FROM definitions WHERE definition_id = ?")
                            .bind(&d.definition_id)
                            .fetch_optional(&mut *c)
                            .await
                            .map_err(from_sqlx)?;
                    let Some(alias) = alias else {
                        return Err(Error::not_found(format!(
                            "definition {} not found",
                            d.definition_id
                        )));
                    };
                    d.def.alias = alias;
                    let doc = to_doc("definition", &d.def)?;
                    sqlx::query(
                        "UPDATE definitions SET group_name = ?, group_lower = ?, image = ?, \
                         image_lower = ?, memory = ?, doc = ?, updated_at = ? WHERE definition_id = ?",
                    )
                    .bind(&d.group_name)
                    .bind(d.group_name.to_lowercase())
                    .bind(&d.image)
                    .bind(d.image.to_lowercase())
                    .bind(d.memory)
                    .bind(&doc)
                    .bind(d.updated_at)
                    .bind(&d.definition_id)
                    .execute(&mut *c)
                    .await
                    .map_err(from_sqlx)?;
                    write_def_children(c, &d, true).await
                })
            })
            .await
    }

    async fn delete_definition(&self, definition_id: &str) -> Result<()> {
        check_text("definition_id", definition_id)?;
        let id = definition_id.to_string();
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    let done = sqlx::query("DELETE FROM definitions WHERE definition_id = ?")
                        .bind(&id)
                        .execute(&mut *c)
                        .await
                        .map_err(from_sqlx)?;
                    if done.rows_affected() == 0 {
                        return Err(Error::not_found(format!("definition {id} not found")));
                    }
                    for sql in [
                        "DELETE FROM definition_env WHERE definition_id = ?",
                        "DELETE FROM definition_tags WHERE definition_id = ?",
                    ] {
                        sqlx::query(sql)
                            .bind(&id)
                            .execute(&mut *c)
                            .await
                            .map_err(from_sqlx)?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn list_definitions(&self, query: &DefinitionQuery) -> Result<Page<Definition>> {
        let mut count = QueryBuilder::<Sqlite>::new("SELECT count(*) FROM definitions");
        push_def_filters(&mut count, query)?;
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&self.db.read)
            .await
            .map_err(from_sqlx)?;
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT doc FROM definitions");
        push_def_filters(&mut qb, query)?;
        qb.push(format_args!(
            " ORDER BY {} LIMIT ",
            def_sort(query.sort_by, query.order)
        ))
        .push_bind(opt_limit(query.limit)?)
        .push(" OFFSET ")
        .push_bind(usize_i64("offset", query.offset)?);
        let rows = qb
            .build()
            .fetch_all(&self.db.read)
            .await
            .map_err(from_sqlx)?;
        let items = rows.iter().map(def_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page {
            total: count_u64(total),
            items,
            next_cursor: None,
        })
    }

    async fn create_run(&self, run: &Run, event: &RunEvent) -> Result<()> {
        let r = RunRow::new(run, 0)?;
        let ev = EventRow::new(event)?;
        self.db
            .writer
            .write(move |c| Box::pin(async move { insert_run(c, &r, &ev).await }))
            .await
    }

    async fn get_run(&self, run_id: &str) -> Result<Run> {
        check_text("run_id", run_id)?;
        let row = sqlx::query("SELECT doc, version FROM runs WHERE run_id = ?")
            .bind(run_id)
            .fetch_optional(&self.db.read)
            .await
            .map_err(from_sqlx)?
            .ok_or_else(|| Error::not_found(format!("run {run_id} not found")))?;
        run_from_row(&row)
    }

    async fn update_run(
        &self,
        run: &Run,
        expected: Expected,
        event: Option<&RunEvent>,
    ) -> Result<Run> {
        let version = expected.version.saturating_add(1);
        let r = RunRow::new(run, version)?;
        let ev = event.map(EventRow::new).transpose()?;
        let mut stored = run.clone();
        stored.version = version;
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    update_run_row(c, &r, expected, ev.as_ref()).await?;
                    Ok(stored)
                })
            })
            .await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<Run>> {
        let cursor = match &query.cursor {
            Some(c) => Some(Cursor::decode(c, query.sort_by, query.order)?),
            None => None,
        };
        // Bounded by `count_limit`: a count over every match reads them all.
        let mut count = QueryBuilder::<Sqlite>::new(match query.count_limit {
            Some(_) => "SELECT count(*) FROM (SELECT 1 FROM runs",
            None => "SELECT count(*) FROM runs",
        });
        push_run_filters(&mut count, query)?;
        if let Some(n) = query.count_limit {
            count
                .push(" LIMIT ")
                .push_bind(i64::try_from(n).unwrap_or(i64::MAX))
                .push(")");
        }
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT doc, version FROM runs");
        // One row more than asked tells whether another page follows.
        let fetch = match query.limit {
            0 => -1,
            n => usize_i64("limit", n.saturating_add(1))?,
        };
        if query.statuses.len() > 1 && query.limit > 0 {
            // Several statuses sorted by another column: SQLite would sort
            // every matching row. Each status's first rows come from the
            // (status, column, run_id) order of its index, then only those
            // are merged.
            let per_branch = match cursor {
                Some(_) => fetch,
                None => fetch.saturating_add(usize_i64("offset", query.offset)?),
            };
            qb.push(" WHERE run_id IN (");
            for (i, status) in query.statuses.iter().enumerate() {
                if i > 0 {
                    qb.push(" UNION ALL ");
                }
                let branch = RunQuery {
                    statuses: vec![*status],
                    ..query.clone()
                };
                qb.push("SELECT run_id FROM (SELECT run_id FROM runs");
                push_run_filters(&mut qb, &branch)?;
                if let Some(c) = &cursor {
                    push_cursor(&mut qb, &branch, c)?;
                }
                push_order(&mut qb, query);
                qb.push(" LIMIT ").push_bind(per_branch).push(")");
            }
            qb.push(")");
        } else {
            push_run_filters(&mut qb, query)?;
            if let Some(c) = &cursor {
                push_cursor(&mut qb, query, c)?;
            }
        }
        push_order(&mut qb, query);
        qb.push(" LIMIT ").push_bind(fetch);
        if cursor.is_none() {
            qb.push(" OFFSET ")
                .push_bind(usize_i64("offset", query.offset)?);
        }
        let total: Option<i64> = if query.skip_total {
            None
        } else {
            Some(
                count
                    .build_query_scalar()
                    .fetch_one(&self.db.read)
                    .await
                    .map_err(from_sqlx)?,
            )
        };
        let rows = qb
            .build()
            .fetch_all(&self.db.read)
            .await
            .map_err(from_sqlx)?;
        let mut items = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
        let more = query.limit > 0 && items.len() > query.limit;
        if more {
            items.truncate(query.limit);
        }
        let total = match total {
            Some(n) => count_u64(n),
            None => query.uncounted_total(items.len(), more),
        };
        let next_cursor = match items.last() {
            Some(last) if more => Some(
                Cursor {
                    sort_by: query.sort_by,
                    order: query.order,
                    value: query
                        .sort_by
                        .value_of(last)
                        .to_cursor_text(chrono::SecondsFormat::Nanos),
                    id: last.run_id.clone(),
                }
                .encode(),
            ),
            _ => None,
        };
        Ok(Page {
            total,
            items,
            next_cursor,
        })
    }

    async fn find_run_by_idempotence_key(&self, key: &str) -> Result<Option<Run>> {
        check_text("idempotence_key", key)?;
        if key.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query("SELECT doc, version FROM runs WHERE idempotence_key = ?")
            .bind(key)
            .fetch_optional(&self.db.read)
            .await
            .map_err(from_sqlx)?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn run_events(&self, run_id: &str) -> Result<Vec<RunEvent>> {
        check_text("run_id", run_id)?;
        let rows = sqlx::query(
            "SELECT run_id, at, from_status, to_status, attempt, reason FROM run_events \
             WHERE run_id = ? ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.db.read)
        .await
        .map_err(from_sqlx)?;
        rows.iter()
            .map(|r| {
                let from: Option<String> = r.try_get("from_status").map_err(from_sqlx)?;
                let to: String = r.try_get("to_status").map_err(from_sqlx)?;
                let attempt: i64 = r.try_get("attempt").map_err(from_sqlx)?;
                let at: i64 = r.try_get("at").map_err(from_sqlx)?;
                Ok(RunEvent {
                    run_id: r.try_get("run_id").map_err(from_sqlx)?,
                    at: from_nanos(at),
                    from: from.map(|s| s.parse::<RunStatus>()).transpose()?,
                    to: to.parse::<RunStatus>()?,
                    attempt: u32::try_from(attempt).unwrap_or_default(),
                    reason: r.try_get("reason").map_err(from_sqlx)?,
                })
            })
            .collect()
    }

    async fn list_groups(
        &self,
        name_contains: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Page<String>> {
        distinct_page(
            &self.db.read,
            "definitions",
            "group_name",
            "group_lower",
            name_contains,
            limit,
            offset,
        )
        .await
    }

    async fn list_tags(
        &self,
        name_contains: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Page<String>> {
        distinct_page(
            &self.db.read,
            "definition_tags",
            "tag",
            "tag_lower",
            name_contains,
            limit,
            offset,
        )
        .await
    }

    async fn put_cluster(&self, cluster: &Cluster) -> Result<()> {
        check_text("name", &cluster.name)?;
        let doc = to_doc("cluster", cluster)?;
        let name = cluster.name.clone();
        let updated = nanos("updated_at", cluster.updated_at)?;
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO clusters (name, doc, updated_at) VALUES (?, ?, ?) \
                         ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
                    )
                    .bind(&name)
                    .bind(&doc)
                    .bind(updated)
                    .execute(&mut *c)
                    .await
                    .map_err(from_sqlx)?;
                    Ok(())
                })
            })
            .await
    }

    async fn get_cluster(&self, name: &str) -> Result<Cluster> {
        check_text("name", name)?;
        let doc: String = sqlx::query_scalar("SELECT doc FROM clusters WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.db.read)
            .await
            .map_err(from_sqlx)?
            .ok_or_else(|| Error::not_found(format!("cluster {name} not found")))?;
        serde_json::from_str(&doc).map_err(|e| from_json("cluster", e))
    }

    async fn delete_cluster(&self, name: &str) -> Result<()> {
        check_text("name", name)?;
        let name = name.to_string();
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    let done = sqlx::query("DELETE FROM clusters WHERE name = ?")
                        .bind(&name)
                        .execute(&mut *c)
                        .await
                        .map_err(from_sqlx)?;
                    if done.rows_affected() == 0 {
                        return Err(Error::not_found(format!("cluster {name} not found")));
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn list_clusters(&self) -> Result<Vec<Cluster>> {
        let docs: Vec<String> = sqlx::query_scalar("SELECT doc FROM clusters ORDER BY name")
            .fetch_all(&self.db.read)
            .await
            .map_err(from_sqlx)?;
        docs.iter()
            .map(|d| serde_json::from_str(d).map_err(|e| from_json("cluster", e)))
            .collect()
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        check_text("name", name)?;
        check_text("holder", holder)?;
        let (name, holder) = (name.to_string(), holder.to_string());
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    // The clock is read in the writer, so the lease starts
                    // when it is taken, however long the write waited.
                    let now = now_nanos();
                    let got: Option<String> = sqlx::query_scalar(
                        "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) \
                         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                         expires_at = excluded.expires_at \
                         WHERE leases.holder = excluded.holder OR leases.expires_at <= ? \
                         RETURNING holder",
                    )
                    .bind(&name)
                    .bind(&holder)
                    .bind(crate::time::after(now, ttl))
                    .bind(now)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(from_sqlx)?;
                    Ok(got.is_some())
                })
            })
            .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        check_text("name", name)?;
        check_text("holder", holder)?;
        let (name, holder) = (name.to_string(), holder.to_string());
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM leases WHERE name = ? AND holder = ?")
                        .bind(&name)
                        .bind(&holder)
                        .execute(&mut *c)
                        .await
                        .map_err(from_sqlx)?;
                    Ok(())
                })
            })
            .await
    }

    fn transaction_domain(&self) -> Option<&str> {
        Some(&self.domain)
    }

    async fn create_run_enqueued(&self, run: &Run, event: &RunEvent, queue: &str) -> Result<()> {
        check_queue(queue)?;
        let r = RunRow::new(run, 0)?;
        let ev = EventRow::new(event)?;
        let queue = queue.to_string();
        let message = [Message::new(run.run_id.clone(), run.attempt)];
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    insert_run(c, &r, &ev).await?;
                    insert_messages(c, &queue, &message, now_nanos()).await
                })
            })
            .await?;
        self.db.wake.notify_waiters();
        Ok(())
    }
}
