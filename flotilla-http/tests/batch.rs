//! kubernetes-task-runner's `/batch/` API on a real socket, over real local
//! processes: its envelope, shapes, statuses and errors.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{TestServer, start};
use flotilla::artifacts::{ZipLimits, zip};
use serde_json::{Value, json};

async fn call(s: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = s
        .http
        .request(method.parse().expect("method"), format!("{}{path}", s.url));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    s.send(req).await
}

async fn wait_for(s: &TestServer, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, reply) = call(s, "GET", &format!("/batch/{id}"), None).await;
        assert_eq!(code, 200, "{reply}");
        if reply["data"]["status"] == status {
            return reply["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {status}: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn envelope_ok(reply: &Value) {
    let keys: Vec<&str> = reply
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["data", "error", "msg", "result"], "{reply}");
    assert_eq!(reply["result"], true, "{reply}");
    assert_eq!(reply["error"], "", "{reply}");
}

fn ids(reply: &Value) -> Vec<String> {
    reply["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_job_runs_with_its_input_and_ends_succeeded_with_an_output_file_url() {
    let s = start().await;
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::write(src.path().join("features.csv"), "x\n1\n").expect("write");
    let zip = zip::pack(src.path(), &ZipLimits::default()).expect("pack");
    let body = json!({
        "job_parameters": {
            "docker_image": "registry.example.com/ds/Train:1.2",
            "environment_variables": {"GREETING": "hi"},
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
            "input_zip": base64::engine::general_purpose::STANDARD.encode(zip),
            "command": "sleep 0.3; (cat \"$FLOTILLA_INPUT_DIR/features.csv\"; echo \"$GREETING\") > \"$FLOTILLA_OUTPUT_DIR/model.txt\""
        }
    });
    let (code, reply) = call(&s, "POST", "/batch/", Some(body)).await;
    assert_eq!(code, 200, "{reply}");
    envelope_ok(&reply);
    let job = &reply["data"];
    let id = job["id"].as_str().expect("id").to_string();
    let name = job["name"].as_str().expect("name");
    assert!(
        name.starts_with("registry-example-com-ds-train-1-2-"),
        "a name from the image: {name}"
    );
    assert_eq!(job["status"], "created", "{job}");
    assert!(
        job["created"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000),
        "ms: {job}"
    );
    assert_eq!(job["start_time"], Value::Null);
    assert_eq!(job["stop_time"], Value::Null);
    assert_eq!(job["output_file_url"], Value::Null);
    let params = &job["job_parameters"];
    assert_eq!(params["docker_image"], "registry.example.com/ds/Train:1.2");
    assert_eq!(params["environment_variables"], json!({"GREETING": "hi"}));
    assert_eq!(
        params["resources"],
        json!({"limits": {"cpu": "500m", "memory": "128Mi"}}),
        "the limits win"
    );

    let running = wait_for(&s, &id, "running").await;
    assert!(running["start_time"].as_i64().is_some(), "{running}");
    let (code, listed) = call(&s, "GET", "/batch/", None).await;
    assert_eq!(code, 200);
    envelope_ok(&listed);
    assert_eq!(
        ids(&listed),
        std::slice::from_ref(&id),
        "running is the default filter"
    );

    let done = wait_for(&s, &id, "succeeded").await;
    assert!(done["stop_time"].as_i64().is_some(), "{done}");
    let url = done["output_file_url"].as_str().expect("output_file_url");
    assert!(
        url.ends_with(&format!("runs/{id}/attempt-1/output.zip")),
        "{url}"
    );
    let (_, listed) = call(&s, "GET", "/batch/?status=succeeded", None).await;
    assert_eq!(ids(&listed), std::slice::from_ref(&id));
    let (_, listed) = call(&s, "GET", "/batch/?status=running", None).await;
    assert!(ids(&listed).is_empty(), "{listed}");
    let zip = s
        .http
        .get(s.api(&format!("/{id}/output")))
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("body");
    let out = tempfile::tempdir().expect("tempdir");
    zip::unpack(&zip, out.path(), &ZipLimits::default()).expect("zip");
    assert_eq!(
        std::fs::read_to_string(out.path().join("model.txt")).expect("model"),
        "x\n1\nhi\n"
    );

    // The local engine runs commands: a job without one fails.
    let (code, reply) = call(
        &s,
        "POST",
        "/batch/",
        Some(json!({"name": "no-command", "job_parameters": {"docker_image": "busybox"}})),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["data"]["name"], "no-command");
    let failed_id = reply["data"]["id"].as_str().expect("id").to_string();
    wait_for(&s, &failed_id, "failed").await;
    let (_, listed) = call(&s, "GET", "/batch/?status=failed", None).await;
    assert_eq!(ids(&listed), [failed_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_running_job_kills_it_and_stopping_it_again_is_a_400() {
    let s = start().await;
    let (code, reply) = call(
        &s,
        "POST",
        "/batch/",
        Some(json!({"job_parameters": {"docker_image": "busybox", "command": "sleep 60"}})),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    let id = reply["data"]["id"].as_str().expect("id").to_string();
    wait_for(&s, &id, "running").await;
    let (code, reply) = call(&s, "DELETE", &format!("/batch/{id}"), None).await;
    assert_eq!(code, 200, "{reply}");
    envelope_ok(&reply);
    assert!(
        reply["msg"]
            .as_str()
            .is_some_and(|m| m.contains("successfully deleted")),
        "{reply}"
    );
    wait_for(&s, &id, "killed").await;
    let (_, listed) = call(&s, "GET", "/batch/?status=killed", None).await;
    assert_eq!(ids(&listed), std::slice::from_ref(&id));
    let (code, reply) = call(&s, "DELETE", &format!("/batch/{id}"), None).await;
    assert_eq!(code, 400, "{reply}");
    assert_eq!(reply["result"], false);
    assert_eq!(reply["error"], "InvalidParameters");
    assert_eq!(
        reply["msg"],
        format!("Can't stop batch job {id}. Status is: killed.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_parameters_are_a_400_with_a_map_of_the_bad_fields() {
    let s = start().await;
    let (code, reply) = call(
        &s,
        "POST",
        "/batch/",
        Some(json!({
            "name": "Bad_Name",
            "job_parameters": {
                "environment_variables": {"A": 5},
                "resources": {"limits": {"cpu": "lots", "gpu": "1"}, "other": {}},
                "input_zip": 7
            }
        })),
    )
    .await;
    assert_eq!(code, 400, "{reply}");
    assert_eq!(reply["result"], false);
    assert_eq!(reply["error"], "InvalidParameters");
    let fields: Vec<&str> = reply["data"]
        .as_object()
        .expect("a field map")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "job_parameters.docker_image",
            "job_parameters.environment_variables",
            "job_parameters.input_zip",
            "job_parameters.resources.limits.cpu",
            "job_parameters.resources.limits.gpu",
            "job_parameters.resources.other",
            "name",
        ],
        "{reply}"
    );
    for (body, field) in [
        (
            json!({"job_parameters": "not parameters"}),
            "job_parameters",
        ),
        (json!({}), "job_parameters"),
        (
            json!({"job_parameters": {"docker_image": "x", "input_zip": "%%%"}}),
            "job_parameters.input_zip",
        ),
        (
            json!({"job_parameters": {"docker_image": "x", "environment_variables": {"FLOTILLA_RUN_ID": "x"}}}),
            "job_parameters.environment_variables",
        ),
    ] {
        let (code, reply) = call(&s, "POST", "/batch/", Some(body.clone())).await;
        assert_eq!(code, 400, "{body}: {reply}");
        assert_eq!(reply["error"], "InvalidParameters");
        assert!(reply["data"].get(field).is_some(), "{field} in {reply}");
    }
    let (code, reply) = call(&s, "GET", "/batch/?status=bogus", None).await;
    assert_eq!(code, 400, "{reply}");
    assert!(reply["data"]["status"].is_string(), "{reply}");
    let (code, reply) = call(&s, "GET", "/batch/no-such-job", None).await;
    assert_eq!(code, 404);
    assert_eq!(reply["error"], "DoesNotExist");
    assert_eq!(reply["msg"], "Batch job no-such-job not found.");
    // A run that is not a batch job is not one here either.
    s.define("plain", "true").await;
    let run = s.execute("plain", "me").await;
    let run_id = run["run_id"].as_str().expect("run_id");
    let (code, _) = call(&s, "GET", &format!("/batch/{run_id}"), None).await;
    assert_eq!(code, 404);
    let (code, _) = call(&s, "DELETE", &format!("/batch/{run_id}"), None).await;
    assert_eq!(code, 404);
}
