//! The host provider, Ferry's embedded default target: server groups run as supervised local
//! processes behind Ferry's own load balancer ([`ferry_lb::Lb`]).
//!
//! [`HostProvider`] implements [`ferry_provider::Provider`] (kind `host`). A server group is N
//! instances of its artifact. Each instance gets its own port from
//! [`HostConfig::port_range`] (checked free by binding it, then recorded) and its own working
//! directory `<state_dir>/<account>/<server group>/<n>/`, and runs with an environment of
//! `PATH` (Ferry's), `HOME` (its directory), the artifact's `env`, then `PORT`,
//! `FERRY_SERVER_GROUP`, `FERRY_INSTANCE` and, for executables and tarballs,
//! `FERRY_ARTIFACT_DIR` (Ferry's values win). Ferry's own environment is not inherited.
//!
//! # Artifacts
//! Never run through a shell: the program and its arguments are an argument vector.
//! - `Command`: a bare program name is looked up on `PATH` when an instance starts; a path with
//!   a `/` is relative to Ferry's working directory. A program that cannot be started is not a
//!   create error: the instances report it in `last_exit` (`cannot start ./missing: No such file
//!   or directory (os error 2)`) and crash-loop.
//! - `Executable`: copied into `<server group>/artifact/` and made executable when the server
//!   group is created; a missing file is a create error (`ProviderError::Invalid`).
//! - `Tarball` (`.tar`, or gzip-compressed): every entry is checked before anything is unpacked
//!   (no absolute paths, no `..`, no entry through or over a symbolic link, symbolic links only
//!   inside the tree, no devices or FIFOs), then it is unpacked into `<server group>/artifact/`.
//!   The command's program is taken from the tree (a path with `/`, or a bare name present in
//!   it) or from `PATH`. A file that is not a tarball and an unsafe entry are create errors
//!   (`ProviderError::Invalid`) that say which file and entry.
//! - `Image`: refused (`ProviderError::Invalid`): container images are for Kubernetes accounts.
//!
//! # Supervision
//! One task per instance checks readiness with the server group's HTTP health check
//! (`GET 127.0.0.1:<port><path>`, 2xx/3xx passes, every `interval`, `healthy_threshold` passes
//! to become `Up`, `unhealthy_threshold` failures to become `Unhealthy`; an unhealthy instance
//! loses traffic but is not restarted). A process that exits is restarted with exponential
//! backoff (1 s, 2 s, 4 s … 30 s by default, see [`Supervision`]); 5 restarts within 60 s make it
//! [`CrashLooping`](ferry_provider::InstanceState::CrashLooping) (restarts go on at the longest
//! backoff) with the exit status, signal or start error in `Instance::last_exit`. Children are
//! reaped. Destroying a server group takes it out of the load balancer, drains it, sends
//! SIGTERM to each instance's process group, SIGKILL after [`Supervision::stop_grace`], waits
//! until no process of the group is left, and removes its directory and records. Resizing down
//! does the same for the highest-numbered instances.
//!
//! # Logs
//! Instances write their standard output and error straight into `stdout.log` and `stderr.log`
//! in their directory. Ferry reads what they append every [`Supervision::log_poll`] and stamps
//! each line with **the time Ferry read it**; lines already in the files when Ferry starts
//! reading (a restart of Ferry) get **the file's modification time**. `logs` returns the last
//! lines kept in memory (up to 5000 per instance), merged oldest first;
//! [`HostProvider::follow_logs`] streams new lines. Each file keeps at most half of [`HostConfig::log_retention_bytes`]: when
//! over, it is cut in place to its newest half (copy-truncate; the processes write with
//! `O_APPEND` and never notice). Ferry adds its own notes (failed starts, exits, adoption) to
//! `stderr.log` as lines starting with `ferry:`.
//!
//! # How instances are re-adopted
//! Instance processes outlive Ferry: each is spawned in its own process group (so signals aimed
//! at Ferry's group, such as a terminal's Ctrl-C, do not reach it, and the whole group can be
//! signalled; not a new session, which would need code between fork and exec, and the workspace
//! forbids `unsafe`), with standard input from
//! `/dev/null` and its output written directly to files, not pipes (a pipe would break when
//! Ferry exits), and it is not killed when Ferry drops its handle. [`HostProvider::shutdown`]
//! stops supervising and leaves every instance serving (after it, the provider reports nothing
//! and refuses operations).
//!
//! Every start of a process is recorded in the instance's `instance.json` (written atomically):
//! its pid, its start time from `/proc/<pid>/stat` (field 22, clock ticks since boot), its port
//! and its restart count. [`HostProvider::start`] reads every server group's records and, for
//! each instance:
//! - if the recorded pid is alive (not a zombie) **and** its current start time equals the
//!   recorded one, the process is the one Ferry started: it is adopted. Its readiness checks
//!   resume (it is `Starting` until it passes them again, then `Up` and back in the load
//!   balancer), and its exit is noticed by watching `/proc` every
//!   [`Supervision::liveness_poll`] (it is not Ferry's child any more, so its exit status is
//!   unknown). Destroying it signals its process group as for any instance.
//! - otherwise (no such pid, or the pid was recycled by another process, whose start time
//!   differs) the instance died while Ferry was down: it is started again, counting a restart.
//!
//! The state directory is locked (`flock` on `<state_dir>/provider.lock`) while a provider
//! runs, so a second provider on the same directory is refused (`ProviderError::Conflict`)
//! instead of supervising the same processes twice; [`HostProvider::shutdown`] releases it.
//!
//! Instances beyond the recorded capacity (a resize down interrupted by a restart) are stopped
//! and removed; missing ones are created; a destroy that was interrupted is finished. The load
//! balancers and firewalls are read back and the load balancer configuration is applied again.
//!
//! # Traffic
//! The provider owns one [`ferry_lb::Lb`] and rebuilds its whole configuration whenever a load
//! balancer, a firewall, a server group's enabled flag or weight, or an instance's readiness
//! changes:
//! - each listener of a load balancer spec is a listener named `<account>/<lb>/<addr>:<port>`,
//!   bound to the spec's address or [`HostConfig::listen_address`];
//! - each cluster it routes to (path routes, longest prefix first, and the default cluster) is a
//!   pool named `<account>/<lb>/<cluster>` (the `pool` label of the load balancer's metrics);
//! - the pool's groups are the cluster's server groups that list the load balancer (name,
//!   weight, enabled), and their backends are their instances that are `Up`;
//! - the firewalls a load balancer names become its listeners' allow and deny lists (several
//!   firewalls' lists are concatenated; a firewall that does not exist is refused, never
//!   ignored).
//!
//! `disable` applies the change and then waits (up to [`Supervision::drain_timeout`]) for the
//! group's in-flight requests to finish. A listener port that cannot be bound is refused with
//! `ProviderError::Invalid` naming the port, and nothing changes: the previous configuration
//! keeps serving. Load balancer and firewall specs are recorded in the state directory.
//!
//! # Locking
//! The in-memory state sits behind one mutex that is never held across an await. Mutating
//! operations take the `ops` async mutex for their bookkeeping and the load balancer apply, and
//! release it before anything slow (draining, stopping processes, unpacking a tarball).

