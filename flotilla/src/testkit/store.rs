//! The [`Store`] conformance suite.
//!
//! [`store_suite`] checks the whole contract of [`Store`] (and the ordering
//! rules of [`crate::query`]) through the trait alone. Every check creates
//! its own definitions, runs, clusters and leases under fresh unique names
//! and filters lists by them, so it runs on an empty backend and on one
//! shared with other tests alike. Lease checks sleep a few hundred
//! milliseconds; the whole suite takes a couple of seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::join_all;

use super::{must, must_fail, token};
use crate::error::ErrorKind;
use crate::model::{
    self, Cluster, ClusterStatus, Definition, EnvVar, EvaluateOnExit, FailureCategory, Instance,
    NewDefinition, RetryAction, RetryStrategy, Run, RunEvent, RunStatus,
};
use crate::query::{
    DefinitionQuery, DefinitionSortField, RunQuery, RunSortField, SortOrder, TimeRange,
};
use crate::store::{Expected, RunUpdate, Store};

/// Filter values that must only ever match nothing, never error.
const HOSTILE: [&str; 9] = [
    "'",
    "\"",
    "%",
    "_",
    "\\",
    "*",
    "'; DROP TABLE runs; --",
    "%' OR '1'='1",
    "a%_\\'\"",
];

/// Runs every check of the [`Store`] contract against `store`.
///
/// Panics with a message naming the broken rule at the first failure.
pub async fn store_suite(store: &dyn Store) {
    definitions_crud(store).await;
    retry_strategies_round_trip(store).await;
    definition_lists(store).await;
    runs_create_and_get(store).await;
    compare_and_set(store).await;
    concurrent_compare_and_set(store).await;
    batched_compare_and_set(store).await;
    run_list_filters(store).await;
    run_list_sorting(store).await;
    run_list_paging(store).await;
    hostile_values(store).await;
    groups_and_tags(store).await;
    clusters(store).await;
    leases(store).await;
    super::templates::templates(store).await;
}

fn definition(alias: &str) -> Definition {
    let mut d = NewDefinition::new(alias, "alpine:3.20").into_definition();
    d.command = Some("echo \"hello ${NAME}\"".into());
    d.memory = Some(512);
    d.cpu = Some(250);
    d.env = vec![EnvVar::new("NAME", "world")];
    d.tags = vec!["suite".into()];
    d
}

fn run(definition_id: &str, alias: &str, cluster: &str, status: RunStatus) -> Run {
    let mut def = NewDefinition::new(alias, "alpine:3.20")
        .command("echo hi")
        .into_definition();
    def.definition_id = definition_id.to_owned();
    def.memory = Some(256);
    def.cpu = Some(250);
    let mut r = Run::queued(&def, cluster, "local", "suite");
    r.status = status;
    r.env = vec![EnvVar::new("FLOTILLA_RUN_ID", "x")];
    r
}

fn created(run: &Run) -> RunEvent {
    RunEvent {
        run_id: run.run_id.clone(),
        at: model::now(),
        from: None,
        to: run.status,
        attempt: run.attempt,
        reason: Some("created".into()),
    }
}

fn event(run: &Run, from: RunStatus, to: RunStatus, reason: &str) -> RunEvent {
    RunEvent {
        run_id: run.run_id.clone(),
        at: model::now(),
        from: Some(from),
        to,
        attempt: run.attempt,
        reason: Some(reason.to_owned()),
    }
}

fn ids(runs: &[Run]) -> Vec<String> {
    runs.iter().map(|r| r.run_id.clone()).collect()
}

fn id_set(runs: &[Run]) -> BTreeSet<String> {
    runs.iter().map(|r| r.run_id.clone()).collect()
}

async fn definitions_crud(store: &dyn Store) {
    let alias = format!("suite-def-{}", token());
    let mut def = definition(&alias);
    fill_optional(&mut def);
    must(
        store.create_definition(&def).await,
        "create_definition of a new alias",
    );
    let got = must(
        store.get_definition(&def.definition_id).await,
        "get_definition",
    );
    assert_eq!(got, def, "get_definition returns what was created");
    let got = must(
        store.get_definition_by_alias(&alias).await,
        "get_definition_by_alias",
    );
    assert_eq!(got, def, "get_definition_by_alias returns what was created");

    let mut dup = definition(&alias);
    dup.image = "other:1".into();
    must_fail(
        store.create_definition(&dup).await,
        ErrorKind::Conflict,
        "create_definition with a taken alias",
    );
    let mut same_id = definition(&format!("suite-def-{}", token()));
    same_id.definition_id = def.definition_id.clone();
    must_fail(
        store.create_definition(&same_id).await,
        ErrorKind::Conflict,
        "create_definition with a taken definition_id",
    );

    let mut updated = def.clone();
    updated.image = "busybox:1.36".into();
    updated.memory = None;
    updated.tags = vec!["a".into(), "b".into()];
    updated.alias = format!("suite-renamed-{}", token());
    updated.updated_at = model::now();
    must(store.update_definition(&updated).await, "update_definition");
    let got = must(
        store.get_definition(&def.definition_id).await,
        "get_definition after update",
    );
    assert_eq!(
        got.image, "busybox:1.36",
        "update_definition replaces fields"
    );
    assert_eq!(got.memory, None, "update_definition can clear memory");
    assert_eq!(got.tags, updated.tags, "update_definition replaces tags");
    assert_eq!(
        got.alias, alias,
        "update_definition never changes the alias"
    );
    must_fail(
        store.get_definition_by_alias(&updated.alias).await,
        ErrorKind::NotFound,
        "the alias an update tried to set does not name the definition",
    );

    let mut unknown = definition(&format!("suite-def-{}", token()));
    unknown.definition_id = model::new_id();
    must_fail(
        store.update_definition(&unknown).await,
        ErrorKind::NotFound,
        "update_definition of an unknown id",
    );
    must_fail(
        store.get_definition(&unknown.definition_id).await,
        ErrorKind::NotFound,
        "get_definition of an unknown id",
    );
    must_fail(
        store.get_definition_by_alias(&unknown.alias).await,
        ErrorKind::NotFound,
        "get_definition_by_alias of an unknown alias",
    );
    must_fail(
        store.delete_definition(&unknown.definition_id).await,
        ErrorKind::NotFound,
        "delete_definition of an unknown id",
    );

    must(
        store.delete_definition(&def.definition_id).await,
        "delete_definition",
    );
    must_fail(
        store.get_definition(&def.definition_id).await,
        ErrorKind::NotFound,
        "get_definition after delete",
    );
    must_fail(
        store.get_definition_by_alias(&alias).await,
        ErrorKind::NotFound,
        "get_definition_by_alias after delete",
    );
    must_fail(
        store.delete_definition(&def.definition_id).await,
        ErrorKind::NotFound,
        "delete_definition twice",
    );
    let again = definition(&alias);
    must(
        store.create_definition(&again).await,
        "a deleted definition's alias can be used again",
    );
    must(
        store.delete_definition(&again.definition_id).await,
        "delete_definition of the re-created alias",
    );
}

/// Retry rules using every field, with patterns a careless store would
/// mangle (spaces, tabs, colons, stars).
fn retry_rules() -> RetryStrategy {
    RetryStrategy {
        attempts: Some(4),
        evaluate_on_exit: vec![
            EvaluateOnExit::new(RetryAction::Retry).on_exit_code("3"),
            EvaluateOnExit::new(RetryAction::Exit)
                .on_reason("node_lost")
                .on_status_reason("Host EC2:\tinstance terminated*"),
            EvaluateOnExit::new(RetryAction::Exit).on_exit_code("*"),
        ],
    }
}

