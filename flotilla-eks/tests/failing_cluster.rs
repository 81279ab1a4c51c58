//! One failing Kubernetes cluster must not stop the observation of the
//! others: `poll` answers per cluster, and leaves the runs of a cluster it
//! cannot observe out of its answer (no news), never `Missing`.

mod support;

use std::time::Duration;

use flotilla::{Engine, NewDefinition, Run, RunStatus, StatusUpdate, TaskState};
use support::{FakeApiServer, engine_on, new_run, settings};

async fn submitted(engine: &flotilla_eks::EksEngine, cluster: &str) -> Run {
    let def = NewDefinition::new("isolated", "busybox:1").into_definition();
    let mut run = new_run(&def, cluster, None);
    let s = engine.submit(&run, &def).await.expect("submit");
    run.engine_ref = Some(s.engine_ref);
    run.status = RunStatus::Running;
    run
}

fn update_of<'a>(updates: &'a [StatusUpdate], run: &Run) -> Option<&'a StatusUpdate> {
    updates.iter().find(|u| u.run_id == run.run_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cluster_hides_no_other_clusters_runs_and_its_own_are_never_missing() {
    let east = FakeApiServer::start().await;
    let west = FakeApiServer::start().await;
    let engine = engine_on(&[("east", &east), ("west", &west)], settings());
    let a = submitted(&engine, "east").await;
    let b = submitted(&engine, "west").await;
    let (ja, jb) = (
        a.engine_ref.clone().expect("ref"),
        b.engine_ref.clone().expect("ref"),
    );
    east.start_pod(&ja);
    west.start_pod(&jb);

    // West's API goes down; wait until the engine saw its watches fail, so
    // every poll must list west (and fails to).
    west.set_unavailable(true);
    for _ in 0..1500 {
        if !engine.watches_healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !engine.watches_healthy(),
        "west's failing watches are noticed"
    );

    // East goes on: its run finishes and is observed.
    east.finish_pod(&ja, 0, "Completed");
    let both = [a.clone(), b.clone()];
    let mut seen_final = false;
    for _ in 0..1500 {
        let updates = engine
            .poll(&both)
            .await
            .expect("a failing cluster fails no other cluster's poll");
        let ub = update_of(&updates, &b);
        assert!(
            ub.is_none(),
            "west's run is unobservable: left out, never reported: {ub:?}"
        );
        let ua = update_of(&updates, &a).expect("east's run is answered");
        assert_ne!(ua.state, TaskState::Missing, "{ua:?}");
        if ua.state == TaskState::Stopped {
            assert_eq!(ua.exit_code, Some(0), "{ua:?}");
            seen_final = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_final, "east's run finished while west was down");

    // Only west's run: nothing can be observed, and it is not Missing.
    match engine.poll(std::slice::from_ref(&b)).await {
        Err(e) => assert!(e.is_retryable(), "a transient error: {e}"),
        Ok(updates) => assert!(updates.is_empty(), "no news: {updates:?}"),
    }

    // West comes back; its run, which finished meanwhile, is observed.
    west.finish_pod(&jb, 2, "Error");
    west.set_unavailable(false);
    let mut done = None;
    for _ in 0..1500 {
        let updates = engine.poll(&both).await.expect("poll");
        if let Some(u) = update_of(&updates, &b) {
            assert_ne!(u.state, TaskState::Missing, "{u:?}");
            if u.state == TaskState::Stopped {
                done = Some(u.clone());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = done.expect("west's run is observed again");
    assert_eq!(done.exit_code, Some(2), "{done:?}");
}
