//! Ferry's built-in HTTP/1.1 load balancer: path routes to pools (clusters), weighted server
//! groups, health-checked backends (instances), draining, source firewalls and per-group metrics.
//!
//! The host provider owns one [`Lb`] and feeds it whole configurations with [`Lb::apply`]. Every
//! apply is a diff against the running configuration: new listeners are bound first, routing
//! tables are swapped atomically per listener, and removed listeners stop accepting and let their
//! connections finish. A configuration with any problem changes nothing and reports every problem.
//!
//! # Design decisions
//! - **Zero failed requests during changes.** A request is counted in flight on its backend from
//!   the moment it is routed until its response body ends; [`Lb::drain`] waits on that count.
//!   After counting itself, a request checks that the listener's table was not replaced while it
//!   routed (and routes again if it was), so a swap cannot slip between routing and counting. The
//!   backend connection is obtained *before* the request is handed to it, so a failed connect
//!   (the instance just went away) costs nothing: the request, body included, is retried once on
//!   another backend. A request that a pooled connection hands back unsent (it was closing) is
//!   resent on a fresh connection. A GET, HEAD or OPTIONS without body whose backend connection
//!   broke before any response byte (a stale keep-alive) is retried once; other methods get 502.
//! - **Group choice** is nginx's smooth weighted round-robin over the enabled groups with weight
//!   and an eligible backend: exact and interleaved (90/10 gives 9 and 1 in every 10 requests).
//!   Within a group, round-robin over eligible backends.
//! - **Health.** New backends start healthy: the host provider registers only instances that
//!   already passed their readiness check, and a backend that starts unhealthy would leave a
//!   freshly deployed group without traffic for `healthy_threshold × interval`. With a health check
//!   they are checked at once (on a fresh connection each time). A failed connect takes a backend
//!   out (passive check): in a checked pool until the next passing check, in an unchecked pool for
//!   [`LbSettings::passive_ejection`].
//! - **State survives configurations.** Health and counters are keyed by pool, group, backend id
//!   and address, so re-applying a configuration keeps them.
//! - **Thread per core.** The data plane runs on [`LbSettings::worker_threads`] threads, each a
//!   single-threaded tokio runtime with its own pool of keep-alive backend connections. Each
//!   listener's accept loop hands every new client connection to the worker with the fewest open
//!   connections, which serves it start to finish: no locks or cross-thread wake-ups per request
//!   (the HAProxy/nginx model). Configuration, health checks and draining run on the caller's
//!   runtime. Dropping the last [`Lb`] handle stops the workers and so every connection;
//!   [`Lb::shutdown`] drains first.
//! - **Bounded.** Request heads are capped ([`LbSettings::max_header_bytes`], 431 beyond),
//!   connections per listener are capped, connects and response heads time out (502/504).
//! - **Cheap per request.** Nothing on the request path looks anything up by name or takes a
//!   lock shared with the other workers: routing tables carry each group's metric handles
//!   (resolved when the table is built), connections keep the table they last used and only
//!   compare a version number, counters written by every request sit on cache lines of their
//!   own, and each connection reuses one timer for its response timeout and one for its header
//!   read timeout (moving a timer later is an atomic store; a new one per request is a timer-wheel
//!   insertion and removal).
//! - **Samples for canary analysis.** Besides the Prometheus metrics, each server group records
//!   one bucket per second — requests, errors (status 500 or above, the load balancer's own 502
//!   and 504 included), latency sum and maximum — in a lock-free ring of the last 3,600 seconds,
//!   read with [`Lb::samples`]. Buckets are keyed by unix second and kept for an hour after a
//!   group leaves the configuration, so an analysis can still read a group just removed.
//!
//! Not supported: TLS, HTTP/2, WebSocket/`Upgrade` (the header is stripped as hop-by-hop),
//! sticky sessions, header- or host-based routes, a timeout on response bodies once the head
//! arrived, and `PROXY` protocol.

mod client;
mod config;
mod error;
mod h1;
mod health;
mod listener;
mod metrics;
mod pool;
mod proxy;
mod samples;
mod status;
mod workers;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use config::{
    BackendConfig, GroupConfig, HealthCheckConfig, LbConfig, LbSettings, ListenerConfig,
    PoolConfig, RouteConfig,
};
pub use error::LbError;
pub use samples::SampleBucket;
pub use status::{BackendStatus, GroupStatus, LbStatus, ListenerStatus, PoolStatus};

