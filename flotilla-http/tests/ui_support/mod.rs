//! Browser test support: chromedriver + headless Chromium driven over the
//! W3C WebDriver protocol (a small client on reqwest), and a real flotilla
//! server on 127.0.0.1:0 with the memory backends and the local engine.
//!
//! Environment:
//! - `FLOTILLA_CHROMIUM` (default `/usr/bin/chromium`) and
//!   `FLOTILLA_CHROMEDRIVER` (default `/usr/bin/chromedriver`).
//! - `FLOTILLA_SCREENSHOT_DIR` (default `<repo>/ci-artifacts/screenshots`).
//! - `CI`: when set, missing browsers fail the tests instead of skipping.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flotilla_http::{Config, RunningServer};
use serde_json::{Value, json};

/// Browser tests run one at a time: the machine has two cores.
pub static BROWSER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long any condition may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(60);

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The browser binaries, or `None` (after a loud warning) when they are
/// missing outside CI. In CI their absence fails the test.
pub fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let chromium = PathBuf::from(
        std::env::var("FLOTILLA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    let driver = PathBuf::from(
        std::env::var("FLOTILLA_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()),
    );
    let missing: Vec<String> = [&chromium, &driver]
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, driver));
    }
    let msg = format!(
        "browser tests need Chromium and chromedriver, missing: {}. Install them with \
         `apt-get update && apt-get install -y chromium chromium-driver`, or point \
         FLOTILLA_CHROMIUM / FLOTILLA_CHROMEDRIVER at them",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    // Written to the real stderr (not the captured test output) so the
    // warning shows even though the test passes.
    let _ = std::io::stderr().write_all(
        format!("\n!!!!!!!! WARNING: UI BROWSER TEST NOT RUN !!!!!!!!\n{msg}\n\n").as_bytes(),
    );
    None
}

/// Where screenshots go.
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("FLOTILLA_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci-artifacts/screenshots")
        })
}

