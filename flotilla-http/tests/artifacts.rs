//! Artifacts over HTTP on a real socket: execute with an input zip, the
//! job (a real local process) reads it and writes its output, and
//! `GET /api/v6/{run_id}/output` streams the output zip back — with the
//! local filesystem store, with S3 on moto (`FLOTILLA_TEST_AWS_ENDPOINT`),
//! Google Cloud Storage on its emulator (`FLOTILLA_TEST_GCS_ENDPOINT`) and
//! Azure Blob Storage on Azurite (`FLOTILLA_TEST_AZURE_ENDPOINT`; both from
//! `test-support/objstores/start.sh`).

mod common;

use base64::Engine as _;
use common::{TestServer, start_with};
use flotilla::artifacts::{ZipLimits, zip};
use flotilla_http::config::TokenConfig;
use flotilla_http::{AuthMode, Config};
use serde_json::json;

const JOB: &str = r#"wc -l < "$FLOTILLA_INPUT_DIR/rows.csv" > "$FLOTILLA_OUTPUT_DIR/count.txt" && cp -r "$FLOTILLA_INPUT_DIR/nested" "$FLOTILLA_OUTPUT_DIR/""#;

fn input_zip_b64() -> String {
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::write(src.path().join("rows.csv"), "a\nb\nc\n").expect("write");
    std::fs::create_dir(src.path().join("nested")).expect("mkdir");
    std::fs::write(src.path().join("nested/model.bin"), [0u8, 1, 2, 255]).expect("write");
    let zip = zip::pack(src.path(), &ZipLimits::default()).expect("pack");
    base64::engine::general_purpose::STANDARD.encode(zip)
}

