//! Prometheus metrics per server group: request counts by status code, a latency histogram, and
//! backend health gauges.

use std::sync::Arc;

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

    pub fn count(&self, listener: &Arc<str>, pool: &Arc<str>, group: &Arc<str>, code: u16) {
        let labels = RequestLabels {
            listener: listener.clone(),
            pool: pool.clone(),
            group: group.clone(),
            code,
        };
        if let Some(counter) = self.requests.get(&labels) {
            counter.inc();
            return;
        }
        self.requests.get_or_create(&labels).inc();
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
        metrics.count(&l, &p, &g, 200);
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
        assert!(
            text.contains(
                r#"lb_requests_total{listener="web",pool="kids",group="kids-v001",code="200"} 2"#
            ),
            "{text}"
        );
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
