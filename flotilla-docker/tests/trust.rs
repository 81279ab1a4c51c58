//! The Docker engine's guarantees on a real dockerd: limits, restart
//! adoption without re-running anything, image pull failures, logs that
//! outlive their container, cursors that are checked.

mod common;

use std::collections::HashMap;

use std::time::Duration;

use flotilla::{
    Engine, EngineEvent, ErrorKind, FailureCategory, LogSource, Run, RunStatus, TaskState,
};
use flotilla_docker::bollard::Docker;
use futures::StreamExt;

/// Needs about 40 MiB (a shell variable of 40 MiB).
const NEEDS_40_MIB: &str = "x=$(head -c 41943040 /dev/zero | tr '\\0' a); echo ${#x}";

async fn started_at(docker: &Docker, name: &str) -> String {
    docker
        .inspect_container(name, None)
        .await
        .unwrap_or_else(|e| panic!("inspect {name}: {e}"))
        .state
        .and_then(|s| s.started_at)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_memory_is_oom_killed_and_classified_oom() {
    let Some((host, image)) = common::docker() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("foom{}", common::token());
    let engine = common::engine(&host, dir.path(), &prefix).await;

    let mut pushed = engine.events().expect("the docker engine pushes changes");
    let (mut small, def) = common::new_run(&image, NEEDS_40_MIB);
    small.memory = Some(16);
    engine.submit(&small, &def).await.expect("submit");
    // The daemon's event stream pushes the stop, classified oom.
    let pushed_stop = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(ev) = pushed.next().await {
            if let EngineEvent::Update(u) = ev
                && u.run_id == small.run_id
                && u.state == TaskState::Stopped
            {
                return u;
            }
        }
        panic!("the push stream ended");
    })
    .await
    .expect("a pushed stop within 60 s");
    assert_eq!(
        pushed_stop.failure,
        Some(FailureCategory::Oom),
        "{pushed_stop:?}"
    );
    let u = common::wait_stopped(&engine, &small).await;
    assert_eq!(u.failure, Some(FailureCategory::Oom), "{u:?}");
    assert_eq!(u.exit_code, Some(137), "{u:?}");

    // The same job with room to spare succeeds: the limit is what killed it.
    let (mut big, def) = common::new_run(&image, NEEDS_40_MIB);
    big.memory = Some(256);
    engine.submit(&big, &def).await.expect("submit");
    let u = common::wait_stopped(&engine, &big).await;
    assert_eq!(u.exit_code, Some(0), "{u:?}");
    assert_eq!(u.failure, None, "{u:?}");
    common::remove_all(engine.docker(), &prefix).await;
}

