//! Progressive delivery for Ferry: Argo Rollouts-style analysis runs and rollout strategies,
//! with Flagger-style webhook gates.
//!
//! - [`analysis`]: analysis metrics (`successCondition` / `failureCondition` over a
//!   measurement's `result`, `interval`, `count`, limits) measured through Prometheus, a web
//!   endpoint (HTTP JSON + JSON path) or Ferry's canary judge; run phases Successful, Failed,
//!   Error and Inconclusive.
//! - [`rollout`]: the `rollout` stage, Argo Rollouts' canary steps (`setWeight`, `pause`,
//!   `analysis`) on Ferry's server groups and load balancer, with promote / full promote /
//!   abort commands and the statuses Progressing, Paused, Healthy and Degraded.
//! - [`webhook`]: Flagger's webhook gates (`confirm-rollout`, `pre-rollout`, `rollout`,
//!   `confirm-promotion`, `post-rollout`, `rollback`).

pub mod analysis;
pub mod duration;
pub mod rollout;
pub mod webhook;

use ferry_core::Store;
use ferry_engine::{Registry, Typed};
use std::sync::Arc;

/// The document kind analysis templates are stored under.
pub const TEMPLATE_KIND: &str = "AnalysisTemplate";

/// What rollouts need.
#[derive(Clone)]
pub struct RolloutServices {
    /// Where server groups live.
    pub providers: ferry_deploy::Providers,
    /// Where analysis templates are stored.
    pub store: Arc<dyn Store>,
    /// The URL guard for web metrics and webhooks.
    pub http: ferry_http::GuardedClient,
    /// Prometheus for `prometheus` analysis metrics, when configured.
    pub prometheus: Option<Arc<ferry_canary::prometheus::PrometheusSource>>,
    /// The canary judge's sources and configs, for `judge` analysis metrics.
    pub canary: Option<ferry_canary::CanaryServices>,
}

/// Adds the `rollout` stage type to `registry`.
pub fn register(registry: &mut Registry, services: RolloutServices) {
    registry.register(Typed(rollout::Rollout { services }));
}

/// Adds the `rollout` stage type for validating pipelines only (no providers or store).
pub fn register_for_validation(registry: &mut Registry) {
    registry.register(ferry_engine::ValidateOnly::<rollout::Rollout>::new());
}