/// A definition's and a run's retry rules are stored whole: created, read
/// by id, alias and list, replaced, cleared; the run keeps its copy
/// through compare-and-set updates and lists.
async fn retry_strategies_round_trip(store: &dyn Store) {
    let t = token();
    let alias = format!("suite-retry-{t}");
    let mut def = definition(&alias);
    def.group_name = format!("suite-retry-group-{t}");
    def.max_attempts = Some(9);
    def.retry_strategy = Some(retry_rules());
    must(
        store.create_definition(&def).await,
        "create_definition with retry rules",
    );
    let got = must(
        store.get_definition(&def.definition_id).await,
        "get_definition",
    );
    assert_eq!(
        got.retry_strategy, def.retry_strategy,
        "get_definition keeps the retry rules"
    );
    assert_eq!(
        got, def,
        "get_definition returns the definition with retry rules"
    );
    let got = must(
        store.get_definition_by_alias(&alias).await,
        "get_definition_by_alias",
    );
    assert_eq!(
        got.retry_strategy, def.retry_strategy,
        "get_definition_by_alias keeps the retry rules"
    );
    let page = must(
        store
            .list_definitions(&DefinitionQuery {
                group_name: Some(def.group_name.clone()),
                limit: 10,
                ..Default::default()
            })
            .await,
        "list_definitions",
    );
    assert_eq!(
        page.items,
        vec![def.clone()],
        "list_definitions keeps the retry rules"
    );

    let mut replaced = def.clone();
    replaced.retry_strategy = Some(RetryStrategy {
        attempts: None,
        evaluate_on_exit: vec![EvaluateOnExit::new(RetryAction::Retry).on_reason("oom")],
    });
    replaced.updated_at = model::now();
    must(
        store.update_definition(&replaced).await,
        "update_definition replacing the rules",
    );
    let got = must(
        store.get_definition(&def.definition_id).await,
        "get_definition",
    );
    assert_eq!(
        got.retry_strategy, replaced.retry_strategy,
        "update_definition replaces the retry rules"
    );
    let mut cleared = replaced.clone();
    cleared.retry_strategy = None;
    must(
        store.update_definition(&cleared).await,
        "update_definition clearing the rules",
    );
    let got = must(
        store.get_definition(&def.definition_id).await,
        "get_definition",
    );
    assert_eq!(
        got.retry_strategy, None,
        "update_definition clears the retry rules"
    );

    let r = Run::queued(&def, format!("c-{t}"), "local", "suite");
    assert_eq!(
        r.retry_strategy, def.retry_strategy,
        "a run copies the rules"
    );
    must(
        store.create_run(&r, &created(&r)).await,
        "create_run with retry rules",
    );
    let stored = must(store.get_run(&r.run_id).await, "get_run");
    assert_eq!(
        stored.retry_strategy, def.retry_strategy,
        "get_run keeps the run's retry rules"
    );
    assert_eq!(
        stored.max_attempts, 4,
        "attempts of the rules won over max_attempts"
    );
    let mut next = stored.clone();
    next.status = RunStatus::Pending;
    let updated = must(
        store.update_run(&next, Expected::of(&stored), None).await,
        "update_run of a run with retry rules",
    );
    assert_eq!(
        updated.retry_strategy, def.retry_strategy,
        "update_run keeps the retry rules"
    );
    let page = must(
        store
            .list_runs(&RunQuery {
                clusters: vec![format!("c-{t}")],
                ..RunQuery::all(10)
            })
            .await,
        "list_runs",
    );
    assert_eq!(
        page.items
            .iter()
            .map(|r| r.retry_strategy.clone())
            .collect::<Vec<_>>(),
        vec![def.retry_strategy.clone()],
        "list_runs keeps the retry rules"
    );
}

/// Fills every optional field of `d`, with text a careless store would mangle.
fn fill_optional(d: &mut Definition) {
    d.group_name = format!("suite-group-{}", token());
    d.command = Some("echo 'quoted' \"double\" ; DROP TABLE runs; -- % _ \\".into());
    d.gpu = Some(1);
    d.env = vec![
        EnvVar::new("QUOTE", "it's \"here\""),
        EnvVar::new("EMPTY", ""),
        EnvVar::new("UNICODE", "héllo wörld ✓"),
    ];
    d.ports = vec![8080, 9090];
    d.adaptive_resource_allocation = true;
    d.max_attempts = Some(5);
    d.retry_on_app_exit = true;
}

async fn definition_lists(store: &dyn Store) {
    let t = token();
    let group = format!("suite-lists-{t}");
    // (alias suffix, image, memory, env)
    let specs: [(&str, &str, Option<i64>, Vec<EnvVar>); 4] = [
        (
            "Beta",
            "registry/zeta:1",
            Some(512),
            vec![EnvVar::new("A", "1"), EnvVar::new("B", "2")],
        ),
        (
            "alpha",
            "registry/Alpha:1",
            None,
            vec![EnvVar::new("A", "1")],
        ),
        ("delta", "other/mid:2", Some(128), vec![]),
        (
            "Charlie",
            "registry/beta:3",
            Some(2048),
            vec![EnvVar::new("A", "2")],
        ),
    ];
    let mut defs = Vec::new();
    for (suffix, image, memory, env) in specs {
        let mut d = definition(&format!("suite-{t}-{suffix}"));
        d.image = format!("{image}-{t}");
        d.memory = memory;
        d.env = env;
        d.group_name = group.clone();
        must(
            store.create_definition(&d).await,
            "create_definition for list checks",
        );
        defs.push(d);
    }
    let base = DefinitionQuery {
        group_name: Some(group.clone()),
        limit: 100,
        ..Default::default()
    };
    let list = |q: DefinitionQuery| async move {
        must(store.list_definitions(&q).await, "list_definitions")
    };
    let aliases = |p: &crate::query::Page<Definition>| -> BTreeSet<String> {
        p.items.iter().map(|d| d.alias.clone()).collect()
    };
    let expect = |idx: &[usize]| -> BTreeSet<String> {
        idx.iter().map(|&i| defs[i].alias.clone()).collect()
    };

    let p = list(base.clone()).await;
    assert_eq!(p.total, 4, "list_definitions by group_name counts all four");
    assert_eq!(aliases(&p), expect(&[0, 1, 2, 3]), "group_name filter");

    let p = list(DefinitionQuery {
        group_name: Some(group[..group.len() - 1].to_owned()),
        ..base.clone()
    })
    .await;
    assert_eq!(p.total, 0, "group_name is an exact match, not a prefix");

    let p = list(DefinitionQuery {
        group_name: None,
        alias: Some(format!("SUITE-{}", t.to_uppercase())),
        ..base.clone()
    })
    .await;
    assert_eq!(
        aliases(&p),
        expect(&[0, 1, 2, 3]),
        "alias filter is a case-insensitive substring"
    );
    assert_eq!(p.total, 4, "total of the alias filter");
    let p = list(DefinitionQuery {
        alias: Some("lph".into()),
        ..base.clone()
    })
    .await;
    assert_eq!(aliases(&p), expect(&[1]), "alias substring in the middle");

    let p = list(DefinitionQuery {
        image: Some("REGISTRY/".into()),
        ..base.clone()
    })
    .await;
    assert_eq!(
        aliases(&p),
        expect(&[0, 1, 3]),
        "image filter is a case-insensitive substring"
    );

    let env_cases: [(Vec<EnvVar>, &[usize], &str); 4] = [
        (vec![EnvVar::new("A", "1")], &[0, 1], "env A=1"),
        (
            vec![EnvVar::new("A", "1"), EnvVar::new("B", "2")],
            &[0],
            "env A=1 and B=2 (all pairs must match)",
        ),
        (vec![EnvVar::new("A", "3")], &[], "env A=3 matches nothing"),
        (
            vec![EnvVar::new("B", "1")],
            &[],
            "env B=1: name and value must match in one variable",
        ),
    ];
    for (env, want, what) in env_cases {
        let p = list(DefinitionQuery {
            env,
            ..base.clone()
        })
        .await;
        assert_eq!(aliases(&p), expect(want), "{what}");
        assert_eq!(p.total, want.len() as u64, "{what}: total");
    }

    // Sorting: field then id, both in the same direction; None after values
    // ascending, before them descending; text byte-wise.
    for field in DefinitionSortField::ALL {
        for order in [SortOrder::Asc, SortOrder::Desc] {
            let mut want: Vec<&Definition> = defs.iter().collect();
            want.sort_by(|a, b| {
                let key = |d: &Definition| -> Option<SortValue> {
                    match field {
                        DefinitionSortField::Alias => Some(SortValue::Text(d.alias.clone())),
                        DefinitionSortField::Image => Some(SortValue::Text(d.image.clone())),
                        DefinitionSortField::GroupName => {
                            Some(SortValue::Text(d.group_name.clone()))
                        }
                        DefinitionSortField::Memory => d.memory.map(SortValue::Int),
                    }
                };
                reference_order(
                    (key(a), &a.definition_id),
                    (key(b), &b.definition_id),
                    order,
                )
            });
            let want: Vec<String> = want.iter().map(|d| d.alias.clone()).collect();
            let p = list(DefinitionQuery {
                sort_by: field,
                order,
                ..base.clone()
            })
            .await;
            let got: Vec<String> = p.items.iter().map(|d| d.alias.clone()).collect();
            assert_eq!(
                got,
                want,
                "list_definitions sorted by {} {}",
                field.as_str(),
                order.as_str()
            );
        }
    }

    let sorted = DefinitionQuery {
        sort_by: DefinitionSortField::Alias,
        order: SortOrder::Asc,
        ..base.clone()
    };
    let all = list(sorted.clone()).await;
    let mut paged = Vec::new();
    for offset in [0, 3] {
        let p = list(DefinitionQuery {
            limit: 3,
            offset,
            ..sorted.clone()
        })
        .await;
        assert_eq!(p.total, 4, "total counts all matches, not the page");
        paged.extend(p.items);
    }
    assert_eq!(
        paged, all.items,
        "limit/offset pages concatenate to the list"
    );
    let p = list(DefinitionQuery {
        limit: 3,
        offset: 10,
        ..sorted.clone()
    })
    .await;
    assert!(p.items.is_empty(), "an offset past the end gives no items");
    assert_eq!(p.total, 4, "an offset past the end still counts the total");

    for d in &defs {
        must(
            store.delete_definition(&d.definition_id).await,
            "delete_definition",
        );
    }
}

