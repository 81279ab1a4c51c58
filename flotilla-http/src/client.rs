//! A small HTTP client of the flotilla API (used by the CLI).

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, ETAG, IF_NONE_MATCH};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// Talks to one flotilla server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// One page of a run's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    /// New text.
    pub log: String,
    /// Cursor to continue from.
    pub last_seen: Option<String>,
    /// No more text will come.
    pub complete: bool,
}

fn transport(e: reqwest::Error) -> Error {
    Error::new(
        ErrorKind::Service(flotilla::ErrorKind::Unavailable),
        format!("server unreachable: {e}"),
    )
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:3000`),
    /// sending `token` as a bearer token when given.
    pub fn new(base: &str, token: Option<String>) -> Result<Client> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::io(format!("http client: {e}")))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v6{path}", self.base)
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.req_url(method, self.url(path))
    }

    fn req_url(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, url);
        if let Some(t) = &self.token {
            r = r.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        r
    }

    async fn json(&self, r: reqwest::RequestBuilder) -> Result<Value> {
        let resp = r.send().await.map_err(transport)?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            let msg = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no error message")
                .to_string();
            Err(Error::new(
                ErrorKind::Remote(status.as_u16()),
                format!("{status}: {msg}"),
            ))
        }
    }

    /// `POST /task`.
    pub async fn define(&self, definition: &Value) -> Result<Value> {
        self.json(self.req(reqwest::Method::POST, "/task").json(definition))
            .await
    }

    /// `PUT /task/alias/{alias}/execute`.
    pub async fn execute_alias(&self, alias: &str, body: &Value) -> Result<Value> {
        self.json(
            self.req(
                reqwest::Method::PUT,
                &format!("/task/alias/{}/execute", enc(alias)),
            )
            .json(body),
        )
        .await
    }

    /// `PUT /api/v7/template/name/{name}/version/{version}/execute`: the
    /// latest version when `version` is `None`.
    pub async fn execute_template(
        &self,
        name: &str,
        version: Option<u32>,
        body: &Value,
    ) -> Result<Value> {
        let version = version.map_or_else(|| "latest".to_string(), |v| v.to_string());
        let url = format!(
            "{}/api/v7/template/name/{}/version/{version}/execute",
            self.base,
            enc(name)
        );
        self.json(self.req_url(reqwest::Method::PUT, url).json(body))
            .await
    }

    /// `GET /history/{run_id}`.
    pub async fn run(&self, run_id: &str) -> Result<Value> {
        self.json(self.req(reqwest::Method::GET, &format!("/history/{}", enc(run_id))))
            .await
    }

    /// `GET /{run_id}/status` with `If-None-Match`: `None` when unchanged.
    pub async fn status(
        &self,
        run_id: &str,
        etag: Option<&str>,
    ) -> Result<Option<(Value, String)>> {
        let mut r = self.req(reqwest::Method::GET, &format!("/{}/status", enc(run_id)));
        if let Some(e) = etag {
            r = r.header(IF_NONE_MATCH, e);
        }
        let resp = r.send().await.map_err(transport)?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let tag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(Error::new(
                ErrorKind::Remote(status.as_u16()),
                format!(
                    "{status}: {}",
                    body.get("error").and_then(Value::as_str).unwrap_or("")
                ),
            ));
        }
        Ok(Some((body, tag)))
    }

    /// `GET /{run_id}/logs?last_seen=`.
    pub async fn logs(&self, run_id: &str, last_seen: Option<&str>) -> Result<LogPage> {
        let mut r = self.req(reqwest::Method::GET, &format!("/{}/logs", enc(run_id)));
        if let Some(c) = last_seen {
            r = r.query(&[("last_seen", c)]);
        }
        let v = self.json(r).await?;
        Ok(LogPage {
            log: v
                .get("log")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            last_seen: v
                .get("last_seen")
                .and_then(Value::as_str)
                .map(str::to_string),
            complete: v.get("complete").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// `GET /task/{definition_id}`.
    pub async fn definition(&self, definition_id: &str) -> Result<Value> {
        self.json(self.req(
            reqwest::Method::GET,
            &format!("/task/{}", enc(definition_id)),
        ))
        .await
    }

    /// `GET /task/alias/{alias}`.
    pub async fn definition_by_alias(&self, alias: &str) -> Result<Value> {
        self.json(self.req(reqwest::Method::GET, &format!("/task/alias/{}", enc(alias))))
            .await
    }

    /// `GET /task` with the given query pairs.
    pub async fn definitions(&self, query: &[(String, String)]) -> Result<Value> {
        self.json(self.req(reqwest::Method::GET, "/task").query(query))
            .await
    }

    /// `PUT /task/{definition_id}`: replaces the fields given in `body`.
    pub async fn update_definition(&self, definition_id: &str, body: &Value) -> Result<Value> {
        self.json(
            self.req(
                reqwest::Method::PUT,
                &format!("/task/{}", enc(definition_id)),
            )
            .json(body),
        )
        .await
    }

    /// `DELETE /task/{definition_id}`.
    pub async fn delete_definition(&self, definition_id: &str) -> Result<Value> {
        self.json(self.req(
            reqwest::Method::DELETE,
            &format!("/task/{}", enc(definition_id)),
        ))
        .await
    }

    /// `GET /clusters`.
    pub async fn clusters(&self) -> Result<Value> {
        self.json(self.req(reqwest::Method::GET, "/clusters")).await
    }

    /// `GET /{run_id}/events`.
    pub async fn events(&self, run_id: &str) -> Result<Value> {
        self.json(self.req(reqwest::Method::GET, &format!("/{}/events", enc(run_id))))
            .await
    }

    /// `GET /history` with the given query pairs.
    pub async fn history(&self, query: &[(String, String)]) -> Result<Value> {
        self.json(self.req(reqwest::Method::GET, "/history").query(query))
            .await
    }

    /// Terminates a run: `DELETE /task/{definition_id}/history/{run_id}`.
    pub async fn stop(&self, run_id: &str) -> Result<Value> {
        let run = self.run(run_id).await?;
        let def = run
            .get("definition_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        self.json(self.req(
            reqwest::Method::DELETE,
            &format!("/task/{}/history/{}", enc(&def), enc(run_id)),
        ))
        .await
    }
}

/// Percent-encodes one path segment.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
