//! Canary analysis for Ferry: metric sources and the `kayentaCanary` stage.
//!
//! The judge itself (statistics, classification, scoring) is the pure library `ferry-judge`;
//! this crate does the I/O around it: it reads canary configs from the store, asks metric
//! sources for samples of the baseline and canary scopes, hands them to the judge interval by
//! interval, and keeps every interval's result with the execution.
//!
//! Metric sources ([`MetricSource`]) are chosen by a metric's `query.type`:
//! - `prometheus` ([`prometheus::PrometheusSource`]): PromQL through the HTTP API's
//!   `query_range`;
//! - `ferry-lb` ([`lb::LbSource`]): the built-in load balancer's per-server-group traffic.
//!
//! Canary configs are stored as versioned documents of kind [`KIND`] (`ferry apply` with
//! `kind: CanaryConfig`); [`validate_canary_config`] checks one against the judge's rules and
//! the sources this server has, reporting every problem with its path.

pub mod compare;
pub mod lb;
pub mod prometheus;
pub mod recorded;
pub mod source;
pub mod stage;

pub use source::{MetricQuery, MetricSource, SourceError, Sources, fill_template};

use ferry_core::{Problem, Problems, Store};
use ferry_engine::{Registry, Typed};
use serde_json::Value;
use std::sync::Arc;

/// The document kind canary configs are stored under.
pub const KIND: &str = "CanaryConfig";

/// What the canary stage needs.
#[derive(Clone)]
pub struct CanaryServices {
    /// Where canary configs are stored.
    pub store: Arc<dyn Store>,
    /// The metric sources, by query type.
    pub sources: Sources,
}

/// Adds the canary stage types to `registry`.
pub fn register(registry: &mut Registry, services: CanaryServices) {
    registry.register(Typed(stage::KayentaCanary { services }));
}

/// Adds the canary stage types for validating pipelines only (no store, no sources).
pub fn register_for_validation(registry: &mut Registry) {
    registry.register(ferry_engine::ValidateOnly::<stage::KayentaCanary>::new());
}

/// Checks a canary config document: the judge's rules (`ferry_judge::parse_canary_config`) and
/// every metric's query against the source its `type` names. Every problem is reported, with
/// its path.
pub fn validate_canary_config(
    doc: &Value,
    sources: &Sources,
) -> Result<ferry_judge::config::CanaryConfig, Problems> {
    let mut problems = Vec::new();
    if let Some(metrics) = doc.get("metrics").and_then(Value::as_array) {
        for (i, metric) in metrics.iter().enumerate() {
            // The judge's parser reports a missing or non-object query.
            if let Some(query @ Value::Object(_)) = metric.get("query") {
                sources.validate_query(query, &format!("metrics[{i}].query"), &mut problems);
            }
        }
    }
    match ferry_judge::config::parse_canary_config(doc) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(Problems(problems)),
        Err(Problems(mut judge)) => {
            // The judge checks the query's shape too; keep one problem per path and message.
            for p in problems {
                if !judge.contains(&p) {
                    judge.push(p);
                }
            }
            judge.sort_by(|a, b| a.path.cmp(&b.path));
            Err(Problems(judge))
        }
    }
}

/// A problem list as one line per problem (for CLI and stage messages).
pub fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
