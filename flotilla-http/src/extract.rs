//! Extractors whose rejections are JSON errors naming the problem, never
//! axum's plain-text defaults.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::AppState;
use crate::error::{Error, ErrorKind};

/// A JSON body, read whatever the `Content-Type` (flotilla-os clients post
/// with `curl --data`), bounded by the body limit and the read timeout.
/// Top-level `null` values are treated as absent, and errors name the field.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Reads the body as a JSON object, its top-level `null`s dropped.
pub(crate) async fn read_json_value(req: Request, state: &AppState) -> Result<Value, Error> {
    match read_json(req, state).await? {
        Value::Object(mut map) => {
            map.retain(|_, v| !v.is_null());
            Ok(Value::Object(map))
        }
        _ => Err(Error::invalid("request body: must be a JSON object")),
    }
}

/// Reads the body as any JSON value (a batch body is an array), bounded
/// like [`ApiJson`].
pub(crate) async fn read_json(req: Request, state: &AppState) -> Result<Value, Error> {
    let timeout = state.read_timeout();
    let bytes = match tokio::time::timeout(timeout, Bytes::from_request(req, state)).await {
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "request body: not received within {} ms",
                    timeout.as_millis()
                ),
            ));
        }
        Ok(Err(rejection)) => {
            let status = rejection.status();
            return Err(if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "request body: larger than the limit of {} bytes",
                        state.body_limit()
                    ),
                )
            } else {
                Error::invalid(format!("request body: {}", rejection.body_text()))
            });
        }
        Ok(Ok(b)) => b,
    };
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::invalid("request body: a JSON body is required"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("request body: malformed JSON: {e}")))
}

/// Deserializes `value` into `T`, naming the field on error.
pub(crate) fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            Error::invalid(format!("request body: {inner}"))
        } else {
            Error::invalid(format!("{path}: {inner}"))
        }
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let value = read_json_value(req, state).await?;
        Ok(ApiJson(from_value(value)?))
    }
}

/// The query string as ordered `(name, value)` pairs, so repeated
/// parameters (`status=RUNNING&status=QUEUED`) are kept.
#[derive(Debug, Default, Clone)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .map(QueryPairs)
            .map_err(|e| Error::invalid(format!("query string: {e}")))
    }
}

impl QueryPairs {
    /// Fails naming the first parameter not in `allowed`.
    pub fn check_known(&self, allowed: &[&str]) -> Result<(), Error> {
        for (k, _) in &self.0 {
            if !allowed.contains(&k.as_str()) {
                return Err(Error::invalid(format!(
                    "{k}: unknown query parameter (expected one of {})",
                    allowed.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every value of `name`, or `None` when it was not given: a list
    /// reply echoes the filters it was asked for, as flotilla-os does.
    pub fn echoed(&self, name: &str) -> Option<Vec<String>> {
        let v = self.all(name);
        (!v.is_empty()).then_some(v)
    }

    /// The last value of `name`.
    pub fn last(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A non-negative integer parameter, or `default`.
    pub fn usize_or(&self, name: &str, default: usize) -> Result<usize, Error> {
        match self.last(name) {
            None | Some("") => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                Error::invalid(format!("{name}: '{v}' is not a non-negative integer"))
            }),
        }
    }

    /// A boolean parameter (`true`/`false`/`1`/`0`), or `false`.
    pub fn flag(&self, name: &str) -> Result<bool, Error> {
        match self.last(name) {
            None | Some("") => Ok(false),
            Some("true" | "1" | "TRUE" | "True") => Ok(true),
            Some("false" | "0" | "FALSE" | "False") => Ok(false),
            Some(v) => Err(Error::invalid(format!(
                "{name}: '{v}' is not a boolean (true or false)"
            ))),
        }
    }
}
