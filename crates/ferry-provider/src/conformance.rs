//! The provider conformance kit: one suite every [`Provider`] passes (the fake, the host
//! provider, later the Kubernetes provider), so deploy strategies written once against the
//! trait behave the same on each.
//!
//! [`run`] checks, in order, using only the trait:
//! 1. identity: a kind, and the fixture's account among [`Provider::accounts`];
//! 2. sequence numbering: the first server group of a cluster is `v000`, the next `v001`; a
//!    second cluster counts on its own; the returned server group records what was asked
//!    (account, provider kind, moniker with sequence, capacity, artifact, deployer, execution);
//! 3. [`Provider::server_groups`] lists oldest first; [`Provider::server_group`] finds one;
//! 4. readiness is observed: the good artifact is eventually `is_up`, the bad one never is
//!    while it is watched (its instances exist nonetheless);
//! 5. resize up (eventually that many healthy) and down (eventually that many instances);
//! 6. invalid capacity (min > max, desired outside min..max) is `Invalid`, and creates nothing;
//! 7. enable, disable and set_weight are idempotent and reported back;
//! 8. unknown server groups are `None` from `server_group` and `NotFound` from the mutating
//!    calls and `logs`; an unknown account is `NotFound`;
//! 9. destroy leaves no server group and is idempotent;
//! 10. load balancers: upsert, change, list, delete; firewalls: upsert, list;
//! 11. logs return lines of the good artifact's instances (when the fixture says the provider
//!     captures logs), at most `tail` of them.
//!
//! Whatever happens, the kit then destroys every server group of the fixture's application and
//! deletes its load balancer, and checks nothing is left. The fixture's application must have
//! no server groups when the kit starts. Errors are readable strings, not panics.

use crate::{
    Artifact, Capacity, FirewallSpec, HealthCheck, Listener, LoadBalancerSpec, Moniker, PathRoute,
    Provider, ProviderError, ServerGroup, ServerGroupSpec,
};
use std::future::Future;
use std::time::Duration;

/// What the kit needs to know about the provider under test.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Account to use (`local` by default).
    pub account: String,
    /// Application the kit works in; must have no server groups at the start.
    pub application: String,
    /// An artifact whose instances become healthy under `health_check`.
    pub good: Artifact,
    /// An artifact whose instances never become healthy (they may run, exit or crash-loop).
    pub bad: Artifact,
    /// Health check for both.
    pub health_check: HealthCheck,
    /// How long the good artifact may take to become up (and logs to appear, resizes to settle).
    pub ready_within: Duration,
    /// How long the bad artifact is watched to never become up.
    pub bad_watch: Duration,
    /// Time between looks while waiting.
    pub poll: Duration,
    /// Whether the provider captures instance output (then `logs` must return lines).
    pub captures_logs: bool,
    /// A free port for the load balancer listener the kit declares.
    pub listener_port: u16,
}

impl Fixture {
    /// A fixture with defaults: account `local`, default health check, 10 s to become ready,
    /// 1 s watching the bad artifact, logs captured, listener port 18_080.
    pub fn new(application: &str, good: Artifact, bad: Artifact) -> Fixture {
        Fixture {
            account: "local".into(),
            application: application.into(),
            good,
            bad,
            health_check: HealthCheck::default(),
            ready_within: Duration::from_secs(10),
            bad_watch: Duration::from_secs(1),
            poll: Duration::from_millis(50),
            captures_logs: true,
            listener_port: 18_080,
        }
    }
}

/// Runs the whole suite against `provider` (see the module docs), then cleans up.
pub async fn run(provider: &dyn Provider, fixture: &Fixture) -> Result<(), String> {
    let checked = checks(provider, fixture).await;
    let cleaned = clean_up(provider, fixture).await;
    checked?;
    cleaned
}

struct Kit<'a> {
    p: &'a dyn Provider,
    f: &'a Fixture,
}

