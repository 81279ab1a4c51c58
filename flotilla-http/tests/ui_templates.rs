//! The templates pages in real headless Chromium against a real server with
//! the local engine: the run form is generated from the template's JSON
//! Schema (types, required fields, enums, defaults), schema errors show
//! beside their fields, and a submitted run is followed to STOPPED.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver`; with `CI` set
//! their absence fails.

mod ui_support;

use serde_json::json;
use ui_support::{BROWSER_LOCK, Browser, browser_binaries, server_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_form_from_its_schema_shows_errors_by_field_and_runs_to_stopped() {
    let Some((chromium, driver)) = browser_binaries() else {
        return;
    };
    let _serial = BROWSER_LOCK.lock().await;
    let srv = server_with(|_| {}).await;
    let template = json!({
        "template_name": "ui-report",
        "image": "ubuntu:latest",
        "schema": {
            "type": "object",
            "required": ["dataset", "rows"],
            "properties": {
                "dataset": {"type": "string", "minLength": 1, "description": "What to report on."},
                "rows": {"type": "integer", "minimum": 1, "maximum": 100},
                "format": {"type": "string", "enum": ["csv", "json"]},
                "verbose": {"type": "boolean"},
                "columns": {"type": "array", "items": {"type": "string"}}
            }
        },
        "defaults": {"format": "json", "columns": ["id", "name"]},
        "command_template": "echo report {{ .dataset | upper }} rows={{ .rows }} format={{ .format }} cols={{ join \",\" .columns }}{{ if .verbose }} verbose{{ end }}"
    });
    let resp = srv
        .http
        .post(format!("{}/api/v7/template", srv.url))
        .body(template.to_string())
        .send()
        .await
        .expect("create template");
    assert_eq!(resp.status().as_u16(), 200);
    let b = Browser::start("templates", &chromium, &driver).await;

    // The list links to the template.
    b.goto(&format!("{}/templates", srv.url)).await;
    b.wait_text("#templates-table", "ui-report").await;
    b.screenshot("templates").await;
    b.click("[data-template=ui-report] a").await;
    b.wait_path("^/templates/tpl-").await;
    b.wait_text("#template-name", "ui-report v1").await;

    // The form follows the schema: an enum is a select with the default
    // chosen, a boolean a checkbox, required fields say so, defaults fill in.
    let shape = b
        .js(
            "return [document.getElementById('tp-format').tagName,
                     document.getElementById('tp-format').selectedOptions[0].textContent,
                     document.getElementById('tp-verbose').type,
                     document.getElementById('tp-rows').getAttribute('aria-required'),
                     document.getElementById('tp-dataset').getAttribute('aria-required'),
                     document.getElementById('tp-columns').value,
                     document.querySelector('label[for=tp-rows]').textContent];",
            json!([]),
        )
        .await;
    assert_eq!(
        shape,
        json!([
            "SELECT", "json", "checkbox", "true", "true", "id, name", "rows *"
        ]),
        "form generated from the schema"
    );

    // A required field left empty is flagged before anything is sent.
    b.fill("#tpl-owner", "ui-owner").await;
    b.fill("#tp-rows", "500").await;
    b.click("#template-run-submit").await;
    b.wait_text("#err-tp-dataset", "required").await;
    // The server's schema error lands beside its field.
    b.fill("#tp-dataset", "sales").await;
    b.click("#template-run-submit").await;
    b.wait_text("#err-tp-rows", "maximum").await;
    let invalid = b
        .js(
            "return [document.getElementById('tp-rows').getAttribute('aria-invalid'),
                     document.getElementById('err-tp-dataset').textContent];",
            json!([]),
        )
        .await;
    assert_eq!(
        invalid,
        json!(["true", ""]),
        "only the wrong field is marked"
    );
    b.screenshot("template-form-error").await;
    // The refused request is the only console entry (Chromium logs every
    // 4xx response); no script error.
    let errors = b.console_errors().await;
    assert!(
        errors
            .iter()
            .all(|e| e.contains("/execute") && e.contains("status of 400")),
        "unexpected console errors: {errors:#?}"
    );

    // Fixed: the run is made and followed to STOPPED on its page.
    b.fill("#tp-rows", "7").await;
    b.click("#tp-verbose").await;
    b.click("#template-run-submit").await;
    let path = b.wait_path("^/runs/").await;
    b.wait_badge("SUCCESS").await;
    b.wait_text(
        "#log",
        "report SALES rows=7 format=json cols=id,name verbose",
    )
    .await;
    b.screenshot("template-run").await;
    let run_id = path.trim_start_matches("/runs/").to_string();
    let (_, run) = srv
        .call(reqwest::Method::GET, &format!("/history/{run_id}"), None)
        .await;
    assert_eq!(run["status"], "STOPPED", "{run}");
    assert_eq!(run["exit_code"], 0, "{run}");
    assert_eq!(run["executable_type"], "template", "{run}");
    assert_eq!(run["owner"], "ui-owner", "{run}");
    // Its page leads back to the template's form.
    let back = b
        .js(
            "return document.getElementById('retry-run').getAttribute('href');",
            json!([]),
        )
        .await;
    assert!(
        back.as_str().unwrap_or("").starts_with("/templates/tpl-"),
        "{back}"
    );

    b.assert_no_console_errors().await;
    b.close().await;
    srv.shutdown().await;
}
