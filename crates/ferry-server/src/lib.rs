//! Ferry's HTTP API under `/api/v1` (what Spinnaker calls Gate).
//!
//! [`routes::ROUTES`] is the single table of routes: the router, the authorization middleware
//! ([`auth::authorize`]) and the OpenAPI document ([`openapi::document`]) are all built from it,
//! so no route can exist without an authorization decision or be missing from the document.
//! Errors have one body shape ([`error::ApiError`]). Bodies over the limit get 413.
//!
//! This crate knows the engine and the store trait, never SQL or stage internals; the binary
//! wires the concrete store and stage types in.

pub mod auth;
pub mod canary;
pub mod documents;
pub mod error;
pub mod infra;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod sse;
pub mod state;

pub use state::AppState;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use http::StatusCode;
use serde_json::Value;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// The whole API as a router (test it with `tower::ServiceExt::oneshot`).
pub fn app(state: AppState) -> Router {
    routes::router()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(error::error_body("not_found", "no such route", &[])),
    )
}

async fn method_not_allowed() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(error::error_body(
            "method_not_allowed",
            "method not allowed on this route",
            &[],
        )),
    )
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stopping = state.shutdown.clone();
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        shutdown.await;
        stopping.cancel();
        let _ = tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    let _ = rx.await;
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(std::io::Error::other(e)),
        Err(_) => {
            tracing::warn!("requests still running after the grace period; stopping anyway");
            Ok(())
        }
    }
}

/// An execution as the API shows it: Spinnaker's shape, without the definitions snapshot,
/// with secret-looking values redacted.
pub fn execution_json(e: &ferry_core::Execution) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("stageDefs");
    }
    redact_secrets(&mut v);
    v
}

/// Field names whose values are never shown.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace(['-', '_'], "");
    [
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "authorization",
        "credential",
        "privatekey",
        "cookie",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Replaces the values of secret-looking fields (and every value of `customHeaders`) with
/// `"***"`, recursively.
pub fn redact_secrets(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, val) in o.iter_mut() {
                if k == "customHeaders" {
                    if let Value::Object(h) = val {
                        for hv in h.values_mut() {
                            *hv = Value::String("***".into());
                        }
                    }
                } else if is_secret_key(k) && !val.is_null() && !val.is_object() && !val.is_array()
                {
                    *val = Value::String("***".into());
                } else {
                    redact_secrets(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