/// Runs the job with the input zip and checks the downloaded output;
/// returns the stopped run.
async fn round_trip(s: &TestServer, token: Option<&str>) -> serde_json::Value {
    let auth = |r: reqwest::RequestBuilder| match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let (code, def) = s
        .send(
            auth(s.http.post(s.api("/task"))).body(
                json!({"alias": "count-rows", "image": "busybox", "command": JOB}).to_string(),
            ),
        )
        .await;
    assert_eq!(code, 200, "{def}");
    let body = json!({"run_tags": {"owner_id": "alice"}, "input_zip": input_zip_b64()});
    let (code, run) = s
        .send(auth(s.http.put(s.api("/task/alias/count-rows/execute"))).body(body.to_string()))
        .await;
    assert_eq!(code, 200, "{run}");
    let run_id = run["run_id"].as_str().expect("run_id").to_string();
    assert!(run["input_url"].as_str().is_some(), "{run}");
    let run = loop {
        let (_, r) = s
            .send(auth(s.http.get(s.api(&format!("/history/{run_id}")))))
            .await;
        if r["status"] == "STOPPED" {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(run["exit_code"], 0, "{run}");
    let output_url = run["output_url"].as_str().expect("output_url");
    assert!(
        output_url.ends_with(&format!("runs/{run_id}/attempt-1/output.zip")),
        "{output_url}"
    );
    let resp = auth(s.http.get(s.api(&format!("/{run_id}/output"))))
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/zip");
    let body = resp.bytes().await.expect("body");
    let out = tempfile::tempdir().expect("tempdir");
    zip::unpack(&body, out.path(), &ZipLimits::default()).expect("a zip");
    assert_eq!(
        std::fs::read_to_string(out.path().join("count.txt")).expect("count"),
        "3\n"
    );
    assert_eq!(
        std::fs::read(out.path().join("nested/model.bin")).expect("model"),
        [0u8, 1, 2, 255]
    );
    let (_, events) = s
        .send(auth(s.http.get(s.api(&format!("/{run_id}/events")))))
        .await;
    let text = events.to_string();
    assert!(text.contains("staged at"), "{text}");
    assert!(text.contains("output uploaded to"), "{text}");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_zip_goes_in_and_the_output_zip_comes_back_over_http() {
    let s = start_with(|_| {}).await;
    let run = round_trip(&s, None).await;
    assert!(
        run["output_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("file://")),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_is_authorized_like_the_logs() {
    let s = start_with(|c: &mut Config| {
        c.auth = AuthMode::Tokens;
        c.tokens = vec![TokenConfig {
            token: "alice-secret".into(),
            owner: "alice".into(),
            ..Default::default()
        }];
    })
    .await;
    let run = round_trip(&s, Some("alice-secret")).await;
    let run_id = run["run_id"].as_str().expect("run_id");
    for path in [format!("/{run_id}/output"), format!("/{run_id}/logs")] {
        let (code, body) = s.send(s.http.get(s.api(&path))).await;
        assert_eq!(code, 401, "{path} without a token: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_a_400_naming_the_field_and_a_missing_output_a_404() {
    let s = start_with(|_| {}).await;
    s.define("plain", "true").await;
    for (body, needle) in [
        (json!({"input_zip": "%%%"}), "input_zip: not valid base64"),
        (
            json!({"input_zip": base64::engine::general_purpose::STANDARD.encode(b"not a zip")}),
            "input zip: not a zip archive",
        ),
        (
            json!({"input_url": "http://169.254.169.254/latest/meta-data"}),
            "input_url",
        ),
        (json!({"input_zip": 5}), "input_zip"),
    ] {
        let mut body = body;
        body["run_tags"] = json!({"owner_id": "me"});
        let (code, err) = s.put("/task/alias/plain/execute", &body).await;
        assert_eq!(code, 400, "{body}: {err}");
        let msg = err["error"].as_str().expect("error");
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }
    let run = s.execute("plain", "me").await;
    let run_id = run["run_id"].as_str().expect("run_id");
    s.wait_stopped(run_id).await;
    let (code, err) = s.get(&format!("/{run_id}/output")).await;
    assert_eq!(code, 404, "{err}");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("no output"))
    );
    let (code, _) = s.get("/no-such-run/output").await;
    assert_eq!(code, 404);
}

/// The endpoint in `var`, or `None` (and a skip) outside CI; in CI a
/// missing service fails the test.
fn service(var: &str, start: &str) -> Option<String> {
    flotilla_http::install_crypto_provider();
    match std::env::var(var) {
        Ok(v) => Some(v),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "{var} is not set (start it: {start})"
            );
            eprintln!("skipped: {var} is not set");
            None
        }
    }
}

/// A fresh bucket-like name for one test.
fn unique(prefix: &str) -> String {
    let name = format!("{prefix}-{}", flotilla::model::new_id().replace('-', ""));
    name[..name.len().min(60)].to_string()
}

/// Runs the round trip on a server whose store is `url` (set up by
/// `configure`), checks the run's URLs and reads the output back from the
/// bucket with a client of its own (`reader`).
async fn outputs_reach(
    url: &str,
    configure: impl FnOnce(&mut Config),
    reader: flotilla::artifacts::ArtifactStore,
) {
    let s = start_with(|c: &mut Config| {
        c.artifacts.url = Some(url.to_string());
        configure(c);
    })
    .await;
    let run = round_trip(&s, None).await;
    let run_id = run["run_id"].as_str().expect("run_id");
    let output_url = format!("{url}/runs/{run_id}/attempt-1/output.zip");
    assert_eq!(run["output_url"].as_str(), Some(output_url.as_str()));
    assert_eq!(
        run["input_url"].as_str(),
        Some(format!("{url}/runs/{run_id}/input.zip").as_str())
    );
    let body = flotilla::artifacts::Artifacts::new(reader)
        .get(&output_url, 1 << 20)
        .await
        .expect("the object");
    let out = tempfile::tempdir().expect("tempdir");
    zip::unpack(&body, out.path(), &ZipLimits::default()).expect("a zip");
    assert_eq!(
        std::fs::read_to_string(out.path().join("count.txt")).expect("count.txt"),
        "3\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_go_to_s3_on_moto() {
    let Some(endpoint) = service("FLOTILLA_TEST_AWS_ENDPOINT", "test-support/moto/start.sh") else {
        return;
    };
    let bucket = unique("flotilla-art");
    let made = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("create bucket");
    assert!(made.status().is_success(), "{:?}", made.text().await);
    let url = format!("s3://{bucket}/jobs");
    let options = flotilla::artifacts::S3Options {
        endpoint: Some(endpoint.clone()),
        credentials: Some(("test".into(), "test".into())),
        ..Default::default()
    };
    let reader = flotilla::artifacts::ArtifactStore::s3(&format!("s3://{bucket}"), options)
        .expect("s3 store");
    outputs_reach(
        &url,
        |c| {
            c.artifacts.endpoint = Some(endpoint.clone());
            c.artifacts.access_key_id = Some("test".into());
            c.artifacts.secret_access_key = Some("test".into());
        },
        reader,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_go_to_google_cloud_storage_on_its_emulator() {
    let Some(endpoint) = service(
        "FLOTILLA_TEST_GCS_ENDPOINT",
        "test-support/objstores/start.sh",
    ) else {
        return;
    };
    let bucket = unique("flotilla-art");
    let made = reqwest::Client::new()
        .post(format!("{endpoint}/storage/v1/b"))
        .body(json!({ "name": bucket }).to_string())
        .header("content-type", "application/json")
        .send()
        .await
        .expect("create bucket");
    assert!(made.status().is_success(), "{:?}", made.text().await);
    // The emulator takes no OAuth: a service account key saying so, as
    // object_store documents for emulators.
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.json");
    std::fs::write(
        &key,
        json!({"private_key": "", "private_key_id": "", "client_email": "", "disable_oauth": true})
            .to_string(),
    )
    .expect("write key");
    let key = key.display().to_string();
    let url = format!("gs://{bucket}/jobs");
    let reader = flotilla::artifacts::ArtifactStore::gcs(
        &format!("gs://{bucket}"),
        flotilla::artifacts::GcsOptions {
            endpoint: Some(endpoint.clone()),
            service_account_path: Some(key.clone()),
        },
    )
    .expect("gcs store");
    outputs_reach(
        &url,
        |c| {
            c.artifacts.endpoint = Some(endpoint.clone());
            c.artifacts.gcs_service_account_path = Some(key.clone());
        },
        reader,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_go_to_azure_blob_storage_on_azurite() {
    let Some(endpoint) = service(
        "FLOTILLA_TEST_AZURE_ENDPOINT",
        "test-support/objstores/start.sh",
    ) else {
        return;
    };
    // Azurite's published development account; start.sh made the
    // container. Each test writes under a prefix of its own.
    const ACCOUNT: &str = "devstoreaccount1";
    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let url = format!("az://flotilla-test/{}", unique("jobs"));
    let reader = flotilla::artifacts::ArtifactStore::azure(
        "az://flotilla-test",
        flotilla::artifacts::AzureOptions {
            account: Some(ACCOUNT.into()),
            access_key: Some(KEY.into()),
            endpoint: Some(endpoint.clone()),
        },
    )
    .expect("azure store");
    outputs_reach(
        &url,
        |c| {
            c.artifacts.endpoint = Some(endpoint.clone());
            c.artifacts.azure_account = Some(ACCOUNT.into());
            c.artifacts.azure_access_key = Some(KEY.into());
        },
        reader,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_artifacts_commands_pull_an_input_and_push_an_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = flotilla::artifacts::Artifacts::local(dir.path().join("store")).expect("store");
    let base = store.default_store().url().to_string();
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(src.path().join("d")).expect("mkdir");
    std::fs::write(src.path().join("d/in.txt"), "pulled\n").expect("write");
    let input = store
        .put(
            "in/input.zip",
            zip::pack(src.path(), &ZipLimits::default()).expect("pack"),
        )
        .await
        .expect("put");
    let evil = {
        let mut w = ::zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("../evil", ::zip::write::SimpleFileOptions::default())
            .expect("start");
        std::io::Write::write_all(&mut w, b"x").expect("write");
        w.finish().expect("zip").into_inner()
    };
    let evil = store.put("in/evil.zip", evil).await.expect("put");
    let data = dir.path().join("data");
    let flotilla = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"));
        c.args(args)
            .env_remove("FLOTILLA_CONFIG")
            .env("FLOTILLA_ARTIFACTS__URL", &base)
            .env("FLOTILLA_DATA_DIR", &data)
            .env("RUST_LOG", "warn");
        c.output().expect("flotilla runs")
    };
    let pulled = dir.path().join("pulled");
    let pulled_s = pulled.to_string_lossy().to_string();
    let out = flotilla(&["artifacts", "pull", &input, &pulled_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(pulled.join("d/in.txt")).expect("pulled"),
        "pulled\n"
    );
    let target = format!("{base}/out/output.zip");
    let out = flotilla(&["artifacts", "push", &pulled_s, &target]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = store.get(&target, 1 << 20).await.expect("pushed");
    let back = tempfile::tempdir().expect("tempdir");
    zip::unpack(&body, back.path(), &ZipLimits::default()).expect("zip");
    assert_eq!(
        std::fs::read_to_string(back.path().join("d/in.txt")).expect("back"),
        "pulled\n"
    );
    for (url, needle) in [
        (
            "http://169.254.169.254/latest/meta-data".to_string(),
            "not inside a configured artifact store",
        ),
        (evil, "contains '..'"),
    ] {
        let out = flotilla(&["artifacts", "pull", &url, &pulled_s]);
        assert_eq!(out.status.code(), Some(2), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert!(!dir.path().join("evil").exists());
}