/// An attempt OOM-killed while no engine ran is still `oom` to the engine
/// started afterwards, which never saw it happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_while_the_server_is_down_is_classified_oom_after_restart() {
    let Some((host, image)) = common::docker() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("foomr{}", common::token());
    let first = common::engine(&host, dir.path(), &prefix).await;
    let (mut run, def) = common::new_run(&image, NEEDS_40_MIB);
    run.memory = Some(16);
    first.submit(&run, &def).await.expect("submit");
    let name = first.container_name(&run.run_id, run.attempt);
    let docker = first.docker().clone();
    drop(first);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let st = docker
            .inspect_container(&name, None)
            .await
            .expect("inspect")
            .state
            .unwrap_or_default();
        if st.running == Some(false)
            && st
                .finished_at
                .as_deref()
                .is_some_and(|f| !f.starts_with("0001"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{name} did not exit: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = common::engine(&host, dir.path(), &prefix).await;
    let u = common::wait_stopped(&second, &run).await;
    assert_eq!(u.failure, Some(FailureCategory::Oom), "{u:?}");
    common::remove_all(second.docker(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_adopts_its_containers_and_runs_nothing_again() {
    let Some((host, image)) = common::docker() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("fadopt{}", common::token());
    let first = common::engine(&host, dir.path(), &prefix).await;
    let mut runs: Vec<Run> = Vec::new();
    let mut defs = Vec::new();
    let mut refs = HashMap::new();
    for _ in 0..3 {
        let (run, def) = common::new_run(&image, common::PROBE_COMMAND);
        let s = first.submit(&run, &def).await.expect("submit");
        refs.insert(run.run_id.clone(), s.engine_ref);
        common::wait_running(&first, &run).await;
        runs.push(run);
        defs.push(def);
    }
    let docker = first.docker().clone();
    let names: Vec<String> = runs
        .iter()
        .map(|r| first.container_name(&r.run_id, r.attempt))
        .collect();
    let mut starts = Vec::new();
    for n in &names {
        starts.push(started_at(&docker, n).await);
    }
    // The server goes away; two containers finish meanwhile.
    drop(first);
    common::finish_container(&docker, &names[0], 0)
        .await
        .expect("finish 0");
    common::finish_container(&docker, &names[1], 5)
        .await
        .expect("finish 1");

    let second = common::engine(&host, dir.path(), &prefix).await;
    let u0 = common::wait_stopped(&second, &runs[0]).await;
    assert_eq!(u0.exit_code, Some(0), "{u0:?}");
    assert_eq!(u0.failure, None, "{u0:?}");
    let u1 = common::wait_stopped(&second, &runs[1]).await;
    assert_eq!(u1.exit_code, Some(5), "the real exit code: {u1:?}");
    assert_eq!(u1.failure, Some(FailureCategory::AppExit), "{u1:?}");
    let u2 = common::wait_running(&second, &runs[2]).await;
    assert_eq!(u2.state, TaskState::Running);

    // The restarted server resubmits what it finds in flight: nothing
    // starts again, nothing new is created.
    for (run, def) in runs.iter().zip(&defs) {
        let s = second.submit(run, def).await.expect("resubmit");
        assert_eq!(Some(&s.engine_ref), refs.get(&run.run_id));
    }
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(
            common::containers(&docker, &prefix, &run.run_id, run.attempt)
                .await
                .expect("count"),
            1,
            "one container for run {i}'s attempt"
        );
        assert_eq!(
            started_at(&docker, &names[i]).await,
            starts[i],
            "run {i}'s container was started again after the restart"
        );
    }
    assert_eq!(
        common::wait_stopped(&second, &runs[1]).await.exit_code,
        Some(5),
        "a finished run keeps its outcome after a resubmit"
    );
    // The running one is followed to its end.
    common::finish_container(&docker, &names[2], 0)
        .await
        .expect("finish 2");
    let u2 = common::wait_stopped(&second, &runs[2]).await;
    assert_eq!(u2.exit_code, Some(0), "{u2:?}");
    common::remove_all(&docker, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_is_image_pull() {
    let Some((host, _image)) = common::docker() else {
        return;
    };
    // A registry address on 127.0.0.1 where nothing answers.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("fpull{}", common::token());
    let engine = common::engine(&host, dir.path(), &prefix).await;
    let (run, def) = common::new_run(&format!("127.0.0.1:{port}/flotilla/missing:1"), "true");
    engine
        .submit(&run, &def)
        .await
        .expect("a pull failure is the attempt's outcome, not a submit error");
    let u = common::wait_stopped(&engine, &run).await;
    assert_eq!(u.failure, Some(FailureCategory::ImagePull), "{u:?}");
    assert!(
        u.reason.as_deref().is_some_and(|r| r.contains("127.0.0.1")),
        "the reason names the image: {u:?}"
    );
    // Permanent for that attempt: submitting it again starts nothing.
    engine.submit(&run, &def).await.expect("resubmit");
    assert_eq!(
        common::containers(engine.docker(), &prefix, &run.run_id, run.attempt)
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        common::wait_stopped(&engine, &run).await.failure,
        Some(FailureCategory::ImagePull)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_outlive_their_removed_container() {
    let Some((host, image)) = common::docker() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("farch{}", common::token());
    let engine = common::engine(&host, dir.path(), &prefix).await;
    let logs = engine.log_source();
    let (mut run, def) = common::new_run(
        &image,
        "echo 'to stdout: grüße 🦀'; echo 'to stderr' >&2; exit 7",
    );
    engine.submit(&run, &def).await.expect("submit");
    let u = common::wait_stopped(&engine, &run).await;
    assert_eq!(u.exit_code, Some(7));
    run.status = RunStatus::Stopped;
    let before = logs.read(&run, None, 1 << 20).await.expect("read");
    assert!(before.log.contains("to stdout: grüße 🦀\n"), "{before:?}");
    assert!(before.log.contains("to stderr\n"), "{before:?}");
    assert!(before.complete);

    // Outcome stored: the engine archives and removes the container.
    engine.finished(&run).await.expect("finished");
    assert_eq!(
        common::containers(engine.docker(), &prefix, &run.run_id, run.attempt)
            .await
            .expect("count"),
        0,
        "finished() removes the container"
    );
    let after = logs.read(&run, None, 1 << 20).await.expect("read archive");
    assert_eq!(
        after, before,
        "the archived log is the same text, same cursor"
    );
    let tail = logs
        .read(&run, before.cursor.as_deref(), 100)
        .await
        .expect("read from the old cursor");
    assert_eq!(tail.log, "");
    assert!(tail.complete);

    // The outcome outlives the container too, also for a new engine, and
    // a resubmit starts nothing.
    let again = common::engine(&host, dir.path(), &prefix).await;
    let u = common::wait_stopped(&again, &run).await;
    assert_eq!(u.exit_code, Some(7), "{u:?}");
    again.submit(&run, &def).await.expect("resubmit");
    assert_eq!(
        common::containers(again.docker(), &prefix, &run.run_id, run.attempt)
            .await
            .expect("count"),
        0,
        "a finished, removed attempt is not started again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_log_cursors_are_refused() {
    let Some((host, image)) = common::docker() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("fcur{}", common::token());
    let engine = common::engine(&host, dir.path(), &prefix).await;
    let logs = engine.log_source();
    let (mut run, def) = common::new_run(&image, "echo 'ab🦀cd'");
    let (other, other_def) =
        common::new_run(&image, "echo 'a much longer secret text of another run'");
    engine.submit(&run, &def).await.expect("submit");
    engine.submit(&other, &other_def).await.expect("submit");
    common::wait_stopped(&engine, &run).await;
    common::wait_stopped(&engine, &other).await;
    run.status = RunStatus::Stopped;
    let page = logs.read(&run, None, 3).await.expect("read");
    assert_eq!(page.log, "ab");
    let good = page.cursor.expect("cursor");
    assert_eq!(
        logs.read(&run, Some(&good), 100).await.expect("read").log,
        "🦀cd\n"
    );

    let id = &run.run_id;
    let forged = [
        // Another run's cursor, with an offset inside this run's text.
        format!("dk1:1:1:{}", other.run_id),
        // Past the end of this run's text.
        format!("dk1:1:999:{id}"),
        // Inside the crab.
        format!("dk1:1:3:{id}"),
        // An attempt the run has not made.
        format!("dk1:2:0:{id}"),
        format!("dk1:0:0:{id}"),
        format!("dk1:1:-1:{id}"),
        format!("dk2:1:0:{id}"),
        "dk1:1:0".to_string(),
        "garbage".to_string(),
    ];
    for bad in &forged {
        let e = logs.read(&run, Some(bad), 100).await.expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}: {e}");
        assert!(e.message().starts_with("last_seen:"), "{}", e.message());
    }
    common::remove_all(engine.docker(), &prefix).await;
}