use listener::ListenerHandle;
use metrics::{BackendLabels, GroupLabels, Metrics};
use pool::{
    BackendState, Clock, GroupRuntime, GroupStats, ListenerTable, OwnLine, PoolRuntime, RouteTarget,
};
use proxy::Shared;
use samples::{SAMPLE_SECONDS, SampleRing};

/// The load balancer. Cheap to clone; all clones are the same instance.
#[derive(Clone)]
pub struct Lb {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Lb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lb").field("bound", &self.bound()).finish()
    }
}

/// (pool, group, backend id, address): what makes a backend the same across configurations.
type BackendKey = (String, String, String, SocketAddr);

struct Inner {
    shared: Arc<Shared>,
    settings: LbSettings,
    /// Serialises [`Lb::apply`] and [`Lb::shutdown`]; held across their awaits.
    apply_lock: tokio::sync::Mutex<()>,
    /// Everything the current configuration runs; never held across an await.
    state: Mutex<State>,
    /// The data-plane threads that accept and serve connections.
    workers: Mutex<workers::Workers>,
}

#[derive(Default)]
struct State {
    shut_down: bool,
    config: LbConfig,
    listeners: HashMap<String, ListenerHandle>,
    pools: Vec<Arc<PoolRuntime>>,
    /// Configured groups, plus removed groups that still had requests in flight at the last apply.
    groups: HashMap<(String, String), Arc<GroupStats>>,
    backends: HashMap<BackendKey, Arc<BackendState>>,
    health: HashMap<BackendKey, (HealthCheckConfig, JoinHandle<()>)>,
    /// Per-second samples of every (pool, group) configured within the last hour, including
    /// removed ones, so canary analysis can still read a group that just went away.
    samples: HashMap<(String, String), Arc<SampleRing>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Listeners stop when their stop senders drop with the state; checks must be aborted.
        for (_, (_, task)) in self.state.get_mut().health.drain() {
            task.abort();
        }
    }
}

/// How each listener of a new configuration comes to be.
enum ListenerPlan {
    /// Keep the running listener of this (old) name: same name and address.
    Keep(String),
    /// Take over the running listener of this (old) name: same address, renamed.
    Adopt(String),
    /// Bind a new socket.
    Bind(std::net::TcpListener),
    /// Binding failed (already reported).
    Failed,
}

/// Backends being removed, watched until their last request ends (see [`Lb::watch_backends`]).
pub struct BackendWatch {
    group: String,
    backends: Vec<Arc<BackendState>>,
}

impl BackendWatch {
    /// Requests in flight on the watched backends.
    pub fn in_flight(&self) -> u64 {
        self.backends
            .iter()
            .map(|b| b.traffic.in_flight.load(Ordering::SeqCst))
            .sum()
    }

