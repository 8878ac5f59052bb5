//! What every handler shares.

use crate::auth::{Authenticator, Authorizer};
use crate::metrics::Metrics;
use ferry_core::Store;
use ferry_engine::EngineHandle;
use std::sync::Arc;

/// Shared state of the API.
#[derive(Clone)]
pub struct AppState {
    /// The engine (runs pipelines, applies commands).
    pub engine: EngineHandle,
    /// The store (applications, pipelines, execution history).
    pub store: Arc<dyn Store>,
    /// Who is calling.
    pub auth: Arc<dyn Authenticator>,
    /// Whether they may.
    pub authz: Arc<dyn Authorizer>,
    /// Request and engine metrics.
    pub metrics: Arc<Metrics>,
    /// Largest accepted request body, bytes (larger gets 413).
    pub max_body_bytes: usize,
    /// Server-group providers (the host provider by default), for the infrastructure routes.
    pub providers: Vec<Arc<dyn ferry_provider::Provider>>,
    /// The metric sources canary configs may name (to validate them when applied).
    pub canary_sources: ferry_canary::Sources,
    /// Cancelled when the server starts shutting down, so long-lived responses (event
    /// streams) end instead of holding the shutdown up.
    pub shutdown: tokio_util::sync::CancellationToken,
}
