//! The `deploy` stage: creates the next server group of each cluster in `clusters[]` and moves
//! traffic to it with Spinnaker's strategies (none, `highlander`, `redblack`,
//! `rollingredblack`).
//!
//! # Durability
//! The stage is a sequence of steps; each cluster's progress (`deploy.progress[i]`, with
//! `deploy.phase` mirroring the cluster in progress) is committed after every step. Before the
//! server group is created, the phase `creating` and the snapshot of the cluster's older server
//! groups are committed; the created name is committed before any waiting. A step that finds
//! `creating` without a name (Ferry stopped during the create call) first looks for a server
//! group of this cluster that this execution created and that is not in the snapshot, and
//! adopts it instead of creating a second one.
//!
//! # Strategies
//! - none: create (disabled), wait until up, enable; the older server groups are untouched.
//! - `highlander`: as none, then disable and destroy every older server group of the cluster.
//! - `redblack`: as none, wait `delayBeforeDisableSec`, disable (drain) the older enabled server
//!   groups, destroy the oldest so that at most `maxRemainingAsgs` remain (counting the new one),
//!   and with `scaleDown` resize the disabled older ones to 0.
//! - `rollingredblack`: create enabled with traffic weight 0 and no instances; for each
//!   `targetPercentages` p: resize the new server group to ceil(desired × p / 100), wait until
//!   up, then set weights new = p and old = 100 − p (split among the older enabled server groups
//!   that have instances). Ferry keeps the old server group at full size while traffic shifts
//!   (Spinnaker scales it down step by step), so going back is only a weight change; at 100 the
//!   old ones are disabled (after `delayBeforeDisableSec`), then `maxRemainingAsgs` and
//!   `scaleDown` apply as for `redblack`.
//!
//! # Failure
//! When the new server group is not up within `deployTimeoutSec` (or an instance crash-loops),
//! the stage fails with the server group's name, its healthy count and its instances' last exit.
//! Before failing it restores the older server groups' weights (rolling), then disables and
//! **destroys** the new server group. The older server groups are never disabled before the new
//! one is up, so they keep serving. Clusters are deployed one after the other; clusters already
//! deployed when a later one fails stay deployed.
//!
//! # Cancel
//! A canceled (or timed-out) deploy disables and destroys a new server group that never got
//! traffic (not yet enabled; for rolling, no weight given yet) and never touches the older ones.
//! A new server group that already takes traffic is left as it is.

use crate::health::{Readiness, describe, readiness};
use crate::ops::disable_and_destroy;
use crate::providers::Providers;
use crate::spec::{self, Location};
use crate::state;
use crate::target::cluster_groups;
use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_core::now_millis;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use ferry_provider::{
    Artifact, Capacity, HealthCheck, Moniker, Provider, ProviderError, ServerGroup, ServerGroupSpec,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Default `deployTimeoutSec`.
pub const DEFAULT_DEPLOY_TIMEOUT_SEC: u64 = 300;

/// The `deploy` stage type.
pub struct Deploy {
    /// Where server groups are created.
    pub providers: Providers,
}

/// A deploy strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `""` or `none`: add the new server group beside the others.
    None,
    /// `highlander`: keep only the new one.
    Highlander,
    /// `redblack`: switch traffic at once, keep older ones disabled.
    RedBlack,
    /// `rollingredblack`: shift traffic in steps.
    RollingRedBlack,
}

impl Strategy {
    fn parse(s: &str) -> Option<Strategy> {
        match s {
            "" | "none" => Some(Strategy::None),
            "highlander" => Some(Strategy::Highlander),
            "redblack" => Some(Strategy::RedBlack),
            "rollingredblack" => Some(Strategy::RollingRedBlack),
            _ => None,
        }
    }
}

