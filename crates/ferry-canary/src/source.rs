//! The metric-source contract: where canary samples come from. A canary config's metric names a
//! source by its `query.type`; the source turns the query, a scope and a time window into one
//! sample per step.

use async_trait::async_trait;
use ferry_core::Problem;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What one metric query asks for.
#[derive(Debug, Clone)]
pub struct MetricQuery<'a> {
    /// The metric's `query` object from the canary config (its `type` chose the source).
    pub query: &'a Value,
    /// The metric's name, for messages.
    pub metric: &'a str,
    /// Which scope to measure: for Ferry's deploys, a server group name (`shop-prod-v003`).
    pub scope: &'a str,
    /// The scope's location (region, namespace); empty when none was given.
    pub location: &'a str,
    /// Window start, unix seconds, inclusive.
    pub start: u64,
    /// Window end, unix seconds, exclusive.
    pub end: u64,
    /// Seconds per sample.
    pub step: u64,
}

/// Why a source gave no samples.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// No source serves this `query.type`.
    #[error("no metric source for query type \"{0}\"")]
    UnknownType(String),
    /// The source could not be reached (down, refused, timed out).
    #[error("metric source unreachable: {0}")]
    Unreachable(String),
    /// The source rejected the query; its own message follows.
    #[error("query failed: {0}")]
    Query(String),
    /// The source answered with something this source does not understand.
    #[error("unexpected answer from the metric source: {0}")]
    BadResponse(String),
    /// The query object is not valid for this source.
    #[error("invalid query: {0}")]
    Config(String),
}

/// A metric source (Prometheus, the built-in load balancer, …).
#[async_trait]
pub trait MetricSource: Send + Sync + 'static {
    /// The `query.type` this source answers, e.g. `prometheus`.
    fn query_type(&self) -> &'static str;
    /// Checks a query object as written, pushing every problem with its path (`path` is the
    /// query's own path, e.g. `metrics[1].query`).
    fn validate(&self, query: &Value, path: &str, problems: &mut Vec<Problem>);
    /// The samples of one scope over the window: one value per step, oldest first. A step the
    /// source has no value for is NaN (the judge's `nanStrategy` decides) or left out.
    async fn fetch(&self, query: &MetricQuery<'_>) -> Result<Vec<f64>, SourceError>;
}

/// The metric sources Ferry knows, by query type.
#[derive(Clone, Default)]
pub struct Sources {
    by_type: BTreeMap<&'static str, Arc<dyn MetricSource>>,
}

impl Sources {
    /// No sources.
    pub fn new() -> Self {
        Sources::default()
    }

    /// Adds (or replaces) the source for its query type.
    #[must_use]
    pub fn with(mut self, source: Arc<dyn MetricSource>) -> Self {
        self.by_type.insert(source.query_type(), source);
        self
    }

    /// The source for a query type.
    pub fn get(&self, query_type: &str) -> Option<&Arc<dyn MetricSource>> {
        self.by_type.get(query_type)
    }

    /// The query types served, sorted.
    pub fn types(&self) -> Vec<&'static str> {
        self.by_type.keys().copied().collect()
    }

    /// Checks one metric's query object: it names a known source, and that source accepts it.
    pub fn validate_query(&self, query: &Value, path: &str, problems: &mut Vec<Problem>) {
        let Some(kind) = query.get("type").and_then(Value::as_str) else {
            problems.push(Problem::new(
                format!("{path}.type"),
                "is required (the metric source, e.g. prometheus or ferry-lb)",
            ));
            return;
        };
        match self.get(kind) {
            Some(source) => source.validate(query, path, problems),
            None => problems.push(Problem::new(
                format!("{path}.type"),
                format!(
                    "unknown metric source \"{kind}\"; this server has: {}",
                    self.types().join(", ")
                ),
            )),
        }
    }

    /// Fetches through the source the query's `type` names.
    pub async fn fetch(&self, query: &MetricQuery<'_>) -> Result<Vec<f64>, SourceError> {
        let kind = query
            .query
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match self.get(kind) {
            Some(source) => source.fetch(query).await,
            None => Err(SourceError::UnknownType(kind.to_string())),
        }
    }
}

