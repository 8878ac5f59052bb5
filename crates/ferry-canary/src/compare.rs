//! Comparing a canary with its baseline: load a stored canary config, fetch every metric for
//! both sides through the metric sources, and judge — what the `kayentaCanary` stage and the
//! rollout analysis's `judge` provider both do.

use crate::{CanaryServices, KIND, MetricQuery, Sources, validate_canary_config};
use ferry_judge::config::{CanaryConfig, MetricConfig};
use ferry_judge::judge::{JudgeResult, MetricData, MetricSamples, Thresholds};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Metric fetches (each fetching both sides) running at once, whatever the number of metrics.
pub const MAX_FETCHES: usize = 8;

/// One side of a comparison: what to measure and over which window (unix seconds, `[start,
/// end)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// The scope (a server group name).
    pub scope: String,
    /// Its location; empty when none.
    pub location: String,
    /// Window start, inclusive.
    pub start: u64,
    /// Window end, exclusive.
    pub end: u64,
}

/// What one metric compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The baseline (control).
    pub baseline: Side,
    /// The canary (experiment).
    pub canary: Side,
    /// Seconds per sample.
    pub step: u64,
}

/// Loads the canary config `name` (the given version, else the latest) and validates it
/// against the sources. Returns it with its version.
pub async fn load_config(
    services: &CanaryServices,
    name: &str,
    version: Option<i64>,
) -> Result<(CanaryConfig, i64), String> {
    let record = services
        .store
        .get_document(KIND, name, version)
        .await
        .map_err(|e| format!("could not read canary config \"{name}\": {e}"))?
        .ok_or_else(|| match version {
            Some(v) => format!("canary config \"{name}\" version {v} no longer exists"),
            None => format!(
                "canary config \"{name}\" not found; apply a CanaryConfig document named \"{name}\" first"
            ),
        })?;
    let config = validate_canary_config(&record.body, &services.sources)
        .map_err(|p| format!("canary config \"{name}\" is invalid: {p}"))?;
    Ok((config, record.version))
}

/// Fetches every metric of `config` for both sides of the pair `pair_of` gives it. A metric
/// whose fetch fails becomes [`MetricData::Error`] (the judge classifies it); `pair_of`
/// failing stops everything with its message.
pub async fn fetch_metrics(
    sources: &Sources,
    config: &CanaryConfig,
    pair_of: impl Fn(&MetricConfig) -> Result<Pair, String>,
) -> Result<BTreeMap<String, MetricData>, String> {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_FETCHES));
    let mut fetches = Vec::with_capacity(config.metrics.len());
    for metric in &config.metrics {
        let pair = pair_of(metric)?;
        let (sources, permits) = (sources.clone(), permits.clone());
        let (query, name) = (metric.query.clone(), metric.name.clone());
        fetches.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let side = |s: &Side| {
                let (sources, query, name, s) = (&sources, &query, &name, s.clone());
                async move {
                    let q = MetricQuery {
                        query,
                        metric: name,
                        scope: &s.scope,
                        location: &s.location,
                        start: s.start,
                        end: s.end,
                        step: pair.step,
                    };
                    sources.fetch(&q).await
                }
            };
            let (baseline, canary) = tokio::join!(side(&pair.baseline), side(&pair.canary));
            let data = match (baseline, canary) {
                (Ok(baseline), Ok(canary)) => {
                    MetricData::Samples(MetricSamples { baseline, canary })
                }
                (Err(e), _) => MetricData::Error(format!("baseline: {e}")),
                (_, Err(e)) => MetricData::Error(format!("canary: {e}")),
            };
            (name, data)
        }));
    }
    let mut data = BTreeMap::new();
    for fetch in fetches {
        let (name, d) = fetch
            .await
            .map_err(|e| format!("a metric fetch stopped: {e}"))?;
        data.insert(name, d);
    }
    Ok(data)
}

/// Judges off the async runtime (the judge is CPU work).
pub async fn judge(
    config: CanaryConfig,
    data: BTreeMap<String, MetricData>,
    thresholds: Thresholds,
) -> Result<JudgeResult, String> {
    tokio::task::spawn_blocking(move || ferry_judge::judge::judge(&config, &data, thresholds))
        .await
        .map_err(|e| format!("the judge stopped: {e}"))
}
