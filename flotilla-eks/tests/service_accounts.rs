//! A run's label `service-account` chooses only among the cluster's allowed
//! service accounts, and a run's labels reach Jobs and pods only under
//! `user.flotilla.io/`, through the fake API server on a real 127.0.0.1
//! socket.

mod support;

use flotilla::{Engine, ErrorKind, NewDefinition};
use flotilla_eks::names::job_name;
use flotilla_eks::{EksCluster, EksSettings};
use support::{FakeApiServer, engine_on, new_run};

fn settings() -> EksSettings {
    EksSettings {
        service_account: Some("runner".into()),
        clusters: vec![EksCluster {
            name: "default".into(),
            allowed_service_accounts: vec!["reports".into()],
            ..EksCluster::default()
        }],
        ..support::settings()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_outside_the_allowlist_is_refused_at_submit() {
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let def = NewDefinition::new("sa", "busybox:1").into_definition();

    let mut run = new_run(&def, "default", None);
    run.labels
        .insert("service-account".into(), "cluster-admin".into());
    let e = engine.submit(&run, &def).await.expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "permanent: {e}");
    assert!(
        e.message().starts_with("labels.service-account:"),
        "{}",
        e.message()
    );
    assert!(
        server.job(&job_name(&run.run_id, run.attempt)).is_none(),
        "no Job may be created for a refused run"
    );

    for (label, want) in [(None, "runner"), (Some("reports"), "reports")] {
        let mut run = new_run(&def, "default", None);
        if let Some(l) = label {
            run.labels.insert("service-account".into(), l.into());
        }
        let s = engine.submit(&run, &def).await.expect("submit");
        let job = server.wait_for_job(&s.engine_ref).await;
        assert_eq!(
            job["spec"]["template"]["spec"]["serviceAccountName"], want,
            "label {label:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_labels_reach_pods_only_under_the_flotilla_prefix() {
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let def = NewDefinition::new("labels", "busybox:1").into_definition();
    let mut run = new_run(&def, "default", None);
    run.labels.insert("app".into(), "payments-api".into());
    run.labels.insert("role".into(), "db".into());
    let s = engine.submit(&run, &def).await.expect("submit");
    server.wait_for_job(&s.engine_ref).await;
    server.start_pod(&s.engine_ref);
    // A Service or NetworkPolicy selecting app=payments-api must not match.
    assert!(server.jobs_labeled("app", "payments-api").is_empty());
    assert_eq!(
        server.jobs_labeled("user.flotilla.io/app", "payments-api"),
        std::slice::from_ref(&s.engine_ref)
    );
    let pods = server.pods_of(&s.engine_ref);
    assert!(!pods.is_empty(), "the fake kubelet made a pod");
    for pod in pods {
        let labels = &pod["metadata"]["labels"];
        assert!(labels.get("app").is_none(), "bare label on pod: {labels}");
        assert!(labels.get("role").is_none(), "bare label on pod: {labels}");
        assert_eq!(labels["user.flotilla.io/app"], "payments-api");
        assert_eq!(labels["user.flotilla.io/role"], "db");
    }
}
