//! [`FakeProvider`]: an in-memory [`Provider`] for tests of deploy strategies and server-group
//! stages. Nothing runs; instance health is computed from the time since each instance started
//! and a [`Behavior`] chosen per artifact version, so a test can make version `bad` never
//! healthy or crash-loop while `good` becomes healthy after a delay.
//!
//! Every mutating call is recorded, in order, as a short event (`create shop-prod-v002`,
//! `enable shop-prod-v002`, `disable shop-prod-v001`, `weight shop-prod-v002 25`,
//! `resize shop-prod-v002 2`, `destroy shop-prod-v001`), so tests can assert the order a
//! strategy used. [`FakeProvider::serving`] answers what a load balancer would route to, and
//! [`FakeProvider::traffic_gaps`] lists every call after which a cluster that had traffic had
//! none (what a load generator would see as failed requests).
//!
//! Call latency can be simulated per operation ([`Op`]): the effect is applied at once, then the
//! call waits (like a disable that drains), so a stage stays in flight for a while; a listing
//! waits before it reads.

use crate::{
    Capacity, FirewallSpec, Instance, InstanceState, LoadBalancerSpec, LogLine, Provider,
    ProviderError, ProviderResult, ServerGroup, ServerGroupSpec,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How the instances of one artifact version behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    /// Time from an instance's start until it passes its health check; `None` = never.
    pub ready_after: Option<Duration>,
    /// When set, instances exit at once with this reason and crash-loop.
    pub crash: Option<String>,
}

impl Behavior {
    /// Healthy `after` the instance starts.
    pub fn healthy_after(after: Duration) -> Behavior {
        Behavior {
            ready_after: Some(after),
            crash: None,
        }
    }

    /// Runs but never passes its health check.
    pub fn never_healthy() -> Behavior {
        Behavior {
            ready_after: None,
            crash: None,
        }
    }

    /// Exits at once with `exit` (e.g. `exited with status 1`) and keeps being restarted.
    pub fn crash_loop(exit: &str) -> Behavior {
        Behavior {
            ready_after: None,
            crash: Some(exit.to_string()),
        }
    }
}

/// A provider operation, for simulated latency and injected failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `create_server_group`.
    Create,
    /// `resize`.
    Resize,
    /// `enable`.
    Enable,
    /// `disable`.
    Disable,
    /// `set_weight`.
    SetWeight,
    /// `destroy`.
    Destroy,
    /// `server_groups` (listing an application's server groups).
    List,
}

/// Restarts after which a crashing instance counts as crash-looping.
const CRASH_LOOP_RESTARTS: u32 = 3;
/// Simulated time between restarts of a crashing instance.
const RESTART_EVERY: Duration = Duration::from_millis(50);

struct FakeInstance {
    index: u32,
    port: u16,
    started: Instant,
    started_ms: i64,
}

struct FakeGroup {
    group: ServerGroup,
    order: u64,
    instances: Vec<FakeInstance>,
}

struct State {
    groups: BTreeMap<(String, String), FakeGroup>,
    /// Highest sequence handed out per (account, cluster).
    sequences: HashMap<(String, String), u32>,
    load_balancers: BTreeMap<(String, String), LoadBalancerSpec>,
    firewalls: BTreeMap<(String, String), FirewallSpec>,
    behaviors: HashMap<String, Behavior>,
    default_behavior: Behavior,
    latency: HashMap<Op, Duration>,
    failures: HashMap<Op, ProviderError>,
    events: Vec<String>,
    gaps: Vec<String>,
    next_order: u64,
    next_port: u16,
}

/// An in-memory provider. Cheap to create; share it as `Arc<FakeProvider>` (it is also usable
/// as `Arc<dyn Provider>`).
pub struct FakeProvider {
    kind: &'static str,
    accounts: Vec<String>,
    state: Mutex<State>,
}

impl Default for FakeProvider {
    fn default() -> Self {
        FakeProvider::new()
    }
}