/// A source that only validates queries: for checking documents where no source runs
/// (`ferry validate`). Fetching from it is an error.
pub struct ValidateOnly {
    /// The query type.
    pub query_type: &'static str,
    /// The source's query check.
    pub check: fn(&Value, &str, &mut Vec<Problem>),
}

#[async_trait]
impl MetricSource for ValidateOnly {
    fn query_type(&self) -> &'static str {
        self.query_type
    }
    fn validate(&self, query: &Value, path: &str, problems: &mut Vec<Problem>) {
        (self.check)(query, path, problems);
    }
    async fn fetch(&self, _query: &MetricQuery<'_>) -> Result<Vec<f64>, SourceError> {
        Err(SourceError::Unreachable(format!(
            "the {} source only validates here",
            self.query_type
        )))
    }
}

impl Sources {
    /// Every built-in source type, validating only (no server, no load balancer).
    pub fn offline() -> Sources {
        Sources::new()
            .with(Arc::new(ValidateOnly {
                query_type: "ferry-lb",
                check: crate::lb::validate_query,
            }))
            .with(Arc::new(ValidateOnly {
                query_type: "prometheus",
                check: crate::prometheus::validate_query,
            }))
    }
}

/// Replaces `${scope}`, `${location}` and `${step}` in a query template. Values are inserted
/// as they are; sources that embed them in a query language escape them first.
pub fn fill_template(template: &str, scope: &str, location: &str, step: u64) -> String {
    template
        .replace("${scope}", scope)
        .replace("${location}", location)
        .replace("${step}", &format!("{step}s"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed;

    #[async_trait]
    impl MetricSource for Fixed {
        fn query_type(&self) -> &'static str {
            "fixed"
        }
        fn validate(&self, query: &Value, path: &str, problems: &mut Vec<Problem>) {
            if query.get("value").and_then(Value::as_f64).is_none() {
                problems.push(Problem::new(format!("{path}.value"), "is required"));
            }
        }
        async fn fetch(&self, q: &MetricQuery<'_>) -> Result<Vec<f64>, SourceError> {
            let v = q.query["value"].as_f64().unwrap_or(f64::NAN);
            Ok(vec![v; ((q.end - q.start) / q.step) as usize])
        }
    }

    #[tokio::test]
    async fn queries_go_to_the_source_their_type_names() {
        let sources = Sources::new().with(Arc::new(Fixed));
        let query = json!({"type": "fixed", "value": 2.5});
        let q = MetricQuery {
            query: &query,
            metric: "m",
            scope: "s",
            location: "",
            start: 100,
            end: 130,
            step: 10,
        };
        assert_eq!(sources.fetch(&q).await, Ok(vec![2.5, 2.5, 2.5]));
        let other = json!({"type": "nope"});
        let q = MetricQuery { query: &other, ..q };
        assert_eq!(
            sources.fetch(&q).await,
            Err(SourceError::UnknownType("nope".into()))
        );
    }

    #[test]
    fn validation_names_unknown_sources_and_source_problems() {
        let sources = Sources::new().with(Arc::new(Fixed));
        let mut problems = Vec::new();
        sources.validate_query(&json!({"type": "nope"}), "metrics[0].query", &mut problems);
        sources.validate_query(&json!({"type": "fixed"}), "metrics[1].query", &mut problems);
        sources.validate_query(&json!({}), "metrics[2].query", &mut problems);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "metrics[0].query.type",
                "metrics[1].query.value",
                "metrics[2].query.type"
            ]
        );
        assert!(problems[0].message.contains("this server has: fixed"));
    }

    #[test]
    fn templates_fill_scope_location_and_step() {
        assert_eq!(
            fill_template(
                r#"rate(x{g="${scope}",r="${location}"}[${step}])"#,
                "a-v1",
                "eu",
                15
            ),
            r#"rate(x{g="a-v1",r="eu"}[15s])"#
        );
    }
}
