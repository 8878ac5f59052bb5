//! Runtime routing state: backends with their health and in-flight counters, server groups with
//! their weights, pools with smooth weighted round-robin, and listener route tables.
//!
//! Backend and group *state* (health, counters) outlives configurations: [`crate::Lb::apply`]
//! carries it over to the new runtime objects by key, so a re-applied backend keeps its health
//! and a removed group can still be drained.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use http::uri::Authority;
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Notify;

use crate::config::prefix_matches;
use crate::metrics::RequestCounters;
use crate::samples::{SampleRing, micros, unix_second_now};

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

    /// The instant a [`Clock::now_ms`] reading stands for (to the millisecond).
    pub fn instant_at(&self, ms: u64) -> Instant {
        let since = Duration::from_millis(ms.saturating_sub(1));
        self.epoch.checked_add(since).unwrap_or(self.epoch)
    }
}

/// A value on cache lines of its own. Both worker threads write the per-request counters; kept
/// apart from the fields they only read (names, health, the histogram handle), those reads stay
/// cache hits instead of misses (false sharing).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct OwnLine<T>(pub T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The counters every request to a backend or group updates.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Requests chosen for it whose response has not finished.
    pub in_flight: AtomicU64,
    /// Requests sent to it (each attempt counts).
    pub requests: AtomicU64,
}

/// Counters of one server group, shared by every configuration that contains it.
#[derive(Debug)]
pub(crate) struct GroupStats {
    pub pool: Arc<str>,
    pub group: Arc<str>,
    /// Requests to the group's backends; `in_flight` is what [`crate::Lb::drain`] waits on.
    pub traffic: OwnLine<Traffic>,
    /// Woken whenever `in_flight` drops to zero; [`crate::Lb::drain`] waits on it.
    pub idle: Notify,
    /// This group's series of `lb_request_duration_seconds`.
    pub duration: Histogram,
    /// Requests, errors and latency per second, for [`crate::Lb::samples`]; kept by the
    /// load balancer for a while after the group is removed.
    pub samples: Arc<SampleRing>,
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
    pub traffic: OwnLine<Traffic>,
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
            traffic: OwnLine::default(),
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

    /// Counts a request as in flight on this backend until the guard is dropped; its answer will
    /// be counted in `counters`.
    pub fn begin(self: &Arc<Self>, counters: Arc<RequestCounters>) -> InFlight {
        self.traffic.requests.fetch_add(1, Ordering::Relaxed);
        self.traffic.in_flight.fetch_add(1, Ordering::Relaxed);
        let group = &self.group.traffic;
        group.requests.fetch_add(1, Ordering::Relaxed);
        // SeqCst: see `TableSlot` for why drain() cannot miss this request.
        group.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            backend: self.clone(),
            counters,
            started: Instant::now(),
            answer: None,
        }
    }
}

/// Who answered a request sent to a backend, and with which status.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// The backend's response.
    Backend(u16),
    /// The load balancer's own 502 or 504 after trying the backend.
    Local(u16),
}

/// A request in flight on a backend, from choosing it to the end of the response. Dropping it
/// (when the response body is finished or abandoned) ends it; if there was an answer it records
/// the latency: in the group's histogram for a backend's answer, and in the group's samples for
/// every answer. An attempt that is retried elsewhere records nothing.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub backend: Arc<BackendState>,
    /// The `lb_requests_total` series of the listener, pool and group.
    pub counters: Arc<RequestCounters>,
    started: Instant,
    answer: Option<Answer>,
}

impl InFlight {
    /// The backend answered with `status` (its response head arrived): counts it now, records
    /// the latency when the response ends.
    pub fn answered(&mut self, status: StatusCode) {
        let code = status.as_u16();
        self.counters.inc(code);
        self.answer = Some(Answer::Backend(code));
    }