impl Kit<'_> {
    fn spec(
        &self,
        stack: &str,
        artifact: &Artifact,
        capacity: Capacity,
    ) -> Result<ServerGroupSpec, String> {
        Ok(ServerGroupSpec {
            account: self.f.account.clone(),
            moniker: Moniker::cluster(&self.f.application, Some(stack), None)
                .map_err(|e| format!("fixture application: {e}"))?,
            capacity,
            artifact: artifact.clone(),
            health_check: self.f.health_check.clone(),
            load_balancers: Vec::new(),
            enabled: true,
            weight: 100,
            deployed_by: "conformance".into(),
            execution_id: Some("conformance-execution".into()),
        })
    }

    async fn create(
        &self,
        stack: &str,
        artifact: &Artifact,
        capacity: Capacity,
    ) -> Result<ServerGroup, String> {
        let spec = self.spec(stack, artifact, capacity)?;
        self.p
            .create_server_group(spec)
            .await
            .map_err(|e| format!("create_server_group in stack {stack}: {e}"))
    }

    async fn get(&self, name: &str) -> Result<ServerGroup, String> {
        self.p
            .server_group(&self.f.account, name)
            .await
            .map_err(|e| format!("server_group {name}: {e}"))?
            .ok_or_else(|| format!("server group {name} is missing"))
    }

    /// Polls `name` until `pred` holds, or fails after `within` describing the last state.
    async fn wait(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&ServerGroup) -> bool,
    ) -> Result<ServerGroup, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let g = self.get(name).await?;
            if pred(&g) {
                return Ok(g);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{name}: not {what} within {within:?}; instances: {:?}",
                    g.instances
                        .iter()
                        .map(|i| (i.id.clone(), i.state, i.last_exit.clone()))
                        .collect::<Vec<_>>()
                ));
            }
            tokio::time::sleep(self.f.poll).await;
        }
    }
}

fn expect_err<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, ProviderError>,
    want: fn(&ProviderError) -> bool,
    kind: &str,
) -> Result<(), String> {
    match r {
        Err(e) if want(&e) => Ok(()),
        other => Err(format!("{what}: expected {kind}, got {other:?}")),
    }
}

fn is_not_found(e: &ProviderError) -> bool {
    matches!(e, ProviderError::NotFound(_))
}

fn is_invalid(e: &ProviderError) -> bool {
    matches!(e, ProviderError::Invalid(_))
}

async fn step<F: Future<Output = Result<(), String>>>(name: &str, f: F) -> Result<(), String> {
    f.await
        .map_err(|e| format!("provider conformance, {name}: {e}"))
}