impl FakeProvider {
    /// Kind `fake`, one account `local`, instances healthy at once.
    pub fn new() -> FakeProvider {
        FakeProvider {
            kind: "fake",
            accounts: vec!["local".into()],
            state: Mutex::new(State {
                groups: BTreeMap::new(),
                sequences: HashMap::new(),
                load_balancers: BTreeMap::new(),
                firewalls: BTreeMap::new(),
                behaviors: HashMap::new(),
                default_behavior: Behavior::healthy_after(Duration::ZERO),
                latency: HashMap::new(),
                failures: HashMap::new(),
                events: Vec::new(),
                gaps: Vec::new(),
                next_order: 0,
                next_port: 20_000,
            }),
        }
    }

    /// Reports `kind` (e.g. `host`, to stand in for the host provider).
    pub fn with_kind(mut self, kind: &'static str) -> FakeProvider {
        self.kind = kind;
        self
    }

    /// Serves these accounts instead of `local`.
    pub fn with_accounts(mut self, accounts: &[&str]) -> FakeProvider {
        self.accounts = accounts.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Behavior of versions without their own.
    pub fn with_default_behavior(self, behavior: Behavior) -> FakeProvider {
        self.lock().default_behavior = behavior;
        self
    }

    /// Sets how instances of artifact `version` behave (from their next state query on).
    pub fn set_behavior(&self, version: &str, behavior: Behavior) {
        self.lock().behaviors.insert(version.to_string(), behavior);
    }

    /// Every call of `op` waits `latency` after applying its effect.
    pub fn set_latency(&self, op: Op, latency: Duration) {
        self.lock().latency.insert(op, latency);
    }

    /// The next call of `op` fails with `error` and changes nothing.
    pub fn fail_next(&self, op: Op, error: ProviderError) {
        self.lock().failures.insert(op, error);
    }

    /// Every mutating call so far, in order.
    pub fn events(&self) -> Vec<String> {
        self.lock().events.clone()
    }

    /// Forgets the recorded events (and traffic gaps).
    pub fn clear_events(&self) {
        let mut s = self.lock();
        s.events.clear();
        s.gaps.clear();
    }

    /// What a load balancer would route to for `cluster`: the enabled server groups that have
    /// at least one healthy instance, with their weights, oldest first.
    pub fn serving(&self, cluster: &str) -> Vec<(String, u32)> {
        let s = self.lock();
        serving_in(&s, cluster, Instant::now())
    }

    /// Calls after which a cluster that was serving (total weight of serving groups > 0) no
    /// longer was, as `"<event>: cluster <name> lost all traffic"`.
    pub fn traffic_gaps(&self) -> Vec<String> {
        self.lock().gaps.clone()
    }

    /// Names of every server group that exists, oldest first.
    pub fn server_group_names(&self) -> Vec<String> {
        let s = self.lock();
        let mut groups: Vec<&FakeGroup> = s.groups.values().collect();
        groups.sort_by_key(|g| g.order);
        groups.iter().map(|g| g.group.name.clone()).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a test thread panicked; the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_account(&self, account: &str) -> ProviderResult<()> {
        if self.accounts.iter().any(|a| a == account) {
            Ok(())
        } else {
            Err(ProviderError::NotFound(format!(
                "no account \"{account}\" in the {} provider (accounts: {})",
                self.kind,
                self.accounts.join(", ")
            )))
        }
    }

    /// Takes an injected failure for `op`, if any.
    fn injected(&self, op: Op) -> ProviderResult<()> {
        match self.lock().failures.remove(&op) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn delay(&self, op: Op) {
        let latency = self.lock().latency.get(&op).copied();
        if let Some(d) = latency {
            tokio::time::sleep(d).await;
        }
    }

    /// Applies `change` to one server group, records `event`, and tracks traffic gaps.
    fn mutate(
        &self,
        account: &str,
        name: &str,
        event: String,
        change: impl FnOnce(&mut FakeGroup, &mut State) -> ProviderResult<()>,
    ) -> ProviderResult<()> {
        let mut s = self.lock();
        let key = (account.to_string(), name.to_string());
        let Some(mut group) = s.groups.remove(&key) else {
            return Err(not_found(account, name));
        };
        let cluster = group.group.cluster();
        let now = Instant::now();
        let before = has_traffic(&s, &cluster, now, Some(&group));
        let result = change(&mut group, &mut s);
        s.groups.insert(key, group);
        if result.is_ok() {
            record(&mut s, event, &cluster, before, now);
        }
        result
    }
}

fn not_found(account: &str, name: &str) -> ProviderError {
    ProviderError::NotFound(format!(
        "no server group \"{name}\" in account \"{account}\""
    ))
}

fn check_capacity(c: &Capacity) -> ProviderResult<()> {
    if c.min > c.max {
        return Err(ProviderError::Invalid(format!(
            "capacity min {} is greater than max {}",
            c.min, c.max
        )));
    }
    if c.desired < c.min || c.desired > c.max {
        return Err(ProviderError::Invalid(format!(
            "capacity desired {} is outside min {} .. max {}",
            c.desired, c.min, c.max
        )));
    }
    Ok(())
}

fn record(s: &mut State, event: String, cluster: &str, before: bool, now: Instant) {
    let after = has_traffic(s, cluster, now, None);
    if before && !after {
        s.gaps
            .push(format!("{event}: cluster {cluster} lost all traffic"));
    }
    s.events.push(event);
}

fn behavior_of<'a>(s: &'a State, version: &str) -> &'a Behavior {
    s.behaviors.get(version).unwrap_or(&s.default_behavior)
}

/// The state of an instance that started `started` ago under `behavior`.
fn instance_state(behavior: &Behavior, age: Duration) -> (InstanceState, u32, Option<String>) {
    if let Some(exit) = &behavior.crash {
        let restarts = (age.as_millis() / RESTART_EVERY.as_millis().max(1)) as u32;
        let state = if restarts >= CRASH_LOOP_RESTARTS {
            InstanceState::CrashLooping
        } else {
            InstanceState::Restarting
        };
        return (state, restarts, Some(exit.clone()));
    }
    match behavior.ready_after {
        Some(d) if age >= d => (InstanceState::Up, 0, None),
        Some(_) => (InstanceState::Starting, 0, None),
        None if age >= Duration::from_millis(100) => (InstanceState::Unhealthy, 0, None),
        None => (InstanceState::Starting, 0, None),
    }
}

fn snapshot(s: &State, g: &FakeGroup, now: Instant) -> ServerGroup {
    let behavior = behavior_of(s, &g.group.artifact.version);
    let mut group = g.group.clone();
    group.instances = g
        .instances
        .iter()
        .map(|i| {
            let (state, restarts, last_exit) =
                instance_state(behavior, now.saturating_duration_since(i.started));
            Instance {
                id: format!("{}-{}", g.group.name, i.index),
                server_group: g.group.name.clone(),
                address: format!("127.0.0.1:{}", i.port),
                state,
                restarts,
                started_at: Some(i.started_ms),
                last_exit,
            }
        })
        .collect();
    group
}

fn serving_in(s: &State, cluster: &str, now: Instant) -> Vec<(String, u32)> {
    let mut groups: Vec<&FakeGroup> = s
        .groups
        .values()
        .filter(|g| g.group.cluster() == cluster && g.group.enabled)
        .collect();
    groups.sort_by_key(|g| g.order);
    groups
        .into_iter()
        .map(|g| snapshot(s, g, now))
        .filter(|g| g.healthy() > 0)
        .map(|g| (g.name, g.weight))
        .collect()
}

/// Whether `cluster` has traffic; `extra` is a group taken out of the map while it changes.
fn has_traffic(s: &State, cluster: &str, now: Instant, extra: Option<&FakeGroup>) -> bool {
    let mut total: u64 = serving_in(s, cluster, now)
        .iter()
        .map(|(_, w)| u64::from(*w))
        .sum();
    if let Some(g) = extra
        && g.group.cluster() == cluster
        && g.group.enabled
    {
        let snap = snapshot(s, g, now);
        if snap.healthy() > 0 {
            total += u64::from(snap.weight);
        }
    }
    total > 0
}

fn start_instances(s: &mut State, g: &mut FakeGroup, count: u32) {
    let now = Instant::now();
    let now_ms = ferry_core::now_millis();
    while (g.instances.len() as u32) < count {
        let index = g.instances.last().map(|i| i.index + 1).unwrap_or(0);
        s.next_port = s.next_port.wrapping_add(1).max(20_000);
        g.instances.push(FakeInstance {
            index,
            port: s.next_port,
            started: now,
            started_ms: now_ms,
        });
    }
    g.instances.truncate(count as usize);
}

#[async_trait]
impl Provider for FakeProvider {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn accounts(&self) -> Vec<String> {
        self.accounts.clone()
    }