/// A sort value of the reference ordering.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SortValue {
    Text(String),
    Time(DateTime<Utc>),
    Int(i64),
}

/// The ordering rules of [`crate::query`], written out independently.
fn reference_order(
    a: (Option<SortValue>, &String),
    b: (Option<SortValue>, &String),
    order: SortOrder,
) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let by_value = match (&a.0, &b.0) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(SortValue::Text(x)), Some(SortValue::Text(y))) => x.as_bytes().cmp(y.as_bytes()),
        (Some(x), Some(y)) => x.cmp(y),
    };
    let asc = by_value.then_with(|| a.1.as_bytes().cmp(b.1.as_bytes()));
    match order {
        SortOrder::Asc => asc,
        SortOrder::Desc => asc.reverse(),
    }
}

fn run_sort_key(r: &Run, field: RunSortField) -> Option<SortValue> {
    match field {
        RunSortField::RunId => Some(SortValue::Text(r.run_id.clone())),
        RunSortField::ClusterName => Some(SortValue::Text(r.cluster.clone())),
        RunSortField::Status => Some(SortValue::Text(r.status.as_str().to_owned())),
        RunSortField::QueuedAt => r.queued_at.map(SortValue::Time),
        RunSortField::StartedAt => r.started_at.map(SortValue::Time),
        RunSortField::FinishedAt => r.finished_at.map(SortValue::Time),
        RunSortField::Alias => Some(SortValue::Text(r.alias.clone())),
    }
}

fn reference_sorted(runs: &[Run], field: RunSortField, order: SortOrder) -> Vec<String> {
    let mut v: Vec<&Run> = runs.iter().collect();
    v.sort_by(|a, b| {
        reference_order(
            (run_sort_key(a, field), &a.run_id),
            (run_sort_key(b, field), &b.run_id),
            order,
        )
    });
    v.iter().map(|r| r.run_id.clone()).collect()
}

async fn runs_create_and_get(store: &dyn Store) {
    let t = token();
    let key = format!("suite-key-{t}'%_");
    let mut r = run(
        &model::new_id(),
        &format!("suite-{t}"),
        &format!("c-{t}"),
        RunStatus::Queued,
    );
    r.idempotence_key = Some(key.clone());
    r.labels = BTreeMap::from([("team".into(), "data's".into()), ("k".into(), "v".into())]);
    r.instance = Some(Instance {
        instance_id: "i-123".into(),
        dns_name: "host.local".into(),
    });
    r.failure = Some(FailureCategory::NodeLost);
    r.description = Some("a \"described\" run; --".into());
    r.exit_reason = Some("it's fine".into());
    r.engine_ref = Some("arn:aws:ecs:us-east-1:1:task/x".into());
    r.active_deadline_seconds = Some(3600);
    r.run_tags.owner_email = Some("o@example.com".into());
    r.run_tags.team_name = Some("team".into());
    r.attempt = 2;
    r.version = 7;
    let ev = created(&r);
    must(store.create_run(&r, &ev).await, "create_run");
    let got = must(store.get_run(&r.run_id).await, "get_run");
    let mut want = r.clone();
    want.version = 0;
    assert_eq!(got, want, "get_run returns the created run with version 0");
    assert_eq!(
        must(store.run_events(&r.run_id).await, "run_events"),
        vec![ev.clone()],
        "create_run appends the creation event"
    );

    must_fail(
        store.create_run(&r, &ev).await,
        ErrorKind::Conflict,
        "create_run with a taken run_id",
    );
    let mut other = run(
        &model::new_id(),
        &format!("suite-{t}"),
        &format!("c-{t}"),
        RunStatus::Queued,
    );
    other.idempotence_key = Some(key.clone());
    must_fail(
        store.create_run(&other, &created(&other)).await,
        ErrorKind::Conflict,
        "create_run with a taken idempotence_key",
    );
    must_fail(
        store.get_run(&other.run_id).await,
        ErrorKind::NotFound,
        "a run refused for its idempotence key is not stored",
    );
    let found = must(
        store.find_run_by_idempotence_key(&key).await,
        "find_run_by_idempotence_key",
    );
    assert_eq!(
        found,
        Some(want),
        "find_run_by_idempotence_key finds the run"
    );
    assert_eq!(
        must(
            store
                .find_run_by_idempotence_key(&format!("suite-key-{}", token()))
                .await,
            "find_run_by_idempotence_key of an unknown key"
        ),
        None,
        "an unknown idempotence key finds nothing"
    );

    // Runs without a key never conflict with each other.
    for _ in 0..2 {
        let r = run(
            &model::new_id(),
            &format!("suite-{t}"),
            &format!("c-{t}"),
            RunStatus::Queued,
        );
        must(
            store.create_run(&r, &created(&r)).await,
            "create_run without idempotence key",
        );
    }
    must_fail(
        store.get_run(&model::new_id()).await,
        ErrorKind::NotFound,
        "get_run of an unknown id",
    );
}

