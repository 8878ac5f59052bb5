//! `ferry-lb`: canary samples from Ferry's own load balancer, which records every server
//! group's traffic in one-second buckets (the last hour).
//!
//! Query: `{"type": "ferry-lb", "metric": M}` with M one of
//! - `error_rate`: responses with status ≥ 500 (the load balancer's own 502/503/504 included)
//!   divided by requests, per step; NaN for a step without requests;
//! - `latency_mean_ms` / `latency_max_ms`: time from choosing a backend to its response head,
//!   mean or max over the step, in milliseconds; NaN without requests;
//! - `request_rate`: requests per second over the step;
//! - `errors`: responses with status ≥ 500 in the step.
//!
//! The scope is the server group's name (`shop-prod-v003`). The location is not used: one
//! Ferry runs one load balancer.

use crate::source::{MetricQuery, MetricSource, SourceError};
use async_trait::async_trait;
use ferry_core::Problem;
use ferry_lb::{Lb, SampleBucket};
use serde_json::Value;

/// The metrics this source computes.
pub const METRICS: [&str; 5] = [
    "error_rate",
    "latency_mean_ms",
    "latency_max_ms",
    "request_rate",
    "errors",
];

/// Samples from the built-in load balancer.
#[derive(Debug, Clone)]
pub struct LbSource {
    lb: Lb,
}

impl LbSource {
    /// A source reading `lb`'s per-server-group buckets.
    pub fn new(lb: Lb) -> Self {
        LbSource { lb }
    }
}

/// Folds one-second buckets into steps `[start + k·step, start + (k+1)·step)` and computes
/// `metric` for each.
pub fn aggregate(
    buckets: &[SampleBucket],
    metric: &str,
    start: u64,
    end: u64,
    step: u64,
) -> Result<Vec<f64>, SourceError> {
    if !METRICS.contains(&metric) {
        return Err(SourceError::Config(format!(
            "unknown ferry-lb metric \"{metric}\"; use one of {}",
            METRICS.join(", ")
        )));
    }
    let step = step.max(1);
    let steps = end.saturating_sub(start) / step;
    let mut out = Vec::with_capacity(steps as usize);
    for k in 0..steps {
        let (from, to) = (start + k * step, start + (k + 1) * step);
        let (mut requests, mut errors, mut sum_us, mut max_us) = (0u64, 0u64, 0u64, 0u64);
        for b in buckets.iter().filter(|b| b.second >= from && b.second < to) {
            requests += b.requests;
            errors += b.errors;
            sum_us += b.latency_us_sum;
            max_us = max_us.max(b.latency_us_max);
        }
        let per_request = |x: f64| {
            if requests == 0 {
                f64::NAN
            } else {
                x / requests as f64
            }
        };
        out.push(match metric {
            "error_rate" => per_request(errors as f64),
            "latency_mean_ms" => per_request(sum_us as f64 / 1000.0),
            "latency_max_ms" if requests == 0 => f64::NAN,
            "latency_max_ms" => max_us as f64 / 1000.0,
            "request_rate" => requests as f64 / step as f64,
            _ => errors as f64,
        });
    }
    Ok(out)
}

/// Checks a `ferry-lb` query object (needs no load balancer: used offline too).
pub fn validate_query(query: &Value, path: &str, problems: &mut Vec<Problem>) {
    match query.get("metric").and_then(Value::as_str) {
        Some(m) if METRICS.contains(&m) => {}
        Some(m) => problems.push(Problem::new(
            format!("{path}.metric"),
            format!("unknown metric \"{m}\"; use one of {}", METRICS.join(", ")),
        )),
        None => problems.push(Problem::new(
            format!("{path}.metric"),
            format!("is required: one of {}", METRICS.join(", ")),
        )),
    }
}

#[async_trait]
impl MetricSource for LbSource {
    fn query_type(&self) -> &'static str {
        "ferry-lb"
    }

    fn validate(&self, query: &Value, path: &str, problems: &mut Vec<Problem>) {
        validate_query(query, path, problems);
    }

    async fn fetch(&self, q: &MetricQuery<'_>) -> Result<Vec<f64>, SourceError> {
        let metric = q
            .query
            .get("metric")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let buckets = self.lb.samples(q.scope, q.start, q.end);
        aggregate(&buckets, metric, q.start, q.end, q.step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(second: u64, requests: u64, errors: u64, sum_ms: u64, max_ms: u64) -> SampleBucket {
        SampleBucket {
            second,
            requests,
            errors,
            latency_us_sum: sum_ms * 1000,
            latency_us_max: max_ms * 1000,
        }
    }

    #[test]
    fn buckets_fold_into_steps() {
        let buckets = [
            bucket(100, 10, 1, 50, 9),
            bucket(101, 10, 0, 50, 7),
            bucket(104, 20, 4, 400, 30),
            // Outside the window.
            bucket(99, 50, 50, 0, 0),
            bucket(106, 50, 50, 0, 0),
        ];
        let rate = aggregate(&buckets, "error_rate", 100, 106, 2).unwrap();
        assert_eq!(rate[0], 0.05);
        assert!(rate[1].is_nan(), "no requests in [102, 104): NaN");
        assert_eq!(rate[2], 0.2);
        assert_eq!(
            aggregate(&buckets, "latency_mean_ms", 100, 106, 2).unwrap()[0],
            5.0
        );
        assert_eq!(
            aggregate(&buckets, "latency_max_ms", 100, 106, 2).unwrap()[2],
            30.0
        );
        assert_eq!(
            aggregate(&buckets, "request_rate", 100, 106, 2).unwrap(),
            vec![10.0, 0.0, 10.0]
        );
        assert_eq!(
            aggregate(&buckets, "errors", 100, 106, 3).unwrap(),
            vec![1.0, 4.0]
        );
    }

    #[test]
    fn unknown_metrics_are_config_errors() {
        let err = aggregate(&[], "p99", 0, 10, 1).unwrap_err();
        assert!(matches!(err, SourceError::Config(m) if m.contains("error_rate")));
        let mut problems = Vec::new();
        validate_query(&serde_json::json!({"type": "ferry-lb"}), "q", &mut problems);
        validate_query(
            &serde_json::json!({"type": "ferry-lb", "metric": "p99"}),
            "r",
            &mut problems,
        );
        assert_eq!(problems.len(), 2);
        assert_eq!(
            (problems[0].path.as_str(), problems[1].path.as_str()),
            ("q.metric", "r.metric")
        );
    }
}