    async fn create_server_group(&self, spec: ServerGroupSpec) -> ProviderResult<ServerGroup> {
        self.check_account(&spec.account)?;
        check_capacity(&spec.capacity)?;
        self.injected(Op::Create)?;
        let created = {
            let mut s = self.lock();
            for lb in &spec.load_balancers {
                if !s
                    .load_balancers
                    .contains_key(&(spec.account.clone(), lb.clone()))
                {
                    return Err(ProviderError::Invalid(format!(
                        "no load balancer \"{lb}\" in account \"{}\"",
                        spec.account
                    )));
                }
            }
            let cluster = spec.moniker.cluster_name();
            let seq_key = (spec.account.clone(), cluster.clone());
            let sequence = s.sequences.get(&seq_key).map(|n| n + 1).unwrap_or(0);
            s.sequences.insert(seq_key, sequence);
            let moniker = spec.moniker.with_sequence(sequence);
            let name = moniker.server_group_name(sequence);
            let order = s.next_order;
            s.next_order += 1;
            let mut group = FakeGroup {
                group: ServerGroup {
                    name: name.clone(),
                    account: spec.account.clone(),
                    provider: self.kind.to_string(),
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
                    instances: Vec::new(),
                },
                order,
                instances: Vec::new(),
            };
            start_instances(&mut s, &mut group, spec.capacity.desired);
            let now = Instant::now();
            let before = has_traffic(&s, &cluster, now, None);
            let snap = snapshot(&s, &group, now);
            s.groups.insert((spec.account, name.clone()), group);
            record(&mut s, format!("create {name}"), &cluster, before, now);
            snap
        };
        self.delay(Op::Create).await;
        Ok(created)
    }