/// One entry of `clusters[]`, validated.
#[derive(Debug, Clone)]
pub struct ClusterDeploy {
    /// Provider and account.
    pub location: Location,
    /// `application` (default: the pipeline's).
    pub application: Option<String>,
    /// `stack`.
    pub stack: Option<String>,
    /// `freeFormDetails`.
    pub detail: Option<String>,
    /// `capacity`.
    pub capacity: Capacity,
    /// `strategy`.
    pub strategy: Strategy,
    /// `maxRemainingAsgs` (redblack, rollingredblack).
    pub max_remaining_asgs: Option<u32>,
    /// `trafficWeight` (Ferry): the new server group's traffic weight, 1–100 (default 100),
    /// relative to the other enabled server groups of the cluster. A canary and its baseline
    /// deploy with a small weight beside production.
    pub traffic_weight: Option<u32>,
    /// `scaleDown` (redblack, rollingredblack).
    pub scale_down: bool,
    /// `delayBeforeDisableSec` (redblack, rollingredblack).
    pub delay_before_disable_sec: u64,
    /// `targetPercentages` (rollingredblack).
    pub target_percentages: Vec<u32>,
    /// `loadBalancers`.
    pub load_balancers: Vec<String>,
    /// `artifact`.
    pub artifact: Artifact,
    /// `healthCheck`.
    pub health_check: HealthCheck,
    /// `deployTimeoutSec`: how long the new server group may take to be up.
    pub deploy_timeout_sec: u64,
}

/// `deploy`'s configuration.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// `clusters[]`.
    pub clusters: Vec<ClusterDeploy>,
}

