//! Building `EksEngine` from settings: kubeconfig file and context, API
//! URL, bad settings, and the settings' serde defaults.

mod support;

use flotilla::{Engine, ErrorKind, NewDefinition};
use flotilla_eks::{EksCluster, EksEngine, EksSettings, S3LogSettings};
use support::{FakeApiServer, new_run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_file_and_context_reach_the_cluster() {
    let server = FakeApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             - name: nowhere\n  cluster:\n    server: http://127.0.0.1:9\n\
             contexts:\n- name: fake-ctx\n  context:\n    cluster: fake\n    user: nobody\n\
             - name: other\n  context:\n    cluster: nowhere\n    user: nobody\n\
             current-context: other\nusers:\n- name: nobody\n  user: {{}}\n",
            server.url()
        ),
    )
    .expect("write kubeconfig");
    let settings = EksSettings {
        namespace: "flotilla".into(),
        clusters: vec![
            EksCluster {
                name: "from-file".into(),
                kubeconfig: Some(path.clone()),
                context: Some("fake-ctx".into()),
                namespace: Some("team-a".into()),
                service_account: Some("team-a-runner".into()),
                ..EksCluster::default()
            },
            EksCluster {
                name: "by-url".into(),
                api_url: Some(server.url().to_string()),
                ..EksCluster::default()
            },
        ],
        ..EksSettings::default()
    };
    let engine = EksEngine::new(settings).await.expect("engine");
    assert_eq!(engine.cluster_names(), ["by-url", "from-file"]);
    let def = NewDefinition::new("cfg", "busybox:1").into_definition();
    for (cluster, ns, sa) in [
        ("from-file", "team-a", Some("team-a-runner")),
        ("by-url", "flotilla", None),
    ] {
        let run = new_run(&def, cluster, None);
        let s = engine.submit(&run, &def).await.expect("submit");
        let job = server.wait_for_job(&s.engine_ref).await;
        assert_eq!(job["metadata"]["namespace"], ns);
        assert_eq!(
            job["spec"]["template"]["spec"]["serviceAccountName"].as_str(),
            sa
        );
    }
    // A run on a cluster the engine does not serve is rejected for good.
    let run = new_run(&def, "elsewhere", None);
    let e = engine
        .submit(&run, &def)
        .await
        .expect_err("unknown cluster");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("elsewhere"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_named() {
    let missing = EksSettings {
        clusters: vec![EksCluster {
            name: "c1".into(),
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            ..EksCluster::default()
        }],
        ..EksSettings::default()
    };
    let e = EksEngine::new(missing).await.expect_err("missing file");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("clusters[c1]"), "{e}");
    let e = EksEngine::new(EksSettings::default())
        .await
        .expect_err("no clusters");
    assert!(e.message().contains("clusters"), "{e}");
    let server = FakeApiServer::start().await;
    let e = EksEngine::with_clients(
        EksSettings::default(),
        [
            ("a".to_string(), server.client()),
            ("a".to_string(), server.client()),
        ],
    )
    .expect_err("twice");
    assert!(e.message().contains("twice"), "{e}");
}

#[test]
fn settings_have_serde_defaults() {
    let s: EksSettings = serde_json::from_str(
        r#"{"clusters": [{"name": "prod", "context": "arn:aws:eks:us-east-1:1:cluster/prod"}],
            "namespace": "batch"}"#,
    )
    .expect("parse");
    assert_eq!(s.engine_name, "eks");
    assert_eq!(s.capacity_type_label, "karpenter.sh/capacity-type");
    assert_eq!(s.ttl_seconds, 3600);
    assert_eq!(s.clusters[0].kubeconfig, None);
    let l: S3LogSettings = serde_json::from_str(r#"{"bucket": "logs"}"#).expect("parse");
    assert_eq!(l.prefix, "flotilla");
    assert_eq!(l.complete_after_seconds, 30);
}
