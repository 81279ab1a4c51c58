//! Prometheus metrics: `GET /metrics`.
//!
//! Exposed series (besides the core's `flotilla_runs_executed_total`,
//! `flotilla_run_transitions_total{to}`, `flotilla_runs_terminated_total`
//! and the `flotilla_submit_latency_seconds` histogram):
//! - `flotilla_runs{status}` — runs by status, counted in the store at most
//!   every `http.metrics_refresh_ms`;
//! - `flotilla_queue_depth{queue}` — messages waiting per cluster queue (as
//!   cached);
//! - `flotilla_http_requests_total{method,route,status}` and the
//!   `flotilla_http_request_duration_seconds{method,route}` histogram.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;
use crate::error::{Error, ErrorKind};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The process-wide Prometheus recorder, installed on first use. `None`
/// when another metrics recorder was installed first (by an embedding
/// application), in which case `/metrics` answers 501.
pub fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
                    None
                }
            }
        })
        .clone()
}

/// Middleware: counts requests by method, matched route and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("flotilla_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("flotilla_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics`: the Prometheus text format. The store counts behind
/// the gauges are refreshed at most every `http.metrics_refresh_ms`
/// (scrapes in between reuse them); with `http.metrics_auth` and
/// `auth = "tokens"` a token is needed.
pub async fn render(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.http().metrics_auth {
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Err(e) = state.auth().identify(header) {
            return e.into_response();
        }
    }
    let Some(handle) = state.metrics() else {
        return Error::new(
            ErrorKind::Service(flotilla::ErrorKind::Unsupported),
            "metrics: another metrics recorder is installed in this process",
        )
        .into_response();
    };
    {
        let refresh = Duration::from_millis(state.http().metrics_refresh_ms);
        let mut at = state.gauges_at().lock().await;
        if at.is_none_or(|t| t.elapsed() >= refresh) {
            refresh_gauges(&state).await;
            *at = Some(tokio::time::Instant::now());
        }
    }
    handle.run_upkeep();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

/// Counts runs by status and queue depths into the gauges.
async fn refresh_gauges(state: &AppState) {
    let flotilla = state.flotilla();
    for status in flotilla::RunStatus::ALL {
        let q = flotilla::RunQuery::all(1).with_statuses(&[status]);
        match flotilla.list_runs(q).await {
            Ok(page) => {
                metrics::gauge!("flotilla_runs", "status" => status.as_str()).set(page.total as f64)
            }
            Err(e) => tracing::warn!(error = %e, "metrics: counting runs failed"),
        }
    }
    if let Ok(clusters) = flotilla.list_clusters().await {
        for c in clusters {
            if let Ok(depth) = flotilla.queue().depth(&c.name).await {
                metrics::gauge!("flotilla_queue_depth", "queue" => c.name.clone())
                    .set(depth as f64);
            }
        }
    }
}