fn percentages(f: &mut Fields<'_>) -> Option<Vec<u32>> {
    if f.is_deferred("targetPercentages") {
        return None;
    }
    if f.get("targetPercentages").is_none() {
        f.problem(
            "targetPercentages",
            "is required for rollingredblack (e.g. [25, 50, 100])",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    let items = f.opt_array("targetPercentages")?;
    for (i, v) in items.iter().enumerate() {
        let key = format!("targetPercentages[{i}]");
        match v.as_u64() {
            Some(p) if (1..=100).contains(&p) => {
                if out.last().is_some_and(|last| u64::from(*last) >= p) {
                    f.problem(&key, "percentages must increase");
                    ok = false;
                }
                out.push(p as u32);
            }
            _ if v.as_str().is_some_and(ferry_core::looks_like_expression) && f.is_lenient() => {
                ok = false
            }
            _ => {
                f.problem(
                    &key,
                    format!("must be a whole percentage from 1 to 100, found {v}"),
                );
                ok = false;
            }
        }
    }
    if out.is_empty() && items.is_empty() {
        f.problem("targetPercentages", "must not be empty");
        return None;
    }
    if ok && out.last() != Some(&100) {
        f.problem("targetPercentages", "must end at 100");
        ok = false;
    }
    ok.then_some(out)
}

fn name_part(f: &mut Fields<'_>, key: &str) -> Option<Option<String>> {
    let v = f.opt_str(key).filter(|s| !s.is_empty());
    match &v {
        Some(s) if spec::unresolved(f, key, s) => None,
        Some(s) => {
            match Moniker::cluster("app", Some(s), None) {
                Ok(_) => Some(v),
                Err(_) => {
                    f.problem(key, format!("\"{s}\" may only hold lower-case letters, digits, '_', '.', '~' and '^'"));
                    None
                }
            }
        }
        None => Some(None),
    }
}

/// Reads one cluster to deploy (the fields of a `clusters[]` entry), reporting every problem
/// with its path. Other stage types that create server groups (`rollout`) read theirs with it.
pub fn cluster_deploy(f: &mut Fields<'_>, default_timeout: u64) -> Option<ClusterDeploy> {
    let location = spec::location(f);
    let application = spec::application(f);
    if let Some(a) = &application
        && !spec::unresolved(f, "application", a)
        && let Err(e) = ferry_core::application::check_name(a)
    {
        f.problem("application", e);
    }
    let stack = name_part(f, "stack");
    let detail = name_part(f, "freeFormDetails");
    let capacity = spec::capacity(f, "capacity");
    let strategy = match f.opt_str("strategy") {
        None => Some(Strategy::None),
        Some(s) if spec::unresolved(f, "strategy", &s) => None,
        Some(s) => {
            match Strategy::parse(&s) {
                Some(st) => Some(st),
                None if s == "custom" => {
                    f.problem("strategy", "custom strategies are not supported; use a pipeline of server-group stages");
                    None
                }
                None => {
                    f.problem("strategy", format!("unknown strategy \"{s}\"; use highlander, redblack, rollingredblack or none (\"\")"));
                    None
                }
            }
        }
    };
    let max_remaining_asgs = spec::opt_u32_in(f, "maxRemainingAsgs", 1, 1000);
    let traffic_weight = spec::opt_u32_in(f, "trafficWeight", 1, 100);
    if traffic_weight.is_some() && strategy == Some(Strategy::RollingRedBlack) {
        f.problem(
            "trafficWeight",
            "does not apply to rollingredblack, whose targetPercentages set the weights",
        );
    }
    let scale_down = f.bool_or("scaleDown", false);
    let delay_before_disable_sec = f.opt_u64("delayBeforeDisableSec").unwrap_or(0);
    let target_percentages = if strategy == Some(Strategy::RollingRedBlack) {
        percentages(f)
    } else {
        Some(Vec::new())
    };
    let load_balancers = f.string_list("loadBalancers");
    let artifact = spec::artifact(f, "artifact");
    let health_check = spec::health_check(f, "healthCheck");
    let deploy_timeout_sec = spec::seconds(f, "deployTimeoutSec", 1).unwrap_or(default_timeout);
    Some(ClusterDeploy {
        location,
        application,
        stack: stack?,
        detail: detail?,
        capacity: capacity?,
        strategy: strategy?,
        max_remaining_asgs,
        traffic_weight,
        scale_down,
        delay_before_disable_sec,
        target_percentages: target_percentages?,
        load_balancers,
        artifact: artifact?,
        health_check: health_check?,
        deploy_timeout_sec,
    })
}

/// Phases of one cluster's deploy, recorded in `deploy.progress[i].phase` and `deploy.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Nothing done yet.
    #[default]
    Start,
    /// About to create (or adopt) the new server group.
    Creating,
    /// Waiting for the new server group to be up.
    WaitingUp,
    /// Enabling the new server group.
    Enabling,
    /// Rolling: resizing to the next percentage.
    RollResize,
    /// Rolling: waiting for that size to be up.
    RollWaitUp,
    /// Rolling: shifting weights.
    RollWeights,
    /// Highlander: disabling and destroying the older server groups.
    DestroyingOld,
    /// Waiting `delayBeforeDisableSec`.
    DelayingDisable,
    /// Disabling the older server groups.
    DisablingOld,
    /// `maxRemainingAsgs` and `scaleDown`.
    CleaningUp,
    /// Deployed.
    Done,
    /// Undoing a failed deploy.
    Failing,
    /// Failed (new server group removed).
    Failed,
}

/// One cluster's durable progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Progress {
    phase: Phase,
    provider: String,
    account: String,
    application: String,
    cluster: String,
    /// The cluster's server groups before the deploy (the only ones strategies touch).
    ancestors: Vec<String>,
    /// The new server group, recorded as soon as it exists.
    server_group: Option<String>,
    /// When the current wait for "up" began, epoch ms.
    wait_started_at: Option<i64>,
    /// When the older server groups may be disabled, epoch ms.
    disable_at: Option<i64>,
    /// Rolling: index into `targetPercentages`.
    roll_index: usize,
    /// Whether the new server group has been given traffic.
    traffic: bool,
    /// Rolling: weights of the older enabled server groups before the first shift.
    old_weights: BTreeMap<String, u32>,
    /// The failure being undone.
    error: Option<String>,
}

const PROGRESS: &str = "deploy.progress";
const PHASE: &str = "deploy.phase";

fn phase_name(p: Phase) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

#[async_trait]
impl TypedStage for Deploy {
    type Config = DeployConfig;
    const TYPE: &'static str = "deploy";
    const TASK: &'static str = "createServerGroup";

