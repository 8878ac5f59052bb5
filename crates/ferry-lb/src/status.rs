//! A point-in-time view of listeners, pools, groups and backends, returned by [`crate::Lb::status`].

use std::net::SocketAddr;

/// The whole load balancer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LbStatus {
    /// Running listeners, in configuration order.
    pub listeners: Vec<ListenerStatus>,
    /// Configured pools, in configuration order.
    pub pools: Vec<PoolStatus>,
}

/// One listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerStatus {
    /// Its name.
    pub name: String,
    /// The address configured (port may be 0).
    pub bind: SocketAddr,
    /// The address actually bound.
    pub local_addr: SocketAddr,
    /// Open client connections.
    pub connections: usize,
}

/// One pool (cluster).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    /// Its name.
    pub name: String,
    /// Whether active health checks run for its backends.
    pub health_checked: bool,
    /// Its server groups, in configuration order.
    pub groups: Vec<GroupStatus>,
}

/// One server group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStatus {
    /// Its name.
    pub name: String,
    /// Configured weight.
    pub weight: u32,
    /// Whether it takes new requests.
    pub enabled: bool,
    /// Requests whose response has not finished, on any backend it ever had.
    pub in_flight: u64,
    /// Requests sent to its backends since it was first configured (each retry attempt counts).
    pub requests: u64,
    /// Its backends, in configuration order.
    pub backends: Vec<BackendStatus>,
}

/// One backend (instance).
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStatus {
    /// Its id.
    pub id: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Takes new requests: healthy per the active check and not ejected by a failed connect.
    pub healthy: bool,
    /// Requests whose response has not finished.
    pub in_flight: u64,
    /// Requests sent (each attempt counts).
    pub requests: u64,
    /// Failed connects, broken connections and timeouts.
    pub failures: u64,
}

impl LbStatus {
    /// The status of `group` in `pool`, if configured.
    pub fn group(&self, pool: &str, group: &str) -> Option<&GroupStatus> {
        self.pools
            .iter()
            .find(|p| p.name == pool)?
            .groups
            .iter()
            .find(|g| g.name == group)
    }

    /// The status of backend `id` of `pool`, if configured.
    pub fn backend(&self, pool: &str, id: &str) -> Option<&BackendStatus> {
        self.pools
            .iter()
            .find(|p| p.name == pool)?
            .groups
            .iter()
            .flat_map(|g| g.backends.iter())
            .find(|b| b.id == id)
    }
}