async fn compare_and_set(store: &dyn Store) {
    let t = token();
    let alias = format!("suite-cas-{t}");
    let r = run(
        &model::new_id(),
        &alias,
        &format!("c-{t}"),
        RunStatus::Queued,
    );
    let ev0 = created(&r);
    must(store.create_run(&r, &ev0).await, "create_run");
    let stored = must(store.get_run(&r.run_id).await, "get_run");

    let mut next = stored.clone();
    next.status = RunStatus::Pending;
    next.engine_ref = Some("pid:42".into());
    let ev1 = event(&r, RunStatus::Queued, RunStatus::Pending, "submitted");
    let updated = must(
        store
            .update_run(&next, Expected::of(&stored), Some(&ev1))
            .await,
        "update_run with the current status and version",
    );
    assert_eq!(updated.version, 1, "update_run stores expected.version + 1");
    assert_eq!(
        updated.status,
        RunStatus::Pending,
        "update_run stores the new status"
    );
    let mut want = next.clone();
    want.version = 1;
    assert_eq!(updated, want, "update_run returns the stored run");
    assert_eq!(
        must(store.get_run(&r.run_id).await, "get_run after update"),
        want,
        "get_run sees the update"
    );
    assert_eq!(
        must(store.run_events(&r.run_id).await, "run_events"),
        vec![ev0.clone(), ev1.clone()],
        "update_run appends its event"
    );

    // Stale status.
    let mut stale = updated.clone();
    stale.status = RunStatus::Stopped;
    stale.exit_code = Some(1);
    must_fail(
        store
            .update_run(
                &stale,
                Expected {
                    status: RunStatus::Queued,
                    version: 1,
                },
                Some(&event(&r, RunStatus::Queued, RunStatus::Stopped, "stale")),
            )
            .await,
        ErrorKind::Conflict,
        "update_run with a stale status",
    );
    // Stale version.
    must_fail(
        store
            .update_run(
                &stale,
                Expected {
                    status: RunStatus::Pending,
                    version: 0,
                },
                Some(&event(&r, RunStatus::Pending, RunStatus::Stopped, "stale")),
            )
            .await,
        ErrorKind::Conflict,
        "update_run with a stale version",
    );
    assert_eq!(
        must(store.get_run(&r.run_id).await, "get_run after conflicts"),
        want,
        "a refused update_run changes nothing"
    );
    assert_eq!(
        must(
            store.run_events(&r.run_id).await,
            "run_events after conflicts"
        ),
        vec![ev0.clone(), ev1.clone()],
        "a refused update_run appends no event"
    );

    // Without an event.
    let mut quiet = want.clone();
    quiet.instance = Some(Instance {
        instance_id: "i-1".into(),
        dns_name: "n1".into(),
    });
    let v2 = must(
        store.update_run(&quiet, Expected::of(&want), None).await,
        "update_run without an event",
    );
    assert_eq!(v2.version, 2, "every update bumps the version");
    assert_eq!(
        must(store.run_events(&r.run_id).await, "run_events").len(),
        2,
        "update_run without an event appends none"
    );

    // More transitions: events keep their order.
    let mut running = v2.clone();
    running.status = RunStatus::Running;
    running.started_at = Some(model::now());
    let ev2 = event(&r, RunStatus::Pending, RunStatus::Running, "started");
    let v3 = must(
        store
            .update_run(&running, Expected::of(&v2), Some(&ev2))
            .await,
        "update_run to RUNNING",
    );
    let mut stopped = v3.clone();
    stopped.status = RunStatus::Stopped;
    stopped.exit_code = Some(0);
    stopped.finished_at = Some(model::now());
    let ev3 = event(&r, RunStatus::Running, RunStatus::Stopped, "exited 0");
    let v4 = must(
        store
            .update_run(&stopped, Expected::of(&v3), Some(&ev3))
            .await,
        "update_run to STOPPED",
    );
    assert_eq!(v4.version, 4, "versions count the updates");
    assert_eq!(
        must(store.run_events(&r.run_id).await, "run_events"),
        vec![ev0, ev1, ev2, ev3],
        "events come back in the order they were appended"
    );

    // The status filter follows the updates.
    let q = |statuses: &[RunStatus]| RunQuery {
        aliases: vec![alias.clone()],
        ..RunQuery::all(10).with_statuses(statuses)
    };
    let p = must(
        store
            .list_runs(&q(&[
                RunStatus::Queued,
                RunStatus::Pending,
                RunStatus::Running,
            ]))
            .await,
        "list_runs",
    );
    assert_eq!(p.total, 0, "an updated run leaves its old statuses' lists");
    let p = must(
        store.list_runs(&q(&[RunStatus::Stopped])).await,
        "list_runs",
    );
    assert_eq!(
        ids(&p.items),
        vec![r.run_id.clone()],
        "an updated run is listed under its new status"
    );

    let mut unknown = run(&model::new_id(), &alias, "c", RunStatus::Queued);
    unknown.run_id = model::new_id();
    must_fail(
        store
            .update_run(&unknown, Expected::of(&unknown), None)
            .await,
        ErrorKind::NotFound,
        "update_run of an unknown run",
    );
}

async fn concurrent_compare_and_set(store: &dyn Store) {
    let t = token();
    let r = run(
        &model::new_id(),
        &format!("suite-race-{t}"),
        &format!("c-{t}"),
        RunStatus::Running,
    );
    must(store.create_run(&r, &created(&r)).await, "create_run");
    let stored = must(store.get_run(&r.run_id).await, "get_run");
    let stored = &stored;
    let attempts = (0..8).map(|i| {
        let mut next = stored.clone();
        next.status = RunStatus::Stopped;
        next.exit_code = Some(i);
        let ev = event(
            &r,
            RunStatus::Running,
            RunStatus::Stopped,
            &format!("exit {i}"),
        );
        async move {
            store
                .update_run(&next, Expected::of(stored), Some(&ev))
                .await
        }
    });
    let results = join_all(attempts).await;
    let winners: Vec<&Run> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of 8 concurrent compare-and-sets on one version wins"
    );
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            e.kind(),
            ErrorKind::Conflict,
            "losers of a race get Conflict: {e}"
        );
    }
    let now = must(store.get_run(&r.run_id).await, "get_run after race");
    assert_eq!(&now, winners[0], "the stored run is the winner's");
    assert_eq!(
        must(store.run_events(&r.run_id).await, "run_events").len(),
        2,
        "only the winner appended an event"
    );
}

