//! Browser safety: what keeps a web page the user happens to open from
//! driving the server, above all with `auth = "none"` on loopback.
//!
//! - **Host check (DNS rebinding).** On a loopback listener the `Host`
//!   header must name the loopback (`127.0.0.1`, `localhost`, `[::1]`, any
//!   port) or one of `http.allowed_hosts`; on any listener, a non-empty
//!   `http.allowed_hosts` is enforced. Otherwise 403. A rebinding page's
//!   requests carry the attacker's host name, so they never reach the API.
//! - **Cross-site requests.** A state-changing request (`POST`, `PUT`,
//!   `PATCH`, `DELETE`) whose `Origin` is neither this server's own (the
//!   scheme-less authority equal to `Host`) nor listed in
//!   `http.cors_origins` is refused with 403, as is one marked
//!   `Sec-Fetch-Site: cross-site` without an allowed `Origin`, and
//!   `Origin: null` (sandboxed frames, `file:` pages). A plain HTML form
//!   posted from another site therefore does nothing, whatever its content
//!   type.
//! - **curl keeps working.** Requests without `Origin` and without
//!   `Sec-Fetch-Site` are not browser requests and pass, whatever their
//!   content type (flotilla-os's quick start posts JSON as
//!   `application/x-www-form-urlencoded` with `curl --data`).
//! - `cors_origins = ["*"]` is refused at start unless `auth = "tokens"`
//!   ([`crate::Config::validate`]).
//!
//! `X-Forwarded-Host` is never read: behind a proxy that rewrites `Host`,
//! list the public name in `http.allowed_hosts` and the public origin in
//! `http.cors_origins`.

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{Error, ErrorKind};

/// Names that always mean this machine.
const LOOPBACK_NAMES: &[&str] = &["127.0.0.1", "localhost", "[::1]"];

/// The host part of a `Host` header or an origin's authority, lowercased:
/// `localhost:3000` → `localhost`, `[::1]:3000` → `[::1]`.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if a.starts_with('[') {
        return match a.find(']') {
            Some(end) => a[..=end].to_string(),
            None => a,
        };
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => a,
    }
}

fn forbidden(message: String) -> Response {
    Error::new(ErrorKind::Forbidden, message).into_response()
}

/// Whether `host` (a `Host` header value) may reach this server.
fn host_allowed(state: &AppState, host: &str) -> bool {
    let name = host_name(host);
    let allowed = &state.http().allowed_hosts;
    if allowed.iter().any(|h| host_name(h) == name) {
        return true;
    }
    let loopback = state.listen_addr().is_some_and(|a| a.ip().is_loopback());
    if loopback {
        return LOOPBACK_NAMES.contains(&name.as_str());
    }
    allowed.is_empty()
}

/// Why a state-changing request is cross-site, if it is.
fn cross_site(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let Some(origin) = origin else {
        return match fetch_site.as_deref() {
            Some("cross-site") => Some(
                "cross-site request refused: Sec-Fetch-Site is cross-site and no allowed Origin \
                 was sent"
                    .into(),
            ),
            _ => None,
        };
    };
    // `*` is accepted only with authentication (checked at start): any
    // origin may then call, with a token.
    if state
        .http()
        .cors_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    {
        return None;
    }
    let own = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| h.trim().to_ascii_lowercase());
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/').to_ascii_lowercase());
    if own.is_some() && authority.is_some() && own == authority {
        return None;
    }
    Some(format!(
        "cross-site request refused: Origin '{origin}' is neither this server nor listed in \
         http.cors_origins"
    ))
}

/// Middleware: the Host check on every request, the cross-site check on
/// state-changing ones.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if let Some(host) = host
        && !host_allowed(&state, host)
    {
        return forbidden(format!(
            "host '{host}' refused: this server answers to the loopback names and \
             http.allowed_hosts only"
        ));
    }
    let changes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if changes && let Some(why) = cross_site(&state, req.headers()) {
        return forbidden(why);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_drop_the_port() {
        assert_eq!(host_name("localhost:3000"), "localhost");
        assert_eq!(host_name("[::1]:3000"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("Evil.Example"), "evil.example");
        assert_eq!(host_name("127.0.0.1:80"), "127.0.0.1");
    }
}
