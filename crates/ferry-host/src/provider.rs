//! [`HostProvider`]: the server groups, instances, load balancers and firewalls of the host
//! provider, their records in the state directory, and the [`Provider`] implementation.

use crate::artifact::{self, ArtifactError};
use crate::persist::{
    self, ARTIFACT_DIR, FIREWALLS_FILE, GROUP_FILE, GroupRecord, INSTANCE_FILE, InstanceRecord,
    LOAD_BALANCERS_FILE, PROVIDER_FILE, ProviderRecord, StateError,
};
use crate::process::{self, LaunchSpec};
use crate::supervisor::{self, Control, InstanceSpec, Start, Supervisor, SupervisorCtx};
use crate::traffic::{self, ByName, GroupView};
use crate::{HostConfig, KIND, health};
use async_trait::async_trait;
use ferry_lb::{Lb, LbConfig, LbError};
use ferry_provider::{
    Capacity, FirewallSpec, Instance, InstanceState, LoadBalancerSpec, LogLine, Moniker, Provider,
    ProviderError, ProviderResult, ServerGroup, ServerGroupSpec,
};
use futures::Stream;
use nix::fcntl::{Flock, FlockArg};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most instances one server group may have.
pub const MAX_INSTANCES: u32 = 256;
/// Lines buffered per server group for followers that fall behind (older ones are skipped).
const FOLLOW_BUFFER: usize = 4096;

/// The host provider. Cheap to clone: every clone is the same provider.
#[derive(Clone)]
pub struct HostProvider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HostProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostProvider")
            .field("state_dir", &self.inner.config.state_dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// Validated configuration; `state_dir` is absolute.
    config: HostConfig,
    /// Ferry's working directory, for relative command paths.
    cwd: PathBuf,
    /// The load balancer; its configuration is rebuilt from `state` on every change.
    lb: Lb,
    /// Everything in memory. Never held across an await.
    state: Mutex<State>,
    /// Serialises the bookkeeping of mutating operations, state file writes and load balancer
    /// applies. Released before draining, stopping processes or unpacking.
    ops: tokio::sync::Mutex<()>,
    /// Notified when an instance starts or stops being up: the reconciler re-applies.
    traffic: Arc<Notify>,
    /// Cancelled by [`HostProvider::shutdown`]: stops the reconciler.
    shutdown: CancellationToken,
    /// Set by [`HostProvider::shutdown`]; later operations fail.
    closed: AtomicBool,
    /// The reconciler task, awaited at shutdown.
    reconciler: Mutex<Option<JoinHandle<()>>>,
    /// Exclusive lock on `<state_dir>/lock`, so two providers never supervise the same
    /// instances; released at shutdown.
    lock: Mutex<Option<Flock<std::fs::File>>>,
}

#[derive(Default)]
struct State {
    meta: ProviderRecord,
    groups: BTreeMap<(String, String), Group>,
    load_balancers: ByName<LoadBalancerSpec>,
    firewalls: ByName<FirewallSpec>,
    /// Where the next port search starts (ports are not reused right after being freed).
    next_port: u16,
}

struct Group {
    record: GroupRecord,
    dir: PathBuf,
    instances: BTreeMap<u32, InstanceEntry>,
    /// Every line read from any of its instances, for `follow_logs`.
    followers: broadcast::Sender<LogLine>,
    /// Becomes true when a destroy has finished (concurrent destroys wait on it).
    destroyed: watch::Sender<bool>,
}

struct InstanceEntry {
    id: String,
    port: u16,
    supervisor: Supervisor,
    /// Being removed by a resize: out of traffic, reported as stopped.
    retiring: bool,
}

fn key(account: &str, name: &str) -> (String, String) {
    (account.to_string(), name.to_string())
}

fn not_found(account: &str, name: &str) -> ProviderError {
    ProviderError::NotFound(format!(
        "no server group \"{name}\" in account \"{account}\""
    ))
}

fn backend(e: StateError) -> ProviderError {
    ProviderError::Backend(e.to_string())
}

fn artifact_error(e: ArtifactError) -> ProviderError {
    match e {
        ArtifactError::Io { .. } => ProviderError::Backend(e.to_string()),
        _ => ProviderError::Invalid(e.to_string()),
    }
}

/// A load balancer refusal, for `what` (e.g. `load balancer "web"`).
fn lb_refused(what: &str, e: LbError) -> ProviderError {
    match e {
        LbError::Bind { addr, reason, .. } => ProviderError::Invalid(format!(
            "port {} cannot be used ({addr}: {reason}); {what} was not changed and the previous load balancer configuration keeps serving",
            addr.port()
        )),
        LbError::Invalid(problems) => ProviderError::Invalid(format!(
            "{what} was refused by the load balancer and nothing changed: {}",
            problems.join("; ")
        )),
        LbError::ShutDown => ProviderError::Backend("the load balancer is shut down".into()),
        other => ProviderError::Backend(other.to_string()),
    }
}

fn capacity_problems(c: &Capacity) -> Vec<String> {
    let mut problems = Vec::new();
    if c.min > c.max {
        problems.push(format!(
            "capacity: min {} is greater than max {}",
            c.min, c.max
        ));
    } else if c.desired < c.min || c.desired > c.max {
        problems.push(format!(
            "capacity: desired {} is outside min {} .. max {}",
            c.desired, c.min, c.max
        ));
    }
    if c.desired > MAX_INSTANCES {
        problems.push(format!(
            "capacity: desired {} is more than the {MAX_INSTANCES} instances a host server group may have",
            c.desired
        ));
    }
    problems
}

fn invalid_if_any(problems: Vec<String>) -> ProviderResult<()> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ProviderError::Invalid(problems.join("; ")))
    }
}

