//! Artifacts end to end through the service and the local engine: real
//! processes read their input zip and their output comes back as a zip in
//! the local artifact store.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use flotilla::artifacts::{ZipLimits, zip};
use flotilla::{
    ErrorKind, ExecuteRequest, FailureCategory, Flotilla, FlotillaHandle, NewDefinition, Run,
};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(60);

struct Env {
    flotilla: Flotilla,
    handle: Option<FlotillaHandle>,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let flotilla = Flotilla::builder()
            .build_local(dir.path().join("data"))
            .expect("build");
        let handle = Some(flotilla.start());
        Env {
            flotilla,
            handle,
            dir,
        }
    }

    async fn run(&self, def: NewDefinition, request: ExecuteRequest) -> Run {
        let def = self.flotilla.define(def).await.expect("define");
        let run = self
            .flotilla
            .execute(&def.definition_id, request)
            .await
            .expect("execute");
        self.flotilla
            .wait_for_stop(&run.run_id, WAIT)
            .await
            .expect("stopped")
    }

    async fn output(&self, run: &Run) -> tempfile::TempDir {
        let (size, mut stream) = self
            .flotilla
            .open_output(&run.run_id)
            .await
            .expect("output");
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(body.len() as u64, size);
        let out = tempfile::tempdir().expect("tempdir");
        zip::unpack(&body, out.path(), &ZipLimits::default()).expect("a zip");
        out
    }

    async fn events(&self, run: &Run) -> String {
        let events = self.flotilla.run_events(&run.run_id).await.expect("events");
        events
            .iter()
            .filter_map(|e| e.reason.clone())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.cancellation().cancel();
        }
    }
}

fn input_zip(files: &[(&str, &str)]) -> String {
    let src = tempfile::tempdir().expect("tempdir");
    for (name, body) in files {
        let p = src.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, body).expect("write");
    }
    let zip = zip::pack(src.path(), &ZipLimits::default()).expect("pack");
    base64::engine::general_purpose::STANDARD.encode(zip)
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const UPPER: &str = r#"tr a-z A-Z < "$FLOTILLA_INPUT_DIR/data/in.txt" > "$FLOTILLA_OUTPUT_DIR/out.txt" && mkdir "$FLOTILLA_OUTPUT_DIR/sub" && ls "$FLOTILLA_INPUT_DIR" > "$FLOTILLA_OUTPUT_DIR/sub/listing""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reads_its_input_zip_and_its_output_comes_back_as_a_zip() {
    let env = Env::new();
    let mut request = ExecuteRequest::owned_by("me");
    request.input_zip = Some(input_zip(&[("data/in.txt", "hello input\n")]));
    let run = env
        .run(NewDefinition::new("upper", "img").command(UPPER), request)
        .await;
    assert!(run.succeeded(), "{run:?}");
    let input_url = run.input_url.clone().expect("input_url recorded");
    assert!(input_url.starts_with("file://"), "{input_url}");
    assert!(input_url.ends_with(&format!("runs/{}/input.zip", run.run_id)));
    let url = run.output_url.clone().expect("output_url");
    assert!(
        url.ends_with(&format!("runs/{}/attempt-1/output.zip", run.run_id)),
        "{url}"
    );
    let out = env.output(&run).await;
    assert_eq!(read(out.path(), "out.txt"), "HELLO INPUT\n");
    assert_eq!(read(out.path(), "sub/listing"), "data\n");
    let timeline = env.events(&run).await;
    assert!(timeline.contains("staged at"), "{timeline}");
    assert!(
        timeline.contains(&format!("output uploaded to {url}")),
        "{timeline}"
    );
    assert!(env.dir.path().join("data/artifacts/runs").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_uploads_its_output_unless_its_definition_says_not_to() {
    let env = Env::new();
    let cmd = r#"echo partial > "$FLOTILLA_OUTPUT_DIR/debug.txt"; exit 3"#;
    let run = env
        .run(
            NewDefinition::new("fails", "img").command(cmd),
            ExecuteRequest::owned_by("me"),
        )
        .await;
    assert_eq!(run.exit_code, Some(3));
    assert_eq!(run.failure, Some(FailureCategory::AppExit));
    let out = env.output(&run).await;
    assert_eq!(read(out.path(), "debug.txt"), "partial\n");

    let mut def = NewDefinition::new("fails-quietly", "img").command(cmd);
    def.skip_failed_output = true;
    let run = env.run(def, ExecuteRequest::owned_by("me")).await;
    assert_eq!(run.exit_code, Some(3));
    assert_eq!(run.output_url, None, "{run:?}");
    let e = env
        .flotilla
        .open_output(&run.run_id)
        .await
        .err()
        .expect("no output");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_writes_nothing_has_no_output() {
    let env = Env::new();
    let run = env
        .run(
            NewDefinition::new("quiet", "img").command("true"),
            ExecuteRequest::owned_by("me"),
        )
        .await;
    assert!(run.succeeded());
    assert_eq!(run.output_url, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_on_execute_naming_the_field() {
    let env = Env::new();
    let def = env
        .flotilla
        .define(NewDefinition::new("x", "img").command("true"))
        .await
        .expect("define");
    let traversal = {
        let mut w = ::zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("../escape", ::zip::write::SimpleFileOptions::default())
            .expect("start");
        std::io::Write::write_all(&mut w, b"x").expect("write");
        base64::engine::general_purpose::STANDARD.encode(w.finish().expect("zip").into_inner())
    };
    let cases = [
        (Some("%%%".to_string()), None, "input_zip: not valid base64"),
        (Some(traversal), None, "contains '..'"),
        (
            None,
            Some("http://169.254.169.254/latest/meta-data".to_string()),
            "not inside a configured artifact store",
        ),
        (
            Some(input_zip(&[("a", "b")])),
            Some("file:///x".to_string()),
            "not both",
        ),
    ];
    for (zip, url, needle) in cases {
        let mut request = ExecuteRequest::owned_by("me");
        request.input_zip = zip;
        request.input_url = url;
        let e = env
            .flotilla
            .execute(&def.definition_id, request)
            .await
            .expect_err(needle);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.message().contains(needle), "{needle:?} not in {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_url_in_the_store_is_fetched_for_a_second_run() {
    let env = Env::new();
    let mut request = ExecuteRequest::owned_by("me");
    request.input_zip = Some(input_zip(&[("data/in.txt", "shared\n")]));
    let first = env
        .run(NewDefinition::new("upper", "img").command(UPPER), request)
        .await;
    let mut request = ExecuteRequest::owned_by("me");
    request.input_url = first.input_url.clone();
    let second = env
        .run(NewDefinition::new("upper2", "img").command(UPPER), request)
        .await;
    assert!(second.succeeded(), "{second:?}");
    assert_eq!(second.input_url, first.input_url);
    let out = env.output(&second).await;
    assert_eq!(read(out.path(), "out.txt"), "SHARED\n");
}