    async fn server_groups(&self, application: &str) -> ProviderResult<Vec<ServerGroup>> {
        self.injected(Op::List)?;
        self.delay(Op::List).await;
        let s = self.lock();
        let now = Instant::now();
        let mut groups: Vec<&FakeGroup> = s
            .groups
            .values()
            .filter(|g| g.group.moniker.app == application)
            .collect();
        groups.sort_by_key(|g| g.order);
        Ok(groups.into_iter().map(|g| snapshot(&s, g, now)).collect())
    }

    async fn server_group(&self, account: &str, name: &str) -> ProviderResult<Option<ServerGroup>> {
        self.check_account(account)?;
        let s = self.lock();
        Ok(s.groups
            .get(&(account.to_string(), name.to_string()))
            .map(|g| snapshot(&s, g, Instant::now())))
    }

    async fn resize(&self, account: &str, name: &str, capacity: Capacity) -> ProviderResult<()> {
        self.check_account(account)?;
        check_capacity(&capacity)?;
        self.injected(Op::Resize)?;
        self.mutate(
            account,
            name,
            format!("resize {name} {}", capacity.desired),
            |g, s| {
                g.group.capacity = capacity;
                start_instances(s, g, capacity.desired);
                Ok(())
            },
        )?;
        self.delay(Op::Resize).await;
        Ok(())
    }

    async fn enable(&self, account: &str, name: &str) -> ProviderResult<()> {
        self.check_account(account)?;
        self.injected(Op::Enable)?;
        self.mutate(account, name, format!("enable {name}"), |g, _| {
            g.group.enabled = true;
            Ok(())
        })?;
        self.delay(Op::Enable).await;
        Ok(())
    }

