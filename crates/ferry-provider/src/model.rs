//! The provider-neutral model: server groups, instances, load balancers and firewalls, and what
//! a deploy asks for. Host specifics (processes, ports) and Kubernetes specifics (ReplicaSets,
//! Services) stay inside the providers.

use crate::naming::Moniker;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Desired instance counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Minimum.
    pub min: u32,
    /// Maximum.
    pub max: u32,
    /// Desired.
    pub desired: u32,
}

impl Capacity {
    /// `min = max = desired = n`.
    pub fn fixed(n: u32) -> Capacity {
        Capacity {
            min: n,
            max: n,
            desired: n,
        }
    }
}

/// Where a server group's program comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ArtifactSource {
    /// A command (argument vector) found on `PATH` or by path.
    Command {
        /// Program and arguments.
        command: Vec<String>,
    },
    /// An executable file, copied into the server group's directory.
    Executable {
        /// Path of the file.
        path: String,
        /// Arguments.
        #[serde(default)]
        args: Vec<String>,
    },
    /// A tarball unpacked into the server group's directory; `command` runs inside it.
    Tarball {
        /// Path of the `.tar` / `.tar.gz`.
        path: String,
        /// Program (relative to the unpacked tree, or on `PATH`) and arguments.
        command: Vec<String>,
    },
    /// A container image (Kubernetes provider).
    Image {
        /// Image reference.
        image: String,
    },
}

/// What a server group runs: a named, versioned artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Artifact name (e.g. `shop-kids`).
    pub name: String,
    /// Version (e.g. `1.4.2`).
    pub version: String,
    /// Where the program comes from.
    pub source: ArtifactSource,
    /// Environment for every instance (the provider adds `PORT`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// An HTTP health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Path, e.g. `/health`.
    pub path: String,
    /// Time between checks, ms.
    pub interval_ms: u64,
    /// Time a check may take, ms.
    pub timeout_ms: u64,
    /// Consecutive passes to become healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures to become unhealthy.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/health".into(),
            interval_ms: 1000,
            timeout_ms: 1000,
            healthy_threshold: 1,
            unhealthy_threshold: 2,
        }
    }
}

/// What a deploy asks a provider to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerGroupSpec {
    /// Account (the host provider's default is `local`).
    pub account: String,
    /// The cluster; the provider picks the next sequence.
    pub moniker: Moniker,
    /// Instance counts.
    pub capacity: Capacity,
    /// What to run.
    pub artifact: Artifact,
    /// Readiness check.
    pub health_check: HealthCheck,
    /// Load balancers the server group registers with.
    pub load_balancers: Vec<String>,
    /// Whether it takes traffic once healthy (false = deployed disabled).
    pub enabled: bool,
    /// Traffic weight among the enabled server groups of its cluster (default 100).
    pub weight: u32,
    /// Who deployed it.
    pub deployed_by: String,
    /// From which execution.
    pub execution_id: Option<String>,
}

/// An instance's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    /// Starting; not yet healthy.
    Starting,
    /// Running and passing its health check.
    Up,
    /// Running but failing its health check.
    Unhealthy,
    /// Exited; waiting to be restarted (with backoff).
    Restarting,
    /// Restarted too often in a short time; restarts continue with the longest backoff.
    CrashLooping,
    /// Stopped on purpose.
    Stopped,
}

/// One instance of a server group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Unique id, e.g. `shop-prod-v003-0`.
    pub id: String,
    /// Owning server group.
    pub server_group: String,
    /// Where it serves, `host:port`.
    pub address: String,
    /// State.
    pub state: InstanceState,
    /// Restarts so far.
    pub restarts: u32,
    /// Start of the current run, epoch ms.
    pub started_at: Option<i64>,
    /// Why it last stopped (exit status, signal, spawn error).
    pub last_exit: Option<String>,
}

/// A server group as a provider reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerGroup {
    /// `app-stack-detail-vNNN`.
    pub name: String,
    /// Account.
    pub account: String,
    /// Provider kind (`host`, `kubernetes`).
    pub provider: String,
    /// Its moniker (with sequence).
    pub moniker: Moniker,
    /// Instance counts.
    pub capacity: Capacity,
    /// What it runs.
    pub artifact: Artifact,
    /// Readiness check.
    pub health_check: HealthCheck,
    /// Load balancers it is registered with.
    pub load_balancers: Vec<String>,
    /// Whether it takes traffic.
    pub enabled: bool,
    /// Traffic weight among the enabled server groups of its cluster.
    pub weight: u32,
    /// Creation time, epoch ms.
    pub created_at: i64,
    /// Who deployed it.
    pub deployed_by: String,
    /// From which execution.
    pub execution_id: Option<String>,
    /// Its instances.
    pub instances: Vec<Instance>,
}

impl ServerGroup {
    /// The cluster name.
    pub fn cluster(&self) -> String {
        self.moniker.cluster_name()
    }

    /// Instances passing their health check.
    pub fn healthy(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.state == InstanceState::Up)
            .count()
    }

    /// True when at least `capacity.desired` instances are healthy.
    pub fn is_up(&self) -> bool {
        self.healthy() >= self.capacity.desired as usize
    }

    /// The sequence number (0 when unknown).
    pub fn sequence(&self) -> u32 {
        self.moniker.sequence.unwrap_or(0)
    }
}

/// A listener of a load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Port to listen on.
    pub port: u16,
    /// Bind address (default `0.0.0.0` for the host provider).
    #[serde(default)]
    pub address: Option<String>,
}

/// A path route: requests whose path starts with `path_prefix` go to `cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathRoute {
    /// Path prefix, e.g. `/kids`.
    pub path_prefix: String,
    /// Cluster name that serves it.
    pub cluster: String,
}

/// A load balancer as the user declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    /// Name, unique per account.
    pub name: String,
    /// Application.
    pub application: String,
    /// Account.
    pub account: String,
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// Path routes, longest prefix first when matching.
    pub routes: Vec<PathRoute>,
    /// Cluster for requests no route matches.
    pub default_cluster: Option<String>,
    /// Firewalls applied to its listeners.
    #[serde(default)]
    pub firewalls: Vec<String>,
    /// Preview listeners (blue/green's preview service): the same routes, each to the newest
    /// server group of the cluster that has instances up, enabled or not — the version about
    /// to be promoted, or the active one when there is none.
    #[serde(default)]
    pub preview_listeners: Vec<Listener>,
}

/// A firewall: source CIDR allow and deny lists for listeners. Deny wins; an empty allow list
/// allows everything not denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirewallSpec {
    /// Name.
    pub name: String,
    /// Application.
    pub application: String,
    /// Account.
    pub account: String,
    /// Allowed source networks.
    pub allow: Vec<ipnet::IpNet>,
    /// Denied source networks.
    pub deny: Vec<ipnet::IpNet>,
}

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// Instance id.
    pub instance: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Time, epoch ms.
    pub time: i64,
    /// The line, without the newline.
    pub line: String,
}
