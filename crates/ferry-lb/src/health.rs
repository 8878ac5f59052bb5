//! Active health checks: one task per checked backend, GET `path` every `interval`.
//!
//! A backend starts healthy (the host provider registers only instances that already passed their
//! readiness check) and is checked at once. `unhealthy_threshold` consecutive failures take it
//! out; `healthy_threshold` consecutive passes bring it back. A backend taken out by a failed
//! connect (passive check) comes back on the next single pass.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::Method;
use http_body_util::BodyExt;
use hyper::body::Body;

use crate::client::{Connector, Exchanged, UpRequest};
use crate::config::HealthCheckConfig;
use crate::pool::BackendState;

/// Largest response body a check reads before giving up on reusing the connection.
const MAX_CHECK_BODY: u64 = 64 * 1024;

/// One check on a fresh connection (as a new client would see the backend): true for a 2xx or
/// 3xx answer within the timeout.
pub(crate) async fn check_once(
    connector: &Connector,
    backend: &BackendState,
    config: &HealthCheckConfig,
) -> bool {
    // The path is validated when the configuration is applied; this only keeps a bad one from
    // reaching the wire.
    if config.path.parse::<http::uri::PathAndQuery>().is_err() || !config.path.starts_with('/') {
        return false;
    }
    let head = |out: &mut Vec<u8>| {
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(config.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(backend.authority.as_str().as_bytes());
        out.extend_from_slice(
            b"\r\nconnection: close\r\nuser-agent: ferry-lb-health-check\r\n\r\n",
        );
    };
    let attempt = async {
        let mut conn = connector
            .connect(backend.pool_key, backend.addr)
            .await
            .ok()?;
        let Exchanged {
            head: response,
            sending,
        } = conn
            .exchange(UpRequest {
                method: &Method::GET,
                head: &head,
                body: &mut None,
                chunked: false,
            })
            .await
            .ok()?;
        let pass = response.status.is_success() || response.status.is_redirection();
        // Read a short body to the end, as a polite client would.
        let mut body = conn.into_body(&response, sending);
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
