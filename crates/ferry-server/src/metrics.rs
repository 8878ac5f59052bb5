//! Prometheus metrics at `/metrics`: HTTP requests by route and status with a latency
//! histogram, and the engine's counters and gauges (read when scraped).

use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    transitions: Gauge<u64, std::sync::atomic::AtomicU64>,
    commits: Gauge<u64, std::sync::atomic::AtomicU64>,
    commit_failures: Gauge<u64, std::sync::atomic::AtomicU64>,
    live: Gauge<u64, std::sync::atomic::AtomicU64>,
    steps: Gauge<u64, std::sync::atomic::AtomicU64>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(|_| {})
    }
}

impl Metrics {
    /// The server's metrics plus whatever `extra` registers (e.g. the load balancer's
    /// per-server-group metrics), all under the `ferry_` prefix.
    pub fn new(extra: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("ferry");
        extra(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let transitions = Gauge::default();
        let commits = Gauge::default();
        let commit_failures = Gauge::default();
        let live = Gauge::default();
        let steps = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "engine_transitions",
            "State transitions applied since start (a counter)",
            transitions.clone(),
        );
        registry.register(
            "engine_commits",
            "Store commits since start (a counter)",
            commits.clone(),
        );
        registry.register(
            "engine_commit_failures",
            "Failed commits retried since start (a counter)",
            commit_failures.clone(),
        );
        registry.register(
            "engine_live_executions",
            "Executions held by the engine",
            live.clone(),
        );
        registry.register(
            "engine_steps_in_flight",
            "Stage steps running now",
            steps.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            transitions,
            commits,
            commit_failures,
            live,
            steps,
        }
    }
}

/// Middleware recording every request.
pub async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    s.metrics
        .latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: res.status().as_u16(),
        })
        .inc();
    res
}

/// `GET /metrics`.
pub async fn render(State(s): State<AppState>) -> Response {
    let stats = s.engine.stats();
    let m = &s.metrics;
    m.transitions.set(stats.transitions.load(Ordering::Relaxed));
    m.commits.set(stats.commits.load(Ordering::Relaxed));
    m.commit_failures
        .set(stats.commit_failures.load(Ordering::Relaxed));
    m.live.set(stats.live_executions.load(Ordering::Relaxed));
    m.steps.set(stats.steps_in_flight.load(Ordering::Relaxed));
    let mut out = String::new();
    if encode(&mut out, &m.registry).is_err() {
        return (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed",
        )
            .into_response();
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
