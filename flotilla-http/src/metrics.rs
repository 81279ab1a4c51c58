//! Metrics: Prometheus at `GET /metrics`, and, with
//! `[metrics.dogstatsd] address`, the same series pushed to a DogStatsD
//! agent (both recorders behind one fanout).
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
use metrics_exporter_dogstatsd::{DogStatsDBuilder, DogStatsDRecorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::FanoutBuilder;

use crate::AppState;
use crate::config::DogStatsdConfig;
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
    HANDLE.get_or_init(|| install_recorders(None)).clone()
}

/// Installs the process-wide recorders before the service records
/// anything: Prometheus, and a DogStatsD exporter beside it when
/// `dogstatsd.address` is set. The first server of a process decides; a
/// later one asking for DogStatsD gets a warning. Errors name the key.
pub fn install(dogstatsd: &DogStatsdConfig) -> Result<(), Error> {
    let exporter = match &dogstatsd.address {
        None => None,
        Some(address) => Some(dogstatsd_recorder(address, dogstatsd)?),
    };
    let mut exporter = Some(exporter);
    HANDLE.get_or_init(|| install_recorders(exporter.take().flatten()));
    if exporter.is_some_and(|e| e.is_some()) {
        tracing::warn!(
            "metrics.dogstatsd: a recorder is already installed in this process; not pushing to DogStatsD"
        );
    }
    Ok(())
}

fn dogstatsd_recorder(
    address: &str,
    settings: &DogStatsdConfig,
) -> Result<DogStatsDRecorder, Error> {
    let mut builder = DogStatsDBuilder::default()
        .with_remote_address(address)
        .map_err(|e| Error::config(format!("metrics.dogstatsd.address: '{address}': {e}")))?
        .with_flush_interval(Duration::from_millis(
            settings.flush_ms.unwrap_or(1000).max(10),
        ))
        .with_telemetry(false);
    if let Some(ns) = settings.namespace.as_deref().filter(|n| !n.is_empty()) {
        builder = builder.set_global_prefix(ns);
    }
    builder
        .build()
        .map_err(|e| Error::config(format!("metrics.dogstatsd: {e}")))
}

fn install_recorders(dogstatsd: Option<DogStatsDRecorder>) -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    let installed = match dogstatsd {
        None => metrics::set_global_recorder(recorder).map_err(|e| e.to_string()),
        Some(dd) => metrics::set_global_recorder(
            FanoutBuilder::default()
                .add_recorder(recorder)
                .add_recorder(dd)
                .build(),
        )
        .map_err(|e| e.to_string()),
    };
    match installed {
        Ok(()) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
            None
        }
    }
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
