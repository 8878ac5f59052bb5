//! Active health checks: one task per checked backend, GET `path` every `interval`.
//!
//! A backend starts healthy (the host provider registers only instances that already passed their
//! readiness check) and is checked at once. `unhealthy_threshold` consecutive failures take it
//! out; `healthy_threshold` consecutive passes bring it back. A backend taken out by a failed
//! connect (passive check) comes back on the next single pass.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderValue, Request, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Body;

use crate::client::Connector;
use crate::config::HealthCheckConfig;
use crate::pool::BackendState;
use crate::proxy::UpBody;

/// Largest response body a check reads before giving up on reusing the connection.
const MAX_CHECK_BODY: u64 = 64 * 1024;

/// One check on a fresh connection (as a new client would see the backend): true for a 2xx or
/// 3xx answer within the timeout.
pub(crate) async fn check_once(
    connector: &Connector,
    backend: &BackendState,
    config: &HealthCheckConfig,
) -> bool {
    let Ok(uri) = config.path.parse::<Uri>() else {
        return false;
    };
    let mut request = Request::new(UpBody::Empty);
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    if let Ok(host) = HeaderValue::from_str(backend.authority.as_str()) {
        headers.insert(header::HOST, host);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static("ferry-lb-health-check"),
    );
    let attempt = async {
        let mut conn = connector
            .connect(backend.pool_key, backend.addr)
            .await
            .ok()?;
        let response = conn.sender.send_request(request).await.ok()?;
        let pass = response.status().is_success() || response.status().is_redirection();
        // Read a short body to the end, as a polite client would.
        let mut body = response.into_body();
        let mut read = 0u64;
        while read <= MAX_CHECK_BODY && !body.is_end_stream() {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => break,
            }
        }
        Some(pass)
    };
    matches!(
        tokio::time::timeout(config.timeout, attempt).await,
        Ok(Some(true))
    )
}

/// Checks `backend` forever (until the task is aborted).
pub(crate) async fn run(
    connector: Connector,
    backend: Arc<BackendState>,
    config: HealthCheckConfig,
) {
    let mut passes: u32 = 0;
    let mut failures: u32 = 0;
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let healthy = backend.healthy.load(Ordering::Relaxed);
        if check_once(&connector, &backend, &config).await {
            failures = 0;
            passes = passes.saturating_add(1);
            let passive = backend.passive_down.swap(false, Ordering::Relaxed);
            if !healthy && (passive || passes >= config.healthy_threshold) {
                tracing::info!(backend = %backend.id, addr = %backend.addr, "backend is healthy again");
                backend.set_healthy(true);
            }
        } else {
            passes = 0;
            failures = failures.saturating_add(1);
            if healthy && failures >= config.unhealthy_threshold {
                tracing::warn!(backend = %backend.id, addr = %backend.addr, "backend failed its health check");
                backend.set_healthy(false);
            }
        }
    }
}
