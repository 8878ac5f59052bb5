//! The load balancer's error type.

use std::net::SocketAddr;

/// What [`crate::Lb::apply`] and [`crate::Lb::drain`] can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    /// The configuration was refused and nothing changed. Holds every problem found, each with
    /// its path (`listeners[0].routes[1].pool: unknown pool "x"`), including listener addresses
    /// that could not be bound.
    #[error("invalid load balancer configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The configuration was refused and nothing changed: its only problem is that one listener's
    /// address could not be bound (port taken, address not local, permission).
    #[error("listener {listener:?}: cannot bind {addr}: {reason}")]
    Bind {
        /// Name of the listener.
        listener: String,
        /// Address it asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        reason: String,
    },
    /// Requests were still in flight on the group when the drain timeout expired.
    #[error("pool {pool:?} group {group:?} still has {in_flight} requests in flight")]
    DrainTimeout {
        /// Pool of the group.
        pool: String,
        /// The group that did not drain.
        group: String,
        /// Requests in flight when the timeout expired.
        in_flight: u64,
    },
    /// Requests were still in flight on backends being removed when the timeout expired.
    #[error(
        "server group {group:?} still has {in_flight} requests in flight on the backends being removed"
    )]
    BackendDrainTimeout {
        /// The group of the backends.
        group: String,
        /// Requests in flight when the timeout expired.
        in_flight: u64,
    },
    /// The load balancer was shut down; it takes no more configuration.
    #[error("the load balancer is shut down")]
    ShutDown,
}