    async fn disable(&self, account: &str, name: &str) -> ProviderResult<()> {
        self.check_account(account)?;
        self.injected(Op::Disable)?;
        self.mutate(account, name, format!("disable {name}"), |g, _| {
            g.group.enabled = false;
            Ok(())
        })?;
        self.delay(Op::Disable).await;
        Ok(())
    }

    async fn set_weight(&self, account: &str, name: &str, weight: u32) -> ProviderResult<()> {
        self.check_account(account)?;
        self.injected(Op::SetWeight)?;
        self.mutate(account, name, format!("weight {name} {weight}"), |g, _| {
            g.group.weight = weight;
            Ok(())
        })?;
        self.delay(Op::SetWeight).await;
        Ok(())
    }

    async fn destroy(&self, account: &str, name: &str) -> ProviderResult<()> {
        self.check_account(account)?;
        self.injected(Op::Destroy)?;
        {
            let mut s = self.lock();
            let key = (account.to_string(), name.to_string());
            if let Some(g) = s.groups.get(&key) {
                let cluster = g.group.cluster();
                let now = Instant::now();
                let before = has_traffic(&s, &cluster, now, None);
                s.groups.remove(&key);
                record(&mut s, format!("destroy {name}"), &cluster, before, now);
            }
        }
        self.delay(Op::Destroy).await;
        Ok(())
    }

    async fn upsert_load_balancer(&self, spec: LoadBalancerSpec) -> ProviderResult<()> {
        self.check_account(&spec.account)?;
        if spec.listeners.is_empty() {
            return Err(ProviderError::Invalid(format!(
                "load balancer \"{}\" has no listener",
                spec.name
            )));
        }
        let mut s = self.lock();
        s.events.push(format!("upsertLoadBalancer {}", spec.name));
        s.load_balancers
            .insert((spec.account.clone(), spec.name.clone()), spec);
        Ok(())
    }

    async fn load_balancers(&self, application: &str) -> ProviderResult<Vec<LoadBalancerSpec>> {
        Ok(self
            .lock()
            .load_balancers
            .values()
            .filter(|l| l.application == application)
            .cloned()
            .collect())
    }

    async fn delete_load_balancer(&self, account: &str, name: &str) -> ProviderResult<()> {
        self.check_account(account)?;
        let mut s = self.lock();
        if s.load_balancers
            .remove(&(account.to_string(), name.to_string()))
            .is_some()
        {
            s.events.push(format!("deleteLoadBalancer {name}"));
        }
        Ok(())
    }

    async fn upsert_firewall(&self, spec: FirewallSpec) -> ProviderResult<()> {
        self.check_account(&spec.account)?;
        let mut s = self.lock();
        s.events.push(format!("upsertFirewall {}", spec.name));
        s.firewalls
            .insert((spec.account.clone(), spec.name.clone()), spec);
        Ok(())
    }

