//! End to end through `flotilla::Flotilla` (in-memory store and queue, all
//! workers) with `EksEngine` and `PodLogs` against fake API servers on real
//! 127.0.0.1 sockets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use flotilla::queue::Message;
use flotilla::service::WorkerConfig;
use flotilla::{
    ExecuteRequest, FailureCategory, Flotilla, FlotillaHandle, NewDefinition, RetryPolicy,
    RunStatus, ServiceConfig,
};
use flotilla_eks::names::job_name;
use flotilla_eks::{EksEngine, PodLogs};
use support::{FakeApiServer, engine_on, settings, wait_run};

fn config(clusters: &[&str]) -> ServiceConfig {
    config_polling(clusters, Duration::from_secs(2))
}

fn config_polling(clusters: &[&str], poll: Duration) -> ServiceConfig {
    ServiceConfig {
        default_cluster: clusters[0].to_string(),
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        retry: RetryPolicy {
            base_backoff: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        workers: WorkerConfig {
            status_poll_interval: poll,
            receive_wait: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    }
}

struct Env {
    f: Flotilla,
    handle: FlotillaHandle,
    engine: EksEngine,
}

fn service(servers: &[(&str, &FakeApiServer)]) -> Env {
    service_polling(servers, Duration::from_secs(2))
}

/// With a long `poll`, only the watches can move runs.
fn service_polling(servers: &[(&str, &FakeApiServer)], poll: Duration) -> Env {
    let engine = engine_on(servers, settings());
    let logs = Arc::new(PodLogs::new(&engine));
    let names: Vec<&str> = servers.iter().map(|(n, _)| *n).collect();
    let f = Flotilla::builder()
        .engine(Arc::new(engine.clone()))
        .log_source("eks", logs)
        .config(config_polling(&names, poll))
        .build()
        .expect("build");
    let handle = f.start();
    Env { f, handle, engine }
}

async fn define(f: &Flotilla) -> String {
    let def = f
        .define(
            NewDefinition::new(format!("e2e-{}", flotilla::model::new_id()), "busybox:1")
                .command("echo hello"),
        )
        .await
        .expect("define");
    def.definition_id
}

async fn execute(f: &Flotilla, def: &str) -> flotilla::Run {
    f.execute(def, ExecuteRequest::owned_by("e2e"))
        .await
        .expect("execute")
}

async fn running(env: &Env, server: &FakeApiServer, run_id: &str, attempt: u32) -> String {
    let job = job_name(run_id, attempt);
    server.wait_for_job(&job).await;
    server.start_pod(&job);
    wait_run(&env.f, run_id, "RUNNING", |r| {
        r.status == RunStatus::Running && r.attempt == attempt
    })
    .await;
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_with_logs() {
    let server = FakeApiServer::start().await;
    let env = service(&[("default", &server)]);
    let def = define(&env.f).await;
    let run = execute(&env.f, &def).await;
    let job = running(&env, &server, &run.run_id, 1).await;
    let r = env.f.get_run(&run.run_id).await.expect("run");
    assert_eq!(
        r.instance.as_ref().map(|i| i.dns_name.as_str()),
        Some("node-1"),
        "the node name goes into instance.dns_name"
    );
    server.append_log(&job, "hello");
    server.append_log(&job, "world");
    server.finish_pod(&job, 0, "Completed");
    let done = env
        .f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(done.succeeded(), "{done:?}");
    assert_eq!(done.engine_ref.as_deref(), Some(job.as_str()));
    let (_, chunk) = env.f.logs(&run.run_id, None, 1 << 20).await.expect("logs");
    assert_eq!(chunk.log, "hello\nworld\n");
    assert!(chunk.complete);
    // The Job as created.
    let j = server.job(&job).expect("job");
    assert_eq!(j["spec"]["backoffLimit"], 0);
    assert_eq!(
        j["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "flotilla"
    );
    assert_eq!(j["metadata"]["labels"]["flotilla-run-id"], run.run_id);
    assert_eq!(j["metadata"]["labels"]["flotilla-owner"], "e2e");
    let c = &j["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"][0], "/bin/sh");
    assert_eq!(c["command"][2], "echo hello");
    assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
    let env_names: Vec<&str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env_names.contains(&"FLOTILLA_RUN_ID"), "{env_names:?}");
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_3_is_an_app_exit_failure() {
    let server = FakeApiServer::start().await;
    let env = service(&[("default", &server)]);
    let def = define(&env.f).await;
    let run = execute(&env.f, &def).await;
    let job = running(&env, &server, &run.run_id, 1).await;
    server.finish_pod(&job, 3, "Error");
    let done = env
        .f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(done.exit_code, Some(3));
    assert_eq!(done.failure, Some(FailureCategory::AppExit));
    assert_eq!(done.attempt, 1, "app_exit is not retried");
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_is_the_oom_category() {
    let server = FakeApiServer::start().await;
    let env = service(&[("default", &server)]);
    let def = define(&env.f).await;
    let run = execute(&env.f, &def).await;
    let job = running(&env, &server, &run.run_id, 1).await;
    server.oom_kill(&job);
    let done = env
        .f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(done.failure, Some(FailureCategory::Oom), "{done:?}");
    assert_eq!(done.exit_code, Some(137));
    assert!(
        done.exit_reason
            .as_deref()
            .unwrap_or_default()
            .contains("OOMKilled"),
        "{done:?}"
    );
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_is_retried_and_attempt_2_succeeds() {
    let server = FakeApiServer::start().await;
    let env = service(&[("default", &server)]);
    let def = define(&env.f).await;
    let run = execute(&env.f, &def).await;
    let first = running(&env, &server, &run.run_id, 1).await;
    server.evict(&first);
    let second = running(&env, &server, &run.run_id, 2).await;
    assert_ne!(first, second, "attempt 2 is a new Job");
    server.finish_pod(&second, 0, "Completed");
    let done = env
        .f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(done.succeeded(), "{done:?}");
    assert_eq!(done.attempt, 2);
    let events = env.f.run_events(&run.run_id).await.expect("events");
    let retry = events
        .iter()
        .find(|e| e.to == RunStatus::NeedsRetry)
        .expect("a NEEDS_RETRY event");
    assert!(
        retry
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("node_lost"),
        "{retry:?}"
    );
    assert_eq!(server.pods_created(&first), 1);
    assert_eq!(server.pods_created(&second), 1);
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_deletes_the_job() {
    let server = FakeApiServer::start().await;
    let env = service(&[("default", &server)]);
    let def = define(&env.f).await;
    let run = execute(&env.f, &def).await;
    let job = running(&env, &server, &run.run_id, 1).await;
    let stopped = env
        .f
        .terminate(&run.run_id, "alice")
        .await
        .expect("terminate");
    assert_eq!(stopped.status, RunStatus::Stopped);
    assert_eq!(stopped.failure, Some(FailureCategory::Terminated));
    assert!(server.job(&job).is_none(), "the Job is deleted");
    assert!(server.pods_of(&job).is_empty(), "its pods go with it");
    assert_eq!(server.count("delete jobs"), 1);
    // Nothing moves it afterwards.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = env.f.get_run(&run.run_id).await.expect("run");
    assert_eq!(r.status, RunStatus::Stopped);
    assert_eq!(r.failure, Some(FailureCategory::Terminated));
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_disconnect_loses_no_transition() {
    let server = FakeApiServer::start().await;
    // No safety-net poll during the test: the watches alone must deliver.
    let env = service_polling(&[("default", &server)], Duration::from_secs(3600));
    for _ in 0..1500 {
        if env.engine.watches_healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(env.engine.watches_healthy(), "the watches listed");
    let def = define(&env.f).await;
    let run = execute(&env.f, &def).await;
    let job = job_name(&run.run_id, 1);
    server.wait_for_job(&job).await;
    let watches = server.count("watch jobs") + server.count("watch pods");
    // Every stream drops; the pod starts and finishes while they are down.
    server.drop_watches();
    server.start_pod(&job);
    server.finish_pod(&job, 0, "Completed");
    let done = env
        .f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(done.succeeded(), "{done:?}");
    let events = env.f.run_events(&run.run_id).await.expect("events");
    let path: Vec<RunStatus> = events.iter().map(|e| e.to).collect();
    assert_eq!(
        path,
        [
            RunStatus::Queued,
            RunStatus::Pending,
            RunStatus::Running,
            RunStatus::Stopped
        ],
        "every transition is seen"
    );
    assert_eq!(
        server.count("list jobs"),
        1,
        "only the watch's initial list"
    );
    assert!(
        server.count("watch jobs") + server.count("watch pods") > watches,
        "the watches resumed"
    );
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_watches_fall_back_to_listing() {
    let server = FakeApiServer::start().await;
    let env = service(&[("default", &server)]);
    let def = define(&env.f).await;
    let run = execute(&env.f, &def).await;
    let job = running(&env, &server, &run.run_id, 1).await;
    let lists = server.count("list jobs");
    server.refuse_watches(true);
    // Wait until the engine saw its watches fail, so only a list can tell.
    for _ in 0..1500 {
        if !env.engine.watches_healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !env.engine.watches_healthy(),
        "refused watches are noticed: {:?}",
        server.counts()
    );
    server.finish_pod(&job, 4, "Error");
    let done = env
        .f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(done.exit_code, Some(4));
    assert!(
        server.count("list jobs") > lists,
        "the safety net listed while watches were refused"
    );
    server.refuse_watches(false);
    // After the watches come back, a compaction forces a fresh list and the
    // engine keeps following runs.
    server.compact();
    let run = execute(&env.f, &def).await;
    let job = running(&env, &server, &run.run_id, 1).await;
    server.finish_pod(&job, 0, "Completed");
    let done = env
        .f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(done.succeeded());
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_submit_creates_one_job() {
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let f = Flotilla::builder()
        .engine(Arc::new(engine.clone()))
        .config(config(&["default"]))
        .build()
        .expect("build");
    let def = define(&f).await;
    let run = execute(&f, &def).await;
    // The message is delivered three times before any worker runs.
    let dup = Message::new(run.run_id.clone(), 1);
    f.queue()
        .enqueue("default", &[dup.clone(), dup])
        .await
        .expect("enqueue");
    let handle = f.start();
    let job = job_name(&run.run_id, 1);
    server.wait_for_job(&job).await;
    // And the engine is asked directly too.
    let again =
        flotilla::Engine::submit(&engine, &run, &f.get_definition(&def).await.expect("def"))
            .await
            .expect("submit again");
    assert_eq!(again.engine_ref, job);
    assert!(
        server.count("create jobs") >= 2 && server.count("get jobs") >= 1,
        "the second create met AlreadyExists and read the Job: {:?}",
        server.counts()
    );
    server.start_pod(&job);
    server.finish_pod(&job, 0, "Completed");
    let done = f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(done.succeeded());
    assert_eq!(
        server.jobs_labeled("flotilla-run-id", &run.run_id).len(),
        1,
        "one Job"
    );
    assert_eq!(server.pods_created(&job), 1, "one pod");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_are_routed_by_the_runs_cluster() {
    let east = FakeApiServer::start().await;
    let west = FakeApiServer::start().await;
    let env = service(&[("east", &east), ("west", &west)]);
    assert_eq!(env.engine.cluster_names(), ["east", "west"]);
    let def = define(&env.f).await;
    let a = env
        .f
        .execute(&def, ExecuteRequest::owned_by("e2e").cluster("east"))
        .await
        .expect("execute east");
    let b = env
        .f
        .execute(&def, ExecuteRequest::owned_by("e2e").cluster("west"))
        .await
        .expect("execute west");
    let ja = running(&env, &east, &a.run_id, 1).await;
    let jb = running(&env, &west, &b.run_id, 1).await;
    assert!(west.job(&ja).is_none(), "east's run is not on west");
    assert!(east.job(&jb).is_none(), "west's run is not on east");
    east.finish_pod(&ja, 0, "Completed");
    west.finish_pod(&jb, 5, "Error");
    let da = env
        .f
        .wait_for_stop(&a.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    let db = env
        .f
        .wait_for_stop(&b.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(da.exit_code, Some(0));
    assert_eq!(db.exit_code, Some(5));
    assert_eq!(east.count("create jobs"), 1);
    assert_eq!(west.count("create jobs"), 1);
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_map_to_retry_or_rejection() {
    let server = FakeApiServer::start().await;
    let env = service(&[("default", &server)]);
    let def = define(&env.f).await;
    // 429 and 503 on create: retried, the run still starts once.
    server.fail_next("create jobs", &[429, 503, 500, 429, 503]);
    let run = execute(&env.f, &def).await;
    let job = running(&env, &server, &run.run_id, 1).await;
    server.finish_pod(&job, 0, "Completed");
    let done = env
        .f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(done.succeeded(), "{done:?}");
    assert_eq!(server.pods_created(&job), 1);
    assert_eq!(
        server.count("create jobs"),
        6,
        "five failures, then one create"
    );
    // 422 (the API server finds the Job invalid): permanent, with its message.
    server.fail_next("create jobs", &[422]);
    let run = execute(&env.f, &def).await;
    let done = env
        .f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(
        done.failure,
        Some(FailureCategory::SubmitRejected),
        "{done:?}"
    );
    assert!(
        done.exit_reason
            .as_deref()
            .unwrap_or_default()
            .contains("is invalid"),
        "the API server's message is the reason: {done:?}"
    );
    env.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_back_off_is_retried_with_a_new_job() {
    let server = FakeApiServer::start().await;
    let env = service(&[("default", &server)]);
    let def = define(&env.f).await;
    let run = execute(&env.f, &def).await;
    let first = job_name(&run.run_id, 1);
    server.wait_for_job(&first).await;
    server.image_pull_backoff(&first);
    // Attempt 2 starts; the stuck Job of attempt 1 is deleted.
    let second = running(&env, &server, &run.run_id, 2).await;
    for _ in 0..1500 {
        if server.job(&first).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.job(&first).is_none(), "the stuck Job is deleted");
    server.finish_pod(&second, 0, "Completed");
    let done = env
        .f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(done.succeeded(), "{done:?}");
    let events = env.f.run_events(&run.run_id).await.expect("events");
    assert!(
        events.iter().any(|e| e.to == RunStatus::NeedsRetry
            && e.reason
                .as_deref()
                .unwrap_or_default()
                .contains("image_pull")),
        "{events:?}"
    );
    env.handle.shutdown().await;
}
