//! What the host provider feeds the load balancer: the declarative [`LbConfig`], the process-wide
//! [`LbSettings`], and the one-pass validation that lists every problem with its path.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

/// A whole load-balancer configuration. [`crate::Lb::apply`] diffs it against the running one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LbConfig {
    /// Ports to listen on, each with its own routes and firewall.
    pub listeners: Vec<ListenerConfig>,
    /// Clusters that routes send traffic to.
    pub pools: Vec<PoolConfig>,
}

/// One listening socket (a Spinnaker load balancer's listener).
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique name; it is the `listener` label of the metrics.
    pub name: String,
    /// Address to bind; port 0 picks a free port (see [`crate::Lb::bound`]).
    pub bind: SocketAddr,
    /// Path routes: the longest matching prefix wins. `/kids` matches `/kids` and `/kids/x`,
    /// not `/kidsfoo`; a prefix ending in `/` matches everything below it.
    pub routes: Vec<RouteConfig>,
    /// Pool used when no route matches; `None` answers 404.
    pub default_pool: Option<String>,
    /// Source networks allowed; empty allows every source not denied.
    pub allow: Vec<ipnet::IpNet>,
    /// Source networks refused with 403; deny wins over allow.
    pub deny: Vec<ipnet::IpNet>,
}

/// A path route of a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Path prefix, starting with `/`.
    pub path_prefix: String,
    /// Name of the pool that serves it.
    pub pool: String,
}

/// A pool: a cluster, made of server groups.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Unique name; the `pool` label of the metrics.
    pub name: String,
    /// Active health check of every backend of the pool; `None` means backends are always
    /// considered healthy (only passive ejection applies).
    pub health_check: Option<HealthCheckConfig>,
    /// Server groups of the cluster.
    pub groups: Vec<GroupConfig>,
}

/// Active HTTP health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// Path (and optional query) requested with GET; 2xx and 3xx pass.
    pub path: String,
    /// Time between two checks of one backend.
    pub interval: Duration,
    /// Time a check may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive passes that bring an unhealthy backend back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a healthy backend out.
    pub unhealthy_threshold: u32,
}

/// A server group of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// Unique name within the pool; the `group` label of the metrics.
    pub name: String,
    /// Share of the pool's new requests relative to the other enabled groups; 0 sends none.
    pub weight: u32,
    /// A disabled group gets no new requests; its in-flight requests finish.
    pub enabled: bool,
    /// The group's instances.
    pub backends: Vec<BackendConfig>,
}

/// An instance.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Unique id within the pool.
    pub id: String,
    /// Address the instance listens on (plain HTTP/1.1).
    pub addr: SocketAddr,
}

/// Process-wide limits and timeouts, fixed when the [`crate::Lb`] is created.
#[derive(Debug, Clone, PartialEq)]
pub struct LbSettings {
    /// Time allowed to open a TCP connection to a backend.
    pub connect_timeout: Duration,
    /// Time allowed between sending a request to a backend and receiving its response head
    /// (504 after that).
    pub response_timeout: Duration,
    /// Concurrent client connections per listener; further clients wait in the accept backlog.
    pub max_connections_per_listener: usize,
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head; it also closes idle keep-alive
    /// client connections.
    pub header_read_timeout: Duration,
    /// How long a removed listener's open connections may take to finish before they are closed.
    pub listener_drain_timeout: Duration,
    /// How long a backend of a pool *without* health check stays out after a connect failure.
    pub passive_ejection: Duration,
    /// How long an idle keep-alive connection to a backend is kept.
    pub backend_idle_timeout: Duration,
    /// Idle keep-alive connections kept per backend and worker thread.
    pub max_idle_per_backend: usize,
    /// Data-plane threads, each with its own single-threaded runtime that accepts on every
    /// listener and serves its connections start to finish. 0 runs listeners on the runtime that
    /// calls [`crate::Lb::apply`] instead.
    pub worker_threads: usize,
    /// Binds worker thread *i* to the *i*-th CPU this process may run on (when there are no more
    /// workers than CPUs). Off by default: a pinned worker cannot move away from a CPU that
    /// something else keeps busy, which on a machine shared with the instances it serves can
    /// cost more than it saves. On a machine (or CPU set) dedicated to the load balancer it
    /// steadies tail latency (see BENCHMARKS.md), as HAProxy's `cpu-map` and nginx's
    /// `worker_cpu_affinity` do.
    pub pin_workers: bool,
}