    async fn firewalls(&self, application: &str) -> ProviderResult<Vec<FirewallSpec>> {
        Ok(self
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
        let s = self.lock();
        let Some(g) = s
            .groups
            .get(&(account.to_string(), server_group.to_string()))
        else {
            return Err(not_found(account, server_group));
        };
        let snap = snapshot(&s, g, Instant::now());
        if let Some(id) = instance
            && !snap.instances.iter().any(|i| i.id == id)
        {
            return Err(ProviderError::NotFound(format!(
                "no instance \"{id}\" in server group \"{server_group}\""
            )));
        }
        let mut lines = Vec::new();
        for i in snap
            .instances
            .iter()
            .filter(|i| instance.is_none_or(|id| id == i.id))
        {
            let time = i.started_at.unwrap_or(0);
            let line = |text: String| LogLine {
                instance: i.id.clone(),
                stream: "stdout".into(),
                time,
                line: text,
            };
            lines.push(line(format!(
                "starting {} {}",
                snap.artifact.name, snap.artifact.version
            )));
            match (&i.state, &i.last_exit) {
                (InstanceState::Up, _) => lines.push(line(format!("listening on {}", i.address))),
                (_, Some(exit)) => lines.push(LogLine {
                    stream: "stderr".into(),
                    ..line(exit.clone())
                }),
                _ => {}
            }
        }
        let skip = lines.len().saturating_sub(tail);
        Ok(lines.split_off(skip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Artifact, ArtifactSource, HealthCheck, Moniker};

    fn spec(stack: &str, version: &str, desired: u32) -> ServerGroupSpec {
        ServerGroupSpec {
            account: "local".into(),
            moniker: Moniker::cluster("shop", Some(stack), None).unwrap(),
            capacity: Capacity::fixed(desired),
            artifact: Artifact {
                name: "shop".into(),
                version: version.into(),
                source: ArtifactSource::Command {
                    command: vec!["shop".into()],
                },
                env: Default::default(),
            },
            health_check: HealthCheck::default(),
            load_balancers: vec![],
            enabled: true,
            weight: 100,
            deployed_by: "tester".into(),
            execution_id: None,
        }
    }

    #[tokio::test]
    async fn behaviors_and_events() {
        let p = FakeProvider::new();
        p.set_behavior("bad", Behavior::never_healthy());
        p.set_behavior("crash", Behavior::crash_loop("exited with status 3"));
        let good = p.create_server_group(spec("prod", "1", 2)).await.unwrap();
        assert_eq!(good.name, "shop-prod-v000");
        let bad = p.create_server_group(spec("prod", "bad", 1)).await.unwrap();
        let crash = p
            .create_server_group(spec("prod", "crash", 1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let get = |n: String| {
            let p = &p;
            async move { p.server_group("local", &n).await.unwrap().unwrap() }
        };
        assert!(get(good.name.clone()).await.is_up());
        let b = get(bad.name.clone()).await;
        assert!(!b.is_up());
        assert_eq!(b.instances[0].state, InstanceState::Unhealthy);
        let c = get(crash.name.clone()).await;
        assert_eq!(c.instances[0].state, InstanceState::CrashLooping);
        assert_eq!(
            c.instances[0].last_exit.as_deref(),
            Some("exited with status 3")
        );
        assert_eq!(
            p.serving("shop-prod"),
            vec![("shop-prod-v000".to_string(), 100)]
        );
        p.disable("local", &good.name).await.unwrap();
        assert_eq!(p.traffic_gaps().len(), 1);
        assert_eq!(
            p.events(),
            vec![
                "create shop-prod-v000",
                "create shop-prod-v001",
                "create shop-prod-v002",
                "disable shop-prod-v000"
            ]
        );
    }

    #[tokio::test]
    async fn conforms() {
        let p = FakeProvider::new();
        p.set_behavior("bad", Behavior::never_healthy());
        p.set_behavior("good", Behavior::healthy_after(Duration::from_millis(100)));
        let fixture = crate::conformance::Fixture::new(
            "conf",
            spec("x", "good", 1).artifact,
            spec("x", "bad", 1).artifact,
        );
        crate::conformance::run(&p, &fixture).await.unwrap();
        assert!(p.server_group_names().is_empty());
    }

    #[tokio::test]
    async fn the_kit_catches_broken_readiness() {
        let fixture = |ready_ms| {
            let mut f = crate::conformance::Fixture::new(
                "conf",
                spec("x", "good", 1).artifact,
                spec("x", "bad", 1).artifact,
            );
            f.ready_within = Duration::from_millis(ready_ms);
            f.bad_watch = Duration::from_millis(200);
            f
        };
        // The good artifact never becomes healthy.
        let p = FakeProvider::new().with_default_behavior(Behavior::never_healthy());
        let err = crate::conformance::run(&p, &fixture(300))
            .await
            .unwrap_err();
        assert!(err.contains("readiness") && err.contains("not up"), "{err}");
        assert!(
            p.server_group_names().is_empty(),
            "the kit cleans up after a failure"
        );
        // The bad artifact reports up.
        let p = FakeProvider::new();
        let err = crate::conformance::run(&p, &fixture(1000))
            .await
            .unwrap_err();
        assert!(
            err.contains("runs the bad artifact but reports up"),
            "{err}"
        );
    }
}
