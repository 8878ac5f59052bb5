//! Prometheus metrics per server group: request counts by status code, a latency histogram, and
//! backend health gauges.
//!
//! The request path never looks a series up by its labels: each routing table resolves a
//! [`RequestCounters`] per (listener, pool, group) when it is built, and each group keeps its
//! histogram series, so counting an answer is an atomic add.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (seconds) of the latency buckets: 250 µs to 10 s, dense in the millisecond range.
pub(crate) const LATENCY_BUCKETS: [f64; 16] = [
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0,
    2.5, 5.0, 10.0,
];

/// Labels of `lb_requests_total`. Responses the load balancer makes itself carry an empty
/// `group` (503 with no healthy backend) and also an empty `pool` (404 without route, 403 firewall).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub listener: Arc<str>,
    pub pool: Arc<str>,
    pub group: Arc<str>,
    pub code: u16,
}

/// Labels of the per-group latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GroupLabels {
    pub pool: Arc<str>,
    pub group: Arc<str>,
}

/// Labels of the backend gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLabels {
    pub pool: Arc<str>,
    pub group: Arc<str>,
    pub backend: Arc<str>,
}

/// Status codes whose `lb_requests_total` series a [`RequestCounters`] keeps at hand.
const COMMON_CODES: [u16; 20] = [
    200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 409, 429, 500, 502, 503,
    504,
];

/// The `lb_requests_total` series of one listener, pool and group. The series of common status
/// codes are resolved on first use and then kept (an atomic load to find them); other codes go
/// through the family.
///
/// Aligned to its own cache lines: every request clones and drops its `Arc` (writing the
/// reference count) and reads `common`, from both worker threads.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct RequestCounters {
    family: Family<RequestLabels, Counter>,
    /// The labels, with `code` set per request.
    labels: RequestLabels,
    common: [OnceLock<Counter>; COMMON_CODES.len()],
}

impl RequestCounters {
    pub fn new(family: &Family<RequestLabels, Counter>, labels: RequestLabels) -> Self {
        RequestCounters {
            family: family.clone(),
            labels,
            common: Default::default(),
        }
    }

    /// Counts one answer with status `code`.
    pub fn inc(&self, code: u16) {
        let labels = || RequestLabels {
            code,
            ..self.labels.clone()
        };
        match COMMON_CODES.iter().position(|c| *c == code) {
            Some(i) => {
                if let Some(slot) = self.common.get(i) {
                    slot.get_or_init(|| self.family.get_or_create_owned(&labels()))
                        .inc();
                }
            }
            None => {
                self.family.get_or_create(&labels()).inc();
            }
        }
    }
}

fn new_latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The metric families; clones share the same series.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<GroupLabels, Histogram, fn() -> Histogram>,
    pub healthy: Family<BackendLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(new_latency_histogram),
            healthy: Family::default(),
        }
    }

    /// Counts an answer through the family; the request path uses [`RequestCounters`] instead.
    pub fn count(&self, listener: &Arc<str>, pool: &Arc<str>, group: &Arc<str>, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                listener: listener.clone(),
                pool: pool.clone(),
                group: group.clone(),
                code,
            })
            .inc();
    }

    /// The `lb_requests_total` series of `listener`, `pool` and `group`, for a routing table.
    pub fn request_counters(
        &self,
        listener: &Arc<str>,
        pool: &Arc<str>,
        group: &Arc<str>,
    ) -> Arc<RequestCounters> {
        Arc::new(RequestCounters::new(
            &self.requests,
            RequestLabels {
                listener: listener.clone(),
                pool: pool.clone(),
                group: group.clone(),
                code: 0,
            },
        ))
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "lb_requests",
            "Requests answered by the load balancer, by listener, pool, server group and status code",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "lb_request_duration",
            "Time from choosing a backend to the end of its response, per server group",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register(
            "lb_backend_healthy",
            "1 while the backend is healthy (active checks; in a checked pool a failed connect also sets 0 until the next pass)",
            self.healthy.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn families_encode_with_the_documented_names() {
        let metrics = Metrics::new();
        let (l, p, g): (Arc<str>, Arc<str>, Arc<str>) =
            ("web".into(), "kids".into(), "kids-v001".into());
        metrics.count(&l, &p, &g, 200);
        let counters = metrics.request_counters(&l, &p, &g);
        counters.inc(200); // a common code: the same series as through the family
        counters.inc(599); // an uncommon one
        metrics.request_counters(&l, &p, &g).inc(599);
        metrics
            .duration
            .get_or_create(&GroupLabels {
                pool: p.clone(),
                group: g.clone(),
            })
            .observe(0.003);
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            r#"lb_requests_total{listener="web",pool="kids",group="kids-v001",code="200"} 2"#,
            r#"lb_requests_total{listener="web",pool="kids",group="kids-v001",code="599"} 2"#,
        ] {
            assert!(text.contains(line), "missing {line} in {text}");
        }
        // Common codes never seen have no series.
        assert!(!text.contains(r#"code="404""#), "{text}");
        assert!(
            text.contains(
                r#"lb_request_duration_seconds_bucket{le="0.004",pool="kids",group="kids-v001"} 1"#
            ) || text.contains(
                r#"lb_request_duration_seconds_bucket{pool="kids",group="kids-v001",le="0.004"} 1"#
            ),
            "{text}"
        );
    }
}
