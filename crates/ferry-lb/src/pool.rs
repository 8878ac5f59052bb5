//! Runtime routing state: backends with their health and in-flight counters, server groups with
//! their weights, pools with smooth weighted round-robin, and listener route tables.
//!
//! Backend and group *state* (health, counters) outlives configurations: [`crate::Lb::apply`]
//! carries it over to the new runtime objects by key, so a re-applied backend keeps its health
//! and a removed group can still be drained.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use http::uri::Authority;
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Notify;

use crate::config::prefix_matches;

/// Monotonic milliseconds since the load balancer started (0 is never a deadline).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }
}

/// Counters of one server group, shared by every configuration that contains it.
#[derive(Debug)]
pub(crate) struct GroupStats {
    pub pool: Arc<str>,
    pub group: Arc<str>,
    /// Requests chosen for a backend of this group whose response has not finished.
    pub in_flight: AtomicU64,
    /// Requests sent to the group's backends (each attempt counts).
    pub requests: AtomicU64,
    /// Woken whenever `in_flight` drops to zero; [`crate::Lb::drain`] waits on it.
    pub idle: Notify,
    /// This group's series of `lb_request_duration_seconds`.
    pub duration: Histogram,
}

/// One backend instance's state.
#[derive(Debug)]
pub(crate) struct BackendState {
    pub id: Arc<str>,
    pub addr: SocketAddr,
    /// `addr` as a URI authority (the `Host` of requests that came without one).
    pub authority: Authority,
    /// Key of this backend's idle connections in the per-thread pools.
    pub pool_key: u64,
    pub group: Arc<GroupStats>,
    /// Set by active health checks (and cleared by a failed connect when the pool has checks).
    pub healthy: AtomicBool,
    /// A failed connect took the backend out; the next passing check brings it back.
    pub passive_down: AtomicBool,
    /// Its pool has an active health check (updated by every apply).
    pub checked: AtomicBool,
    /// For pools without health check: out until this [`Clock::now_ms`] (0 = not ejected).
    pub ejected_until: AtomicU64,
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    /// Connect and transport failures.
    pub failures: AtomicU64,
    /// This backend's series of `lb_backend_healthy`.
    pub healthy_gauge: Gauge,
}

impl BackendState {
    pub fn new(
        id: Arc<str>,
        addr: SocketAddr,
        group: Arc<GroupStats>,
        gauge: Gauge,
    ) -> Option<Self> {
        let authority = Authority::try_from(addr.to_string().as_str()).ok()?;
        gauge.set(1);
        Some(BackendState {
            id,
            addr,
            authority,
            pool_key: crate::client::new_pool_key(),
            group,
            healthy: AtomicBool::new(true),
            passive_down: AtomicBool::new(false),
            checked: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            healthy_gauge: gauge,
        })
    }

    /// May it take new requests now?
    pub fn eligible(&self, clock: &Clock) -> bool {
        if !self.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || clock.now_ms() >= until
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        self.healthy_gauge.set(i64::from(healthy));
    }

    /// A connect to this backend failed: take it out of rotation.
    pub fn mark_connect_failure(&self, clock: &Clock, ejection_ms: u64) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if self.checked.load(Ordering::Relaxed) {
            self.passive_down.store(true, Ordering::Relaxed);
            self.set_healthy(false);
        } else {
            self.ejected_until.store(
                clock.now_ms().saturating_add(ejection_ms),
                Ordering::Relaxed,
            );
        }
    }

    /// Counts a request as in flight on this backend until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.group.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.group.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            backend: self.clone(),
            started: Instant::now(),
            observe: false,
        }
    }
}

/// A request in flight on a backend; dropping it (when the response body is finished or
/// abandoned) ends it, and records its latency if the backend answered.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub backend: Arc<BackendState>,
    started: Instant,
    observe: bool,
}

impl InFlight {
    /// The backend answered: record the latency when the response ends.
    pub fn answered(&mut self) {
        self.observe = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let backend = &self.backend;
        if self.observe {
            backend
                .group
                .duration
                .observe(self.started.elapsed().as_secs_f64());
        }
        backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        if backend.group.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            backend.group.idle.notify_waiters();
        }
    }
}

/// A server group as configured by the current configuration.
#[derive(Debug)]
pub(crate) struct GroupRuntime {
    pub name: Arc<str>,
    pub weight: u32,
    pub enabled: bool,
    pub backends: Vec<Arc<BackendState>>,
    pub stats: Arc<GroupStats>,
    next: AtomicUsize,
}