/// A reqwest client (ring as the rustls provider, the only one linked).
pub fn http_client() -> reqwest::Client {
    flotilla_http::install_crypto_provider();
    reqwest::Client::new()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A test server and its data directory.
pub struct Server {
    pub server: RunningServer,
    pub url: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
    _dir: tempfile::TempDir,
}

/// Starts a server with short worker intervals, changed by `tweak`.
pub async fn server_with(tweak: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.workers.receive_wait = Duration::from_millis(200);
    config.workers.status_poll_interval = Duration::from_millis(200);
    config.workers.reconcile_interval = Duration::from_millis(500);
    config.workers.lease_ttl = Duration::from_secs(3);
    config.http.stream_poll_ms = 100;
    config.http.shutdown_grace_ms = 2000;
    tweak(&mut config);
    let token = config.tokens.first().map(|t| t.token.clone());
    let server = flotilla_http::spawn(config).await.expect("server starts");
    let url = server.url();
    Server {
        server,
        url,
        http: http_client(),
        token,
        _dir: dir,
    }
}

impl Server {
    /// Calls the API (with the first configured token, if any) and returns
    /// the status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v6{path}", self.url));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("API request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("API body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Defines `alias` running `command`; returns the definition.
    pub async fn define(&self, alias: &str, command: &str) -> Value {
        let (code, def) = self
            .call(
                reqwest::Method::POST,
                "/task",
                Some(json!({"alias": alias, "image": "ubuntu:latest", "group_name": "ui-tests", "command": command})),
            )
            .await;
        assert_eq!(code, 200, "define {alias}: {def}");
        def
    }

    /// Executes `alias` as `owner`; returns the run.
    pub async fn execute(&self, alias: &str, owner: &str) -> Value {
        let (code, run) = self
            .call(
                reqwest::Method::PUT,
                &format!("/task/alias/{alias}/execute"),
                Some(json!({"run_tags": {"owner_id": owner}})),
            )
            .await;
        assert_eq!(code, 200, "execute {alias}: {run}");
        run
    }

    /// Polls the run until `pred` holds.
    pub async fn wait_run(&self, run_id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, run) = self
                .call(reqwest::Method::GET, &format!("/history/{run_id}"), None)
                .await;
            if pred(&run) {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id}: {what} did not happen: {run}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// chromedriver, a Chromium session and its profile directory.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    name: String,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session;
    /// screenshots are named `<name>-<page>.png`.
    pub async fn start(name: &str, chromium: &Path, driver: &Path) -> Browser {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let profile = tempfile::tempdir().expect("profile dir");
        let http = http_client();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver: child,
            base,
            session: String::new(),
            http,
            name: name.to_string(),
            shots: screenshot_dir(),
            _profile: profile,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ready = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await
                .ok();
            if let Some(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not become ready on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage", "--window-size=1366,900",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ]
            }
        }}});
        let v = browser
            .raw(reqwest::Method::POST, "/session", Some(caps))
            .await;
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_string();
        browser
    }

    async fn raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "webdriver {method} {path} answered {status}: {v}"
        );
        v["value"].clone()
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits until `script` returns something truthy; returns it.
    pub async fn wait_js(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.js(script, args.clone()).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                let state = self
                    .js(
                        "return location.href + '\\n' + document.body.innerText.slice(0, 3000);",
                        json!([]),
                    )
                    .await;
                self.screenshot(&format!("FAILED-{}", what.replace(' ', "-")))
                    .await;
                panic!(
                    "timed out waiting for: {what}\npage: {}",
                    state.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an element matching `css`; returns its WebDriver id.
    pub async fn find(&self, css: &str) -> String {
        self.wait_js(
            &format!("element {css}"),
            "return document.querySelector(arguments[0]) !== null;",
            json!([css]),
        )
        .await;
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element id for {css}: {v}"))
            .to_string()
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Clears the field matching `css` and types `text` into it (real key
    /// events).
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        if !text.is_empty() {
            self.cmd(
                reqwest::Method::POST,
                &format!("/element/{id}/value"),
                Some(json!({ "text": text })),
            )
            .await;
        }
    }

    /// The text content of the first element matching `css` ("" if none).
    pub async fn text(&self, css: &str) -> String {
        self.js(
            "var e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Waits until the element matching `css` contains `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str) {
        self.wait_js(
            &format!("{css} to contain {needle:?}"),
            "var e = document.querySelector(arguments[0]); return !!e && e.textContent.indexOf(arguments[1]) >= 0;",
            json!([css, needle]),
        )
        .await;
    }

    /// Waits until the path of the page matches the regular expression.
    pub async fn wait_path(&self, pattern: &str) -> String {
        self.wait_js(
            &format!("path matching {pattern}"),
            "return new RegExp(arguments[0]).test(location.pathname) ? location.pathname : null;",
            json!([pattern]),
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Waits for the status badge of the run page to read `status`.
    pub async fn wait_badge(&self, status: &str) {
        self.wait_js(
            &format!("run status badge {status}"),
            "var b = document.querySelector('[data-field=status] .badge'); return !!b && b.getAttribute('data-status') === arguments[0];",
            json!([status]),
        )
        .await;
    }

    /// Sets the window size (CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Writes a PNG of the viewport to the screenshot directory.
    pub async fn screenshot(&self, page: &str) -> PathBuf {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(v.as_str().unwrap_or(""));
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        std::fs::create_dir_all(&self.shots).expect("screenshot dir");
        let path = self.shots.join(format!("{}-{page}.png", self.name));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Browser console entries at level SEVERE since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts the console holds no errors.
    pub async fn assert_no_console_errors(&self) {
        let errors = self.console_errors().await;
        assert!(errors.is_empty(), "browser console errors: {errors:#?}");
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After a panic the session may still be open: end it with a plain
        // blocking request so Chromium does not outlive the test.
        if !self.session.is_empty() {
            let addr = self.base.trim_start_matches("http://").to_string();
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let req = format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                    self.session
                );
                if s.write_all(req.as_bytes()).is_ok() {
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the screenshot encoding).
pub fn base64_decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a') as u32 + 26),
            b'0'..=b'9' => Some((c - b'0') as u32 + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
