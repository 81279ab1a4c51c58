//! Artifacts on the real dockerd: the input zip bind-mounted read-only at
//! `/input`, what the container writes to `/output` uploaded once as the
//! attempt's output zip before its end is reported.

mod common;

use flotilla::artifacts::{Artifacts, ZipLimits, zip};
use flotilla::{Engine, FailureCategory};

/// An engine with artifacts in a fresh directory, on the test daemon.
struct Setup {
    image: String,
    dir: tempfile::TempDir,
    artifacts: Artifacts,
    prefix: String,
    config: flotilla_docker::DockerConfig,
    engine: flotilla_docker::DockerEngine,
}

async fn setup() -> Option<Setup> {
    let (host, image) = common::docker()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let artifacts = Artifacts::local(dir.path().join("artifacts")).expect("artifacts");
    let prefix = format!("art{}", common::token());
    let config =
        common::config(&host, &dir.path().join("docker"), &prefix).artifacts(artifacts.clone());
    let engine = flotilla_docker::DockerEngine::connect(config.clone())
        .await
        .expect("engine");
    Some(Setup {
        image,
        dir,
        artifacts,
        prefix,
        config,
        engine,
    })
}

async fn staged(artifacts: &Artifacts, run_id: &str) -> String {
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::write(src.path().join("in.txt"), "from the input zip\n").expect("write");
    let zip = zip::pack(src.path(), artifacts.limits()).expect("pack");
    artifacts.stage_input(run_id, zip).await.expect("stage")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_reads_input_and_its_output_is_uploaded_once() {
    let Some(Setup {
        image,
        dir,
        artifacts,
        prefix,
        config,
        engine,
    }) = setup().await
    else {
        return;
    };
    assert!(engine.capabilities().artifacts);
    let cmd = r#"cat /input/in.txt > /output/copy.txt; echo "$FLOTILLA_INPUT_DIR $FLOTILLA_OUTPUT_DIR" > /output/dirs.txt; (: > /input/written) 2>/dev/null && echo writable > /output/ro.txt || echo read-only > /output/ro.txt"#;
    let (mut run, def) = common::new_run(&image, cmd);
    run.input_url = Some(staged(&artifacts, &run.run_id).await);
    engine.submit(&run, &def).await.expect("submit");
    let u = common::wait_stopped(&engine, &run).await;
    assert_eq!((u.exit_code, u.failure), (Some(0), None), "{u:?}");
    let url = u.output_url.clone().expect("output_url");
    let body = artifacts.get(&url, 1 << 20).await.expect("output zip");
    let out = dir.path().join("out");
    zip::unpack(&body, &out, &ZipLimits::default()).expect("unpack");
    let read = |f: &str| std::fs::read_to_string(out.join(f)).expect(f);
    assert_eq!(read("copy.txt"), "from the input zip\n");
    assert_eq!(read("dirs.txt"), "/input /output\n");
    assert_eq!(read("ro.txt"), "read-only\n");
    let object = dir
        .path()
        .join("artifacts/runs")
        .join(&run.run_id)
        .join("attempt-1/output.zip");
    let written = std::fs::metadata(&object)
        .expect("object")
        .modified()
        .expect("mtime");

    // Another engine object on the same data dir reports the same URL
    // without uploading again, before and after the clean-up.
    let again = flotilla_docker::DockerEngine::connect(config)
        .await
        .expect("engine");
    let u = common::wait_stopped(&again, &run).await;
    assert_eq!(u.output_url.as_deref(), Some(url.as_str()));
    again.finished(&run).await.expect("finished");
    let u = common::wait_stopped(&again, &run).await;
    assert_eq!(
        u.output_url.as_deref(),
        Some(url.as_str()),
        "from the outcome"
    );
    assert_eq!(
        std::fs::metadata(&object)
            .expect("object")
            .modified()
            .expect("mtime"),
        written,
        "uploaded once"
    );
    common::remove_all(engine.docker(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_container_uploads_unless_the_run_skips_failed_outputs() {
    let Some(Setup {
        image,
        artifacts: _,
        prefix,
        engine,
        ..
    }) = setup().await
    else {
        return;
    };
    let cmd = "echo partial > /output/debug.txt; exit 4";
    let (run, def) = common::new_run(&image, cmd);
    engine.submit(&run, &def).await.expect("submit");
    let u = common::wait_stopped(&engine, &run).await;
    assert_eq!(u.failure, Some(FailureCategory::AppExit), "{u:?}");
    assert!(
        u.output_url.is_some(),
        "failed runs upload by default: {u:?}"
    );

    let (mut run, def) = common::new_run(&image, cmd);
    run.skip_failed_output = true;
    engine.submit(&run, &def).await.expect("submit");
    let u = common::wait_stopped(&engine, &run).await;
    assert_eq!(u.failure, Some(FailureCategory::AppExit), "{u:?}");
    assert_eq!(u.output_url, None, "{u:?}");
    common::remove_all(engine.docker(), &prefix).await;
}