impl GroupRuntime {
    pub fn new(
        name: Arc<str>,
        weight: u32,
        enabled: bool,
        backends: Vec<Arc<BackendState>>,
        stats: Arc<GroupStats>,
    ) -> Self {
        GroupRuntime {
            name,
            weight,
            enabled,
            backends,
            stats,
            next: AtomicUsize::new(0),
        }
    }

    fn takes_traffic(&self) -> bool {
        self.enabled && self.weight > 0
    }

    fn has_candidate(&self, clock: &Clock, exclude: Option<&BackendState>) -> bool {
        self.backends
            .iter()
            .any(|b| b.eligible(clock) && !is_same(b, exclude))
    }

    /// Round-robin over the eligible backends.
    fn pick(&self, clock: &Clock, exclude: Option<&BackendState>) -> Option<&Arc<BackendState>> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.backends[(start.wrapping_add(i)) % n])
            .find(|b| b.eligible(clock) && !is_same(b, exclude))
    }
}

fn is_same(b: &Arc<BackendState>, exclude: Option<&BackendState>) -> bool {
    exclude.is_some_and(|e| std::ptr::eq(Arc::as_ptr(b), e))
}

/// A pool (cluster) as configured by the current configuration.
#[derive(Debug)]
pub(crate) struct PoolRuntime {
    pub name: Arc<str>,
    pub has_health_check: bool,
    pub groups: Vec<GroupRuntime>,
    /// Smooth weighted round-robin: the running "current weight" of each group.
    current: Mutex<Vec<i64>>,
}

impl PoolRuntime {
    pub fn new(name: Arc<str>, has_health_check: bool, groups: Vec<GroupRuntime>) -> Self {
        let current = Mutex::new(vec![0; groups.len()]);
        PoolRuntime {
            name,
            has_health_check,
            groups,
            current,
        }
    }

