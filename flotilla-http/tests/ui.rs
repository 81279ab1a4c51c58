//! The web UI in real headless Chromium against a real server with the
//! local engine: the "Must show" list. Screenshots of every page go
//! to `$FLOTILLA_SCREENSHOT_DIR` (default `ci-artifacts/screenshots`).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian
//! `chromium` and `chromium-driver`); with `CI` set their absence fails.

mod ui_support;

use serde_json::json;
use ui_support::{BROWSER_LOCK, Browser, browser_binaries, server_with};

const PHONE: (u32, u32) = (390, 844);
const LAPTOP: (u32, u32) = (1366, 900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_definition_with_a_validation_error_then_run_it_and_watch_its_log_live() {
    let Some((chromium, driver)) = browser_binaries() else {
        return;
    };
    let _serial = BROWSER_LOCK.lock().await;
    let srv = server_with(|_| {}).await;
    let b = Browser::start("definition", &chromium, &driver).await;
    let gate = tempfile::tempdir().expect("gate dir");
    let marker = gate.path().join("go");
    let command = format!(
        "echo hello-from-ui $GREETING; while [ ! -f '{}' ]; do sleep 0.1; done; echo second-line-after-gate",
        marker.display()
    );

    // The empty list invites to create one.
    b.goto(&format!("{}/", srv.url)).await;
    b.wait_text("#definitions-results", "No definitions yet")
        .await;
    b.screenshot("definitions-empty").await;

    // The form: a bad image is refused by the server, shown next to the field.
    b.click("#new-definition").await;
    b.wait_path("^/definitions/new$").await;
    b.fill("#alias", "ui-hello").await;
    b.fill("#group_name", "ui-tests").await;
    b.fill("#image", "bad image").await;
    b.fill("#command", &command).await;
    b.fill("#memory", "128").await;
    b.click("#env-add").await;
    b.fill("#env-name-0", "GREETING").await;
    b.fill("#env-value-0", "from-env").await;
    b.fill("#tags", "ui, demo").await;
    b.click("#save-definition").await;
    b.wait_text("#err-image", "whitespace").await;
    let invalid = b
        .js(
            "return document.getElementById('image').getAttribute('aria-invalid');",
            json!([]),
        )
        .await;
    assert_eq!(invalid, "true", "the image field is marked invalid");
    assert_eq!(
        b.text("#err-alias").await,
        "",
        "only the faulty field shows an error"
    );
    b.screenshot("definition-form-error").await;
    // The refused request is the only console entry (Chromium logs every
    // 4xx response); no script error.
    let errors = b.console_errors().await;
    assert!(
        errors
            .iter()
            .all(|e| e.contains("/api/v6/task") && e.contains("status of 400")),
        "unexpected console errors: {errors:#?}"
    );

    // A client-side check too: a non-number memory.
    b.fill("#memory", "lots").await;
    b.click("#save-definition").await;
    b.wait_text("#err-memory", "whole number").await;
    b.fill("#memory", "128").await;

    // Fixed and saved: the detail page shows the fields.
    b.fill("#image", "ubuntu:latest").await;
    b.click("#save-definition").await;
    let path = b.wait_path("^/definitions/(?!new$)[^/]+$").await;
    b.wait_text("#definition-alias", "ui-hello").await;
    b.wait_text(".fields", "GREETING=from-env").await;
    b.wait_text(".fields", "128 MiB").await;
    b.screenshot("definition-detail").await;

    // Run it from the run form (env prefilled from the definition).
    let prefilled = b
        .js(
            "return document.querySelector('#run-env-rows .env-name').value;",
            json!([]),
        )
        .await;
    assert_eq!(prefilled, "GREETING", "env overrides prefilled");
    b.fill("#run-owner", "").await;
    b.click("#run-submit").await;
    b.wait_text("#err-run-owner", "required").await;
    b.fill("#run-owner", "alice").await;
    b.click("#run-submit").await;
    let run_path = b.wait_path("^/runs/[^/]+$").await;
    let run_id = run_path.trim_start_matches("/runs/").to_string();

    // The first line appears while the process is still running: it waits
    // for the gate file, so the log text can only have come live.
    b.wait_text("#log", "hello-from-ui from-env").await;
    b.wait_badge("RUNNING").await;
    assert!(
        !b.text("#log").await.contains("second-line-after-gate"),
        "the process has not passed the gate yet"
    );
    b.screenshot("run-live-log").await;
    std::fs::write(&marker, b"go").expect("open the gate");
    b.wait_text("#log", "second-line-after-gate").await;
    b.wait_badge("SUCCESS").await;
    b.wait_text("[data-field=exit_code]", "0").await;
    b.wait_text("#timeline", "RUNNING → STOPPED").await;
    b.wait_text("#log-state", "complete").await;
    let api_run = srv
        .wait_run(&run_id, "stopped", |r| r["status"] == "STOPPED")
        .await;
    assert_eq!(api_run["exit_code"], 0, "{api_run}");
    assert_eq!(api_run["owner"], "alice", "{api_run}");
    b.screenshot("run-success").await;
    b.resize(PHONE.0, PHONE.1).await;
    b.screenshot("run-success-phone").await;
    b.resize(LAPTOP.0, LAPTOP.1).await;

    // The owner is remembered; recent runs list this run.
    b.goto(&format!("{}{path}", srv.url)).await;
    b.wait_text("#recent-runs-table", "ui-hello").await;
    let owner = b
        .js(
            "return document.getElementById('run-owner').value;",
            json!([]),
        )
        .await;
    assert_eq!(owner, "alice", "owner remembered in a cookie");

    // Edit: change the memory; the alias is read-only.
    b.click("#edit-definition").await;
    b.wait_path("/edit$").await;
    b.fill("#memory", "256").await;
    b.screenshot("definition-edit").await;
    b.click("#save-definition").await;
    b.wait_path("^/definitions/[^/]+$").await;
    b.wait_text(".fields", "256 MiB").await;

    // The list: search and sort.
    srv.define("ui-other", "true").await;
    b.goto(&format!("{}/definitions", srv.url)).await;
    b.wait_text("#definitions-table", "ui-other").await;
    b.click("[data-sort=alias]").await;
    b.wait_js(
        "alias sorted descending",
        "var r = document.querySelectorAll('#definitions-table tbody tr'); return r.length === 2 && r[0].getAttribute('data-alias') === 'ui-other';",
        json!([]),
    )
    .await;
    b.screenshot("definitions").await;
    b.fill("#filter-alias", "hello").await;
    b.wait_js(
        "search narrows the list",
        "var r = document.querySelectorAll('#definitions-table tbody tr'); return r.length === 1 && r[0].getAttribute('data-alias') === 'ui-hello';",
        json!([]),
    )
    .await;
    b.resize(PHONE.0, PHONE.1).await;
    b.screenshot("definitions-phone").await;
    b.resize(LAPTOP.0, LAPTOP.1).await;

    // Delete with confirmation: cancel keeps it, OK removes it.
    b.goto(&format!("{}/definitions", srv.url)).await;
    b.click("[data-alias=ui-other] a").await;
    b.click("#delete-definition").await;
    b.wait_js(
        "confirmation open",
        "return document.getElementById('confirm').open;",
        json!([]),
    )
    .await;
    b.click("#confirm-cancel").await;
    b.wait_js(
        "confirmation closed",
        "return !document.getElementById('confirm').open;",
        json!([]),
    )
    .await;
    b.click("#delete-definition").await;
    b.click("#confirm-ok").await;
    b.wait_path("^/definitions$").await;
    b.wait_js(
        "ui-other deleted",
        "var t = document.getElementById('definitions-table'); return !!t && t.textContent.indexOf('ui-other') < 0;",
        json!([]),
    )
    .await;

    // Paging: 20 a page.
    for i in 0..21 {
        srv.define(&format!("ui-page-{i:02}"), "true").await;
    }
    b.goto(&format!("{}/definitions", srv.url)).await;
    b.wait_text(".pager", "1–20 of 22").await;
    b.click("#next-page").await;
    b.wait_text(".pager", "21–22 of 22").await;
    b.wait_text("#definitions-table", "ui-page-20").await;
    b.click("#prev-page").await;
    b.wait_text(".pager", "1–20 of 22").await;

    b.assert_no_console_errors().await;
    b.close().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_a_long_run_and_retry_a_failed_one() {
    let Some((chromium, driver)) = browser_binaries() else {
        return;
    };
    let _serial = BROWSER_LOCK.lock().await;
    let srv = server_with(|_| {}).await;
    srv.define(
        "ui-sleeper",
        "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo line-$i; done; echo sleeping; sleep 300",
    )
    .await;
    srv.define("ui-failer", "echo about-to-fail; exit 3").await;
    let sleeper = srv.execute("ui-sleeper", "bob").await;
    let failer = srv.execute("ui-failer", "bob").await;
    let sleeper_id = sleeper["run_id"].as_str().expect("run id").to_string();
    let failer_id = failer["run_id"].as_str().expect("run id").to_string();
    let b = Browser::start("stop-retry", &chromium, &driver).await;

    // Stop, with a confirmation.
    b.goto(&format!("{}/runs/{sleeper_id}", srv.url)).await;
    b.wait_badge("RUNNING").await;
    b.wait_text("#log", "sleeping").await;
    // The log follows its end until the user scrolls up.
    b.wait_js(
        "log scrolled to its end",
        "var l = document.getElementById('log'); return l.scrollHeight > l.clientHeight && l.scrollHeight - l.scrollTop - l.clientHeight < 30;",
        json!([]),
    )
    .await;
    b.js("document.getElementById('log').scrollTop = 0;", json!([]))
        .await;
    b.wait_text("#follow", "Paused").await;
    b.screenshot("run-log-paused").await;
    b.click("#stop-run").await;
    b.wait_js(
        "confirmation open",
        "return document.getElementById('confirm').open;",
        json!([]),
    )
    .await;
    b.screenshot("run-stop-confirm").await;
    b.click("#confirm-ok").await;
    b.wait_badge("STOPPED").await;
    b.wait_js(
        "stop button gone",
        "return document.getElementById('stop-run') === null;",
        json!([]),
    )
    .await;
    let stopped = srv
        .wait_run(&sleeper_id, "stopped", |r| r["status"] == "STOPPED")
        .await;
    assert_eq!(stopped["failure"], "terminated", "{stopped}");
    b.screenshot("run-stopped").await;

    // A failed run: FAILED badge, exit code, log; Retry opens the run form
    // prefilled from it.
    b.goto(&format!("{}/runs/{failer_id}", srv.url)).await;
    b.wait_badge("FAILED").await;
    b.wait_text("[data-field=exit_code]", "3").await;
    b.wait_text("#log", "about-to-fail").await;
    b.screenshot("run-failed").await;
    b.click("#retry-run").await;
    b.wait_path("^/definitions/[^/]+$").await;
    b.wait_text("#run", "Retry run").await;
    let (command, owner) = (
        b.js(
            "return document.getElementById('run-command').value;",
            json!([]),
        )
        .await,
        b.js(
            "return document.getElementById('run-owner').value;",
            json!([]),
        )
        .await,
    );
    assert_eq!(command, "echo about-to-fail; exit 3");
    assert_eq!(owner, "bob");
    let injected = b
        .js(
            "return Array.prototype.some.call(document.querySelectorAll('#run-env-rows .env-name'), function (e) { return e.value.indexOf('FLOTILLA_') === 0; });",
            json!([]),
        )
        .await;
    assert_eq!(injected, false, "injected FLOTILLA_* env is not copied");
    b.screenshot("run-retry-form").await;
    b.fill("#run-command", "echo retried-ok").await;
    b.click("#run-submit").await;
    let path = b.wait_path("^/runs/[^/]+$").await;
    assert_ne!(path, format!("/runs/{failer_id}"), "a new run");
    b.wait_badge("SUCCESS").await;
    b.wait_text("#log", "retried-ok").await;

    b.assert_no_console_errors().await;
    b.close().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_list_filters_by_status_alias_and_owner() {
    let Some((chromium, driver)) = browser_binaries() else {
        return;
    };
    let _serial = BROWSER_LOCK.lock().await;
    let srv = server_with(|_| {}).await;
    srv.define("ui-alpha", "sleep 300").await;
    srv.define("ui-beta", "echo done").await;
    let alpha = srv.execute("ui-alpha", "carol").await;
    let beta = srv.execute("ui-beta", "dave").await;
    let alpha_id = alpha["run_id"].as_str().expect("run id").to_string();
    let beta_id = beta["run_id"].as_str().expect("run id").to_string();
    srv.wait_run(&beta_id, "stopped", |r| r["status"] == "STOPPED")
        .await;
    srv.wait_run(&alpha_id, "running", |r| r["status"] == "RUNNING")
        .await;
    let b = Browser::start("runs", &chromium, &driver).await;
    let row = |id: &str| format!("#runs-table [data-run-id=\"{id}\"]");
    let has = "return document.querySelector(arguments[0]) !== null;";
    let lacks = "return document.querySelector(arguments[0]) === null && document.getElementById('runs-results').getAttribute('data-loaded') !== null;";

    // Default chips: active runs only.
    b.goto(&format!("{}/runs", srv.url)).await;
    b.wait_js("alpha listed", has, json!([row(&alpha_id)]))
        .await;
    b.wait_js("beta not listed", lacks, json!([row(&beta_id)]))
        .await;
    let pressed = b
        .js(
            "return Array.prototype.map.call(document.querySelectorAll('.chip[aria-pressed=true]'), function (c) { return c.getAttribute('data-status'); }).join(',');",
            json!([]),
        )
        .await;
    assert_eq!(pressed, "QUEUED,PENDING,RUNNING");
    b.wait_text(&row(&alpha_id), "RUNNING").await;
    b.screenshot("runs-active").await;

    // Add STOPPED: the finished run shows as SUCCESS.
    b.click(".chip[data-status=STOPPED]").await;
    b.wait_js("beta listed", has, json!([row(&beta_id)])).await;
    b.wait_text(&row(&beta_id), "SUCCESS").await;
    let url = b.js("return location.search;", json!([])).await;
    assert!(
        url.as_str().unwrap_or("").contains("STOPPED"),
        "filters kept in the URL: {url}"
    );
    b.screenshot("runs-all").await;

    // Alias filter.
    b.fill("#filter-alias", "ui-beta").await;
    b.wait_js("alpha filtered out", lacks, json!([row(&alpha_id)]))
        .await;
    b.wait_js("beta still listed", has, json!([row(&beta_id)]))
        .await;

    // Owner filter.
    b.fill("#filter-alias", "").await;
    b.fill("#filter-owner", "carol").await;
    b.wait_js("beta filtered out", lacks, json!([row(&beta_id)]))
        .await;
    b.wait_js("alpha listed again", has, json!([row(&alpha_id)]))
        .await;

    // Auto-refresh: a new run of carol's appears without reloading.
    let again = srv.execute("ui-beta", "carol").await;
    let again_id = again["run_id"].as_str().expect("run id").to_string();
    b.wait_js(
        "new run appears by auto-refresh",
        has,
        json!([row(&again_id)]),
    )
    .await;

    // Sort by alias ascending: alpha first.
    b.click("#filter-owner").await;
    b.fill("#filter-owner", "").await;
    b.js(
        "var s = document.getElementById('sort-by'); s.value = 'alias'; s.dispatchEvent(new Event('change'));\
         var o = document.getElementById('sort-order'); o.value = 'asc'; o.dispatchEvent(new Event('change'));",
        json!([]),
    )
    .await;
    b.wait_js(
        "sorted by alias",
        "var r = document.querySelectorAll('#runs-table tbody tr'); return r.length === 3 && r[0].getAttribute('data-alias') === 'ui-alpha' && location.search.indexOf('sort_by=alias') >= 0;",
        json!([]),
    )
    .await;
    b.resize(PHONE.0, PHONE.1).await;
    b.screenshot("runs-phone").await;
    b.resize(LAPTOP.0, LAPTOP.1).await;

    b.assert_no_console_errors().await;

    // API errors read as messages: an unknown run.
    b.goto(&format!("{}/runs/no-such-run", srv.url)).await;
    b.wait_text("#banner", "Error 404").await;
    b.screenshot("run-not-found").await;

    b.close().await;
    let (code, body) = srv
        .call(
            reqwest::Method::DELETE,
            &format!(
                "/task/{}/history/{alpha_id}",
                alpha["definition_id"].as_str().unwrap_or("")
            ),
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_entry_with_authentication_on() {
    let Some((chromium, driver)) = browser_binaries() else {
        return;
    };
    let _serial = BROWSER_LOCK.lock().await;
    let srv = server_with(|c| {
        c.auth = flotilla_http::AuthMode::Tokens;
        c.tokens = vec![flotilla_http::config::TokenConfig {
            token: "erin-s3cret".into(),
            owner: "erin".into(),
            admin: false,
            ..Default::default()
        }];
    })
    .await;
    srv.define("ui-secure", "echo secured-output").await;
    let b = Browser::start("auth", &chromium, &driver).await;

    // Without a token, the page asks for one before calling the API.
    b.goto(&format!("{}/", srv.url)).await;
    b.find("#login-form").await;
    b.click("#sign-in").await;
    b.wait_text("#err-token", "Enter your API token").await;
    b.screenshot("sign-in").await;
    // Keyboard only: Enter in the field submits the form.
    b.fill("#token", "erin-s3cret\u{E007}").await;
    b.wait_text("#definitions-table", "ui-secure").await;
    let stored = b
        .js("return localStorage.getItem('flotilla_token');", json!([]))
        .await;
    assert_eq!(stored, "erin-s3cret");

    // Runs are owned by the token's identity; live logs carry the token.
    b.click("[data-alias=ui-secure] a").await;
    b.find("#run-form").await;
    let owner_field = b
        .js("return document.getElementById('run-owner');", json!([]))
        .await;
    assert!(
        owner_field.is_null(),
        "no owner field: the token names the owner"
    );
    b.click("#run-submit").await;
    b.wait_path("^/runs/[^/]+$").await;
    b.wait_badge("SUCCESS").await;
    b.wait_text("#log", "secured-output").await;
    b.wait_text("#run-details", "erin").await;
    b.screenshot("run-with-token").await;

    // Signing out forgets the token.
    b.click("#sign-out").await;
    b.find("#login-form").await;
    let stored = b
        .js("return localStorage.getItem('flotilla_token');", json!([]))
        .await;
    assert!(stored.is_null(), "token removed: {stored}");

    b.assert_no_console_errors().await;
    b.close().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_page_shows_capacity_running_and_waiting_runs_and_an_hours_chart() {
    let Some((chromium, driver)) = browser_binaries() else {
        return;
    };
    let _serial = BROWSER_LOCK.lock().await;
    let srv = server_with(|_| {}).await;
    let (code, c) = srv
        .call(
            reqwest::Method::PUT,
            "/clusters/default",
            Some(json!({"capacity": {"runs": 1, "memory": 4096}})),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    let gate = tempfile::tempdir().expect("gate dir");
    let marker = gate.path().join("go");
    srv.define(
        "ui-hold",
        &format!("while [ ! -f '{}' ]; do sleep 0.1; done", marker.display()),
    )
    .await;
    srv.define("ui-after", "true").await;
    let first = srv.execute("ui-hold", "alice").await;
    let first_id = first["run_id"].as_str().expect("run_id").to_string();
    srv.wait_run(&first_id, "running", |r| r["status"] == "RUNNING")
        .await;
    let second = srv.execute("ui-after", "bob").await;
    let second_id = second["run_id"].as_str().expect("run_id").to_string();
    srv.wait_run(&second_id, "held", |r| !r["waiting"].is_null())
        .await;

    let b = Browser::start("clusters", &chromium, &driver).await;
    b.goto(&format!("{}/clusters", srv.url)).await;
    let card = "[data-cluster=default]";
    b.wait_text(&format!("{card} [data-field=capacity-runs]"), "1")
        .await;
    b.wait_text(&format!("{card} [data-field=capacity-memory]"), "4096 MiB")
        .await;
    b.wait_text(&format!("{card} [data-field=capacity-cpu]"), "millicores")
        .await;
    b.wait_text("#running-default", "ui-hold").await;
    b.wait_text(
        &format!("#waiting-default [data-run-id='{second_id}'] .reason"),
        "waiting for capacity: 1 of 1 runs active on cluster default",
    )
    .await;
    assert_eq!(
        b.text(&format!(
            "#waiting-default [data-run-id='{second_id}'] .position"
        ))
        .await,
        "1"
    );
    // The chart has both series over the hour, each showing the one run.
    let series = b
        .wait_js(
            "both series drawn",
            "var out = {}; document.querySelectorAll('#usage-default polyline').forEach(function (p) { \
               var v = p.getAttribute('data-values').split(',').map(Number); \
               out[p.getAttribute('data-series')] = {points: v.length, max: Math.max.apply(null, v), last: v[v.length - 1]}; }); \
             return out.waiting && out.running ? out : null;",
            json!([]),
        )
        .await;
    assert_eq!(series["waiting"]["points"], 360, "{series}");
    assert_eq!(series["running"]["points"], 360, "{series}");
    assert_eq!(
        series["running"]["last"], 1,
        "one run running now: {series}"
    );
    assert_eq!(
        series["waiting"]["last"], 1,
        "one run waiting now: {series}"
    );
    b.screenshot("clusters").await;
    b.resize(PHONE.0, PHONE.1).await;
    b.screenshot("clusters-phone").await;
    b.resize(LAPTOP.0, LAPTOP.1).await;

    // Capacity frees: the waiting run runs and leaves the waiting list.
    std::fs::write(&marker, b"go").expect("open the gate");
    srv.wait_run(&second_id, "stopped", |r| r["status"] == "STOPPED")
        .await;
    b.wait_text(card, "Nothing waits.").await;
    b.assert_no_console_errors().await;
    b.close().await;
    srv.shutdown().await;
}