    /// Waits until no request is in flight on the watched backends (call after applying the
    /// configuration without them), or fails with [`LbError::BackendDrainTimeout`]. Requests
    /// that chose a backend just before the new configuration are counted as soon as they
    /// begin, so idle is only believed when it holds twice, 10 ms apart.
    pub async fn drain(&self, timeout: Duration) -> Result<(), LbError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut idle_once = false;
        loop {
            let in_flight = self.in_flight();
            if in_flight == 0 && idle_once {
                return Ok(());
            }
            idle_once = in_flight == 0;
            if tokio::time::Instant::now() >= deadline {
                return Err(LbError::BackendDrainTimeout {
                    group: self.group.clone(),
                    in_flight,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Default for Lb {
    fn default() -> Self {
        Lb::new()
    }
}

impl Lb {
    /// A load balancer with default [`LbSettings`] and no listeners.
    pub fn new() -> Lb {
        Lb::with_settings(LbSettings::default())
    }

    /// A load balancer with the given limits and timeouts.
    pub fn with_settings(settings: LbSettings) -> Lb {
        let connector = client::Connector {
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.backend_idle_timeout,
            max_idle: settings.max_idle_per_backend,
            max_response_head: settings.max_header_bytes,
        };
        // Without threads the listeners simply run on the caller's runtime.
        let workers = workers::Workers::start(settings.worker_threads, settings.pin_workers).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot start load balancer worker threads; using the caller's runtime");
            workers::Workers::empty()
        });
        let ejection_ms = u64::try_from(settings.passive_ejection.as_millis()).unwrap_or(u64::MAX);
        let shared = Arc::new(Shared {
            connector,
            metrics: Metrics::new(),
            clock: Clock::new(),
            response_timeout: settings.response_timeout,
            ejection_ms,
            none: Arc::from(""),
        });
        Lb {
            inner: Arc::new(Inner {
                shared,
                settings,
                apply_lock: tokio::sync::Mutex::new(()),
                state: Mutex::new(State::default()),
                workers: Mutex::new(workers),
            }),
        }
    }

    /// Applies a whole configuration as a diff against the current one: binds new listeners,
    /// closes removed ones (they stop accepting at once and their open connections finish in the
    /// background, up to [`LbSettings::listener_drain_timeout`]), and swaps routes, pools, groups
    /// and backends for new requests; in-flight requests are not touched. If anything is wrong
    /// (a port already taken, a route naming an unknown pool, duplicate names) nothing changes and
    /// every problem is returned: [`LbError::Bind`] when a single bind failure is the only
    /// problem, [`LbError::Invalid`] otherwise.
    pub async fn apply(&self, config: LbConfig) -> Result<(), LbError> {
        let _serial = self.inner.apply_lock.lock().await;
        let mut problems = config::validate(&config);

        // Decide, per new listener, whether to keep, take over or bind a socket.
        let mut plans = Vec::with_capacity(config.listeners.len());
        let mut bind_failures = Vec::new();
        {
            let state = self.inner.state.lock();
            if state.shut_down {
                return Err(LbError::ShutDown);
            }
            // Old listeners that a new one keeps (same name and address) or takes over.
            let mut claimed: HashSet<String> = config
                .listeners
                .iter()
                .filter(|l| {
                    state
                        .listeners
                        .get(&l.name)
                        .is_some_and(|r| r.bind == l.bind)
                })
                .map(|l| l.name.clone())
                .collect();
            let mut attempted = Vec::new();
            for (li, listener) in config.listeners.iter().enumerate() {
                if state
                    .listeners
                    .get(&listener.name)
                    .is_some_and(|r| r.bind == listener.bind)
                {
                    plans.push(ListenerPlan::Keep(listener.name.clone()));
                    continue;
                }
                if listener.bind.port() != 0
                    && let Some(old) = state
                        .listeners
                        .iter()
                        .find(|(name, running)| {
                            running.bind == listener.bind && !claimed.contains(*name)
                        })
                        .map(|(name, _)| name.clone())
                {
                    claimed.insert(old.clone());
                    plans.push(ListenerPlan::Adopt(old));
                    continue;
                }
                if listener.bind.port() != 0 && attempted.contains(&listener.bind) {
                    plans.push(ListenerPlan::Failed); // duplicate address, reported by validation
                    continue;
                }
                attempted.push(listener.bind);
                match listener::bind(listener.bind) {
                    Ok(socket) => plans.push(ListenerPlan::Bind(socket)),
                    Err(error) => {
                        problems.push(format!(
                            "listeners[{li}].bind: cannot bind {}: {error}",
                            listener.bind
                        ));
                        bind_failures.push((
                            listener.name.clone(),
                            listener.bind,
                            error.to_string(),
                        ));
                        plans.push(ListenerPlan::Failed);
                    }
                }
            }
        }
        if !problems.is_empty() {
            drop(plans); // closes any socket bound for this configuration
            if problems.len() == 1
                && let Some((listener, addr, reason)) = bind_failures.pop()
            {
                return Err(LbError::Bind {
                    listener,
                    addr,
                    reason,
                });
            }
            return Err(LbError::Invalid(problems));
        }

        let mut state = self.inner.state.lock();
        let shared = &self.inner.shared;

        // Pools, groups and backends, carrying state over by key.
        let mut groups = HashMap::new();
        let mut backends = HashMap::new();
        let mut pools_by_name: HashMap<&str, Arc<PoolRuntime>> = HashMap::new();
        let mut pools = Vec::with_capacity(config.pools.len());
        for pool in &config.pools {
            let pool_name: Arc<str> = Arc::from(pool.name.as_str());
            let checked = pool.health_check.is_some();
            let mut group_runtimes = Vec::with_capacity(pool.groups.len());
            for group in &pool.groups {
                let group_key = (pool.name.clone(), group.name.clone());
                let stats = state.groups.get(&group_key).cloned().unwrap_or_else(|| {
                    let group_name: Arc<str> = Arc::from(group.name.as_str());
                    let duration = shared.metrics.duration.get_or_create_owned(&GroupLabels {
                        pool: pool_name.clone(),
                        group: group_name.clone(),
                    });
                    Arc::new(GroupStats {
                        pool: pool_name.clone(),
                        group: group_name,
                        traffic: OwnLine::default(),
                        idle: Notify::new(),
                        duration,
                        samples: state.samples.get(&group_key).cloned().unwrap_or_default(),
                    })
                });
                let mut members = Vec::with_capacity(group.backends.len());
                for backend in &group.backends {
                    let key: BackendKey = (
                        pool.name.clone(),
                        group.name.clone(),
                        backend.id.clone(),
                        backend.addr,
                    );
                    let existing = state.backends.get(&key).cloned();
                    let created = existing.or_else(|| {
                        let gauge = shared.metrics.healthy.get_or_create_owned(&BackendLabels {
                            pool: pool_name.clone(),
                            group: stats.group.clone(),
                            backend: Arc::from(backend.id.as_str()),
                        });
                        BackendState::new(
                            Arc::from(backend.id.as_str()),
                            backend.addr,
                            stats.clone(),
                            gauge,
                        )
                        .map(Arc::new)
                    });
                    let Some(state_of_backend) = created else {
                        tracing::error!(addr = %backend.addr, "backend address is not a valid authority");
                        continue;
                    };
                    state_of_backend.checked.store(checked, Ordering::Relaxed);
                    if !checked {
                        state_of_backend
                            .passive_down
                            .store(false, Ordering::Relaxed);
                        state_of_backend.set_healthy(true);
                    }
                    members.push(state_of_backend.clone());
                    backends.insert(key, state_of_backend);
                }
                group_runtimes.push(GroupRuntime::new(
                    stats.group.clone(),
                    group.weight,
                    group.enabled,
                    members,
                    stats.clone(),
                ));
                groups.insert(group_key, stats);
            }
            let runtime = Arc::new(PoolRuntime::new(pool_name, checked, group_runtimes));
            pools_by_name.insert(pool.name.as_str(), runtime.clone());
            pools.push(runtime);
        }
        // Removed groups stay findable by drain() while requests are in flight on them.
        for (key, stats) in state.groups.drain() {
            if !groups.contains_key(&key) && stats.traffic.in_flight.load(Ordering::SeqCst) > 0 {
                groups.insert(key, stats);
            }
        }
        // Samples of removed groups are kept until their newest second is an hour old.
        let oldest_kept = samples::unix_second_now().saturating_sub(SAMPLE_SECONDS as u64);
        let mut kept_samples: HashMap<(String, String), Arc<SampleRing>> = groups
            .iter()
            .map(|(key, stats)| (key.clone(), stats.samples.clone()))
            .collect();
        for (key, ring) in state.samples.drain() {
            if !kept_samples.contains_key(&key)
                && ring.newest_second().is_some_and(|s| s >= oldest_kept)
            {
                kept_samples.insert(key, ring);
            }
        }
        state.samples = kept_samples;
        // Removed backends lose their gauge series.
        for (key, old) in &state.backends {
            if !backends.contains_key(key) {
                shared.metrics.healthy.remove(&BackendLabels {
                    pool: old.group.pool.clone(),
                    group: old.group.group.clone(),
                    backend: old.id.clone(),
                });
            }
        }

        // Listener tables, then the swap.
        let mut listeners = HashMap::with_capacity(config.listeners.len());
        for (listener, plan) in config.listeners.iter().zip(plans) {
            let listener_name: Arc<str> = Arc::from(listener.name.as_str());
            // Each pool this listener routes to, with the listener's counters per group.
            let mut targets: HashMap<&str, Arc<RouteTarget>> = HashMap::new();
            let mut target = |name: &str| -> Option<Arc<RouteTarget>> {
                let (name, pool) = pools_by_name.get_key_value(name)?;
                let made = targets.entry(name).or_insert_with(|| {
                    let counters = pool
                        .groups
                        .iter()
                        .map(|g| {
                            shared
                                .metrics
                                .request_counters(&listener_name, &pool.name, &g.name)
                        })
                        .collect();
                    Arc::new(RouteTarget {
                        pool: pool.clone(),
                        counters,
                    })
                });
                Some(made.clone())
            };
            let mut routes: Vec<(String, Arc<RouteTarget>)> = listener
                .routes
                .iter()
                .filter_map(|r| Some((r.path_prefix.clone(), target(&r.pool)?)))
                .collect();
            routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
            let default_pool = listener.default_pool.as_deref().and_then(&mut target);
            let table = Arc::new(ListenerTable {
                name: listener_name.clone(),
                routes,
                default_pool,
                allow: listener.allow.clone(),
                deny: listener.deny.clone(),
            });
            let handle = match plan {
                ListenerPlan::Keep(old) | ListenerPlan::Adopt(old) => {
                    state.listeners.remove(&old).inspect(|handle| {
                        handle.table.replace(table);
                    })
                }
                ListenerPlan::Bind(socket) => {
                    let workers = self.inner.workers.lock();
                    match ListenerHandle::start(
                        socket,
                        listener.bind,
                        table,
                        shared.clone(),
                        &self.inner.settings,
                        &workers,
                    ) {
                        Ok(handle) => Some(handle),
                        Err(error) => {
                            tracing::error!(listener = %listener.name, %error, "cannot start listener");
                            None
                        }
                    }
                }
                ListenerPlan::Failed => None,
            };
            if let Some(handle) = handle {
                listeners.insert(listener.name.clone(), handle);
            }
        }
        for (name, removed) in std::mem::replace(&mut state.listeners, listeners) {
            tracing::info!(listener = %name, "closing removed listener");
            drop(removed.close());
        }

        // Health checks: keep unchanged ones, start new ones, stop the rest.
        let mut health = HashMap::new();
        for pool in &config.pools {
            let Some(check) = &pool.health_check else {
                continue;
            };
            for group in &pool.groups {
                for backend in &group.backends {
                    let key: BackendKey = (
                        pool.name.clone(),
                        group.name.clone(),
                        backend.id.clone(),
                        backend.addr,
                    );
                    let Some(target) = backends.get(&key) else {
                        continue;
                    };
                    let entry = match state.health.remove(&key) {
                        Some((running, task)) if running == *check && !task.is_finished() => {
                            (running, task)
                        }
                        other => {
                            if let Some((_, task)) = other {
                                task.abort();
                            }
                            let task = tokio::spawn(health::run(
                                shared.connector.clone(),
                                target.clone(),
                                check.clone(),
                            ));
                            (check.clone(), task)
                        }
                    };
                    health.insert(key, entry);
                }
            }
        }
        for (_, (_, task)) in std::mem::replace(&mut state.health, health) {
            task.abort();
        }

        state.pools = pools;
        state.groups = groups;
        state.backends = backends;
        state.config = config;
        Ok(())
    }

    /// Waits until no request is in flight on any backend of `group` in `pool` (call after
    /// applying a configuration that disables or removes it), or fails with
    /// [`LbError::DrainTimeout`]. A group the load balancer does not know has nothing in flight,
    /// so draining it succeeds at once.
    pub async fn drain(&self, pool: &str, group: &str, timeout: Duration) -> Result<(), LbError> {
        let stats = self
            .inner
            .state
            .lock()
            .groups
            .get(&(pool.to_owned(), group.to_owned()))
            .cloned();
        let Some(stats) = stats else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = stats.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let in_flight = stats.traffic.in_flight.load(Ordering::SeqCst);
            if in_flight == 0 {
                return Ok(());
            }
            tokio::select! {
                () = &mut idle => {}
                // Belt and braces against a missed wake-up.
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = tokio::time::sleep_until(deadline) => {
                    let in_flight = stats.traffic.in_flight.load(Ordering::SeqCst);
                    if in_flight == 0 {
                        return Ok(());
                    }
                    return Err(LbError::DrainTimeout { pool: pool.to_owned(), group: group.to_owned(), in_flight });
                }
            }
        }
    }

    /// A watch on the backends with these ids in `group` (in every pool), taken now: take it
    /// before applying a configuration that removes them, then [`BackendWatch::drain`] waits
    /// for the requests they still serve, and only theirs — the rest of the group may keep
    /// serving (a resize down). Ids the load balancer does not know are ignored.
    pub fn watch_backends(&self, group: &str, ids: &[String]) -> BackendWatch {
        let state = self.inner.state.lock();
        let backends = state
            .backends
            .iter()
            .filter(|((_, g, id, _), _)| g == group && ids.contains(id))
            .map(|(_, b)| b.clone())
            .collect();
        BackendWatch {
            group: group.to_owned(),
            backends,
        }
    }

    /// The address each listener is bound to (useful with port 0), in configuration order.
    pub fn bound(&self) -> Vec<(String, SocketAddr)> {
        let state = self.inner.state.lock();
        state
            .config
            .listeners
            .iter()
            .filter_map(|l| Some((l.name.clone(), state.listeners.get(&l.name)?.local)))
            .collect()
    }

    /// Health, in-flight and request counts per pool, group and backend.
    pub fn status(&self) -> LbStatus {
        let state = self.inner.state.lock();
        let clock = &self.inner.shared.clock;
        let listeners = state
            .config
            .listeners
            .iter()
            .filter_map(|l| {
                let handle = state.listeners.get(&l.name)?;
                Some(ListenerStatus {
                    name: l.name.clone(),
                    bind: handle.bind,
                    local_addr: handle.local,
                    connections: handle.connections(),
                })
            })
            .collect();
        let pools = state
            .pools
            .iter()
            .map(|pool| PoolStatus {
                name: pool.name.to_string(),
                health_checked: pool.has_health_check,
                groups: pool
                    .groups
                    .iter()
                    .map(|group| GroupStatus {
                        name: group.name.to_string(),
                        weight: group.weight,
                        enabled: group.enabled,
                        in_flight: group.stats.traffic.in_flight.load(Ordering::SeqCst),
                        requests: group.stats.traffic.requests.load(Ordering::Relaxed),
                        backends: group
                            .backends
                            .iter()
                            .map(|b| BackendStatus {
                                id: b.id.to_string(),
                                addr: b.addr,
                                healthy: b.eligible(clock),
                                in_flight: b.traffic.in_flight.load(Ordering::Relaxed),
                                requests: b.traffic.requests.load(Ordering::Relaxed),
                                failures: b.failures.load(Ordering::Relaxed),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        LbStatus { listeners, pools }
    }

    /// Per-second traffic of `server_group` (the `group` label of the metrics) for
    /// `from_second <= second < to_second` (unix seconds): only seconds that had requests, sorted
    /// by second. The last 3,600 seconds are kept, also for an hour after the group left the
    /// configuration. A request counts in the second its response ended, with its latency from
    /// choosing the backend to the end of the response (as `lb_request_duration_seconds`), and
    /// as an error when its status is 500 or above — including the load balancer's own 502 and
    /// 504 after a backend of the group was chosen (a 503 for want of a healthy backend chose no
    /// group and counts nowhere). A group of that name in several pools is summed. A group never
    /// seen gives an empty list.
    pub fn samples(
        &self,
        server_group: &str,
        from_second: u64,
        to_second: u64,
    ) -> Vec<SampleBucket> {
        let rings: Vec<Arc<SampleRing>> = self
            .inner
            .state
            .lock()
            .samples
            .iter()
            .filter(|((_, group), _)| group == server_group)
            .map(|(_, ring)| ring.clone())
            .collect();
        let mut merged: Vec<SampleBucket> = Vec::new();
        for ring in rings {
            merged.extend(ring.read(from_second, to_second));
        }
        merged.sort_unstable_by_key(|b| b.second);
        merged.dedup_by(|later, first| {
            if later.second != first.second {
                return false;
            }
            first.requests += later.requests;
            first.errors += later.errors;
            first.latency_us_sum += later.latency_us_sum;
            first.latency_us_max = first.latency_us_max.max(later.latency_us_max);
            true
        });
        merged
    }

    /// Registers the metrics into `registry`: `lb_requests_total{listener,pool,group,code}`,
    /// the `lb_request_duration_seconds{pool,group}` histogram of the backends' answers (from
    /// choosing the backend to the end of the response body; buckets from 250 µs to 10 s) and
    /// `lb_backend_healthy{pool,group,backend}`. The load balancer's own 502 and 504 after trying
    /// a backend count for that backend's group; its other answers have an empty `group` (503: no
    /// healthy backend) and also an empty `pool` (404: no route, 403: firewall).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.shared.metrics.register(registry);
    }

    /// Stops every listener (ports are released at once), waits for their connections to finish
    /// (up to [`LbSettings::listener_drain_timeout`]) and stops the health checks. Later applies
    /// fail with [`LbError::ShutDown`].
    pub async fn shutdown(&self) {
        let _serial = self.inner.apply_lock.lock().await;
        let (listeners, health) = {
            let mut state = self.inner.state.lock();
            state.shut_down = true;
            state.pools.clear();
            (
                std::mem::take(&mut state.listeners),
                std::mem::take(&mut state.health),
            )
        };
        for (_, (_, task)) in health {
            task.abort();
        }
        let tasks: Vec<_> = listeners.into_values().map(ListenerHandle::close).collect();
        for task in tasks {
            let _ = task.await;
        }
        self.inner.workers.lock().stop();
    }
}