    /// The load balancer answers `status` itself (502, 504) after trying this backend; the
    /// answer counts for the backend's group.
    pub fn answered_locally(&mut self, status: StatusCode) {
        let code = status.as_u16();
        self.counters.inc(code);
        self.answer = Some(Answer::Local(code));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let backend = &self.backend;
        if let Some(answer) = self.answer {
            let latency = self.started.elapsed();
            let code = match answer {
                Answer::Backend(code) => {
                    backend.group.duration.observe(latency.as_secs_f64());
                    code
                }
                Answer::Local(code) => code,
            };
            backend
                .group
                .samples
                .record(unix_second_now(), code >= 500, micros(latency));
        }
        backend.traffic.in_flight.fetch_sub(1, Ordering::Relaxed);
        if backend
            .group
            .traffic
            .in_flight
            .fetch_sub(1, Ordering::SeqCst)
            == 1
        {
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
    /// Round-robin position; written by every pick, so on lines of its own.
    next: OwnLine<AtomicUsize>,
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
            next: OwnLine::default(),
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
    /// least one eligible backend (other than `exclude`), then a backend within it. Returns the
    /// group's index in [`PoolRuntime::groups`] with the backend.
    pub fn select(
        &self,
        clock: &Clock,
        exclude: Option<&BackendState>,
    ) -> Option<(usize, &Arc<BackendState>)> {
        // Fast path: a single group needs no weighting.
        if let [group] = self.groups.as_slice() {
            return if group.takes_traffic() {
                Some((0, group.pick(clock, exclude)?))
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
        Some((chosen, self.groups.get(chosen)?.pick(clock, exclude)?))
    }
}

/// Why a request found no backend, with the labels to count the load balancer's answer with.
#[derive(Debug)]
pub(crate) enum Unrouted {
    /// The firewall refused the source address.
    Forbidden { listener: Arc<str> },
    /// No route and no default pool.
    NoRoute { listener: Arc<str> },
    /// The pool has no enabled group with an eligible backend.
    NoBackend { listener: Arc<str>, pool: Arc<str> },
}

/// A pool as one listener routes to it: the pool and, per group (in [`PoolRuntime::groups`]
/// order), that listener's `lb_requests_total` series.
#[derive(Debug)]
pub(crate) struct RouteTarget {
    pub pool: Arc<PoolRuntime>,
    pub counters: Vec<Arc<RequestCounters>>,
}

/// A listener's current routing table, replaced by every apply. Each connection keeps the table
/// it last routed with and compares `version` (a read of a cache line that rarely changes)
/// instead of taking a lock shared by every connection for each request.
///
/// [`crate::Lb::drain`] still cannot miss a request routed on a replaced table: the request
/// counts itself in flight on its group (a SeqCst increment, in [`BackendState::begin`]) and
/// then reads the version again (SeqCst); [`TableSlot::replace`] bumps the version (SeqCst)
/// before the apply returns, and drain reads the count (SeqCst). Either the request sees the new
/// version and routes again on the new table, or its increment precedes the bump in the single
/// order of SeqCst operations, and so precedes drain's read.
#[derive(Debug)]
pub(crate) struct TableSlot {
    table: RwLock<Arc<ListenerTable>>,
    version: AtomicU64,
}

impl TableSlot {
    pub fn new(table: Arc<ListenerTable>) -> Self {
        TableSlot {
            table: RwLock::new(table),
            version: AtomicU64::new(0),
        }
    }

    /// Makes `table` the one new requests route with.
    pub fn replace(&self, table: Arc<ListenerTable>) {
        *self.table.write() = table;
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// The current table with its version (read first: a table newer than its version only
    /// makes the next check refresh it once more).
    pub fn current(&self) -> (u64, Arc<ListenerTable>) {
        let version = self.version();
        (version, self.table.read().clone())
    }
}

/// A listener's routing table for one configuration.
#[derive(Debug)]
pub(crate) struct ListenerTable {
    pub name: Arc<str>,
    /// Path prefixes and their pools, sorted by prefix length, longest first.
    pub routes: Vec<(String, Arc<RouteTarget>)>,
    pub default_pool: Option<Arc<RouteTarget>>,
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

    pub fn target_for(&self, path: &str) -> Option<&RouteTarget> {
        self.routes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, target)| target)
            .or(self.default_pool.as_ref())
            .map(|target| &**target)
    }

    /// Firewall, route and backend choice in one step: the request, counted in flight on the
    /// chosen backend. The caller then checks that the table is still current (see
    /// [`TableSlot`]).
    pub fn route(
        &self,
        clock: &Clock,
        peer: IpAddr,
        path: &str,
        exclude: Option<&BackendState>,
    ) -> Result<InFlight, Unrouted> {
        let listener = || self.name.clone();
        if !self.permits(peer) {
            return Err(Unrouted::Forbidden {
                listener: listener(),
            });
        }
        let Some(target) = self.target_for(path) else {
            return Err(Unrouted::NoRoute {
                listener: listener(),
            });
        };
        target
            .pool
            .select(clock, exclude)
            .and_then(|(group, backend)| Some(backend.begin(target.counters.get(group)?.clone())))
            .ok_or_else(|| Unrouted::NoBackend {
                listener: listener(),
                pool: target.pool.name.clone(),
            })
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
            traffic: OwnLine::default(),
            idle: Notify::new(),
            duration: Histogram::new(crate::metrics::LATENCY_BUCKETS),
            samples: Arc::default(),
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
            let Some((_, b)) = pool.select(&clock, None) else {
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
            .map(|_| pool.select(&clock, None).unwrap().1.id.to_string())
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
            let (group, b) = pool.select(&clock, Some(&first)).unwrap();
            assert_eq!((group, &*b.id), (0, "a-2"));
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
        let (_, b) = pool.select(&clock, None).unwrap();
        let metrics = crate::metrics::Metrics::new();
        let counters = metrics.request_counters(&"l".into(), &"p".into(), &"a".into());
        let g1 = b.begin(counters.clone());
        let mut g2 = b.begin(counters);
        assert_eq!(b.group.traffic.in_flight.load(Ordering::SeqCst), 2);
        drop(g1); // no answer: records nothing
        g2.answered(StatusCode::OK);
        drop(g2);
        assert_eq!(b.group.traffic.in_flight.load(Ordering::SeqCst), 0);
        assert_eq!(b.traffic.requests.load(Ordering::SeqCst), 2);
        let samples = b.group.samples.read(0, u64::MAX);
        assert_eq!(samples.len(), 1);
        assert_eq!((samples[0].requests, samples[0].errors), (1, 0));
    }

    #[test]
    fn the_chosen_groups_counters_and_samples_get_the_answer() {
        let pool = Arc::new(PoolRuntime::new(
            "p".into(),
            false,
            vec![group("a", 1, true, &[1]), group("b", 1, true, &[2])],
        ));
        let metrics = crate::metrics::Metrics::new();
        let listener: Arc<str> = "l".into();
        let target = Arc::new(RouteTarget {
            counters: pool
                .groups
                .iter()
                .map(|g| metrics.request_counters(&listener, &pool.name, &g.name))
                .collect(),
            pool: pool.clone(),
        });
        let table = ListenerTable {
            name: listener,
            routes: vec![("/x".into(), target)],
            default_pool: None,
            allow: vec![],
            deny: vec![],
        };
        let clock = Clock::new();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(matches!(
            table.route(&clock, peer, "/y", None),
            Err(Unrouted::NoRoute { .. })
        ));
        for _ in 0..4 {
            let mut flight = table.route(&clock, peer, "/x/1", None).unwrap();
            let status = if &*flight.backend.group.group == "b" {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::OK
            };
            flight.answered_locally(status);
        }
        let count = |group: &str, code: u16| {
            metrics
                .requests
                .get(&crate::metrics::RequestLabels {
                    listener: "l".into(),
                    pool: "p".into(),
                    group: group.into(),
                    code,
                })
                .map(|c| c.get())
        };
        assert_eq!(count("a", 200), Some(2));
        assert_eq!(count("b", 502), Some(2));
        assert_eq!(count("b", 200), None);
        let (a, b) = (&pool.groups[0].stats, &pool.groups[1].stats);
        let errors = |g: &GroupStats| -> (u64, u64) {
            g.samples
                .read(0, u64::MAX)
                .iter()
                .fold((0, 0), |(r, e), s| (r + s.requests, e + s.errors))
        };
        assert_eq!(errors(a), (2, 0));
        assert_eq!(errors(b), (2, 2));
    }

    #[test]
    fn a_replaced_table_is_seen_through_the_slots_version() {
        let table = |name: &str| {
            Arc::new(ListenerTable {
                name: name.into(),
                routes: vec![],
                default_pool: None,
                allow: vec![],
                deny: vec![],
            })
        };
        let slot = TableSlot::new(table("a"));
        let (before, current) = slot.current();
        assert_eq!(&*current.name, "a");
        slot.replace(table("b"));
        assert_ne!(slot.version(), before);
        let (after, current) = slot.current();
        assert_eq!((after, &*current.name), (slot.version(), "b"));
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
