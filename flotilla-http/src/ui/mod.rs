//! The web UI mount point. For now a single page linking to the API and its
//! OpenAPI document; the UI work replaces this module behind the same
//! `routes()` function.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use crate::AppState;

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>flotilla</title></head>
<body>
<h1>flotilla</h1>
<p>Containerized batch jobs on ECS, Kubernetes or local processes.</p>
<ul>
<li><a href="/api/openapi.json">OpenAPI document</a></li>
<li><a href="/api/v6/task">Definitions</a> (<code>/api/v6/task</code>)</li>
<li><a href="/api/v6/history">Runs</a> (<code>/api/v6/history</code>)</li>
<li><a href="/api/v6/clusters">Clusters</a></li>
<li><a href="/health">Health</a> and <a href="/metrics">metrics</a></li>
</ul>
</body>
</html>
"#;

/// The UI routes, merged at `/`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(|| async { Html(PAGE) }))
}