    fn config(f: &mut Fields<'_>) -> Option<DeployConfig> {
        let default_timeout =
            spec::seconds(f, "deployTimeoutSec", 1).unwrap_or(DEFAULT_DEPLOY_TIMEOUT_SEC);
        if f.get("clusters").is_none() {
            f.problem("clusters", "is required: at least one cluster to deploy");
            return None;
        }
        let mut clusters = Vec::new();
        let mut complete = true;
        let n = spec::each_element(f, "clusters", |c, _| {
            match cluster_deploy(c, default_timeout) {
                Some(d) => clusters.push(d),
                None => complete = false,
            }
        })?;
        if n == 0 {
            f.problem("clusters", "must not be empty");
            return None;
        }
        complete.then_some(DeployConfig { clusters })
    }

    async fn step(&self, config: &DeployConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let mut progress: Vec<Progress> = state::get(&ctx.context, PROGRESS).unwrap_or_default();
        progress.resize_with(config.clusters.len(), Progress::default);
        let Some(i) = progress.iter().position(|p| p.phase != Phase::Done) else {
            return Ok(Step::Succeeded);
        };
        if ctx.recovered {
            tracing::info!(execution = %ctx.execution.id, cluster = i, phase = ?progress[i].phase, "deploy resumes after a restart");
        }
        let step = self
            .advance(&config.clusters[i], &mut progress[i], ctx)
            .await;
        let phase = progress[i].phase;
        if phase == Phase::Done {
            record_deployed(&config.clusters[i], &progress[i], ctx);
        }
        ctx.context.insert(PHASE.into(), phase_name(phase));
        state::put(&mut ctx.context, PROGRESS, &progress);
        match step {
            // Move straight on to the next cluster.
            Step::Succeeded if i + 1 < config.clusters.len() => Ok(Step::Running {
                poll_after: Duration::ZERO,
            }),
            other => Ok(other),
        }
    }

    async fn cancel(
        &self,
        config: Option<&DeployConfig>,
        ctx: &mut StageCtx,
    ) -> Result<(), StageError> {
        let mut progress: Vec<Progress> = state::get(&ctx.context, PROGRESS).unwrap_or_default();
        for (i, p) in progress.iter_mut().enumerate() {
            let artifact = config.and_then(|c| c.clusters.get(i)).map(|c| &c.artifact);
            let untouched = matches!(
                p.phase,
                Phase::Creating
                    | Phase::WaitingUp
                    | Phase::Enabling
                    | Phase::RollResize
                    | Phase::RollWaitUp
                    | Phase::RollWeights
                    | Phase::Failing
            ) && !p.traffic;
            if !untouched {
                continue;
            }
            let provider = match self.providers.get(Some(&p.provider), &p.account) {
                Ok(pr) => pr,
                Err(e) => return Err(StageError::Fatal(e.to_string())),
            };
            let name = match &p.server_group {
                Some(n) => Some(n.clone()),
                None => adoptable(
                    provider.as_ref(),
                    p,
                    artifact,
                    &ctx.execution.id,
                    ctx.started_at(),
                )
                .await
                .map(|g| g.name),
            };
            if let Some(name) = name {
                disable_and_destroy(provider.as_ref(), &p.account, &name)
                    .await
                    .map_err(StageError::Fatal)?;
                p.phase = Phase::Failed;
                p.error = Some("canceled".into());
            }
        }
        state::put(&mut ctx.context, PROGRESS, &progress);
        Ok(())
    }
}

/// A server group of the cluster this execution created that is not one of the recorded
/// ancestors: the result of a create whose outcome was not committed. It must run this
/// stage's artifact: two stages of one execution may deploy into the same cluster at once (a
/// baseline and a canary), and neither may take the other's server group.
async fn adoptable(
    provider: &dyn Provider,
    p: &Progress,
    artifact: Option<&ferry_provider::Artifact>,
    execution_id: &str,
    stage_started: i64,
) -> Option<ServerGroup> {
    let groups = cluster_groups(provider, &p.application, &p.account, &p.cluster)
        .await
        .ok()?;
    groups.into_iter().rev().find(|g| {
        !p.ancestors.contains(&g.name)
            && g.execution_id.as_deref() == Some(execution_id)
            && g.created_at >= stage_started - 1_000
            && artifact.is_none_or(|a| &g.artifact == a)
    })
}