/// `get_runs` and `update_runs`: position by position, every item its own
/// compare-and-set — a conflicting, unknown or repeated item changes
/// nothing of itself and does not stop the others.
async fn batched_compare_and_set(store: &dyn Store) {
    let t = token();
    let alias = format!("suite-batch-{t}");
    let cluster = format!("c-{t}");
    let mut runs = Vec::new();
    for _ in 0..4 {
        let r = run(&model::new_id(), &alias, &cluster, RunStatus::Queued);
        must(store.create_run(&r, &created(&r)).await, "create_run");
        runs.push(must(store.get_run(&r.run_id).await, "get_run"));
    }
    let unknown = model::new_id();
    let got = must(
        store
            .get_runs(&[
                runs[2].run_id.clone(),
                unknown.clone(),
                runs[0].run_id.clone(),
            ])
            .await,
        "get_runs",
    );
    assert_eq!(
        got,
        vec![Some(runs[2].clone()), None, Some(runs[0].clone())],
        "get_runs answers position by position, None for an unknown id"
    );
    assert!(
        must(store.get_runs(&[]).await, "get_runs of nothing").is_empty(),
        "get_runs of no ids is empty"
    );
    assert!(
        must(store.update_runs(&[]).await, "update_runs of nothing").is_empty(),
        "update_runs of no items is empty"
    );

    let pending = |r: &Run, n: usize| {
        let mut next = r.clone();
        next.status = RunStatus::Pending;
        next.engine_ref = Some(format!("pid:{n}"));
        let ev = event(
            r,
            RunStatus::Queued,
            RunStatus::Pending,
            &format!("submitted {n}"),
        );
        (next, ev)
    };
    let (a, ev_a) = pending(&runs[0], 0);
    let (b, ev_b) = pending(&runs[1], 1);
    let (c, ev_c) = pending(&runs[2], 2);
    let (d, _) = pending(&runs[3], 3);
    let mut ghost = run(&model::new_id(), &alias, &cluster, RunStatus::Pending);
    ghost.run_id = unknown.clone();
    let mut again = a.clone();
    again.engine_ref = Some("pid:again".into());
    let items = vec![
        RunUpdate::new(a.clone(), Expected::of(&runs[0]), Some(ev_a.clone())),
        // A stale version: this item conflicts, the others apply.
        RunUpdate::new(
            b.clone(),
            Expected {
                status: RunStatus::Queued,
                version: 7,
            },
            Some(ev_b.clone()),
        ),
        RunUpdate::new(c.clone(), Expected::of(&runs[2]), Some(ev_c.clone())),
        RunUpdate::new(ghost.clone(), Expected::of(&ghost), None),
        RunUpdate::new(again, Expected::of(&runs[0]), None),
        // No event.
        RunUpdate::new(d.clone(), Expected::of(&runs[3]), None),
    ];
    let results = must(store.update_runs(&items).await, "update_runs");
    assert_eq!(results.len(), items.len(), "update_runs answers every item");
    let stored = |r: &Run, v: u64| {
        let mut w = r.clone();
        w.version = v;
        w
    };
    assert_eq!(
        results[0].as_ref().ok(),
        Some(&stored(&a, 1)),
        "an applicable item is stored and returned with version + 1"
    );
    match &results[1] {
        Err(e) if e.kind() == ErrorKind::Conflict => {}
        other => panic!("a batch item with a stale version gets Conflict, got {other:?}"),
    }
    assert_eq!(
        results[2].as_ref().ok(),
        Some(&stored(&c, 1)),
        "items after a conflicting one still apply"
    );
    match &results[3] {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        other => panic!("a batch item of an unknown run gets NotFound, got {other:?}"),
    }
    match &results[4] {
        Err(e) if e.kind() == ErrorKind::InvalidInput => {}
        other => panic!(
            "a run given twice in one batch: the later item gets InvalidInput, got {other:?}"
        ),
    }
    assert_eq!(
        results[5].as_ref().ok(),
        Some(&stored(&d, 1)),
        "an item without an event applies"
    );
    let now = must(
        store
            .get_runs(&runs.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>())
            .await,
        "get_runs after the batch",
    );
    assert_eq!(
        now,
        vec![
            Some(stored(&a, 1)),
            Some(runs[1].clone()),
            Some(stored(&c, 1)),
            Some(stored(&d, 1))
        ],
        "the batch stored the applicable items, and nothing of the conflicting one"
    );
    let events = |i: usize| {
        let id = runs[i].run_id.clone();
        async move { must(store.run_events(&id).await, "run_events") }
    };
    let ev0 = events(0).await;
    assert_eq!(ev0.len(), 2, "a batch item appends one event");
    assert_eq!(ev0[1], ev_a, "a batch item appends its own event");
    assert_eq!(
        events(1).await.len(),
        1,
        "a conflicting batch item appends no event"
    );
    assert_eq!(
        events(2).await.last(),
        Some(&ev_c),
        "every applied item appends its own event"
    );
    assert_eq!(
        events(3).await.len(),
        1,
        "an item without an event appends none"
    );
    assert!(
        must(
            store.run_events(&unknown).await,
            "run_events of the unknown run"
        )
        .is_empty(),
        "an unknown run's item creates nothing"
    );

    // Two batches racing on the same version of the same runs: for each
    // run exactly one wins, whatever the other items of its batch do.
    let base = [stored(&a, 1), stored(&c, 1)];
    let batch = |exit: i64| {
        base.iter()
            .map(|r| {
                let mut next = r.clone();
                next.status = RunStatus::Stopped;
                next.exit_code = Some(exit);
                next.finished_at = Some(model::now());
                let ev = event(
                    r,
                    RunStatus::Pending,
                    RunStatus::Stopped,
                    &format!("exit {exit}"),
                );
                RunUpdate::new(next, Expected::of(r), Some(ev))
            })
            .collect::<Vec<_>>()
    };
    let (one, two) = (batch(1), batch(2));
    let (x, y) = futures::join!(store.update_runs(&one), store.update_runs(&two));
    let (x, y) = (must(x, "racing batch 1"), must(y, "racing batch 2"));
    for i in 0..2 {
        let wins = [&x[i], &y[i]].iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            wins, 1,
            "exactly one of two racing batches applies each run"
        );
        for r in [&x[i], &y[i]] {
            if let Err(e) = r {
                assert_eq!(
                    e.kind(),
                    ErrorKind::Conflict,
                    "the loser of a race gets Conflict: {e}"
                );
            }
        }
        let id = &base[i].run_id;
        let now = must(store.get_run(id).await, "get_run after the race");
        let winner = [&x[i], &y[i]]
            .into_iter()
            .find_map(|r| r.as_ref().ok())
            .cloned();
        assert_eq!(Some(now), winner, "the stored run is the winner's");
        assert_eq!(
            must(store.run_events(id).await, "run_events").len(),
            3,
            "only the winner of a race appended an event"
        );
    }
}

/// Six runs with distinct, tie-prone and missing values, under fresh names.
struct Fixture {
    runs: Vec<Run>,
    aliases: [String; 2],
    clusters: [String; 2],
    owners: [String; 2],
    engines: [String; 2],
    definitions: [String; 2],
    times: Vec<DateTime<Utc>>,
}

impl Fixture {
    fn base(&self) -> RunQuery {
        RunQuery {
            aliases: self.aliases.to_vec(),
            ..RunQuery::all(100)
        }
    }

    fn subset(&self, idx: &[usize]) -> BTreeSet<String> {
        idx.iter().map(|&i| self.runs[i].run_id.clone()).collect()
    }
}

async fn fixture(store: &dyn Store) -> Fixture {
    let t = token();
    // Upper-case letters sort before lower-case ones byte-wise; a store that
    // collates by locale puts them the other way round.
    let aliases = [format!("suite-{t}-Zulu"), format!("suite-{t}-alpha")];
    let clusters = [format!("suite-{t}-C"), format!("suite-{t}-b")];
    let owners = [format!("owner-{t}-1"), format!("owner-{t}-2")];
    let engines = [format!("engine-{t}-1"), format!("engine-{t}-2")];
    let definitions = [model::new_id(), model::new_id()];
    // Whole seconds plus a microsecond part, far from "now" so no other
    // test's runs fall in the ranges used together with the alias filter.
    let base = Utc
        .with_ymd_and_hms(2001, 2, 3, 4, 5, 6)
        .single()
        .unwrap_or_default();
    let times: Vec<DateTime<Utc>> = (0..8)
        .map(|i| base + chrono::Duration::minutes(i) + chrono::Duration::microseconds(123_456))
        .collect();
    let tm = |i: usize| Some(times[i]);
    // (alias, cluster, owner, engine, definition, status, queued, started, finished, env)
    #[allow(clippy::type_complexity)]
    let specs: [(
        usize,
        usize,
        usize,
        usize,
        usize,
        RunStatus,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Vec<EnvVar>,
    ); 6] = [
        (
            0,
            0,
            0,
            0,
            0,
            RunStatus::Queued,
            tm(0),
            None,
            None,
            vec![EnvVar::new("K", "v1")],
        ),
        (0, 1, 1, 0, 0, RunStatus::Pending, tm(1), None, None, vec![]),
        (
            1,
            0,
            0,
            1,
            0,
            RunStatus::Running,
            tm(2),
            tm(3),
            None,
            vec![EnvVar::new("K", "v2")],
        ),
        (
            1,
            1,
            1,
            1,
            1,
            RunStatus::Stopped,
            tm(3),
            tm(4),
            tm(5),
            vec![EnvVar::new("K", "v1"), EnvVar::new("L", "v2")],
        ),
        (
            0,
            0,
            1,
            0,
            1,
            RunStatus::NeedsRetry,
            tm(4),
            tm(5),
            None,
            vec![EnvVar::new("L", "v2")],
        ),
        (
            1,
            1,
            0,
            0,
            1,
            RunStatus::Stopped,
            tm(4),
            tm(6),
            tm(7),
            vec![],
        ),
    ];
    let mut runs = Vec::new();
    for (a, c, o, e, d, status, queued, started, finished, env) in specs {
        let mut r = run(&definitions[d], &aliases[a], &clusters[c], status);
        r.owner = owners[o].clone();
        r.run_tags.owner_id = owners[o].clone();
        r.engine = engines[e].clone();
        r.queued_at = queued;
        r.started_at = started;
        r.finished_at = finished;
        r.env = env;
        must(
            store.create_run(&r, &created(&r)).await,
            "create_run for list checks",
        );
        runs.push(r);
    }
    Fixture {
        runs,
        aliases,
        clusters,
        owners,
        engines,
        definitions,
        times,
    }
}