fn account_name_ok(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 63
        && a.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A name used in load balancer and pool names.
fn lb_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Whether nothing listens on `port` (checked by binding it on every address).
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// File locked by the running provider, in the state directory.
const LOCK_FILE: &str = "provider.lock";

/// Takes the state directory's lock, or says that another provider holds it.
fn lock_state_dir(state_dir: &Path) -> ProviderResult<Flock<std::fs::File>> {
    let path = state_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ProviderError::Backend(format!("cannot open {}: {e}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            ProviderError::Conflict(format!(
                "the state directory {} is in use by another running host provider",
                state_dir.display()
            ))
        } else {
            ProviderError::Backend(format!("cannot lock {}: {errno}", path.display()))
        }
    })
}

/// What [`load`] found in the state directory.
struct Loaded {
    meta: ProviderRecord,
    load_balancers: Vec<LoadBalancerSpec>,
    firewalls: Vec<FirewallSpec>,
    groups: Vec<LoadedGroup>,
}

struct LoadedGroup {
    record: GroupRecord,
    dir: PathBuf,
    /// Instance directories found: index, record (if any), directory.
    instances: Vec<(u32, Option<InstanceRecord>, PathBuf)>,
}

/// Reads the state directory. Unreadable server group records are skipped (and logged) so
/// one damaged directory does not keep Ferry from starting.
fn load(state_dir: &Path, accounts: &[String]) -> Result<Loaded, StateError> {
    let meta: ProviderRecord =
        persist::read_json(&state_dir.join(PROVIDER_FILE))?.unwrap_or_default();
    let load_balancers: Vec<LoadBalancerSpec> =
        persist::read_json(&state_dir.join(LOAD_BALANCERS_FILE))?.unwrap_or_default();
    let firewalls: Vec<FirewallSpec> =
        persist::read_json(&state_dir.join(FIREWALLS_FILE))?.unwrap_or_default();
    let mut groups = Vec::new();
    for account in accounts {
        let account_dir = state_dir.join(account);
        for name in persist::subdirectories(&account_dir)? {
            let dir = account_dir.join(&name);
            let record: GroupRecord = match persist::read_json(&dir.join(GROUP_FILE)) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    // A create that stopped before its record was written.
                    tracing::warn!(dir = %dir.display(), "removing a server group directory without a record");
                    persist::remove_dir(&dir)?;
                    continue;
                }
                Err(e) => {
                    tracing::error!("not loading server group {name}: {e}");
                    continue;
                }
            };
            let mut instances = Vec::new();
            for sub in persist::subdirectories(&dir)? {
                let Ok(index) = sub.parse::<u32>() else {
                    continue;
                };
                let idir = dir.join(&sub);
                let instance = persist::read_json(&idir.join(INSTANCE_FILE)).unwrap_or_else(|e| {
                    tracing::error!("instance {name}-{index}: {e}");
                    None
                });
                instances.push((index, instance, idir));
            }
            instances.sort_by_key(|(i, _, _)| *i);
            groups.push(LoadedGroup {
                record,
                dir,
                instances,
            });
        }
    }
    Ok(Loaded {
        meta,
        load_balancers,
        firewalls,
        groups,
    })
}

impl HostProvider {
    /// Starts the provider: reads the state directory, re-adopts the instances that still run
    /// (see the crate docs, "How instances are re-adopted"), starts the others again, and
    /// applies the load balancer configuration. A listener that cannot be bound at start is
    /// logged, not fatal; the next change applies the configuration again.
    pub async fn start(config: HostConfig) -> ProviderResult<HostProvider> {
        let mut problems = Vec::new();
        if config.accounts.is_empty() {
            problems.push("accounts: at least one account is needed".to_string());
        }
        for (i, a) in config.accounts.iter().enumerate() {
            if !account_name_ok(a) {
                problems.push(format!(
                    "accounts[{i}]: \"{a}\" must be 1-63 lower-case letters, digits, '-' or '_'"
                ));
            }
        }
        if config.port_range.is_empty() {
            problems.push(format!("port_range: {:?} holds no port", config.port_range));
        }
        if config.log_retention_bytes < 1024 {
            problems.push("log_retention_bytes: must be at least 1024".into());
        }
        invalid_if_any(problems)?;
        let cwd = std::env::current_dir().map_err(|e| {
            ProviderError::Backend(format!("cannot read the working directory: {e}"))
        })?;
        let dir = cwd.join(&config.state_dir);
        let state_dir = persist::run_blocking(move || {
            persist::create_dir(&dir)?;
            dir.canonicalize()
                .map_err(|source| StateError::Io { path: dir, source })
        })
        .await
        .map_err(backend)?;
        let lock = {
            let dir = state_dir.clone();
            tokio::task::spawn_blocking(move || lock_state_dir(&dir))
                .await
                .map_err(|e| ProviderError::Backend(e.to_string()))??
        };
        let accounts = config.accounts.clone();
        let loaded = {
            let dir = state_dir.clone();
            persist::run_blocking(move || load(&dir, &accounts))
                .await
                .map_err(backend)?
        };
        let next_port = config.port_range.start;
        let lb = Lb::with_settings(config.lb.clone());
        let inner = Arc::new(Inner {
            config: HostConfig {
                state_dir,
                ..config
            },
            cwd,
            lb,
            state: Mutex::new(State {
                next_port,
                ..State::default()
            }),
            ops: tokio::sync::Mutex::new(()),
            traffic: Arc::new(Notify::new()),
            shutdown: CancellationToken::new(),
            closed: AtomicBool::new(false),
            reconciler: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
        });
        let provider = HostProvider { inner };
        provider.restore(loaded).await;
        {
            let _ops = provider.inner.ops.lock().await;
            if let Err(e) = provider.apply_current().await {
                tracing::error!("the load balancer configuration could not be restored: {e}");
            }
        }
        let task = tokio::spawn(reconcile(
            Arc::downgrade(&provider.inner),
            provider.inner.traffic.clone(),
            provider.inner.shutdown.clone(),
        ));
        *provider.inner.reconciler.lock() = Some(task);
        Ok(provider)
    }