fn record_deployed(c: &ClusterDeploy, p: &Progress, ctx: &mut StageCtx) {
    let Some(name) = &p.server_group else { return };
    let entry = json!({
        "account": p.account,
        "serverGroup": name,
        "cluster": p.cluster,
        "application": p.application,
        "provider": p.provider,
        "artifactName": c.artifact.name,
        "artifactVersion": c.artifact.version,
    });
    let list = ctx
        .outputs
        .entry("deployedServerGroups")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(a) = list
        && !a.iter().any(|e| {
            e.get("serverGroup") == Some(&json!(name))
                && e.get("account") == Some(&json!(p.account))
        })
    {
        a.push(entry);
    }
    let groups = ctx
        .context
        .entry("deploy.server.groups")
        .or_insert_with(|| json!({}));
    if let Value::Object(m) = groups {
        let names = m.entry(p.account.clone()).or_insert_with(|| json!([]));
        if let Value::Array(a) = names
            && !a.contains(&json!(name))
        {
            a.push(json!(name));
        }
    }
    ctx.context.insert("serverGroupName".into(), json!(name));
}

fn now_step() -> Step {
    Step::Running {
        poll_after: Duration::ZERO,
    }
}

impl Deploy {
    fn poll(&self) -> Step {
        Step::Running {
            poll_after: self.providers.poll_interval(),
        }
    }