async fn run_list_filters(store: &dyn Store) {
    let f = fixture(store).await;
    let tm = |i: usize| Some(f.times[i]);
    let range =
        |since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>| TimeRange { since, until };
    let base = f.base();
    let cases: Vec<(RunQuery, &[usize], &str)> = vec![
        (base.clone(), &[0, 1, 2, 3, 4, 5], "aliases (both)"),
        (
            RunQuery {
                aliases: vec![f.aliases[0].clone()],
                ..base.clone()
            },
            &[0, 1, 4],
            "aliases (one)",
        ),
        (
            base.clone()
                .with_statuses(&[RunStatus::Queued, RunStatus::Running]),
            &[0, 2],
            "statuses QUEUED, RUNNING",
        ),
        (
            base.clone().with_statuses(&[RunStatus::Stopped]),
            &[3, 5],
            "statuses STOPPED",
        ),
        (
            base.clone().with_statuses(&[
                RunStatus::Pending,
                RunStatus::Running,
                RunStatus::Pending,
            ]),
            &[1, 2],
            "statuses with a duplicate",
        ),
        (
            base.clone().with_statuses(&[RunStatus::NeedsRetry]),
            &[4],
            "statuses NEEDS_RETRY",
        ),
        (
            RunQuery {
                definition_id: Some(f.definitions[1].clone()),
                ..base.clone()
            },
            &[3, 4, 5],
            "definition_id",
        ),
        (
            RunQuery {
                clusters: vec![f.clusters[0].clone()],
                ..base.clone()
            },
            &[0, 2, 4],
            "clusters (one)",
        ),
        (
            RunQuery {
                clusters: f.clusters.to_vec(),
                ..base.clone()
            },
            &[0, 1, 2, 3, 4, 5],
            "clusters (both)",
        ),
        (
            RunQuery {
                owners: vec![f.owners[0].clone()],
                ..base.clone()
            },
            &[0, 2, 5],
            "owners",
        ),
        (
            RunQuery {
                engine: Some(f.engines[1].clone()),
                ..base.clone()
            },
            &[2, 3],
            "engine",
        ),
        (
            RunQuery {
                env: vec![EnvVar::new("K", "v1")],
                ..base.clone()
            },
            &[0, 3],
            "env K=v1",
        ),
        (
            RunQuery {
                env: vec![EnvVar::new("K", "v1"), EnvVar::new("L", "v2")],
                ..base.clone()
            },
            &[3],
            "env K=v1 and L=v2 (all pairs must match)",
        ),
        (
            RunQuery {
                env: vec![EnvVar::new("L", "v1")],
                ..base.clone()
            },
            &[],
            "env L=v1: name and value must match in one variable",
        ),
        (
            RunQuery {
                queued: range(tm(2), tm(4)),
                ..base.clone()
            },
            &[2, 3, 4, 5],
            "queued range, both ends inclusive",
        ),
        (
            RunQuery {
                queued: range(None, tm(1)),
                ..base.clone()
            },
            &[0, 1],
            "queued range open at the start",
        ),
        (
            RunQuery {
                started: range(tm(4), None),
                ..base.clone()
            },
            &[3, 4, 5],
            "started range open at the end excludes runs that never started",
        ),
        (
            RunQuery {
                finished: range(None, tm(6)),
                ..base.clone()
            },
            &[3],
            "finished range excludes unfinished runs",
        ),
        (
            RunQuery {
                clusters: vec![f.clusters[0].clone()],
                owners: vec![f.owners[0].clone()],
                statuses: vec![RunStatus::Queued, RunStatus::Running],
                engine: Some(f.engines[0].clone()),
                ..base.clone()
            },
            &[0],
            "several filters together",
        ),
        (
            RunQuery {
                statuses: vec![RunStatus::Stopped],
                started: range(tm(5), tm(6)),
                ..base.clone()
            },
            &[5],
            "status and time range together",
        ),
    ];
    for (q, want, what) in cases {
        let p = must(store.list_runs(&q).await, what);
        assert_eq!(id_set(&p.items), f.subset(want), "list_runs filter: {what}");
        assert_eq!(p.total, want.len() as u64, "list_runs total: {what}");
    }
}

async fn run_list_sorting(store: &dyn Store) {
    let f = fixture(store).await;
    for field in RunSortField::ALL {
        for order in [SortOrder::Asc, SortOrder::Desc] {
            let want = reference_sorted(&f.runs, field, order);
            let q = RunQuery {
                sort_by: field,
                order,
                ..f.base()
            };
            let p = must(store.list_runs(&q).await, "list_runs sorted");
            assert_eq!(
                ids(&p.items),
                want,
                "list_runs sorted by {} {}: field then run_id in the same direction, \
                 missing values last ascending and first descending, text byte-wise",
                field.as_str(),
                order.as_str()
            );
        }
    }
}