    /// The load balancer the provider feeds (for its status, bound addresses and metrics).
    pub fn lb(&self) -> &Lb {
        &self.inner.lb
    }

    /// The configuration in force (with `state_dir` made absolute).
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Stops supervising and shuts the load balancer down (its ports are released). Instances
    /// are **not** stopped: they keep running and the next [`HostProvider::start`] on the same
    /// state directory re-adopts them. Later operations fail with `ProviderError::Backend`.
    pub async fn shutdown(&self) {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.shutdown.cancel();
        let reconciler = self.inner.reconciler.lock().take();
        if let Some(task) = reconciler {
            let _ = task.await;
        }
        // Let an operation that is in its bookkeeping finish it.
        let ops = self.inner.ops.lock().await;
        let tasks: Vec<JoinHandle<()>> = {
            let mut state = self.inner.state.lock();
            state
                .groups
                .values_mut()
                .flat_map(|g| g.instances.values_mut())
                .filter_map(|i| i.supervisor.request(Control::Detach))
                .collect()
        };
        drop(ops);
        futures::future::join_all(tasks.into_iter().map(supervisor::join)).await;
        // Dropping the groups ends their log followers; the records stay on disk.
        let groups = std::mem::take(&mut self.inner.state.lock().groups);
        drop(groups);
        self.inner.lb.shutdown().await;
        // Another provider may now take over the state directory.
        drop(self.inner.lock.lock().take());
    }