    /// Advances one cluster by one phase.
    async fn advance(&self, c: &ClusterDeploy, p: &mut Progress, ctx: &mut StageCtx) -> Step {
        if p.phase == Phase::Start {
            p.provider = self
                .providers
                .kind_or_default(c.location.provider.as_deref())
                .to_string();
            p.account = c.location.account.clone();
            p.application = c
                .application
                .clone()
                .unwrap_or_else(|| ctx.execution.application.clone());
        }
        let provider = match self.providers.get(Some(&p.provider), &p.account) {
            Ok(pr) => pr,
            Err(e) => return fail(p, e.to_string()),
        };
        let provider = provider.as_ref();
        match p.phase {
            Phase::Start => {
                let moniker =
                    match Moniker::cluster(&p.application, c.stack.as_deref(), c.detail.as_deref())
                    {
                        Ok(m) => m,
                        Err(e) => return fail(p, e.to_string()),
                    };
                p.cluster = moniker.cluster_name();
                match cluster_groups(provider, &p.application, &p.account, &p.cluster).await {
                    Ok(groups) => {
                        // Rolling: the weights to restore if the deploy fails, taken before any
                        // change.
                        p.old_weights = groups
                            .iter()
                            .filter(|g| c.strategy == Strategy::RollingRedBlack && g.enabled)
                            .map(|g| (g.name.clone(), g.weight))
                            .collect();
                        p.ancestors = groups.into_iter().map(|g| g.name).collect();
                    }
                    Err(e) => return fail(p, format!("could not list cluster {}: {e}", p.cluster)),
                }
                // Committed before the create call: a restart then knows a create may have happened.
                p.phase = Phase::Creating;
                now_step()
            }
            Phase::Creating => self.create(c, p, provider, ctx).await,
            Phase::WaitingUp | Phase::RollWaitUp => self.wait_up(c, p, provider).await,
            Phase::Enabling => {
                let Some(name) = p.server_group.clone() else {
                    return fail(p, "no server group recorded".into());
                };
                if let Err(e) = provider.enable(&p.account, &name).await {
                    return self.begin_failing(p, format!("could not enable {name}: {e}"));
                }
                p.traffic = true;
                p.phase = match c.strategy {
                    Strategy::None => Phase::Done,
                    Strategy::Highlander => Phase::DestroyingOld,
                    Strategy::RedBlack | Strategy::RollingRedBlack => {
                        p.disable_at =
                            Some(now_millis() + (c.delay_before_disable_sec as i64) * 1000);
                        Phase::DelayingDisable
                    }
                };
                self.after_phase(p)
            }
            Phase::RollResize => {
                let Some(name) = p.server_group.clone() else {
                    return fail(p, "no server group recorded".into());
                };
                let pct = c
                    .target_percentages
                    .get(p.roll_index)
                    .copied()
                    .unwrap_or(100);
                let n = (u64::from(c.capacity.desired) * u64::from(pct)).div_ceil(100) as u32;
                let cap = Capacity {
                    min: c.capacity.min.min(n),
                    max: c.capacity.max,
                    desired: n,
                };
                if let Err(e) = provider.resize(&p.account, &name, cap).await {
                    return self
                        .begin_failing(p, format!("could not resize {name} to {n} ({pct}%): {e}"));
                }
                p.wait_started_at = Some(now_millis());
                p.phase = Phase::RollWaitUp;
                now_step()
            }
            Phase::RollWeights => self.shift_weights(c, p, provider).await,
            Phase::DestroyingOld => {
                let old = self.existing_ancestors(p, provider).await;
                for g in old.iter().filter(|g| g.enabled) {
                    if let Err(e) = provider.disable(&p.account, &g.name).await {
                        return fail(
                            p,
                            format!(
                                "{} is serving, but disabling {} failed: {e}",
                                p.server_group.clone().unwrap_or_default(),
                                g.name
                            ),
                        );
                    }
                }
                for g in &old {
                    if let Err(e) = provider.destroy(&p.account, &g.name).await {
                        return fail(
                            p,
                            format!(
                                "{} is serving, but destroying {} failed: {e}",
                                p.server_group.clone().unwrap_or_default(),
                                g.name
                            ),
                        );
                    }
                }
                p.phase = Phase::Done;
                Step::Succeeded
            }
            Phase::DelayingDisable => {
                let left = p.disable_at.unwrap_or(0) - now_millis();
                if left > 0 {
                    return Step::Running {
                        poll_after: Duration::from_millis(left as u64),
                    };
                }
                p.phase = Phase::DisablingOld;
                now_step()
            }
            Phase::DisablingOld => {
                for g in self.existing_ancestors(p, provider).await {
                    if g.enabled
                        && let Err(e) = provider.disable(&p.account, &g.name).await
                    {
                        return fail(p, format!("could not disable {}: {e}", g.name));
                    }
                }
                p.phase = Phase::CleaningUp;
                now_step()
            }
            Phase::CleaningUp => self.clean_up(c, p, provider).await,
            Phase::Done => Step::Succeeded,
            Phase::Failing => self.undo(p, provider).await,
            Phase::Failed => Step::Failed {
                error: p.error.clone().unwrap_or_else(|| "deploy failed".into()),
            },
        }
    }

    fn after_phase(&self, p: &Progress) -> Step {
        if p.phase == Phase::Done {
            Step::Succeeded
        } else {
            now_step()
        }
    }