    /// Chooses a group by smooth weighted round-robin among the enabled groups with weight and at
    /// least one eligible backend (other than `exclude`), then a backend within it.
    pub fn select(
        &self,
        clock: &Clock,
        exclude: Option<&BackendState>,
    ) -> Option<Arc<BackendState>> {
        // Fast path: a single group needs no weighting.
        if self.groups.len() == 1 {
            let group = &self.groups[0];
            return if group.takes_traffic() {
                group.pick(clock, exclude).cloned()
            } else {
                None
            };
        }
        let chosen = {
            let mut current = self.current.lock();
            let mut total: i64 = 0;
            let mut best: Option<usize> = None;
            for (i, group) in self.groups.iter().enumerate() {
                if !group.takes_traffic() || !group.has_candidate(clock, exclude) {
                    continue;
                }
                let weight = i64::from(group.weight);
                current[i] += weight;
                total += weight;
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let best = best?;
            current[best] -= total;
            best
        };
        self.groups[chosen].pick(clock, exclude).cloned()
    }
}

/// Where a request goes, decided under the listener's table lock.
pub(crate) enum Routed {
    /// The firewall refused the source address.
    Forbidden,
    /// No route and no default pool.
    NoRoute,
    /// The pool has no enabled group with an eligible backend.
    NoBackend(Arc<str>),
    /// A backend was chosen and the request is counted in flight on it.
    Backend(InFlight),
}

/// A listener's routing table for one configuration.
#[derive(Debug)]
pub(crate) struct ListenerTable {
    pub name: Arc<str>,
    /// Sorted by prefix length, longest first.
    pub routes: Vec<(String, Arc<PoolRuntime>)>,
    pub default_pool: Option<Arc<PoolRuntime>>,
    pub allow: Vec<ipnet::IpNet>,
    pub deny: Vec<ipnet::IpNet>,
}

impl ListenerTable {
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    pub fn pool_for(&self, path: &str) -> Option<&Arc<PoolRuntime>> {
        self.routes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, pool)| pool)
            .or(self.default_pool.as_ref())
    }

    /// Firewall, route and backend choice in one step. The caller holds the table's read lock,
    /// so a configuration swap (write lock) waits until this request is counted in flight.
    pub fn route(
        &self,
        clock: &Clock,
        peer: IpAddr,
        path: &str,
        exclude: Option<&BackendState>,
    ) -> Routed {
        if !self.permits(peer) {
            return Routed::Forbidden;
        }
        let Some(pool) = self.pool_for(path) else {
            return Routed::NoRoute;
        };
        match pool.select(clock, exclude) {
            Some(backend) => Routed::Backend(backend.begin()),
            None => Routed::NoBackend(pool.name.clone()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    pub fn stats(pool: &str, group: &str) -> Arc<GroupStats> {
        Arc::new(GroupStats {
            pool: pool.into(),
            group: group.into(),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            idle: Notify::new(),
            duration: Histogram::new(crate::metrics::LATENCY_BUCKETS),
        })
    }

    fn group(name: &str, weight: u32, enabled: bool, ports: &[u16]) -> GroupRuntime {
        let stats = stats("p", name);
        let backends = ports
            .iter()
            .map(|port| {
                Arc::new(
                    BackendState::new(
                        format!("{name}-{port}").into(),
                        SocketAddr::from(([127, 0, 0, 1], *port)),
                        stats.clone(),
                        Gauge::default(),
                    )
                    .unwrap(),
                )
            })
            .collect();
        GroupRuntime::new(name.into(), weight, enabled, backends, stats)
    }

    fn tally(pool: &PoolRuntime, n: usize) -> HashMap<String, usize> {
        let clock = Clock::new();
        let mut seen = HashMap::new();
        for _ in 0..n {
            let Some(b) = pool.select(&clock, None) else {
                *seen.entry("none".to_string()).or_default() += 1;
                continue;
            };
            *seen.entry(b.id.to_string()).or_default() += 1;
        }
        seen
    }

    #[test]
    fn smooth_weighted_round_robin_is_exact_and_interleaved() {
        let pool = PoolRuntime::new(
            "p".into(),
            false,
            vec![group("a", 90, true, &[1]), group("b", 10, true, &[2])],
        );
        let clock = Clock::new();
        let first: Vec<String> = (0..10)
            .map(|_| pool.select(&clock, None).unwrap().id.to_string())
            .collect();
        assert_eq!(
            first.iter().filter(|id| *id == "b-2").count(),
            1,
            "{first:?}"
        );
        let seen = tally(&pool, 1000);
        assert_eq!(seen["a-1"], 900);
        assert_eq!(seen["b-2"], 100);
    }

    #[test]
    fn zero_weight_disabled_and_unhealthy_groups_are_skipped() {
        let pool = PoolRuntime::new(
            "p".into(),
            false,
            vec![
                group("a", 0, true, &[1]),
                group("b", 5, false, &[2]),
                group("c", 5, true, &[3, 4]),
            ],
        );
        let seen = tally(&pool, 100);
        assert_eq!(seen.get("c-3"), Some(&50));
        assert_eq!(seen.get("c-4"), Some(&50));
        for b in &pool.groups[2].backends {
            b.set_healthy(false);
        }
        assert_eq!(tally(&pool, 3).get("none"), Some(&3));
    }

    #[test]
    fn exclusion_and_passive_ejection_pick_another_backend() {
        let pool = PoolRuntime::new("p".into(), false, vec![group("a", 1, true, &[1, 2])]);
        let clock = Clock::new();
        let first = pool.groups[0].backends[0].clone();
        for _ in 0..4 {
            let b = pool.select(&clock, Some(&first)).unwrap();
            assert_eq!(&*b.id, "a-2");
        }
        first.mark_connect_failure(&clock, 60_000);
        assert!(!first.eligible(&clock));
        assert_eq!(tally(&pool, 4).get("a-2"), Some(&4));
        first.ejected_until.store(1, Ordering::Relaxed);
        assert!(first.eligible(&clock));
    }

    #[test]
    fn in_flight_guards_count_and_notify() {
        let pool = PoolRuntime::new("p".into(), false, vec![group("a", 1, true, &[1])]);
        let clock = Clock::new();
        let b = pool.select(&clock, None).unwrap();
        let g1 = b.begin();
        let g2 = b.begin();
        assert_eq!(b.group.in_flight.load(Ordering::SeqCst), 2);
        drop(g1);
        drop(g2);
        assert_eq!(b.group.in_flight.load(Ordering::SeqCst), 0);
        assert_eq!(b.requests.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn firewall_deny_wins_and_empty_allow_allows_all() {
        let mut table = ListenerTable {
            name: "l".into(),
            routes: vec![],
            default_pool: None,
            allow: vec![],
            deny: vec![],
        };
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(table.permits(local));
        table.allow = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(table.permits(local));
        assert!(table.permits(mapped));
        assert!(!table.permits("10.1.2.3".parse().unwrap()));
        table.deny = vec!["127.0.0.1/32".parse().unwrap()];
        assert!(!table.permits(local));
        assert!(!table.permits(mapped));
        assert!(table.permits("127.0.0.2".parse().unwrap()));
    }
}