    /// New log lines of every instance of a server group, as they are read (see the crate's
    /// log docs). Ends when the server group is destroyed or the provider shuts down; an unknown
    /// server group gives a stream that ends at once. A follower that falls more than a few
    /// thousand lines behind skips the lines it missed.
    pub fn follow_logs(
        &self,
        account: &str,
        server_group: &str,
    ) -> impl Stream<Item = LogLine> + Send + 'static {
        let receiver = self
            .inner
            .state
            .lock()
            .groups
            .get(&key(account, server_group))
            .map(|g| g.followers.subscribe());
        let receiver = receiver.unwrap_or_else(|| broadcast::channel(1).1);
        tokio_stream::StreamExt::filter_map(
            tokio_stream::wrappers::BroadcastStream::new(receiver),
            Result::ok,
        )
    }

    fn check_open(&self) -> ProviderResult<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(ProviderError::Backend(
                "the host provider is shut down".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn check_account(&self, account: &str) -> ProviderResult<()> {
        if self.inner.config.accounts.iter().any(|a| a == account) {
            Ok(())
        } else {
            Err(ProviderError::NotFound(format!(
                "no account \"{account}\" in the host provider (accounts: {})",
                self.inner.config.accounts.join(", ")
            )))
        }
    }

    fn group_dir(&self, account: &str, name: &str) -> PathBuf {
        self.inner.config.state_dir.join(account).join(name)
    }

    /// Re-creates the in-memory state from what [`load`] found; see the crate docs. Problems
    /// with one server group are logged and do not stop the others.
    async fn restore(&self, loaded: Loaded) {
        {
            let mut state = self.inner.state.lock();
            state.meta = loaded.meta;
            for lb in loaded.load_balancers {
                if self.check_account(&lb.account).is_ok() {
                    state.load_balancers.insert(key(&lb.account, &lb.name), lb);
                }
            }
            for fw in loaded.firewalls {
                if self.check_account(&fw.account).is_ok() {
                    state.firewalls.insert(key(&fw.account, &fw.name), fw);
                }
            }
        }
        let grace = self.inner.config.supervision.stop_grace;
        let mut missing: Vec<(String, String)> = Vec::new();
        for g in loaded.groups {
            let record = g.record;
            // Sequences never go back, even if provider.json was lost.
            {
                let mut state = self.inner.state.lock();
                let seq_key = format!("{}/{}", record.account, record.moniker.cluster_name());
                let seq = record.moniker.sequence.unwrap_or(0);
                let entry = state.meta.sequences.entry(seq_key).or_insert(seq);
                *entry = (*entry).max(seq);
                state.meta.next_order = state.meta.next_order.max(record.order + 1);
            }
            if record.destroying {
                tracing::info!(server_group = %record.name, "finishing an interrupted destroy");
                for (_, r, _) in &g.instances {
                    if let Some(InstanceRecord {
                        pid: Some(pid),
                        start_time: Some(st),
                        ..
                    }) = r
                    {
                        process::terminate_recorded(*pid, *st, grace).await;
                    }
                }
                let dir = g.dir.clone();
                if let Err(e) = persist::run_blocking(move || persist::remove_dir(&dir)).await {
                    tracing::error!(server_group = %record.name, "cannot remove a destroyed server group: {e}");
                }
                continue;
            }
            let desired = record.capacity.desired as usize;
            let mut kept = Vec::new();
            for (n, (index, r, idir)) in g.instances.into_iter().enumerate() {
                match r {
                    Some(r) if n < desired => kept.push((index, r)),
                    other => {
                        // Beyond the capacity (an interrupted resize down) or never recorded.
                        if let Some(InstanceRecord {
                            pid: Some(pid),
                            start_time: Some(st),
                            ..
                        }) = other
                        {
                            process::terminate_recorded(pid, st, grace).await;
                        }
                        if let Err(e) =
                            persist::run_blocking(move || persist::remove_dir(&idir)).await
                        {
                            tracing::error!(server_group = %record.name, "cannot remove an instance directory: {e}");
                        }
                    }
                }
            }
            let gkey = key(&record.account, &record.name);
            for _ in kept.len()..desired {
                missing.push(gkey.clone());
            }
            let mut group = self.new_group(record, g.dir);
            for (index, r) in kept {
                let start = match (r.pid, r.start_time) {
                    (Some(pid), Some(start_time)) if process::is_alive(pid, start_time) => {
                        tracing::info!(server_group = %group.record.name, index, pid, "re-adopting a running instance");
                        Start::Adopt { pid, start_time }
                    }
                    (Some(pid), _) => Start::Restart {
                        reason: format!(
                            "process {pid} was not running when Ferry started (exit status unknown)"
                        ),
                    },
                    (None, _) => Start::Fresh,
                };
                self.add_instance(&mut group, index, r.port, r, start);
            }
            self.inner.state.lock().groups.insert(gkey, group);
        }
        // Missing instances get new ports once every recorded port is known.
        for gkey in missing {
            if let Err(e) = self.grow(&gkey, 1).await {
                tracing::error!(server_group = %gkey.1, "cannot add a missing instance: {e}");
            }
        }
    }

    fn new_group(&self, record: GroupRecord, dir: PathBuf) -> Group {
        Group {
            record,
            dir,
            instances: BTreeMap::new(),
            followers: broadcast::channel(FOLLOW_BUFFER).0,
            destroyed: watch::channel(false).0,
        }
    }

    /// Starts supervising instance `index` of `group` (its directory must exist).
    fn add_instance(
        &self,
        group: &mut Group,
        index: u32,
        port: u16,
        record: InstanceRecord,
        start: Start,
    ) {
        let id = format!("{}-{index}", group.record.name);
        let dir = group.dir.join(index.to_string());
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".to_string(),
            process::default_path().to_string_lossy().into_owned(),
        );
        env.insert("HOME".to_string(), dir.to_string_lossy().into_owned());
        env.extend(group.record.artifact.env.clone());
        env.insert("PORT".into(), port.to_string());
        env.insert("FERRY_SERVER_GROUP".into(), group.record.name.clone());
        env.insert("FERRY_INSTANCE".into(), id.clone());
        if !matches!(
            group.record.artifact.source,
            ferry_provider::ArtifactSource::Command { .. }
        ) {
            env.insert(
                "FERRY_ARTIFACT_DIR".into(),
                group.dir.join(ARTIFACT_DIR).to_string_lossy().into_owned(),
            );
        }
        let launch = LaunchSpec {
            program: group.record.launch.program.clone(),
            program_display: group.record.launch.program_display.clone(),
            args: group.record.launch.args.clone(),
            env,
            dir,
        };
        let spec = InstanceSpec {
            id: id.clone(),
            port,
            launch,
            health: group.record.health_check.clone(),
        };
        let ctx = SupervisorCtx {
            settings: self.inner.config.supervision.clone(),
            traffic: self.inner.traffic.clone(),
            followers: group.followers.clone(),
            retention: self.inner.config.log_retention_bytes,
        };
        let record = InstanceRecord {
            index,
            port,
            ..record
        };
        let supervisor = Supervisor::start(spec, record, start, ctx);
        group.instances.insert(
            index,
            InstanceEntry {
                id,
                port,
                supervisor,
                retiring: false,
            },
        );
    }

    /// A free port from the range, not used by any instance or listener nor in `reserved`.
    fn allocate_port(&self, state: &mut State, reserved: &HashSet<u16>) -> ProviderResult<u16> {
        let range = self.inner.config.port_range.clone();
        let used: HashSet<u16> = state
            .groups
            .values()
            .flat_map(|g| g.instances.values().map(|i| i.port))
            .chain(state.load_balancers.values().flat_map(|l| {
                l.listeners
                    .iter()
                    .chain(&l.preview_listeners)
                    .map(|l| l.port)
            }))
            .collect();
        let span = u32::from(range.end - range.start);
        let from = u32::from(state.next_port.clamp(range.start, range.end - 1) - range.start);
        for i in 0..span {
            let offset = (from + i) % span;
            let Ok(port) = u16::try_from(u32::from(range.start) + offset) else {
                continue;
            };
            if used.contains(&port) || reserved.contains(&port) || !port_is_free(port) {
                continue;
            }
            state.next_port = if port + 1 >= range.end {
                range.start
            } else {
                port + 1
            };
            return Ok(port);
        }
        Err(ProviderError::Backend(format!(
            "no free port left in {}..{}",
            range.start, range.end
        )))
    }

    /// Adds `count` new instances (lowest free indexes) to a group. Takes the `ops` lock.
    async fn grow(&self, gkey: &(String, String), count: u32) -> ProviderResult<()> {
        let _ops = self.inner.ops.lock().await;
        self.grow_locked(gkey, count).await
    }

    /// [`HostProvider::grow`] for a caller holding `ops`.
    async fn grow_locked(&self, gkey: &(String, String), count: u32) -> ProviderResult<()> {
        let planned = {
            let mut state = self.inner.state.lock();
            let (dir, existing): (PathBuf, HashSet<u32>) = match state.groups.get(gkey) {
                Some(g) => (g.dir.clone(), g.instances.keys().copied().collect()),
                None => return Err(not_found(&gkey.0, &gkey.1)),
            };
            let mut planned = Vec::new();
            let mut reserved = HashSet::new();
            let mut index = 0u32;
            while planned.len() < count as usize {
                if !existing.contains(&index) {
                    let port = self.allocate_port(&mut state, &reserved)?;
                    reserved.insert(port);
                    planned.push((index, port, dir.join(index.to_string())));
                }
                index += 1;
            }
            planned
        };
        let dirs: Vec<PathBuf> = planned.iter().map(|(_, _, d)| d.clone()).collect();
        persist::run_blocking(move || dirs.iter().try_for_each(|d| persist::create_dir(d)))
            .await
            .map_err(backend)?;
        let mut state = self.inner.state.lock();
        let Some(mut group) = state.groups.remove(gkey) else {
            return Err(not_found(&gkey.0, &gkey.1));
        };
        for (index, port, _) in planned {
            self.add_instance(
                &mut group,
                index,
                port,
                InstanceRecord::default(),
                Start::Fresh,
            );
        }
        state.groups.insert(gkey.clone(), group);
        Ok(())
    }

    /// Views of the server groups for the load balancer configuration.
    fn group_views(state: &State) -> Vec<GroupView> {
        state
            .groups
            .values()
            .filter(|g| !g.record.destroying)
            .map(|g| GroupView {
                account: g.record.account.clone(),
                name: g.record.name.clone(),
                cluster: g.record.moniker.cluster_name(),
                sequence: g.record.moniker.sequence.unwrap_or(0),
                load_balancers: g.record.load_balancers.clone(),
                enabled: g.record.enabled,
                weight: g.record.weight,
                backends: g
                    .instances
                    .values()
                    .filter(|i| !i.retiring && i.supervisor.shared.status.lock().up)
                    .map(|i| (i.id.clone(), i.port))
                    .collect(),
            })
            .collect()
    }

    /// The load balancer configuration for the current state, with `change` applied to copies
    /// of the load balancers and firewalls.
    fn config_with(
        &self,
        change: impl FnOnce(&mut ByName<LoadBalancerSpec>, &mut ByName<FirewallSpec>),
    ) -> LbConfig {
        let (mut lbs, mut fws, views) = {
            let state = self.inner.state.lock();
            (
                state.load_balancers.clone(),
                state.firewalls.clone(),
                Self::group_views(&state),
            )
        };
        change(&mut lbs, &mut fws);
        traffic::build(&lbs, &fws, &views, self.inner.config.listen_address)
    }

    /// Applies the configuration of the current state. Call with `ops` held.
    async fn apply_current(&self) -> Result<(), LbError> {
        let config = self.config_with(|_, _| {});
        self.inner.lb.apply(config).await
    }

    /// The pools a server group is in.
    fn pools_of(&self, record: &GroupRecord) -> Vec<String> {
        let state = self.inner.state.lock();
        traffic::pools_of(
            &state.load_balancers,
            &record.account,
            &record.moniker.cluster_name(),
            &record.load_balancers,
        )
    }

    async fn write_group(&self, record: &GroupRecord) -> ProviderResult<()> {
        let path = self
            .group_dir(&record.account, &record.name)
            .join(GROUP_FILE);
        let record = record.clone();
        persist::run_blocking(move || persist::write_json(&path, &record))
            .await
            .map_err(backend)
    }

    async fn write_specs(&self) -> ProviderResult<()> {
        let (lbs, fws): (Vec<LoadBalancerSpec>, Vec<FirewallSpec>) = {
            let state = self.inner.state.lock();
            (
                state.load_balancers.values().cloned().collect(),
                state.firewalls.values().cloned().collect(),
            )
        };
        let dir = self.inner.config.state_dir.clone();
        persist::run_blocking(move || {
            persist::write_json(&dir.join(LOAD_BALANCERS_FILE), &lbs)?;
            persist::write_json(&dir.join(FIREWALLS_FILE), &fws)
        })
        .await
        .map_err(backend)
    }

    /// Changes a server group's record (enabled, weight), applies the load balancer
    /// configuration and records it. Returns the record.
    async fn change_group(
        &self,
        account: &str,
        name: &str,
        change: impl FnOnce(&mut GroupRecord),
    ) -> ProviderResult<GroupRecord> {
        self.check_open()?;
        self.check_account(account)?;
        let _ops = self.inner.ops.lock().await;
        let (before, after) = {
            let mut state = self.inner.state.lock();
            let group = state
                .groups
                .get_mut(&key(account, name))
                .ok_or_else(|| not_found(account, name))?;
            let before = group.record.clone();
            change(&mut group.record);
            (before, group.record.clone())
        };
        if before == after {
            return Ok(after);
        }
        if let Err(e) = self.apply_current().await {
            if let Some(g) = self.inner.state.lock().groups.get_mut(&key(account, name)) {
                g.record = before;
            }
            return Err(lb_refused(&format!("server group \"{name}\""), e));
        }
        self.write_group(&after).await?;
        Ok(after)
    }

    /// Waits for the group's in-flight requests in every pool it is in.
    async fn drain(&self, pools: &[String], group: &str, timeout: std::time::Duration) {
        for pool in pools {
            if let Err(e) = self.inner.lb.drain(pool, group, timeout).await {
                tracing::warn!(pool, group, "draining did not finish: {e}");
            }
        }
    }

    fn snapshot(group: &Group) -> ServerGroup {
        let mut sg = group.record.to_server_group();
        sg.instances = group
            .instances
            .values()
            .map(|i| {
                let s = i.supervisor.shared.status.lock().clone();
                Instance {
                    id: i.id.clone(),
                    server_group: group.record.name.clone(),
                    address: format!("127.0.0.1:{}", i.port),
                    state: if i.retiring {
                        InstanceState::Stopped
                    } else {
                        s.state
                    },
                    restarts: s.restarts,
                    started_at: s.started_at,
                    last_exit: s.last_exit,
                }
            })
            .collect();
        sg
    }

    /// Checks a load balancer spec (firewalls are checked against `state`).
    fn check_load_balancer(&self, spec: &LoadBalancerSpec, state: &State) -> Vec<String> {
        let mut problems = Vec::new();
        if !lb_name_ok(&spec.name) {
            problems.push(format!(
                "name: \"{}\" must be lower-case letters, digits, '-', '_' or '.'",
                spec.name
            ));
        }
        if spec.application.is_empty() {
            problems.push("application: must not be empty".into());
        }
        if spec.listeners.is_empty() {
            problems.push("listeners: a load balancer needs at least one listener".into());
        }
        let mut seen = HashSet::new();
        let listeners = spec.listeners.iter().map(|l| ("listeners", l));
        let previews = spec
            .preview_listeners
            .iter()
            .map(|l| ("previewListeners", l));
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for (field, l) in listeners.chain(previews) {
            let slot = index.entry(field).or_insert(0);
            let i = *slot;
            *slot += 1;
            if l.port == 0 {
                problems.push(format!("{field}[{i}].port: must not be 0"));
            }
            match traffic::listener_ip(l.address.as_deref(), self.inner.config.listen_address) {
                Ok(ip) => {
                    if !seen.insert((ip, l.port)) {
                        problems.push(format!("{field}[{i}]: {ip}:{} is listed twice", l.port));
                    }
                }
                Err(e) => problems.push(format!("{field}[{i}].address: {e}")),
            }
        }
        for (i, r) in spec.routes.iter().enumerate() {
            if !r.path_prefix.starts_with('/') {
                problems.push(format!(
                    "routes[{i}].pathPrefix: \"{}\" must start with '/'",
                    r.path_prefix
                ));
            }
            if r.cluster.is_empty() {
                problems.push(format!("routes[{i}].cluster: must not be empty"));
            }
        }
        if spec.default_cluster.as_deref() == Some("") {
            problems.push("defaultCluster: must not be empty".into());
        }
        for (i, fw) in spec.firewalls.iter().enumerate() {
            if !state.firewalls.contains_key(&key(&spec.account, fw)) {
                problems.push(format!(
                    "firewalls[{i}]: no firewall \"{fw}\" in account \"{}\" (upsert it first)",
                    spec.account
                ));
            }
        }
        problems
    }
}