    async fn create(
        &self,
        c: &ClusterDeploy,
        p: &mut Progress,
        provider: &dyn Provider,
        ctx: &mut StageCtx,
    ) -> Step {
        let rolling = c.strategy == Strategy::RollingRedBlack;
        // Only a step re-run after a restart can find a create whose outcome was not committed.
        let adopted = if ctx.recovered {
            adoptable(
                provider,
                p,
                Some(&c.artifact),
                &ctx.execution.id,
                ctx.started_at(),
            )
            .await
        } else {
            None
        };
        let group = match adopted {
            Some(g) => {
                tracing::info!(server_group = %g.name, "deploy adopts the server group created before a restart");
                ctx.context.insert("deploy.adopted".into(), json!(g.name));
                g
            }
            None => {
                let moniker =
                    match Moniker::cluster(&p.application, c.stack.as_deref(), c.detail.as_deref())
                    {
                        Ok(m) => m,
                        Err(e) => return fail(p, e.to_string()),
                    };
                let capacity = if rolling {
                    Capacity {
                        min: 0,
                        max: c.capacity.max,
                        desired: 0,
                    }
                } else {
                    c.capacity
                };
                let spec = ServerGroupSpec {
                    account: p.account.clone(),
                    moniker,
                    capacity,
                    artifact: c.artifact.clone(),
                    health_check: c.health_check.clone(),
                    load_balancers: c.load_balancers.clone(),
                    enabled: rolling,
                    weight: if rolling {
                        0
                    } else {
                        c.traffic_weight.unwrap_or(100)
                    },
                    deployed_by: ctx.execution.trigger.user.clone(),
                    execution_id: Some(ctx.execution.id.clone()),
                };
                match provider.create_server_group(spec).await {
                    Ok(g) => g,
                    Err(e) => {
                        return fail(
                            p,
                            format!(
                                "could not create a server group in cluster {}: {e}",
                                p.cluster
                            ),
                        );
                    }
                }
            }
        };
        ctx.context
            .insert("serverGroupName".into(), json!(group.name));
        p.server_group = Some(group.name);
        p.wait_started_at = Some(now_millis());
        p.phase = if rolling {
            Phase::RollResize
        } else {
            Phase::WaitingUp
        };
        now_step()
    }

