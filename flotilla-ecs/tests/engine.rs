//! `EcsEngine` specifics on moto: placement failures, permanent errors, task
//! definition revisions, Fargate networking and batched polling.

mod common;

use std::sync::Arc;

use flotilla::{Engine, ErrorKind, NewDefinition, TaskState};
use flotilla_ecs::{ApiCallCounter, CloudWatchLogs, EcsEngine, LaunchType};

fn definition(memory: i64, command: &str) -> flotilla::Definition {
    let mut n =
        NewDefinition::new(format!("eng-{}", common::token()), "busybox:latest").command(command);
    n.memory = Some(memory);
    n.into_definition()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_failures_are_retryable_and_bad_parameters_are_not() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (engine, _logs) = common::backend(&endpoint).await;
    let cluster = common::cluster(engine.settings());
    // More memory than any container instance has: ECS cannot place it.
    let def = definition(1_000_000, "echo big");
    let run = common::run_of(&def, &cluster, "ecs");
    let e = engine
        .submit(&run, &def)
        .await
        .expect_err("cannot be placed");
    assert!(
        e.is_retryable(),
        "placement failure must be retryable: {e} ({})",
        e.kind()
    );

    // A cluster without container instances: retryable as well.
    let mut settings = common::settings(&endpoint);
    settings.max_attempts = 1;
    let empty = EcsEngine::new(settings.clone()).await.expect("engine");
    let logs = CloudWatchLogs::new(settings.clone()).await.expect("logs");
    common::prepare(&endpoint, &empty, &logs, false).await;
    let def = definition(128, "echo");
    let run = common::run_of(&def, &common::cluster(&settings), "ecs");
    let e = empty.submit(&run, &def).await.expect_err("no instances");
    assert!(
        e.is_retryable(),
        "no container instance must be retryable: {e} ({})",
        e.kind()
    );

    // A cluster that does not exist: permanent, with AWS's message.
    let mut settings = common::settings(&endpoint);
    settings.clusters.clear();
    let engine2 = EcsEngine::new(settings).await.expect("engine");
    let run = common::run_of(&def, "no-such-cluster", "ecs");
    let e = engine2
        .submit(&run, &def)
        .await
        .expect_err("unknown cluster");
    assert!(
        !e.is_retryable(),
        "an unknown cluster is permanent: {e} ({})",
        e.kind()
    );
    assert!(e.message().contains("RunTask"), "{e}");

    // A cluster the engine is not configured for: refused before any call.
    let run = common::run_of(&def, "elsewhere", "ecs");
    let e = engine
        .submit(&run, &def)
        .await
        .expect_err("not our cluster");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().starts_with("cluster:"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_definitions_follow_content_and_are_deregistered() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (engine, _logs) = common::backend(&endpoint).await;
    let cluster = common::cluster(engine.settings());
    let mut def = definition(128, "echo one");
    let run = common::run_of(&def, &cluster, "ecs");
    let a = engine
        .ensure_task_definition(&run, &def)
        .await
        .expect("register");
    let b = engine
        .ensure_task_definition(&run, &def)
        .await
        .expect("cached");
    assert_eq!(a, b, "same content, same revision");
    // A fresh engine finds the revision at ECS by its content hash.
    let fresh = EcsEngine::new(engine.settings().clone())
        .await
        .expect("engine");
    assert_eq!(
        fresh
            .ensure_task_definition(&run, &def)
            .await
            .expect("found"),
        a
    );
    // The task definition is the run's: an edit of the definition is not
    // another revision, another image in the run is.
    def.command = Some("echo two".into());
    def.memory = Some(4096);
    assert_eq!(
        engine
            .ensure_task_definition(&run, &def)
            .await
            .expect("same"),
        a
    );
    let mut other = run.clone();
    other.image = "alpine:latest".into();
    let c = engine
        .ensure_task_definition(&other, &def)
        .await
        .expect("re-register");
    assert_ne!(a, c, "another image, new revision");
    // Both stay in use: runs of either image keep their own revision.
    assert_eq!(
        engine
            .ensure_task_definition(&run, &def)
            .await
            .expect("cached"),
        a
    );
    assert!(a.ends_with(":1") && c.ends_with(":2"), "{a} {c}");
    let described = engine
        .client()
        .describe_task_definition()
        .task_definition(&c)
        .send()
        .await
        .expect("describe");
    let td = described.task_definition().expect("task definition");
    let container = &td.container_definitions()[0];
    let log = container.log_configuration().expect("log configuration");
    assert_eq!(log.log_driver().as_str(), "awslogs");
    let opts = log.options().expect("options");
    assert_eq!(
        opts.get("awslogs-group"),
        Some(&engine.settings().log_group)
    );
    assert_eq!(
        opts.get("awslogs-stream-prefix"),
        Some(&"flotilla".to_string())
    );
    assert_eq!(container.memory(), Some(128), "the run's memory");
    assert_eq!(container.image(), Some("alpine:latest"));
    assert_eq!(
        engine
            .deregister_definition(&def.definition_id)
            .await
            .expect("deregister"),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fargate_tasks_get_awsvpc_networking() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let net = common::control(&endpoint, "/_flotilla/ec2/default-network", None)
        .await
        .expect("default network");
    let subnets: Vec<String> = serde_json::from_value(net["subnets"].clone()).expect("subnets");
    let groups: Vec<String> =
        serde_json::from_value(net["security_groups"].clone()).expect("groups");
    let mut settings = common::settings(&endpoint);
    settings.launch_type = LaunchType::Fargate;
    settings.subnets = subnets[..1].to_vec();
    settings.security_groups = groups;
    let engine = EcsEngine::new(settings.clone()).await.expect("engine");
    let logs = CloudWatchLogs::new(settings.clone()).await.expect("logs");
    common::prepare(&endpoint, &engine, &logs, false).await;
    let def = definition(512, "echo fargate");
    let mut run = common::run_of(&def, &common::cluster(&settings), "ecs");
    let s = engine.submit(&run, &def).await.expect("submit on Fargate");
    run.engine_ref = Some(s.engine_ref.clone());
    let u = engine.poll(std::slice::from_ref(&run)).await.expect("poll");
    assert!(
        matches!(u[0].state, TaskState::Pending | TaskState::Running),
        "{u:?}"
    );
    let described = engine
        .client()
        .describe_tasks()
        .cluster(&run.cluster)
        .tasks(&s.engine_ref)
        .send()
        .await
        .expect("describe");
    let task = &described.tasks()[0];
    assert_eq!(task.launch_type().map(|l| l.as_str()), Some("FARGATE"));
    assert!(!task.attachments().is_empty(), "an ENI was attached");
    let td = engine
        .client()
        .describe_task_definition()
        .task_definition(task.task_definition_arn().expect("arn"))
        .send()
        .await
        .expect("describe task definition");
    let td = td.task_definition().expect("td");
    assert_eq!(td.network_mode().map(|m| m.as_str()), Some("awsvpc"));
    assert_eq!(td.memory(), Some("512"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_batch_describe_tasks_by_hundreds() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let settings = common::settings(&endpoint);
    let sdk = flotilla_ecs::sdk_config(
        &settings.region,
        settings.endpoint_url.as_deref(),
        settings.credentials.as_ref(),
        settings.max_attempts,
    )
    .await;
    let counter = ApiCallCounter::new();
    let conf = aws_sdk_ecs::config::Builder::from(&sdk)
        .interceptor(counter.clone())
        .build();
    let engine = Arc::new(
        EcsEngine::from_client(aws_sdk_ecs::Client::from_conf(conf), settings.clone())
            .expect("engine"),
    );
    let logs = CloudWatchLogs::new(settings.clone()).await.expect("logs");
    common::prepare(&endpoint, &engine, &logs, true).await;
    let def = definition(16, "echo many");
    let mut runs = Vec::new();
    for _ in 0..130 {
        let mut run = common::run_of(&def, &common::cluster(&settings), "ecs");
        let s = engine.submit(&run, &def).await.expect("submit");
        run.engine_ref = Some(s.engine_ref);
        runs.push(run);
    }
    assert_eq!(
        counter.calls("ECS.RunTask"),
        130,
        "one RunTask per attempt: {:?}",
        counter.snapshot()
    );
    counter.reset();
    let updates = engine.poll(&runs).await.expect("poll");
    assert_eq!(updates.len(), 130);
    assert!(updates.iter().all(|u| u.state == TaskState::Running));
    assert_eq!(
        counter.calls("ECS.DescribeTasks"),
        2,
        "130 tasks in two DescribeTasks calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_ecs_does_not_know_polls_missing_with_a_reason() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (engine, _logs) = common::backend(&endpoint).await;
    let def = definition(64, "echo gone");
    let mut run = common::run_of(&def, &common::cluster(engine.settings()), "ecs");
    run.engine_ref = Some(format!(
        "arn:aws:ecs:us-east-1:123456789012:task/{}/0123456789abcdef0123456789abcdef",
        run.cluster
    ));
    let u = engine.poll(std::slice::from_ref(&run)).await.expect("poll");
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state, TaskState::Missing);
    assert!(
        u[0].reason
            .as_deref()
            .is_some_and(|r| r.contains("0123456789abcdef")),
        "{:?}",
        u[0].reason
    );
    // Terminating it is not an error either.
    engine
        .terminate(&run, "cleanup")
        .await
        .expect("terminate a gone task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_redelivered_submit_after_a_definition_edit_starts_nothing_new() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (engine, _logs) = common::backend(&endpoint).await;
    let def = definition(64, "echo one");
    let run = common::run_of(&def, &common::cluster(engine.settings()), "ecs");
    let first = engine.submit(&run, &def).await.expect("submit");
    // The definition is edited; the same attempt's message comes again.
    let mut edited = def.clone();
    edited.command = Some("echo two".into());
    edited.memory = Some(256);
    edited.image = "alpine:latest".into();
    edited.env = vec![flotilla::EnvVar::new("EDITED", "1")];
    let again = engine
        .submit(&run, &edited)
        .await
        .expect("a redelivered submit is not rejected");
    assert_eq!(again.engine_ref, first.engine_ref);
    let tasks = common::tasks_of(&engine, &run).await.expect("tasks");
    assert_eq!(tasks.len(), 1, "one task for the attempt: {tasks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_reused_token_adopts_the_existing_task() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (engine, _logs) = common::backend(&endpoint).await;
    let def = definition(64, "echo one");
    let run = common::run_of(&def, &common::cluster(engine.settings()), "ecs");
    let first = engine.submit(&run, &def).await.expect("submit");
    // As ECS does: the same clientToken with other parameters is a
    // ConflictException naming the task started with it.
    let conflict = engine
        .client()
        .run_task()
        .cluster(&run.cluster)
        .task_definition(
            engine
                .ensure_task_definition(&run, &def)
                .await
                .expect("task definition"),
        )
        .client_token(flotilla_ecs::client_token(&run))
        .started_by("someone-else")
        .send()
        .await
        .expect_err("a reused token with other parameters");
    let service = conflict.as_service_error().expect("a service error");
    assert!(service.is_conflict_exception(), "{service:?}");
    match service {
        aws_sdk_ecs::operation::run_task::RunTaskError::ConflictException(c) => {
            assert_eq!(c.resource_ids(), std::slice::from_ref(&first.engine_ref));
        }
        other => panic!("not a conflict: {other:?}"),
    }
    // The definition's ports change (ECS cannot override them, so the task
    // definition is another revision): the redelivered submit meets the
    // conflict and adopts the attempt's task.
    let mut edited = def.clone();
    edited.ports = vec![8080];
    let again = engine
        .submit(&run, &edited)
        .await
        .expect("the existing task is adopted, the run is not rejected");
    assert_eq!(again.engine_ref, first.engine_ref);
    let tasks = common::tasks_of(&engine, &run).await.expect("tasks");
    assert_eq!(tasks.len(), 1, "one task for the attempt: {tasks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_cluster_does_not_hide_the_others() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (engine, _logs) = common::backend(&endpoint).await;
    let def = definition(64, "sleep 600");
    let good = common::run_of(&def, &common::cluster(engine.settings()), "ecs");
    let submitted = engine.submit(&good, &def).await.expect("submit");
    let mut good = good;
    good.engine_ref = Some(submitted.engine_ref);

    // A cluster that was deleted, and one that never existed: DescribeTasks
    // fails for both (ClusterNotFoundException).
    let deleted = format!("gone-{}", common::token());
    engine
        .client()
        .create_cluster()
        .cluster_name(&deleted)
        .send()
        .await
        .expect("create");
    engine
        .client()
        .delete_cluster()
        .cluster(&deleted)
        .send()
        .await
        .expect("delete");
    let broken: Vec<flotilla::Run> = [deleted, format!("never-{}", common::token())]
        .into_iter()
        .map(|cluster| {
            let mut r = common::run_of(&def, &cluster, "ecs");
            r.status = flotilla::RunStatus::Running;
            r.engine_ref = Some(format!(
                "arn:aws:ecs:us-east-1:123456789012:task/{cluster}/0123456789abcdef0123456789abcdef"
            ));
            r
        })
        .collect();

    let mut all = broken.clone();
    all.insert(1, good.clone());
    let updates = engine
        .poll(&all)
        .await
        .expect("a poll with one observable cluster answers");
    let ids: Vec<&str> = updates.iter().map(|u| u.run_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![good.run_id.as_str()],
        "only the observable run is answered; the broken clusters' runs are left out, not Missing: {updates:?}"
    );
    assert_eq!(updates[0].state, TaskState::Running);

    let e = engine
        .poll(&broken)
        .await
        .expect_err("nothing observable at all is an error");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}