/// Re-applies the load balancer configuration whenever an instance's readiness changes.
async fn reconcile(inner: Weak<Inner>, traffic: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = traffic.notified() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let provider = HostProvider { inner };
        let _ops = tokio::select! {
            () = stop.cancelled() => return,
            ops = provider.inner.ops.lock() => ops,
        };
        if let Err(e) = provider.apply_current().await {
            tracing::warn!("the load balancer configuration could not be applied: {e}");
        }
    }
}

#[async_trait]
impl Provider for HostProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn accounts(&self) -> Vec<String> {
        self.inner.config.accounts.clone()
    }

    async fn create_server_group(&self, spec: ServerGroupSpec) -> ProviderResult<ServerGroup> {
        self.check_open()?;
        self.check_account(&spec.account)?;
        let mut problems = capacity_problems(&spec.capacity);
        problems.extend(health::validate(&spec.health_check));
        if let Err(e) = artifact::check(&spec.artifact) {
            problems.push(e.to_string());
        }
        let m = &spec.moniker;
        if let Err(e) = Moniker::cluster(&m.app, m.stack.as_deref(), m.detail.as_deref()) {
            problems.push(format!("moniker: {e}"));
        }
        {
            let state = self.inner.state.lock();
            for (i, lb) in spec.load_balancers.iter().enumerate() {
                if !state.load_balancers.contains_key(&key(&spec.account, lb)) {
                    problems.push(format!(
                        "loadBalancers[{i}]: no load balancer \"{lb}\" in account \"{}\"",
                        spec.account
                    ));
                }
            }
        }
        invalid_if_any(problems)?;

        // The next sequence of the cluster, recorded before anything else happens.
        let cluster = spec.moniker.cluster_name();
        let (sequence, order) = {
            let _ops = self.inner.ops.lock().await;
            let (meta, sequence, order) = {
                let mut state = self.inner.state.lock();
                let seq_key = format!("{}/{cluster}", spec.account);
                let sequence = state.meta.sequences.get(&seq_key).map_or(0, |s| s + 1);
                state.meta.sequences.insert(seq_key, sequence);
                let order = state.meta.next_order;
                state.meta.next_order += 1;
                (state.meta.clone(), sequence, order)
            };
            let path = self.inner.config.state_dir.join(PROVIDER_FILE);
            persist::run_blocking(move || persist::write_json(&path, &meta))
                .await
                .map_err(backend)?;
            (sequence, order)
        };
        let moniker = spec.moniker.with_sequence(sequence);
        let name = moniker.server_group_name(sequence);
        let dir = self.group_dir(&spec.account, &name);

        // The artifact, prepared outside the lock (copies and unpacking take time).
        let prepared = {
            let artifact = spec.artifact.clone();
            let dir = dir.clone();
            let cwd = self.inner.cwd.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir).map_err(|source| ArtifactError::Io {
                    dir: dir.clone(),
                    source,
                })?;
                let prepared = artifact::prepare(&artifact, &dir, &cwd);
                if prepared.is_err() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                prepared
            })
            .await
            .map_err(|e| ProviderError::Backend(format!("preparing the artifact failed: {e}")))?
            .map_err(artifact_error)?
        };
        let record = GroupRecord {
            name: name.clone(),
            account: spec.account.clone(),
            moniker,
            capacity: spec.capacity,
            artifact: spec.artifact,
            health_check: spec.health_check,
            load_balancers: spec.load_balancers,
            enabled: spec.enabled,
            weight: spec.weight,
            created_at: ferry_core::now_millis(),
            deployed_by: spec.deployed_by,
            execution_id: spec.execution_id,
            order,
            launch: prepared,
            destroying: false,
        };
        let _ops = self.inner.ops.lock().await;
        self.check_open()?;
        if let Err(e) = self.write_group(&record).await {
            let d = dir.clone();
            let _ = persist::run_blocking(move || persist::remove_dir(&d)).await;
            return Err(e);
        }
        let gkey = key(&record.account, &name);
        let desired = record.capacity.desired;
        let group = self.new_group(record, dir.clone());
        self.inner.state.lock().groups.insert(gkey.clone(), group);
        if let Err(e) = self.grow_locked(&gkey, desired).await {
            // No instance was started: forget the server group (its sequence stays used).
            self.inner.state.lock().groups.remove(&gkey);
            let _ = persist::run_blocking(move || persist::remove_dir(&dir)).await;
            return Err(e);
        }
        tracing::info!(server_group = %name, instances = desired, "created server group");
        let state = self.inner.state.lock();
        state
            .groups
            .get(&gkey)
            .map(Self::snapshot)
            .ok_or_else(|| not_found(&gkey.0, &gkey.1))
    }

    async fn server_groups(&self, application: &str) -> ProviderResult<Vec<ServerGroup>> {
        let state = self.inner.state.lock();
        let mut groups: Vec<&Group> = state
            .groups
            .values()
            .filter(|g| g.record.moniker.app == application)
            .collect();
        groups.sort_by_key(|g| (g.record.created_at, g.record.order));
        Ok(groups.into_iter().map(Self::snapshot).collect())
    }

    async fn server_group(&self, account: &str, name: &str) -> ProviderResult<Option<ServerGroup>> {
        self.check_account(account)?;
        let state = self.inner.state.lock();
        Ok(state.groups.get(&key(account, name)).map(Self::snapshot))
    }

    async fn resize(&self, account: &str, name: &str, capacity: Capacity) -> ProviderResult<()> {
        self.check_open()?;
        self.check_account(account)?;
        invalid_if_any(capacity_problems(&capacity))?;
        let gkey = key(account, name);
        let ops = self.inner.ops.lock().await;
        let (record, grow, retiring) = {
            let mut state = self.inner.state.lock();
            let group = state
                .groups
                .get_mut(&gkey)
                .ok_or_else(|| not_found(account, name))?;
            if group.record.destroying {
                return Err(ProviderError::Conflict(format!(
                    "server group \"{name}\" is being destroyed"
                )));
            }
            group.record.capacity = capacity;
            let active: Vec<u32> = group
                .instances
                .iter()
                .filter(|(_, i)| !i.retiring)
                .map(|(n, _)| *n)
                .collect();
            let desired = capacity.desired as usize;
            let grow = desired.saturating_sub(active.len()) as u32;
            let retiring: Vec<u32> = active.iter().skip(desired).copied().collect();
            let mut retiring_ids = Vec::with_capacity(retiring.len());
            for n in &retiring {
                if let Some(i) = group.instances.get_mut(n) {
                    i.retiring = true;
                    retiring_ids.push(i.id.clone());
                }
            }
            (group.record.clone(), grow, (retiring, retiring_ids))
        };
        let (retiring, retiring_ids) = retiring;
        self.write_group(&record).await?;
        if grow > 0 {
            self.grow_locked(&gkey, grow).await?;
        }
        if retiring.is_empty() {
            return Ok(());
        }
        // Watched before the configuration without them, so no request they take is missed.
        let watch = self.inner.lb.watch_backends(name, &retiring_ids);
        if let Err(e) = self.apply_current().await {
            tracing::warn!("the load balancer configuration could not be applied: {e}");
        }
        drop(ops);
        tracing::info!(server_group = %name, stopping = ?retiring, "resizing down");
        if let Err(e) = watch
            .drain(self.inner.config.supervision.resize_drain_timeout)
            .await
        {
            tracing::warn!(server_group = %name, "draining the instances being removed did not finish: {e}");
        }
        let (tasks, dirs): (Vec<JoinHandle<()>>, Vec<PathBuf>) = {
            let mut state = self.inner.state.lock();
            let Some(group) = state.groups.get_mut(&gkey) else {
                return Ok(()); // destroyed meanwhile
            };
            let dir = group.dir.clone();
            let tasks = group
                .instances
                .iter_mut()
                .filter(|(n, i)| i.retiring && retiring.contains(n))
                .filter_map(|(_, i)| i.supervisor.request(Control::Stop))
                .collect();
            (
                tasks,
                retiring.iter().map(|n| dir.join(n.to_string())).collect(),
            )
        };
        futures::future::join_all(tasks.into_iter().map(supervisor::join)).await;
        {
            let mut state = self.inner.state.lock();
            if let Some(group) = state.groups.get_mut(&gkey) {
                group
                    .instances
                    .retain(|n, i| !(i.retiring && retiring.contains(n)));
            }
        }
        persist::run_blocking(move || dirs.iter().try_for_each(|d| persist::remove_dir(d)))
            .await
            .map_err(backend)
    }

    async fn enable(&self, account: &str, name: &str) -> ProviderResult<()> {
        self.change_group(account, name, |r| r.enabled = true)
            .await
            .map(|_| ())
    }

    async fn disable(&self, account: &str, name: &str) -> ProviderResult<()> {
        let record = self
            .change_group(account, name, |r| r.enabled = false)
            .await?;
        let pools = self.pools_of(&record);
        self.drain(&pools, name, self.inner.config.supervision.drain_timeout)
            .await;
        Ok(())
    }

    async fn set_weight(&self, account: &str, name: &str, weight: u32) -> ProviderResult<()> {
        self.change_group(account, name, |r| r.weight = weight)
            .await
            .map(|_| ())
    }

    async fn destroy(&self, account: &str, name: &str) -> ProviderResult<()> {
        self.check_open()?;
        self.check_account(account)?;
        let gkey = key(account, name);
        let ops = self.inner.ops.lock().await;
        let marked = {
            let mut state = self.inner.state.lock();
            match state.groups.get_mut(&gkey) {
                None => return Ok(()),
                Some(g) if g.record.destroying => Err(g.destroyed.subscribe()),
                Some(g) => {
                    g.record.destroying = true;
                    Ok(g.record.clone())
                }
            }
        };
        let record = match marked {
            Ok(record) => record,
            Err(mut done) => {
                // Another destroy is under way: wait for it.
                drop(ops);
                let _ = done.wait_for(|d| *d).await;
                return Ok(());
            }
        };
        if let Err(e) = self.write_group(&record).await {
            if let Some(g) = self.inner.state.lock().groups.get_mut(&gkey) {
                g.record.destroying = false;
            }
            return Err(e);
        }
        if let Err(e) = self.apply_current().await {
            tracing::warn!("the load balancer configuration could not be applied: {e}");
        }
        let pools = self.pools_of(&record);
        drop(ops);
        tracing::info!(server_group = %name, "destroying server group");
        self.drain(&pools, name, self.inner.config.supervision.drain_timeout)
            .await;
        let (tasks, dir) = {
            let mut state = self.inner.state.lock();
            let Some(group) = state.groups.get_mut(&gkey) else {
                return Ok(());
            };
            let tasks: Vec<JoinHandle<()>> = group
                .instances
                .values_mut()
                .filter_map(|i| i.supervisor.request(Control::Stop))
                .collect();
            (tasks, group.dir.clone())
        };
        futures::future::join_all(tasks.into_iter().map(supervisor::join)).await;
        // Nothing runs any more. If the directory cannot be removed, its record still says
        // `destroying` and the next start removes it.
        let removed_dir = persist::run_blocking(move || persist::remove_dir(&dir)).await;
        let removed = self.inner.state.lock().groups.remove(&gkey);
        if let Some(g) = removed {
            g.destroyed.send_replace(true);
        }
        tracing::info!(server_group = %name, "destroyed server group");
        removed_dir.map_err(backend)
    }

    async fn upsert_load_balancer(&self, spec: LoadBalancerSpec) -> ProviderResult<()> {
        self.check_open()?;
        self.check_account(&spec.account)?;
        let _ops = self.inner.ops.lock().await;
        let problems = self.check_load_balancer(&spec, &self.inner.state.lock());
        invalid_if_any(problems)?;
        let lb_key = key(&spec.account, &spec.name);
        let config = self.config_with(|lbs, _| {
            lbs.insert(lb_key.clone(), spec.clone());
        });
        let what = format!("load balancer \"{}\"", spec.name);
        self.inner
            .lb
            .apply(config)
            .await
            .map_err(|e| lb_refused(&what, e))?;
        self.inner.state.lock().load_balancers.insert(lb_key, spec);
        self.write_specs().await
    }

    async fn load_balancers(&self, application: &str) -> ProviderResult<Vec<LoadBalancerSpec>> {
        Ok(self
            .inner
            .state
            .lock()
            .load_balancers
            .values()
            .filter(|l| l.application == application)
            .cloned()
            .collect())
    }

    async fn delete_load_balancer(&self, account: &str, name: &str) -> ProviderResult<()> {
        self.check_open()?;
        self.check_account(account)?;
        let _ops = self.inner.ops.lock().await;
        let lb_key = key(account, name);
        if !self.inner.state.lock().load_balancers.contains_key(&lb_key) {
            return Ok(());
        }
        let config = self.config_with(|lbs, _| {
            lbs.remove(&lb_key);
        });
        let what = format!("load balancer \"{name}\"");
        self.inner
            .lb
            .apply(config)
            .await
            .map_err(|e| lb_refused(&what, e))?;
        self.inner.state.lock().load_balancers.remove(&lb_key);
        self.write_specs().await
    }

    async fn upsert_firewall(&self, spec: FirewallSpec) -> ProviderResult<()> {
        self.check_open()?;
        self.check_account(&spec.account)?;
        if !lb_name_ok(&spec.name) {
            return Err(ProviderError::Invalid(format!(
                "name: \"{}\" must be lower-case letters, digits, '-', '_' or '.'",
                spec.name
            )));
        }
        let _ops = self.inner.ops.lock().await;
        let fw_key = key(&spec.account, &spec.name);
        let config = self.config_with(|_, fws| {
            fws.insert(fw_key.clone(), spec.clone());
        });
        let what = format!("firewall \"{}\"", spec.name);
        self.inner
            .lb
            .apply(config)
            .await
            .map_err(|e| lb_refused(&what, e))?;
        self.inner.state.lock().firewalls.insert(fw_key, spec);
        self.write_specs().await
    }

    async fn firewalls(&self, application: &str) -> ProviderResult<Vec<FirewallSpec>> {
        Ok(self
            .inner
            .state
            .lock()
            .firewalls
            .values()
            .filter(|f| f.application == application)
            .cloned()
            .collect())
    }

    async fn logs(
        &self,
        account: &str,
        server_group: &str,
        instance: Option<&str>,
        tail: usize,
    ) -> ProviderResult<Vec<LogLine>> {
        self.check_account(account)?;
        let rings = {
            let state = self.inner.state.lock();
            let group = state
                .groups
                .get(&key(account, server_group))
                .ok_or_else(|| not_found(account, server_group))?;
            if let Some(id) = instance
                && !group.instances.values().any(|i| i.id == id)
            {
                return Err(ProviderError::NotFound(format!(
                    "no instance \"{id}\" in server group \"{server_group}\""
                )));
            }
            group
                .instances
                .values()
                .filter(|i| instance.is_none_or(|id| id == i.id))
                .map(|i| i.supervisor.shared.ring.clone())
                .collect::<Vec<_>>()
        };
        let mut lines: Vec<LogLine> = rings.iter().flat_map(|r| r.lock().tail(tail)).collect();
        lines.sort_by_key(|l| l.time);
        let skip = lines.len().saturating_sub(tail);
        Ok(lines.split_off(skip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_are_checked() {
        assert!(capacity_problems(&Capacity::fixed(3)).is_empty());
        let bad = [
            Capacity {
                min: 2,
                max: 1,
                desired: 1,
            },
            Capacity {
                min: 0,
                max: 1,
                desired: 2,
            },
            Capacity {
                min: 2,
                max: 3,
                desired: 1,
            },
            Capacity::fixed(MAX_INSTANCES + 1),
        ];
        for c in bad {
            assert_eq!(capacity_problems(&c).len(), 1, "{c:?}");
        }
    }

    #[test]
    fn names() {
        assert!(account_name_ok("local"));
        assert!(account_name_ok("prod-eu_1"));
        assert!(!account_name_ok("../x"));
        assert!(!account_name_ok(""));
        assert!(lb_name_ok("shop-lb.v2"));
        assert!(!lb_name_ok("shop/lb"));
    }

    #[tokio::test]
    async fn bad_configurations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = HostConfig::new(dir.path());
        config.accounts = vec!["Bad/Name".into()];
        config.port_range = 10..10;
        let err = HostProvider::start(config).await.unwrap_err();
        let ProviderError::Invalid(text) = err else {
            panic!("{err:?}")
        };
        assert!(
            text.contains("accounts[0]") && text.contains("port_range"),
            "{text}"
        );
    }
}
