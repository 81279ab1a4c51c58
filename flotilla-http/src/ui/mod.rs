//! The web UI, served at `/`.
//!
//! Every page is the same small HTML shell (embedded in the binary) plus one
//! stylesheet and one plain JavaScript file, also embedded: no CDN, no node,
//! no build step. The script reads the page path, calls the JSON API under
//! `/api/v6` and renders the page:
//!
//! | path | page |
//! |---|---|
//! | `/`, `/definitions` | definitions: search, sort, paging |
//! | `/definitions/new`, `/definitions/{id}/edit` | definition form |
//! | `/definitions/{id}` | definition detail, run form, recent runs |
//! | `/runs` | runs: status chips, filters, sort, paging, auto-refresh |
//! | `/runs/{id}` | run detail, timeline, live logs, stop, retry |
//! | `/clusters` | per cluster: capacity, running and waiting runs (position, reason), an hour's chart |
//! | `/templates` | templates: the latest version of each |
//! | `/templates/{id}` | template detail, a run form generated from its schema, recent runs |
//!
//! With `auth = "tokens"` the shell tells the script so, and the script
//! asks for a token, keeps it in `localStorage` and sends it as
//! `Authorization: Bearer` on every API call (live logs are read with
//! `fetch`, not `EventSource`, so they carry the header too). The pages
//! themselves hold no data and are public, like `/health`.

use axum::Router;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::config::AuthMode;

const SHELL: &str = include_str!("shell.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");
const ICON: &str = include_str!("icon.svg");

/// The version stamped into asset URLs so browsers refetch after upgrades.
const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The shell page for this server's authentication mode.
fn shell(auth: AuthMode) -> String {
    let mode = match auth {
        AuthMode::None => "none",
        AuthMode::Tokens => "tokens",
    };
    SHELL
        .replace("{{AUTH}}", mode)
        .replace("{{VERSION}}", ASSET_VERSION)
}

async fn page(State(state): State<AppState>) -> Response {
    (
        [(CACHE_CONTROL, "no-cache")],
        Html(shell(state.auth().mode())),
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The UI routes, merged at `/`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/definitions", get(page))
        .route("/definitions/new", get(page))
        .route("/definitions/{id}", get(page))
        .route("/definitions/{id}/edit", get(page))
        .route("/runs", get(page))
        .route("/runs/{id}", get(page))
        .route("/clusters", get(page))
        .route("/templates", get(page))
        .route("/templates/{id}", get(page))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/favicon.ico",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
        .route(
            "/ui/icon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_names_the_auth_mode_and_assets() {
        let open = shell(AuthMode::None);
        assert!(open.contains(r#"data-auth="none""#), "{open}");
        assert!(open.contains("/ui/app.js?v="), "{open}");
        assert!(!open.contains("{{"), "unreplaced placeholder: {open}");
        assert!(shell(AuthMode::Tokens).contains(r#"data-auth="tokens""#));
    }
}