async fn checks(p: &dyn Provider, f: &Fixture) -> Result<(), String> {
    let kit = Kit { p, f };
    let app = &f.application;
    let account = &f.account;
    step("identity", async {
        if p.kind().is_empty() {
            return Err("kind() is empty".into());
        }
        if !p.accounts().contains(account) {
            return Err(format!("accounts() {:?} lacks {account}", p.accounts()));
        }
        let existing = p.server_groups(app).await.map_err(|e| e.to_string())?;
        if !existing.is_empty() {
            return Err(format!(
                "application {app} must start empty, has {} server groups",
                existing.len()
            ));
        }
        Ok(())
    })
    .await?;

    let one = Capacity::fixed(1);
    let (a0, a1, b0) = {
        let mut made = Vec::new();
        for stack in ["conf", "conf", "other"] {
            made.push(kit.create(stack, &f.good, one).await?);
        }
        (made[0].clone(), made[1].clone(), made[2].clone())
    };
    step("sequence numbering", async {
        let want = [
            (&a0, format!("{app}-conf-v000"), 0),
            (&a1, format!("{app}-conf-v001"), 1),
            (&b0, format!("{app}-other-v000"), 0),
        ];
        for (g, name, seq) in want {
            if g.name != name || g.moniker.sequence != Some(seq) {
                return Err(format!(
                    "expected {name} (sequence {seq}), got {} ({:?})",
                    g.name, g.moniker.sequence
                ));
            }
            if g.account != *account || g.provider != p.kind() {
                return Err(format!(
                    "{}: account/provider {}/{} recorded",
                    g.name, g.account, g.provider
                ));
            }
            if g.capacity != one || g.artifact != f.good || g.deployed_by != "conformance" {
                return Err(format!(
                    "{}: capacity, artifact or deployer not recorded as asked",
                    g.name
                ));
            }
            if g.execution_id.as_deref() != Some("conformance-execution") {
                return Err(format!("{}: execution id not recorded", g.name));
            }
        }
        Ok(())
    })
    .await?;

    step("listing", async {
        let listed = p.server_groups(app).await.map_err(|e| e.to_string())?;
        let names: Vec<&str> = listed.iter().map(|g| g.name.as_str()).collect();
        let want = [a0.name.as_str(), a1.name.as_str(), b0.name.as_str()];
        if names != want {
            return Err(format!(
                "server_groups must list oldest first: want {want:?}, got {names:?}"
            ));
        }
        if listed.windows(2).any(|w| w[0].created_at > w[1].created_at) {
            return Err("created_at must not decrease in the listing".into());
        }
        kit.get(&a0.name).await.map(|_| ())
    })
    .await?;

    step("readiness", async {
        kit.wait(&a0.name, f.ready_within, "up", ServerGroup::is_up)
            .await?;
        let bad = kit.create("conf", &f.bad, one).await?;
        let deadline = tokio::time::Instant::now() + f.bad_watch;
        while tokio::time::Instant::now() < deadline {
            let g = kit.get(&bad.name).await?;
            if g.is_up() {
                return Err(format!("{} runs the bad artifact but reports up", g.name));
            }
            if g.instances.is_empty() {
                return Err(format!("{} reports no instances", g.name));
            }
            tokio::time::sleep(f.poll).await;
        }
        p.destroy(account, &bad.name)
            .await
            .map_err(|e| e.to_string())
    })
    .await?;

    step("resize", async {
        let two = Capacity {
            min: 1,
            max: 3,
            desired: 2,
        };
        p.resize(account, &a0.name, two)
            .await
            .map_err(|e| format!("resize up: {e}"))?;
        if kit.get(&a0.name).await?.capacity != two {
            return Err("capacity after resize not reported".into());
        }
        kit.wait(&a0.name, f.ready_within, "up with 2 healthy", |g| {
            g.is_up() && g.healthy() == 2
        })
        .await?;
        p.resize(account, &a0.name, one)
            .await
            .map_err(|e| format!("resize down: {e}"))?;
        p.resize(account, &a0.name, one)
            .await
            .map_err(|e| format!("resize to the same size: {e}"))?;
        kit.wait(&a0.name, f.ready_within, "down to 1 instance", |g| {
            g.instances
                .iter()
                .filter(|i| i.state != crate::InstanceState::Stopped)
                .count()
                == 1
                && g.is_up()
        })
        .await
        .map(|_| ())
    })
    .await?;

    step("invalid capacity", async {
        let bad_caps = [
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
        ];
        for c in bad_caps {
            expect_err(
                &format!("resize to {c:?}"),
                p.resize(account, &a0.name, c).await,
                is_invalid,
                "Invalid",
            )?;
            let spec = kit.spec("conf", &f.good, c)?;
            expect_err(
                &format!("create with {c:?}"),
                p.create_server_group(spec).await,
                is_invalid,
                "Invalid",
            )?;
        }
        let count = p.server_groups(app).await.map_err(|e| e.to_string())?.len();
        if count != 3 {
            return Err(format!(
                "invalid creates left server groups behind: {count} exist, 3 expected"
            ));
        }
        Ok(())
    })
    .await?;

    step("enable, disable, weights", async {
        for _ in 0..2 {
            p.disable(account, &a0.name)
                .await
                .map_err(|e| format!("disable: {e}"))?;
        }
        if kit.get(&a0.name).await?.enabled {
            return Err("still enabled after disable".into());
        }
        for _ in 0..2 {
            p.enable(account, &a0.name)
                .await
                .map_err(|e| format!("enable: {e}"))?;
        }
        if !kit.get(&a0.name).await?.enabled {
            return Err("not enabled after enable".into());
        }
        for _ in 0..2 {
            p.set_weight(account, &a0.name, 30)
                .await
                .map_err(|e| format!("set_weight: {e}"))?;
        }
        let w = kit.get(&a0.name).await?.weight;
        if w != 30 {
            return Err(format!("weight 30 set, {w} reported"));
        }
        p.set_weight(account, &a0.name, 100)
            .await
            .map_err(|e| format!("set_weight: {e}"))
    })
    .await?;

    step("unknown names", async {
        let ghost = format!("{app}-conf-v999");
        match p.server_group(account, &ghost).await {
            Ok(None) => {}
            other => {
                return Err(format!(
                    "server_group of an unknown name: expected None, got {other:?}"
                ));
            }
        }
        expect_err(
            "resize unknown",
            p.resize(account, &ghost, one).await,
            is_not_found,
            "NotFound",
        )?;
        expect_err(
            "enable unknown",
            p.enable(account, &ghost).await,
            is_not_found,
            "NotFound",
        )?;
        expect_err(
            "disable unknown",
            p.disable(account, &ghost).await,
            is_not_found,
            "NotFound",
        )?;
        expect_err(
            "set_weight unknown",
            p.set_weight(account, &ghost, 1).await,
            is_not_found,
            "NotFound",
        )?;
        expect_err(
            "logs of unknown",
            p.logs(account, &ghost, None, 10).await,
            is_not_found,
            "NotFound",
        )?;
        let mut spec = kit.spec("conf", &f.good, one)?;
        spec.account = "no-such-account-for-conformance".into();
        expect_err(
            "create in an unknown account",
            p.create_server_group(spec).await,
            is_not_found,
            "NotFound",
        )
    })
    .await?;

    step("destroy", async {
        p.destroy(account, &a1.name)
            .await
            .map_err(|e| format!("destroy: {e}"))?;
        if p.server_group(account, &a1.name)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err(format!("{} still reported after destroy", a1.name));
        }
        let listed = p.server_groups(app).await.map_err(|e| e.to_string())?;
        if listed.iter().any(|g| g.name == a1.name) {
            return Err(format!("{} still listed after destroy", a1.name));
        }
        p.destroy(account, &a1.name)
            .await
            .map_err(|e| format!("destroy is not idempotent: {e}"))
    })
    .await?;

    step("load balancers and firewalls", async {
        let mut lb = LoadBalancerSpec {
            name: format!("{app}-lb"),
            application: app.clone(),
            account: account.clone(),
            listeners: vec![Listener {
                port: f.listener_port,
                address: Some("127.0.0.1".into()),
            }],
            routes: vec![],
            default_cluster: Some(a0.cluster()),
            firewalls: vec![],
            preview_listeners: vec![],
        };
        p.upsert_load_balancer(lb.clone())
            .await
            .map_err(|e| format!("upsert: {e}"))?;
        lb.routes = vec![PathRoute {
            path_prefix: "/other".into(),
            cluster: b0.cluster(),
        }];
        p.upsert_load_balancer(lb.clone())
            .await
            .map_err(|e| format!("upsert a change: {e}"))?;
        let listed = p.load_balancers(app).await.map_err(|e| e.to_string())?;
        let mine: Vec<&LoadBalancerSpec> = listed.iter().filter(|l| l.name == lb.name).collect();
        if mine.len() != 1 || mine[0].routes != lb.routes {
            return Err(format!(
                "load balancer not listed once with its latest routes: {listed:?}"
            ));
        }
        p.delete_load_balancer(account, &lb.name)
            .await
            .map_err(|e| format!("delete: {e}"))?;
        if p.load_balancers(app)
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .any(|l| l.name == lb.name)
        {
            return Err("load balancer still listed after delete".into());
        }
        match p.delete_load_balancer(account, &lb.name).await {
            Ok(()) | Err(ProviderError::NotFound(_)) => {}
            Err(e) => return Err(format!("deleting a deleted load balancer: {e}")),
        }
        let fw = FirewallSpec {
            name: format!("{app}-fw"),
            application: app.clone(),
            account: account.clone(),
            allow: vec!["10.0.0.0/8".parse().map_err(|e| format!("{e}"))?],
            deny: vec![],
        };
        p.upsert_firewall(fw.clone())
            .await
            .map_err(|e| format!("upsert firewall: {e}"))?;
        let fws = p.firewalls(app).await.map_err(|e| e.to_string())?;
        if !fws.contains(&fw) {
            return Err(format!("firewall not listed as upserted: {fws:?}"));
        }
        Ok(())
    })
    .await?;

    if f.captures_logs {
        step("logs", async {
            let deadline = tokio::time::Instant::now() + f.ready_within;
            loop {
                let lines = p
                    .logs(account, &a0.name, None, 100)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(stray) = lines.iter().find(|l| !l.instance.starts_with(&a0.name)) {
                    return Err(format!("a line of another server group: {stray:?}"));
                }
                if !lines.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "no log lines for {} within {:?}",
                        a0.name, f.ready_within
                    ));
                }
                tokio::time::sleep(f.poll).await;
            }
            let tail = p
                .logs(account, &a0.name, None, 1)
                .await
                .map_err(|e| e.to_string())?;
            if tail.len() != 1 {
                return Err(format!("tail 1 returned {} lines", tail.len()));
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}

async fn clean_up(p: &dyn Provider, f: &Fixture) -> Result<(), String> {
    let mut errors = Vec::new();
    match p.server_groups(&f.application).await {
        Ok(groups) => {
            for g in groups {
                if let Err(e) = p.destroy(&g.account, &g.name).await {
                    errors.push(format!("destroy {}: {e}", g.name));
                }
            }
        }
        Err(e) => errors.push(format!("list: {e}")),
    }
    let _ = p
        .delete_load_balancer(&f.account, &format!("{}-lb", f.application))
        .await;
    match p.server_groups(&f.application).await {
        Ok(left) if left.is_empty() => {}
        Ok(left) => errors.push(format!(
            "server groups left after destroy: {:?}",
            left.iter().map(|g| &g.name).collect::<Vec<_>>()
        )),
        Err(e) => errors.push(format!("list: {e}")),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "provider conformance, clean-up: {}",
            errors.join("; ")
        ))
    }
}
