//! The server-group provider contract. A provider runs versioned server groups of an artifact
//! behind load balancers; the host provider does it with supervised local processes and Ferry's
//! own load balancer, the Kubernetes provider with ReplicaSets/Deployments, Services and
//! Ingresses. Deploy strategies and server-group stages are written once against [`Provider`].
//!
//! This crate knows nothing of processes, ports or Kubernetes objects.

pub mod conformance;
pub mod fake;
pub mod model;
pub mod naming;

pub use model::*;
pub use naming::{Moniker, NameError};

use async_trait::async_trait;

/// Errors from a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// No such account, server group or load balancer.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid (bad capacity, unknown load balancer, a port already taken…).
    #[error("{0}")]
    Invalid(String),
    /// The state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// The provider's backend failed (a process could not start, an API call failed).
    #[error("{0}")]
    Backend(String),
}

/// Shorthand.
pub type ProviderResult<T> = Result<T, ProviderError>;

/// A server-group provider. Every method is idempotent where it can be: enabling an enabled
/// server group, destroying a destroyed one or resizing to the current size succeed.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Provider kind: `host`, `kubernetes`.
    fn kind(&self) -> &'static str;
    /// The accounts it serves.
    fn accounts(&self) -> Vec<String>;

    /// Creates the next server group of the spec's cluster (sequence = highest + 1) and starts
    /// its instances. Returns at once; readiness is observed with [`Provider::server_group`].
    async fn create_server_group(&self, spec: ServerGroupSpec) -> ProviderResult<ServerGroup>;
    /// Server groups of an application, oldest first.
    async fn server_groups(&self, application: &str) -> ProviderResult<Vec<ServerGroup>>;
    /// One server group.
    async fn server_group(&self, account: &str, name: &str) -> ProviderResult<Option<ServerGroup>>;
    /// Changes the instance counts.
    async fn resize(&self, account: &str, name: &str, capacity: Capacity) -> ProviderResult<()>;
    /// Lets the server group take traffic.
    async fn enable(&self, account: &str, name: &str) -> ProviderResult<()>;
    /// Takes the server group out of traffic; returns once in-flight requests have drained.
    async fn disable(&self, account: &str, name: &str) -> ProviderResult<()>;
    /// Sets the traffic weight of a server group within its cluster.
    async fn set_weight(&self, account: &str, name: &str, weight: u32) -> ProviderResult<()>;
    /// Stops every instance and forgets the server group; leaves nothing running.
    async fn destroy(&self, account: &str, name: &str) -> ProviderResult<()>;

    /// Creates or changes a load balancer.
    async fn upsert_load_balancer(&self, spec: LoadBalancerSpec) -> ProviderResult<()>;
    /// Load balancers of an application.
    async fn load_balancers(&self, application: &str) -> ProviderResult<Vec<LoadBalancerSpec>>;
    /// Deletes a load balancer.
    async fn delete_load_balancer(&self, account: &str, name: &str) -> ProviderResult<()>;
    /// Creates or changes a firewall.
    async fn upsert_firewall(&self, spec: FirewallSpec) -> ProviderResult<()>;
    /// Firewalls of an application.
    async fn firewalls(&self, application: &str) -> ProviderResult<Vec<FirewallSpec>>;

    /// The last `tail` log lines of a server group (or one instance of it).
    async fn logs(
        &self,
        account: &str,
        server_group: &str,
        instance: Option<&str>,
        tail: usize,
    ) -> ProviderResult<Vec<LogLine>>;
}