async fn run_list_paging(store: &dyn Store) {
    let f = fixture(store).await;
    let n = f.runs.len();
    let all = reference_sorted(&f.runs, RunSortField::RunId, SortOrder::Asc);
    let mut paged = Vec::new();
    for offset in [0, 4] {
        let q = RunQuery {
            limit: 4,
            offset,
            ..f.base()
        };
        let p = must(store.list_runs(&q).await, "list_runs with limit/offset");
        assert_eq!(p.total, n as u64, "total counts all matches, not the page");
        assert!(p.items.len() <= 4, "list_runs respects limit");
        paged.extend(ids(&p.items));
    }
    assert_eq!(
        paged, all,
        "limit/offset pages concatenate to the whole list"
    );
    let p = must(
        store
            .list_runs(&RunQuery {
                limit: 4,
                offset: 100,
                ..f.base()
            })
            .await,
        "list_runs past the end",
    );
    assert!(p.items.is_empty(), "an offset past the end gives no items");
    assert_eq!(
        p.total, n as u64,
        "an offset past the end still counts the total"
    );

    // Keyset cursors visit every row exactly once, in order, for every sort.
    for field in RunSortField::ALL {
        for order in [SortOrder::Asc, SortOrder::Desc] {
            let want = reference_sorted(&f.runs, field, order);
            for limit in [1, 4] {
                let mut q = RunQuery {
                    sort_by: field,
                    order,
                    limit,
                    ..f.base()
                };
                let mut seen = Vec::new();
                for _ in 0..=n + 1 {
                    let p = must(store.list_runs(&q).await, "list_runs with a cursor");
                    assert_eq!(p.total, n as u64, "total is the same on every cursor page");
                    let full = p.items.len() == limit;
                    seen.extend(ids(&p.items));
                    match p.next_cursor {
                        Some(c) => q.cursor = Some(c),
                        None => {
                            assert!(
                                !full || seen.len() == n,
                                "a full page has a next_cursor ({} {}, limit {limit})",
                                field.as_str(),
                                order.as_str()
                            );
                            break;
                        }
                    }
                    if p.items.is_empty() {
                        break;
                    }
                }
                assert_eq!(
                    seen,
                    want,
                    "cursor paging by {} {} with limit {limit} visits every row once, in order",
                    field.as_str(),
                    order.as_str()
                );
            }
        }
    }

    // Uncounted pages (workers walking a list): the same rows in the same
    // order, each page's total between its own rows (plus one when more
    // follow) and the count.
    let mut q = RunQuery {
        limit: 3,
        ..f.base()
    }
    .without_total();
    let mut seen = Vec::new();
    for _ in 0..=n {
        let p = must(store.list_runs(&q).await, "list_runs without a total");
        seen.extend(ids(&p.items));
        let more = p.next_cursor.is_some();
        assert!(
            p.total >= (p.items.len() + usize::from(more)) as u64 && p.total <= n as u64,
            "an uncounted total is at least the page's rows (plus one when more follow) \
             and at most all matches: {} for a page of {} of {n}",
            p.total,
            p.items.len()
        );
        match p.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        seen, all,
        "uncounted cursor pages visit every row once, in order"
    );

    // Bounded counts (the history API): below the limit the total is the
    // count; at or above it, anything from the limit to the count; the
    // pages are the same either way.
    for bound in [1, 2, n as u64 - 1, n as u64, n as u64 + 5] {
        let q = RunQuery {
            limit: 2,
            ..f.base()
        }
        .counting_up_to(bound);
        let p = must(store.list_runs(&q).await, "list_runs with a count limit");
        assert_eq!(
            ids(&p.items),
            all[..2.min(n)],
            "a bounded count changes no page"
        );
        if bound > n as u64 {
            assert_eq!(p.total, n as u64, "fewer matches than the limit: the count");
        } else {
            assert!(
                p.total >= bound && p.total <= n as u64,
                "a bounded total is between the limit ({bound}) and the count ({n}): {}",
                p.total
            );
        }
        assert_eq!(q.total_at_limit(p.total), bound <= n as u64);
    }

    // Several statuses at once (the UI's active runs): offset and cursor
    // pages of every sort visit exactly the matching rows, in order, also
    // deep into the list (more rows per status than a page).
    let active = [RunStatus::Queued, RunStatus::Running];
    // The id's random tail (a v7 id starts with the time).
    let id = model::new_id();
    let alias = format!("two-status-{}", &id[id.len() - 12..]);
    let mut matching = Vec::new();
    for i in 0..10i64 {
        let status = active[(i % 2) as usize];
        let mut r = run(&f.definitions[0], &alias, &f.clusters[0], status);
        r.queued_at = Some(model::now() - chrono::TimeDelta::seconds(100 - i * 7 % 10));
        if status == RunStatus::Running {
            r.started_at = Some(model::now() - chrono::TimeDelta::seconds(50 - i * 3 % 10));
        }
        must(
            store.create_run(&r, &created(&r)).await,
            "create_run for two-status paging",
        );
        matching.push(r);
    }
    for field in RunSortField::ALL {
        for order in [SortOrder::Asc, SortOrder::Desc] {
            let want = reference_sorted(&matching, field, order);
            let base = RunQuery {
                sort_by: field,
                order,
                limit: 1,
                aliases: vec![alias.clone()],
                ..RunQuery::all(1).with_statuses(&active)
            };
            let mut by_offset = Vec::new();
            for offset in 0..=matching.len() {
                let p = must(
                    store
                        .list_runs(&RunQuery {
                            offset,
                            ..base.clone()
                        })
                        .await,
                    "list_runs of two statuses by offset",
                );
                assert_eq!(p.total, matching.len() as u64, "total of two statuses");
                by_offset.extend(ids(&p.items));
            }
            assert_eq!(
                by_offset,
                want,
                "offset pages of two statuses by {} {}",
                field.as_str(),
                order.as_str()
            );
            let mut q = base.clone();
            let mut seen = Vec::new();
            for _ in 0..=matching.len() + 1 {
                let p = must(
                    store.list_runs(&q).await,
                    "list_runs of two statuses by cursor",
                );
                seen.extend(ids(&p.items));
                match p.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(
                seen,
                want,
                "cursor pages of two statuses by {} {}",
                field.as_str(),
                order.as_str()
            );
        }
    }

    // A cursor overrides the offset.
    let q = RunQuery {
        sort_by: RunSortField::StartedAt,
        order: SortOrder::Desc,
        limit: 2,
        ..f.base()
    };
    let first = must(store.list_runs(&q).await, "list_runs first page");
    let Some(cursor) = first.next_cursor else {
        panic!("a full first page has a next_cursor");
    };
    let with_cursor = RunQuery {
        cursor: Some(cursor),
        ..q.clone()
    };
    let second = must(store.list_runs(&with_cursor).await, "list_runs with cursor");
    let second_offset = must(
        store
            .list_runs(&RunQuery {
                offset: 3,
                ..with_cursor.clone()
            })
            .await,
        "list_runs with cursor and offset",
    );
    assert_eq!(
        ids(&second.items),
        ids(&second_offset.items),
        "the offset is ignored when a cursor is given"
    );
    let want = reference_sorted(&f.runs, RunSortField::StartedAt, SortOrder::Desc);
    assert_eq!(
        ids(&second.items),
        want[2..4].to_vec(),
        "the second cursor page"
    );

    // Cursors are checked.
    must_fail(
        store
            .list_runs(&RunQuery {
                sort_by: RunSortField::Alias,
                ..with_cursor.clone()
            })
            .await,
        ErrorKind::InvalidInput,
        "a cursor made for another sort field",
    );
    for bad in ["zz", "'; DROP TABLE runs; --", "7b7d"] {
        must_fail(
            store
                .list_runs(&RunQuery {
                    cursor: Some(bad.into()),
                    ..q.clone()
                })
                .await,
            ErrorKind::InvalidInput,
            &format!("a garbage cursor {bad:?}"),
        );
    }
}

async fn hostile_values(store: &dyn Store) {
    let f = fixture(store).await;
    let t = token();
    let group = format!("suite-hostile-{t}");
    let mut d = definition(&format!("suite-hostile-{t}"));
    d.group_name = group.clone();
    fill_optional(&mut d);
    d.group_name = group.clone();
    must(
        store.create_definition(&d).await,
        "create_definition with hostile text",
    );
    assert_eq!(
        must(
            store.get_definition(&d.definition_id).await,
            "get_definition"
        ),
        d,
        "hostile text in a definition round-trips unchanged"
    );
    let by_clusters = RunQuery {
        clusters: f.clusters.to_vec(),
        ..RunQuery::all(100)
    };
    for v in HOSTILE {
        let what = |field: &str| format!("hostile run filter {field} = {v:?}");
        let queries = [
            (
                "aliases",
                RunQuery {
                    aliases: vec![v.into()],
                    ..by_clusters.clone()
                },
            ),
            (
                "clusters",
                RunQuery {
                    clusters: vec![v.into()],
                    ..f.base()
                },
            ),
            (
                "owners",
                RunQuery {
                    owners: vec![v.into()],
                    ..f.base()
                },
            ),
            (
                "definition_id",
                RunQuery {
                    definition_id: Some(v.into()),
                    ..f.base()
                },
            ),
            (
                "engine",
                RunQuery {
                    engine: Some(v.into()),
                    ..f.base()
                },
            ),
            (
                "env value",
                RunQuery {
                    env: vec![EnvVar::new("K", v)],
                    ..f.base()
                },
            ),
            (
                "env name",
                RunQuery {
                    env: vec![EnvVar::new(v, "v1")],
                    ..f.base()
                },
            ),
        ];
        for (field, q) in queries {
            let p = must(store.list_runs(&q).await, &what(field));
            assert_eq!(p.total, 0, "{} matches nothing", what(field));
            assert!(p.items.is_empty(), "{} lists nothing", what(field));
        }
        let dq = DefinitionQuery {
            group_name: Some(group.clone()),
            limit: 10,
            ..Default::default()
        };
        let dqueries = [
            (
                "alias",
                DefinitionQuery {
                    alias: Some(v.into()),
                    ..dq.clone()
                },
            ),
            (
                "image",
                DefinitionQuery {
                    image: Some(v.into()),
                    ..dq.clone()
                },
            ),
            (
                "group_name",
                DefinitionQuery {
                    group_name: Some(v.into()),
                    ..dq.clone()
                },
            ),
            (
                "env",
                DefinitionQuery {
                    env: vec![EnvVar::new("QUOTE", v)],
                    ..dq.clone()
                },
            ),
        ];
        for (field, q) in dqueries {
            let p = must(
                store.list_definitions(&q).await,
                &format!("hostile definition filter {field} = {v:?}"),
            );
            assert_eq!(
                p.total, 0,
                "hostile definition filter {field} = {v:?} matches nothing"
            );
        }
        must_fail(
            store.get_definition(v).await,
            ErrorKind::NotFound,
            &format!("get_definition({v:?})"),
        );
        must_fail(
            store.get_definition_by_alias(v).await,
            ErrorKind::NotFound,
            &format!("get_definition_by_alias({v:?})"),
        );
        must_fail(
            store.get_run(v).await,
            ErrorKind::NotFound,
            &format!("get_run({v:?})"),
        );
        must_fail(
            store.get_cluster(v).await,
            ErrorKind::NotFound,
            &format!("get_cluster({v:?})"),
        );
        assert_eq!(
            must(
                store.find_run_by_idempotence_key(v).await,
                "find_run_by_idempotence_key"
            ),
            None,
            "find_run_by_idempotence_key({v:?}) finds nothing"
        );
        let g = must(
            store.list_groups(Some(&format!("{t}{v}")), 10, 0).await,
            "list_groups",
        );
        assert_eq!(
            g.total, 0,
            "list_groups containing {v:?} after the suite token matches nothing"
        );
        let tg = must(
            store.list_tags(Some(&format!("{t}{v}")), 10, 0).await,
            "list_tags",
        );
        assert_eq!(
            tg.total, 0,
            "list_tags containing {v:?} after the suite token matches nothing"
        );
    }
    // Nothing was dropped or changed.
    let p = must(
        store.list_runs(&f.base()).await,
        "list_runs after hostile filters",
    );
    assert_eq!(p.total, f.runs.len() as u64, "runs survive hostile filters");
    let d2 = must(
        store.get_definition(&d.definition_id).await,
        "get_definition after hostile filters",
    );
    assert_eq!(d2, d, "definitions survive hostile filters");
    must(
        store.delete_definition(&d.definition_id).await,
        "delete_definition",
    );
}

async fn groups_and_tags(store: &dyn Store) {
    let t = token();
    let g = |s: &str| format!("g{t}-{s}");
    let tag = |s: &str| format!("t{t}-{s}");
    let specs = [
        (g("b"), vec![tag("x"), tag("y")]),
        (g("a"), vec![tag("y"), tag("X")]),
        (g("B"), vec![]),
        (g("b"), vec![tag("x")]),
    ];
    let mut defs = Vec::new();
    for (i, (group, tags)) in specs.into_iter().enumerate() {
        let mut d = definition(&format!("suite-gt-{t}-{i}"));
        d.group_name = group;
        d.tags = tags;
        must(
            store.create_definition(&d).await,
            "create_definition for groups/tags",
        );
        defs.push(d);
    }
    let groups = must(store.list_groups(Some(&t), 100, 0).await, "list_groups");
    assert_eq!(
        groups.items,
        vec![g("B"), g("a"), g("b")],
        "list_groups: distinct, sorted byte-wise, filtered by substring"
    );
    assert_eq!(groups.total, 3, "list_groups total counts distinct groups");
    let page = must(store.list_groups(Some(&t), 1, 1).await, "list_groups paged");
    assert_eq!(page.items, vec![g("a")], "list_groups limit/offset");
    assert_eq!(page.total, 3, "list_groups total with a page");
    let upper = must(
        store.list_groups(Some(&t.to_uppercase()), 100, 0).await,
        "list_groups upper-case filter",
    );
    assert_eq!(
        upper.items, groups.items,
        "list_groups filter is case-insensitive"
    );

    let tags = must(store.list_tags(Some(&t), 100, 0).await, "list_tags");
    assert_eq!(
        tags.items,
        vec![tag("X"), tag("x"), tag("y")],
        "list_tags: distinct, sorted byte-wise, filtered by substring"
    );
    assert_eq!(tags.total, 3, "list_tags total counts distinct tags");
    let page = must(store.list_tags(Some(&t), 2, 1).await, "list_tags paged");
    assert_eq!(
        page.items,
        vec![tag("x"), tag("y")],
        "list_tags limit/offset"
    );
    assert_eq!(page.total, 3, "list_tags total with a page");

    let all = must(
        store.list_groups(None, 1000, 0).await,
        "list_groups without filter",
    );
    let mut sorted = all.items.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    sorted.dedup();
    assert_eq!(
        all.items, sorted,
        "list_groups without filter is distinct and sorted"
    );

    for d in &defs {
        must(
            store.delete_definition(&d.definition_id).await,
            "delete_definition",
        );
    }
    let gone = must(
        store.list_groups(Some(&t), 100, 0).await,
        "list_groups after delete",
    );
    assert_eq!(gone.total, 0, "groups come from existing definitions only");
    let gone = must(
        store.list_tags(Some(&t), 100, 0).await,
        "list_tags after delete",
    );
    assert_eq!(gone.total, 0, "tags come from existing definitions only");
}

async fn clusters(store: &dyn Store) {
    let t = token();
    let mut c = Cluster::new(format!("suite-cluster-{t}"));
    c.allowed_tiers = vec!["1".into(), "2".into()];
    c.engine = Some("local".into());
    must(store.put_cluster(&c).await, "put_cluster");
    assert_eq!(
        must(store.get_cluster(&c.name).await, "get_cluster"),
        c,
        "get_cluster returns what was put"
    );
    c.status = ClusterStatus::Maintenance;
    c.status_reason = Some("upgrading 'nodes'".into());
    c.updated_at = model::now();
    must(store.put_cluster(&c).await, "put_cluster replacing");
    assert_eq!(
        must(store.get_cluster(&c.name).await, "get_cluster"),
        c,
        "put_cluster replaces"
    );
    let other = Cluster::new(format!("suite-cluster-{t}-B"));
    must(store.put_cluster(&other).await, "put_cluster second");
    let list = must(store.list_clusters().await, "list_clusters");
    assert!(
        list.contains(&c) && list.contains(&other),
        "list_clusters lists every cluster"
    );
    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(names, sorted, "list_clusters is sorted by name");
    must(store.delete_cluster(&c.name).await, "delete_cluster");
    must_fail(
        store.get_cluster(&c.name).await,
        ErrorKind::NotFound,
        "get_cluster after delete",
    );
    must_fail(
        store.delete_cluster(&c.name).await,
        ErrorKind::NotFound,
        "delete_cluster of an unknown cluster",
    );
    let list = must(store.list_clusters().await, "list_clusters after delete");
    assert!(
        !list.iter().any(|x| x.name == c.name),
        "a deleted cluster is not listed"
    );
    must(
        store.delete_cluster(&other.name).await,
        "delete_cluster second",
    );
}

async fn leases(store: &dyn Store) {
    // Exclusivity is checked on leases far from expiry, expiry on short
    // ones after sleeping past them, so no check depends on how fast the
    // backend answers.
    let long = Duration::from_secs(60);
    let short = Duration::from_millis(300);
    let past_short = short + Duration::from_millis(300);
    let (a, b) = ("holder-a", "holder-b");

    let renewed = format!("suite-lease-{}", token());
    assert!(
        must(store.try_lease(&renewed, a, short).await, "try_lease"),
        "a free lease is granted"
    );
    assert!(
        must(store.try_lease(&renewed, a, long).await, "try_lease"),
        "the holder renews its lease"
    );
    tokio::time::sleep(past_short).await;
    assert!(
        !must(store.try_lease(&renewed, b, long).await, "try_lease"),
        "a renewal moves the expiry: the lease outlives its first ttl"
    );
    must(store.release_lease(&renewed, a).await, "release_lease");

    let name = format!("suite-lease-{}", token());
    assert!(
        must(store.try_lease(&name, a, long).await, "try_lease"),
        "a free lease is granted"
    );
    assert!(
        !must(store.try_lease(&name, b, long).await, "try_lease"),
        "a held lease is refused to another holder"
    );
    assert!(
        must(store.try_lease(&name, a, short).await, "try_lease"),
        "the holder renews its lease (here with a short ttl)"
    );
    tokio::time::sleep(past_short).await;
    assert!(
        must(store.try_lease(&name, b, long).await, "try_lease"),
        "an expired lease can be taken over"
    );
    assert!(
        !must(store.try_lease(&name, a, long).await, "try_lease"),
        "the old holder lost a lease taken over"
    );
    let ttl = long;
    must(
        store.release_lease(&name, a).await,
        "release_lease by a non-holder",
    );
    assert!(
        !must(store.try_lease(&name, a, ttl).await, "try_lease"),
        "release by a non-holder does nothing"
    );
    must(store.release_lease(&name, b).await, "release_lease");
    assert!(
        must(store.try_lease(&name, a, ttl).await, "try_lease"),
        "a released lease is free at once"
    );
    must(store.release_lease(&name, a).await, "release_lease");
    must(
        store
            .release_lease(&format!("suite-lease-{}", token()), a)
            .await,
        "release_lease of an unknown lease",
    );

    let race = format!("suite-lease-{}", token());
    let holders: Vec<String> = (0..8).map(|i| format!("holder-{i}")).collect();
    let results = join_all(
        holders
            .iter()
            .map(|h| store.try_lease(&race, h, Duration::from_secs(30))),
    )
    .await;
    let granted = results
        .into_iter()
        .map(|r| must(r, "concurrent try_lease"))
        .filter(|g| *g)
        .count();
    assert_eq!(
        granted, 1,
        "exactly one of 8 concurrent try_lease calls wins"
    );
    for h in &holders {
        must(store.release_lease(&race, h).await, "release_lease");
    }
}