    async fn wait_up(&self, c: &ClusterDeploy, p: &mut Progress, provider: &dyn Provider) -> Step {
        let Some(name) = p.server_group.clone() else {
            return fail(p, "no server group recorded".into());
        };
        let deadline =
            p.wait_started_at.unwrap_or_else(now_millis) + (c.deploy_timeout_sec as i64) * 1000;
        let group = match provider.server_group(&p.account, &name).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                return self.begin_failing(
                    p,
                    format!("server group {name} disappeared while Ferry waited for it to be up"),
                );
            }
            Err(e) if now_millis() < deadline => {
                tracing::warn!(server_group = %name, error = %e, "could not read the server group; will retry");
                return self.poll();
            }
            Err(e) => {
                return self
                    .begin_failing(p, format!("server group {name} could not be read: {e}"));
            }
        };
        match readiness(&group) {
            Readiness::Up => {
                p.phase = if p.phase == Phase::RollWaitUp {
                    Phase::RollWeights
                } else {
                    Phase::Enabling
                };
                now_step()
            }
            Readiness::CrashLooping => self.begin_failing(
                p,
                format!("server group {name} is crash-looping: {}", describe(&group)),
            ),
            Readiness::Waiting if now_millis() >= deadline => self.begin_failing(
                p,
                format!(
                    "server group {name} did not become up within {} s: {}",
                    c.deploy_timeout_sec,
                    describe(&group)
                ),
            ),
            Readiness::Waiting => self.poll(),
        }
    }

    async fn shift_weights(
        &self,
        c: &ClusterDeploy,
        p: &mut Progress,
        provider: &dyn Provider,
    ) -> Step {
        let Some(name) = p.server_group.clone() else {
            return fail(p, "no server group recorded".into());
        };
        let pct = c
            .target_percentages
            .get(p.roll_index)
            .copied()
            .unwrap_or(100);
        let old: Vec<ServerGroup> = self
            .existing_ancestors(p, provider)
            .await
            .into_iter()
            .filter(|g| g.enabled && g.capacity.desired > 0)
            .collect();
        if let Err(e) = provider.set_weight(&p.account, &name, pct).await {
            return self.begin_failing(
                p,
                format!("could not set the weight of {name} to {pct}: {e}"),
            );
        }
        p.traffic = true;
        let shares = split(100 - pct, old.len());
        for (g, w) in old.iter().zip(shares) {
            if let Err(e) = provider.set_weight(&p.account, &g.name, w).await {
                return self.begin_failing(
                    p,
                    format!("could not set the weight of {} to {w}: {e}", g.name),
                );
            }
        }
        if p.roll_index + 1 < c.target_percentages.len() {
            p.roll_index += 1;
            p.phase = Phase::RollResize;
        } else {
            p.disable_at = Some(now_millis() + (c.delay_before_disable_sec as i64) * 1000);
            p.phase = Phase::DelayingDisable;
        }
        now_step()
    }

    async fn clean_up(&self, c: &ClusterDeploy, p: &mut Progress, provider: &dyn Provider) -> Step {
        let mut remaining = self.existing_ancestors(p, provider).await;
        if let Some(n) = c.max_remaining_asgs {
            // The new server group counts; the oldest older ones go first.
            while remaining.len() + 1 > n as usize && !remaining.is_empty() {
                let g = remaining.remove(0);
                let r = if g.enabled {
                    disable_and_destroy(provider, &p.account, &g.name).await
                } else {
                    provider
                        .destroy(&p.account, &g.name)
                        .await
                        .map_err(|e| format!("could not destroy {}: {e}", g.name))
                };
                if let Err(e) = r {
                    return fail(p, format!("maxRemainingAsgs: {e}"));
                }
            }
        }
        if c.scale_down {
            for g in remaining
                .iter()
                .filter(|g| !g.enabled && g.capacity.desired > 0)
            {
                let cap = Capacity {
                    min: 0,
                    max: g.capacity.max,
                    desired: 0,
                };
                if let Err(e) = provider.resize(&p.account, &g.name, cap).await {
                    return fail(
                        p,
                        format!("scaleDown: could not resize {} to 0: {e}", g.name),
                    );
                }
            }
        }
        p.phase = Phase::Done;
        Step::Succeeded
    }

    async fn existing_ancestors(&self, p: &Progress, provider: &dyn Provider) -> Vec<ServerGroup> {
        let mut out = Vec::new();
        for name in &p.ancestors {
            if let Ok(Some(g)) = provider.server_group(&p.account, name).await {
                out.push(g);
            }
        }
        out
    }

    /// Records the failure durably; the next step undoes the deploy.
    fn begin_failing(&self, p: &mut Progress, error: String) -> Step {
        p.error = Some(error);
        p.phase = Phase::Failing;
        now_step()
    }

    /// Restores the older server groups' weights, then disables and destroys the new one.
    async fn undo(&self, p: &mut Progress, provider: &dyn Provider) -> Step {
        let mut error = p.error.clone().unwrap_or_else(|| "deploy failed".into());
        for (name, w) in p.old_weights.clone() {
            match provider.set_weight(&p.account, &name, w).await {
                Ok(()) | Err(ProviderError::NotFound(_)) => {}
                Err(e) => error.push_str(&format!("; could not restore the weight of {name}: {e}")),
            }
        }
        if let Some(name) = p.server_group.clone() {
            match disable_and_destroy(provider, &p.account, &name).await {
                Ok(()) => error.push_str(&format!("; {name} was disabled and destroyed")),
                Err(e) => error.push_str(&format!("; {e}")),
            }
        }
        let serving: Vec<String> = self
            .existing_ancestors(p, provider)
            .await
            .into_iter()
            .filter(|g| g.enabled && g.healthy() > 0)
            .map(|g| g.name)
            .collect();
        if serving.is_empty() {
            error.push_str("; no older server group of the cluster is serving");
        } else {
            error.push_str(&format!("; {} keeps serving", serving.join(", ")));
        }
        p.error = Some(error.clone());
        p.phase = Phase::Failed;
        Step::Failed { error }
    }
}

/// Fails this cluster without anything to undo.
fn fail(p: &mut Progress, error: String) -> Step {
    p.error = Some(error.clone());
    p.phase = Phase::Failed;
    Step::Failed { error }
}

/// Splits `total` into `n` integer shares (the last ones get the remainder).
fn split(total: u32, n: usize) -> Vec<u32> {
    if n == 0 {
        return Vec::new();
    }
    let base = total / n as u32;
    let extra = (total % n as u32) as usize;
    (0..n).map(|i| base + u32::from(i >= n - extra)).collect()
}

#[cfg(test)]
mod tests;