mod artifact;
mod health;
mod logs;
mod persist;
mod process;
mod provider;
mod supervisor;
mod traffic;

pub use artifact::ArtifactError;
pub use persist::StateError;
pub use provider::{HostProvider, MAX_INSTANCES};

use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// The provider kind.
pub const KIND: &str = "host";

/// How the host provider is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// Where server groups, instances, logs, load balancers and firewalls are recorded; instance
    /// working directories live under it. Created if missing.
    pub state_dir: PathBuf,
    /// Accounts served (default `["local"]`). Names: lower-case letters, digits, `-` and `_`.
    pub accounts: Vec<String>,
    /// Ports given to instances (default `20000..30000`).
    pub port_range: Range<u16>,
    /// Address load balancer listeners bind when their spec gives none (default `127.0.0.1`).
    pub listen_address: IpAddr,
    /// Output retained per instance, half for stdout and half for stderr (default 10 MiB).
    pub log_retention_bytes: u64,
    /// Restart, stop and polling timings.
    pub supervision: Supervision,
    /// The built-in load balancer's limits, timeouts and worker threads.
    pub lb: ferry_lb::LbSettings,
}

impl HostConfig {
    /// Defaults, with state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> HostConfig {
        HostConfig {
            state_dir: state_dir.into(),
            accounts: vec!["local".into()],
            port_range: 20_000..30_000,
            listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            log_retention_bytes: 10 * 1024 * 1024,
            supervision: Supervision::default(),
            lb: ferry_lb::LbSettings::default(),
        }
    }
}

/// Restart, stop and polling timings of instance supervision.
#[derive(Debug, Clone, PartialEq)]
pub struct Supervision {
    /// Delay before the first restart of a crashed instance (default 1 s); doubles each time.
    pub restart_backoff_initial: Duration,
    /// Longest delay between restarts (default 30 s); also the delay while crash-looping.
    pub restart_backoff_max: Duration,
    /// Restarts within [`Supervision::crash_loop_window`] that make an instance crash-looping
    /// (default 5).
    pub crash_loop_restarts: u32,
    /// Window for crash-loop detection (default 60 s); a run this long resets the backoff.
    pub crash_loop_window: Duration,
    /// Time between SIGTERM and SIGKILL when an instance is stopped (default 10 s).
    pub stop_grace: Duration,
    /// Longest wait for in-flight requests when a server group is disabled or destroyed
    /// (default 30 s); after it, the operation goes on.
    pub drain_timeout: Duration,
    /// Longest wait for the requests still in flight on the instances a resize removes
    /// (default 30 s), before they get SIGTERM. Only their own requests are waited for: the
    /// rest of the server group keeps serving meanwhile.
    pub resize_drain_timeout: Duration,
    /// Time between checks that an adopted process (not Ferry's child) still runs (500 ms).
    pub liveness_poll: Duration,
    /// Time between reads of the log files (250 ms).
    pub log_poll: Duration,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision {
            restart_backoff_initial: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(30),
            crash_loop_restarts: 5,
            crash_loop_window: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            resize_drain_timeout: Duration::from_secs(30),
            liveness_poll: Duration::from_millis(500),
            log_poll: Duration::from_millis(250),
        }
    }
}