impl Default for LbSettings {
    fn default() -> Self {
        LbSettings {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(60),
            max_connections_per_listener: 10_000,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            listener_drain_timeout: Duration::from_secs(30),
            passive_ejection: Duration::from_secs(5),
            backend_idle_timeout: Duration::from_secs(90),
            max_idle_per_backend: 1024,
            worker_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            pin_workers: false,
        }
    }
}

/// Does `path` fall under `prefix`? `/kids` matches `/kids`, `/kids/` and `/kids/x` but not
/// `/kidsfoo`; a prefix ending with `/` (including `/` itself) matches anything below it.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
}

/// Checks everything that can be checked without touching the network, returning every problem
/// with its path (`listeners[1].routes[0].pool: unknown pool "x"`).
pub(crate) fn validate(config: &LbConfig) -> Vec<String> {
    let mut problems = Vec::new();

    let mut pool_names = HashSet::new();
    for (pi, pool) in config.pools.iter().enumerate() {
        let at = format!("pools[{pi}]");
        if pool.name.is_empty() {
            problems.push(format!("{at}.name: must not be empty"));
        } else if !pool_names.insert(pool.name.as_str()) {
            problems.push(format!("{at}.name: duplicate pool name {:?}", pool.name));
        }
        if let Some(hc) = &pool.health_check {
            let at = format!("{at}.health_check");
            if !hc.path.starts_with('/') || hc.path.parse::<http::uri::PathAndQuery>().is_err() {
                problems.push(format!(
                    "{at}.path: {:?} is not a path starting with '/'",
                    hc.path
                ));
            }
            if hc.interval.is_zero() {
                problems.push(format!("{at}.interval: must be greater than zero"));
            }
            if hc.timeout.is_zero() {
                problems.push(format!("{at}.timeout: must be greater than zero"));
            }
            if hc.healthy_threshold == 0 {
                problems.push(format!("{at}.healthy_threshold: must be at least 1"));
            }
            if hc.unhealthy_threshold == 0 {
                problems.push(format!("{at}.unhealthy_threshold: must be at least 1"));
            }
        }
        let mut group_names = HashSet::new();
        let mut backend_ids: HashMap<&str, String> = HashMap::new();
        for (gi, group) in pool.groups.iter().enumerate() {
            let at = format!("{at}.groups[{gi}]");
            if group.name.is_empty() {
                problems.push(format!("{at}.name: must not be empty"));
            } else if !group_names.insert(group.name.as_str()) {
                problems.push(format!(
                    "{at}.name: duplicate group name {:?} in pool {:?}",
                    group.name, pool.name
                ));
            }
            for (bi, backend) in group.backends.iter().enumerate() {
                let at = format!("{at}.backends[{bi}]");
                if backend.id.is_empty() {
                    problems.push(format!("{at}.id: must not be empty"));
                } else if let Some(first) = backend_ids.get(backend.id.as_str()) {
                    problems.push(format!(
                        "{at}.id: duplicate backend id {:?} in pool {:?} (first at {first})",
                        backend.id, pool.name
                    ));
                } else {
                    backend_ids.insert(backend.id.as_str(), at.clone());
                }
                if backend.addr.port() == 0
                    || backend.addr.ip().is_unspecified()
                    || http::uri::Authority::try_from(backend.addr.to_string().as_str()).is_err()
                {
                    problems.push(format!(
                        "{at}.addr: {} is not a connectable address",
                        backend.addr
                    ));
                }
            }
        }
    }

    let mut listener_names = HashSet::new();
    let mut binds: HashMap<SocketAddr, usize> = HashMap::new();
    for (li, listener) in config.listeners.iter().enumerate() {
        let at = format!("listeners[{li}]");
        if listener.name.is_empty() {
            problems.push(format!("{at}.name: must not be empty"));
        } else if !listener_names.insert(listener.name.as_str()) {
            problems.push(format!(
                "{at}.name: duplicate listener name {:?}",
                listener.name
            ));
        }
        if listener.bind.port() != 0 {
            if let Some(first) = binds.get(&listener.bind) {
                problems.push(format!(
                    "{at}.bind: {} is also the address of listeners[{first}]",
                    listener.bind
                ));
            } else {
                binds.insert(listener.bind, li);
            }
        }
        let mut prefixes = HashSet::new();
        for (ri, route) in listener.routes.iter().enumerate() {
            let at = format!("{at}.routes[{ri}]");
            if !route.path_prefix.starts_with('/') {
                problems.push(format!(
                    "{at}.path_prefix: {:?} must start with '/'",
                    route.path_prefix
                ));
            } else if !prefixes.insert(route.path_prefix.as_str()) {
                problems.push(format!(
                    "{at}.path_prefix: duplicate prefix {:?}",
                    route.path_prefix
                ));
            }
            if !pool_names.contains(route.pool.as_str()) {
                problems.push(format!("{at}.pool: unknown pool {:?}", route.pool));
            }
        }
        if let Some(pool) = &listener.default_pool
            && !pool_names.contains(pool.as_str())
        {
            problems.push(format!("{at}.default_pool: unknown pool {pool:?}"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: &str, port: u16) -> BackendConfig {
        BackendConfig {
            id: id.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn listener(
        name: &str,
        port: u16,
        routes: &[(&str, &str)],
        default: Option<&str>,
    ) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            bind: SocketAddr::from(([127, 0, 0, 1], port)),
            routes: routes
                .iter()
                .map(|(p, pool)| RouteConfig {
                    path_prefix: (*p).into(),
                    pool: (*pool).into(),
                })
                .collect(),
            default_pool: default.map(Into::into),
            allow: vec![],
            deny: vec![],
        }
    }

    #[test]
    fn prefix_matching_respects_segment_boundaries() {
        assert!(prefix_matches("/kids", "/kids"));
        assert!(prefix_matches("/kids", "/kids/x"));
        assert!(prefix_matches("/kids", "/kids/"));
        assert!(!prefix_matches("/kids", "/kidsfoo"));
        assert!(!prefix_matches("/kids", "/kid"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/kids/", "/kids/x"));
        assert!(!prefix_matches("/kids/", "/kids"));
    }

    #[test]
    fn a_valid_config_has_no_problems() {
        let config = LbConfig {
            listeners: vec![listener("web", 0, &[("/kids", "kids")], Some("home"))],
            pools: vec![
                PoolConfig {
                    name: "kids".into(),
                    health_check: None,
                    groups: vec![GroupConfig {
                        name: "kids-v001".into(),
                        weight: 1,
                        enabled: true,
                        backends: vec![backend("i-1", 9001)],
                    }],
                },
                PoolConfig {
                    name: "home".into(),
                    health_check: None,
                    groups: vec![],
                },
            ],
        };
        assert_eq!(validate(&config), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let group = GroupConfig {
            name: "g".into(),
            weight: 1,
            enabled: true,
            backends: vec![backend("b", 9001), backend("b", 9002), backend("", 0)],
        };
        let config = LbConfig {
            listeners: vec![
                listener(
                    "web",
                    8080,
                    &[("/a", "nope"), ("kids", "p"), ("/a", "p")],
                    Some("gone"),
                ),
                listener("web", 8080, &[], None),
            ],
            pools: vec![
                PoolConfig {
                    name: "p".into(),
                    health_check: Some(HealthCheckConfig {
                        path: "health".into(),
                        interval: Duration::ZERO,
                        timeout: Duration::ZERO,
                        healthy_threshold: 0,
                        unhealthy_threshold: 0,
                    }),
                    groups: vec![group.clone(), group],
                },
                PoolConfig {
                    name: "p".into(),
                    health_check: None,
                    groups: vec![],
                },
            ],
        };
        let problems = validate(&config);
        let expected = [
            "pools[1].name: duplicate pool name \"p\"",
            "pools[0].health_check.path: \"health\" is not a path starting with '/'",
            "pools[0].health_check.interval: must be greater than zero",
            "pools[0].health_check.timeout: must be greater than zero",
            "pools[0].health_check.healthy_threshold: must be at least 1",
            "pools[0].health_check.unhealthy_threshold: must be at least 1",
            "pools[0].groups[0].backends[1].id: duplicate backend id \"b\" in pool \"p\" (first at pools[0].groups[0].backends[0])",
            "pools[0].groups[0].backends[2].id: must not be empty",
            "pools[0].groups[0].backends[2].addr: 127.0.0.1:0 is not a connectable address",
            "pools[0].groups[1].name: duplicate group name \"g\" in pool \"p\"",
            "listeners[0].routes[0].pool: unknown pool \"nope\"",
            "listeners[0].routes[1].path_prefix: \"kids\" must start with '/'",
            "listeners[0].routes[2].path_prefix: duplicate prefix \"/a\"",
            "listeners[0].default_pool: unknown pool \"gone\"",
            "listeners[1].name: duplicate listener name \"web\"",
            "listeners[1].bind: 127.0.0.1:8080 is also the address of listeners[0]",
        ];
        for want in expected {
            assert!(
                problems.iter().any(|p| p == want),
                "missing {want:?} in {problems:#?}"
            );
        }
    }
}
