//! The single-server-group stages `enableServerGroup`, `disableServerGroup`,
//! `resizeServerGroup` and `destroyServerGroup`, and the step helpers every server-group stage
//! shares.
//!
//! Each resolves its target **once**, at run time, and records it in the context
//! (`op.serverGroup`, `op.account`, `op.provider`) before acting, so a restart acts on the same
//! server group even when the target would now resolve to another one (after a disable,
//! `current_asg_dynamic` names a different server group). `op.phase` says what is left
//! (`act`, then `wait` for stages that wait until the server group is up).

use crate::health::{Readiness, describe, readiness};
use crate::providers::Providers;
use crate::spec::{self, PartialCapacity, ServerGroupRef};
use crate::state;
use crate::target::{ResolveError, Resolved, resolve_ref};
use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_core::now_millis;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use ferry_provider::{Capacity, Provider, ProviderError};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Default `waitTimeoutSec` for stages that wait for a server group to be up.
pub const DEFAULT_WAIT_TIMEOUT_SEC: u64 = 300;

pub(crate) const OP_GROUP: &str = "op.serverGroup";
pub(crate) const OP_ACCOUNT: &str = "op.account";
pub(crate) const OP_PROVIDER: &str = "op.provider";
pub(crate) const OP_PHASE: &str = "op.phase";
pub(crate) const OP_WAIT: &str = "op.waitStartedAt";

/// Disables and destroys a server group (idempotent; a missing one is fine).
pub(crate) async fn disable_and_destroy(
    provider: &dyn Provider,
    account: &str,
    name: &str,
) -> Result<(), String> {
    match provider.disable(account, name).await {
        Ok(()) | Err(ProviderError::NotFound(_)) => {}
        Err(e) => return Err(format!("could not disable {name}: {e}")),
    }
    provider
        .destroy(account, name)
        .await
        .map_err(|e| format!("could not destroy {name}: {e}"))
}

pub(crate) fn now_step() -> Step {
    Step::Running {
        poll_after: Duration::ZERO,
    }
}

pub(crate) fn failed(error: impl Into<String>) -> Result<Step, StageError> {
    Ok(Step::Failed {
        error: error.into(),
    })
}

/// The phase recorded in the context.
pub(crate) fn phase(ctx: &StageCtx) -> Option<String> {
    state::get(&ctx.context, OP_PHASE)
}

pub(crate) fn set_phase(ctx: &mut StageCtx, phase: &str) {
    ctx.context.insert(OP_PHASE.into(), json!(phase));
}

/// A recorded target: the provider, account and server group a stage acts on.
pub(crate) struct Bound {
    pub provider: Arc<dyn Provider>,
    pub account: String,
    pub name: String,
}

/// The outcome of [`bind`].
pub(crate) enum Bind {
    /// The target was recorded earlier.
    Bound(Bound),
    /// Resolved and recorded just now: commit before acting (`Running { 0 }`).
    Recorded,
    /// Could not resolve.
    Failed(ResolveError),
    /// `on_resolve` refused.
    Refused(String),
}

/// Resolves the stage's target on the first step and records it (phase `act`); later steps get
/// the recorded one. `on_resolve` may record more (a computed capacity) or refuse.
pub(crate) async fn bind(
    providers: &Providers,
    r: &ServerGroupRef,
    ctx: &mut StageCtx,
    on_resolve: impl FnOnce(&Resolved, &mut Map<String, Value>) -> Result<(), String>,
) -> Bind {
    if let (Some(name), Some(account)) = (
        state::get::<String>(&ctx.context, OP_GROUP),
        state::get::<String>(&ctx.context, OP_ACCOUNT),
    ) {
        let kind: Option<String> = state::get(&ctx.context, OP_PROVIDER);
        return match providers.get(kind.as_deref(), &account) {
            Ok(provider) => Bind::Bound(Bound {
                provider,
                account,
                name,
            }),
            Err(e) => Bind::Failed(e.into()),
        };
    }
    let resolved = match resolve_ref(providers, r, &ctx.execution.application).await {
        Ok(x) => x,
        Err(e) => return Bind::Failed(e),
    };
    if let Err(e) = on_resolve(&resolved, &mut ctx.context) {
        return Bind::Refused(e);
    }
    ctx.context
        .insert(OP_GROUP.into(), json!(resolved.group.name));
    ctx.context
        .insert(OP_ACCOUNT.into(), json!(resolved.group.account));
    ctx.context.insert(
        OP_PROVIDER.into(),
        json!(providers.kind_or_default(r.location.provider.as_deref())),
    );
    set_phase(ctx, "act");
    Bind::Recorded
}

/// Binds, or returns the step to report.
macro_rules! bound {
    ($bind:expr) => {
        match $bind {
            Bind::Bound(b) => b,
            Bind::Recorded => return Ok(now_step()),
            Bind::Failed(e) => return failed(e.to_string()),
            Bind::Refused(e) => return failed(e),
        }
    };
}

/// What a look at a server group being waited for says.
pub(crate) enum Waited {
    /// It is up.
    Up,
    /// Look again later.
    Pending,
    /// It will not be up (crash loop, timeout, gone).
    Failed(String),
}

/// Checks whether `name` is up, failing after `timeout_sec` from the recorded wait start.
pub(crate) async fn check_up(
    b: &Bound,
    name: &str,
    ctx: &mut StageCtx,
    timeout_sec: u64,
) -> Waited {
    let started: i64 = match state::get(&ctx.context, OP_WAIT) {
        Some(t) => t,
        None => {
            let now = now_millis();
            ctx.context.insert(OP_WAIT.into(), json!(now));
            now
        }
    };
    let overdue = now_millis() >= started + (timeout_sec as i64) * 1000;
    match b.provider.server_group(&b.account, name).await {
        Ok(Some(g)) => match readiness(&g) {
            Readiness::Up => Waited::Up,
            Readiness::CrashLooping => Waited::Failed(format!(
                "server group {name} is crash-looping: {}",
                describe(&g)
            )),
            Readiness::Waiting if overdue => Waited::Failed(format!(
                "server group {name} did not become up within {timeout_sec} s: {}",
                describe(&g)
            )),
            Readiness::Waiting => Waited::Pending,
        },
        Ok(None) => Waited::Failed(format!("server group {name} no longer exists")),
        Err(e) if overdue => Waited::Failed(format!("server group {name} could not be read: {e}")),
        Err(_) => Waited::Pending,
    }
}

/// The configuration of `enableServerGroup`, `disableServerGroup` and `destroyServerGroup`.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Which server group.
    pub target: ServerGroupRef,
    /// `waitTimeoutSec` (enable only): how long the server group may take to be up.
    pub wait_timeout_sec: u64,
}

fn target_config(f: &mut Fields<'_>) -> Option<TargetConfig> {
    let target = spec::server_group_ref(f);
    let wait_timeout_sec =
        spec::seconds(f, "waitTimeoutSec", 1).unwrap_or(DEFAULT_WAIT_TIMEOUT_SEC);
    Some(TargetConfig {
        target: target?,
        wait_timeout_sec,
    })
}

/// `enableServerGroup`: gives the server group traffic (a weight of 0 becomes 100 first), then
/// waits until it is up.
pub struct EnableServerGroup {
    /// Providers.
    pub providers: Providers,
}

#[async_trait]
impl TypedStage for EnableServerGroup {
    type Config = TargetConfig;
    const TYPE: &'static str = "enableServerGroup";
    const TASK: &'static str = "enableServerGroup";

    fn config(f: &mut Fields<'_>) -> Option<TargetConfig> {
        target_config(f)
    }

    async fn step(&self, c: &TargetConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let b = bound!(bind(&self.providers, &c.target, ctx, |_, _| Ok(())).await);
        match phase(ctx).as_deref() {
            Some("wait") => match check_up(&b, &b.name, ctx, c.wait_timeout_sec).await {
                Waited::Up => Ok(Step::Succeeded),
                Waited::Pending => Ok(Step::Running {
                    poll_after: self.providers.poll_interval(),
                }),
                Waited::Failed(e) => failed(format!("{e}; it stays enabled")),
            },
            _ => {
                if let Ok(Some(g)) = b.provider.server_group(&b.account, &b.name).await
                    && g.weight == 0
                    && let Err(e) = b.provider.set_weight(&b.account, &b.name, 100).await
                {
                    return failed(format!(
                        "could not set the weight of {} to 100: {e}",
                        b.name
                    ));
                }
                if let Err(e) = b.provider.enable(&b.account, &b.name).await {
                    return failed(format!("could not enable {}: {e}", b.name));
                }
                set_phase(ctx, "wait");
                ctx.context.insert(OP_WAIT.into(), json!(now_millis()));
                Ok(now_step())
            }
        }
    }
}

/// `disableServerGroup`: takes the server group out of traffic (draining).
pub struct DisableServerGroup {
    /// Providers.
    pub providers: Providers,
}

#[async_trait]
impl TypedStage for DisableServerGroup {
    type Config = TargetConfig;
    const TYPE: &'static str = "disableServerGroup";
    const TASK: &'static str = "disableServerGroup";

    fn config(f: &mut Fields<'_>) -> Option<TargetConfig> {
        target_config(f)
    }

    async fn step(&self, c: &TargetConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let b = bound!(bind(&self.providers, &c.target, ctx, |_, _| Ok(())).await);
        match b.provider.disable(&b.account, &b.name).await {
            Ok(()) => Ok(Step::Succeeded),
            Err(e) => failed(format!("could not disable {}: {e}", b.name)),
        }
    }
}

/// `destroyServerGroup`: disables (draining) and destroys the server group. An explicitly
/// named server group that no longer exists counts as destroyed.
pub struct DestroyServerGroup {
    /// Providers.
    pub providers: Providers,
}

#[async_trait]
impl TypedStage for DestroyServerGroup {
    type Config = TargetConfig;
    const TYPE: &'static str = "destroyServerGroup";
    const TASK: &'static str = "destroyServerGroup";

    fn config(f: &mut Fields<'_>) -> Option<TargetConfig> {
        target_config(f)
    }

    async fn step(&self, c: &TargetConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let b = match bind(&self.providers, &c.target, ctx, |_, _| Ok(())).await {
            Bind::Failed(ResolveError::NotFound { name, account }) => {
                ctx.context.insert(
                    "op.note".into(),
                    json!(format!(
                        "{name} does not exist in {account}; nothing to destroy"
                    )),
                );
                return Ok(Step::Succeeded);
            }
            other => bound!(other),
        };
        match disable_and_destroy(b.provider.as_ref(), &b.account, &b.name).await {
            Ok(()) => Ok(Step::Succeeded),
            Err(e) => failed(e),
        }
    }
}

/// How `resizeServerGroup` changes the capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeAction {
    /// `scale_exact` with `capacity` (missing fields keep their current values).
    Exact(PartialCapacity),
    /// `scale_up` by `scalePct` percent of the current desired (rounded up) or `scaleNum`.
    Up(Delta),
    /// `scale_down` likewise.
    Down(Delta),
}

/// A relative change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// `scalePct`.
    Percent(u32),
    /// `scaleNum`.
    Number(u32),
}

impl Delta {
    fn of(self, desired: u32) -> u32 {
        match self {
            Delta::Number(n) => n,
            Delta::Percent(p) => (u64::from(desired) * u64::from(p)).div_ceil(100) as u32,
        }
    }
}

impl ResizeAction {
    /// The capacity this action gives a server group that has `current`.
    pub fn apply(&self, current: Capacity) -> Capacity {
        match self {
            ResizeAction::Exact(p) => p.over(current),
            ResizeAction::Up(d) => {
                let desired = current.desired.saturating_add(d.of(current.desired));
                Capacity {
                    min: current.min,
                    max: current.max.max(desired),
                    desired,
                }
            }
            ResizeAction::Down(d) => {
                let desired = current.desired.saturating_sub(d.of(current.desired));
                Capacity {
                    min: current.min.min(desired),
                    max: current.max,
                    desired,
                }
            }
        }
    }
}

/// `resizeServerGroup`'s configuration.
#[derive(Debug, Clone)]
pub struct ResizeConfig {
    /// Which server group.
    pub target: ServerGroupRef,
    /// The change.
    pub action: ResizeAction,
    /// `waitTimeoutSec`.
    pub wait_timeout_sec: u64,
}

/// `resizeServerGroup`: changes the capacity, then waits until the server group is up at it.
/// The resulting capacity is computed once, when the target is resolved, and recorded as
/// `op.capacity` (so a restart never scales up twice).
pub struct ResizeServerGroup {
    /// Providers.
    pub providers: Providers,
}

fn delta(f: &mut Fields<'_>, action: &str) -> Option<Delta> {
    let pct = spec::opt_u32_in(f, "scalePct", 1, 10_000);
    let num = spec::opt_u32_in(f, "scaleNum", 1, spec::MAX_INSTANCES);
    match (f.get("scalePct").is_some(), f.get("scaleNum").is_some()) {
        (true, true) => {
            f.problem("scalePct", "give scalePct or scaleNum, not both");
            None
        }
        (false, false) => {
            f.problem("scaleNum", format!("{action} needs scalePct or scaleNum"));
            None
        }
        (true, false) => pct.map(Delta::Percent),
        (false, true) => num.map(Delta::Number),
    }
}

#[async_trait]
impl TypedStage for ResizeServerGroup {
    type Config = ResizeConfig;
    const TYPE: &'static str = "resizeServerGroup";
    const TASK: &'static str = "resizeServerGroup";

    fn config(f: &mut Fields<'_>) -> Option<ResizeConfig> {
        let target = spec::server_group_ref(f);
        let wait_timeout_sec =
            spec::seconds(f, "waitTimeoutSec", 1).unwrap_or(DEFAULT_WAIT_TIMEOUT_SEC);
        let action = match f.opt_str("action").as_deref() {
            None | Some("scale_exact") => {
                if f.get("capacity").is_none() {
                    f.problem(
                        "capacity",
                        "is required for scale_exact ({min, max, desired})",
                    );
                    None
                } else {
                    spec::partial_capacity(f, "capacity").map(ResizeAction::Exact)
                }
            }
            Some("scale_up") => delta(f, "scale_up").map(ResizeAction::Up),
            Some("scale_down") => delta(f, "scale_down").map(ResizeAction::Down),
            Some(a) if spec::unresolved(f, "action", a) => None,
            Some(other) => {
                f.problem(
                    "action",
                    format!("unknown action \"{other}\"; use scale_exact, scale_up or scale_down"),
                );
                None
            }
        };
        Some(ResizeConfig {
            target: target?,
            action: action?,
            wait_timeout_sec,
        })
    }

    async fn step(&self, c: &ResizeConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let action = c.action;
        let b = bound!(
            bind(&self.providers, &c.target, ctx, |r, context| {
                let cap = action.apply(r.group.capacity);
                if cap.min > cap.max || cap.desired < cap.min || cap.desired > cap.max {
                    return Err(format!(
                        "resizing {} from {:?} gives an invalid capacity: min {}, desired {}, max {}",
                        r.group.name, r.group.capacity, cap.min, cap.desired, cap.max
                    ));
                }
                state::put(context, "op.capacity", &cap);
                Ok(())
            })
            .await
        );
        match phase(ctx).as_deref() {
            Some("wait") => match check_up(&b, &b.name, ctx, c.wait_timeout_sec).await {
                Waited::Up => Ok(Step::Succeeded),
                Waited::Pending => Ok(Step::Running {
                    poll_after: self.providers.poll_interval(),
                }),
                Waited::Failed(e) => failed(e),
            },
            _ => {
                let Some(cap) = state::get::<Capacity>(&ctx.context, "op.capacity") else {
                    return failed("the resize capacity was not recorded");
                };
                if let Err(e) = b.provider.resize(&b.account, &b.name, cap).await {
                    return failed(format!(
                        "could not resize {} to {}: {e}",
                        b.name, cap.desired
                    ));
                }
                set_phase(ctx, "wait");
                ctx.context.insert(OP_WAIT.into(), json!(now_millis()));
                Ok(now_step())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Env, assert_succeeded, error_of, op_conforms};
    use ferry_core::Status;
    use ferry_provider::fake::Behavior;

    #[test]
    fn resize_actions() {
        let cur = Capacity {
            min: 1,
            max: 4,
            desired: 3,
        };
        let exact = ResizeAction::Exact(PartialCapacity {
            desired: Some(2),
            ..Default::default()
        });
        assert_eq!(
            exact.apply(cur),
            Capacity {
                min: 1,
                max: 4,
                desired: 2
            }
        );
        assert_eq!(
            ResizeAction::Up(Delta::Number(2)).apply(cur),
            Capacity {
                min: 1,
                max: 5,
                desired: 5
            }
        );
        assert_eq!(
            ResizeAction::Up(Delta::Percent(50)).apply(cur),
            Capacity {
                min: 1,
                max: 5,
                desired: 5
            }
        );
        assert_eq!(
            ResizeAction::Down(Delta::Percent(50)).apply(cur),
            Capacity {
                min: 1,
                max: 4,
                desired: 1
            }
        );
        assert_eq!(
            ResizeAction::Down(Delta::Number(5)).apply(cur),
            Capacity {
                min: 0,
                max: 4,
                desired: 0
            }
        );
    }

    fn target_invalid(kind: &str) -> Vec<(Value, &'static str)> {
        vec![
            (
                json!({"type": kind, "target": "current_asg_dynamic"}),
                "stages[0].cluster",
            ),
            (
                json!({"type": kind, "cluster": "conformance-prod"}),
                "stages[0].target",
            ),
            (
                json!({"type": kind, "cluster": "conformance-prod", "target": "newest_asg"}),
                "stages[0].target",
            ),
            (
                json!({"type": kind, "serverGroupName": "conformance-prod"}),
                "stages[0].serverGroupName",
            ),
            (
                json!({"type": kind, "cluster": "Bad_Cluster", "target": "oldest_asg_dynamic"}),
                "stages[0].cluster",
            ),
        ]
    }

    #[tokio::test]
    async fn enable_conforms() {
        let stage = json!({"type": "enableServerGroup", "cluster": "conformance-prod", "target": "oldest_asg_dynamic"});
        op_conforms(
            &[("1", 1, false), ("2", 1, true)],
            stage.clone(),
            stage,
            target_invalid("enableServerGroup"),
        )
        .await;
    }

    #[tokio::test]
    async fn disable_conforms() {
        let stage = json!({"type": "disableServerGroup", "cluster": "conformance-prod", "target": "oldest_asg_dynamic"});
        op_conforms(
            &[("1", 1, true), ("2", 1, true)],
            stage.clone(),
            stage,
            target_invalid("disableServerGroup"),
        )
        .await;
    }

    #[tokio::test]
    async fn destroy_conforms() {
        let groups: Vec<(&str, u32, bool)> = (0..8).map(|_| ("1", 1, false)).collect();
        let stage = json!({"type": "destroyServerGroup", "cluster": "conformance-prod", "target": "oldest_asg_dynamic"});
        let fake = op_conforms(
            &groups,
            stage.clone(),
            stage,
            target_invalid("destroyServerGroup"),
        )
        .await;
        // succeeds, its restart and the resumed run each destroyed one; the canceled and
        // timed-out runs were stopped while listing.
        assert_eq!(
            fake.server_group_names().len(),
            5,
            "{:?}",
            fake.server_group_names()
        );
    }

    #[tokio::test]
    async fn resize_conforms() {
        let stage = json!({"type": "resizeServerGroup", "serverGroupName": "conformance-prod-v000", "capacity": {"desired": 2, "max": 4}});
        let mut invalid = target_invalid("resizeServerGroup");
        invalid.extend([
            (json!({"type": "resizeServerGroup", "serverGroupName": "conformance-prod-v000"}), "stages[0].capacity"),
            (json!({"type": "resizeServerGroup", "serverGroupName": "conformance-prod-v000", "capacity": {"min": 3, "max": 2}}), "stages[0].capacity.min"),
            (json!({"type": "resizeServerGroup", "serverGroupName": "conformance-prod-v000", "action": "scale_up"}), "stages[0].scaleNum"),
            (json!({"type": "resizeServerGroup", "serverGroupName": "conformance-prod-v000", "action": "scale_up", "scalePct": 10, "scaleNum": 1}), "stages[0].scalePct"),
            (json!({"type": "resizeServerGroup", "serverGroupName": "conformance-prod-v000", "action": "scale_sideways"}), "stages[0].action"),
        ]);
        let fake = op_conforms(&[("1", 1, true)], stage.clone(), stage, invalid).await;
        let g =
            ferry_provider::Provider::server_group(fake.as_ref(), "local", "conformance-prod-v000")
                .await
                .unwrap()
                .unwrap();
        assert_eq!((g.capacity.desired, g.capacity.max), (2, 4));
    }

    #[tokio::test]
    async fn operations_act_on_the_resolved_target() {
        let env = Env::new().await;
        env.given("prod", "1", 1, true).await;
        env.given("prod", "2", 2, true).await;
        env.fake.clear_events();
        let stage = |v: Value| {
            let mut s = v;
            s["cluster"] = json!("shop-prod");
            s
        };
        assert_succeeded(
            &env.run_stage(stage(
                json!({"type": "disableServerGroup", "target": "ancestor_asg_dynamic"}),
            ))
            .await,
        );
        // v000 is now disabled: current is v001, and the ancestor is still v000.
        assert_succeeded(
            &env.run_stage(stage(
                json!({"type": "enableServerGroup", "target": "oldest_asg_dynamic"}),
            ))
            .await,
        );
        let e = env.run_stage(stage(json!({"type": "resizeServerGroup", "target": "current_asg_dynamic", "action": "scale_up", "scalePct": 50}))).await;
        assert_succeeded(&e);
        assert_eq!(
            e.stages[0].context["op.capacity"],
            json!({"min": 0, "max": 8, "desired": 3})
        );
        assert_succeeded(
            &env.run_stage(
                json!({"type": "destroyServerGroup", "serverGroupName": "shop-prod-v000"}),
            )
            .await,
        );
        let again = env
            .run_stage(json!({"type": "destroyServerGroup", "serverGroupName": "shop-prod-v000"}))
            .await;
        assert_succeeded(&again);
        assert!(
            again.stages[0].context["op.note"]
                .as_str()
                .unwrap()
                .contains("nothing to destroy")
        );
        assert_eq!(
            env.fake.events(),
            [
                "disable shop-prod-v000",
                "enable shop-prod-v000",
                "resize shop-prod-v001 3",
                "disable shop-prod-v000",
                "destroy shop-prod-v000"
            ]
        );
        assert_eq!(env.group("shop-prod-v001").await.unwrap().healthy(), 3);
    }

    #[tokio::test]
    async fn nothing_to_resolve_fails_clearly() {
        let env = Env::new().await;
        env.given("prod", "1", 1, false).await;
        let cases = [
            (
                json!({"type": "disableServerGroup", "cluster": "shop-prod", "target": "current_asg_dynamic"}),
                "cluster shop-prod has no enabled server group",
            ),
            (
                json!({"type": "enableServerGroup", "cluster": "shop-qa", "target": "oldest_asg_dynamic"}),
                "cluster shop-qa has no server groups",
            ),
            (
                json!({"type": "resizeServerGroup", "serverGroupName": "shop-prod-v007", "capacity": {"desired": 1}}),
                "server group shop-prod-v007 does not exist",
            ),
            (
                json!({"type": "resizeServerGroup", "cluster": "shop-prod", "target": "oldest_asg_dynamic", "capacity": {"min": 9}}),
                "gives an invalid capacity",
            ),
            (
                json!({"type": "disableServerGroup", "cluster": "shop-prod", "target": "oldest_asg_dynamic", "cloudProvider": "kubernetes"}),
                "no \\\"kubernetes\\\" provider is configured",
            ),
        ];
        for (stage, want) in cases {
            let e = env.run_stage(stage.clone()).await;
            assert_eq!(e.status, Status::Terminal, "{stage}");
            assert!(
                error_of(&e).contains(want),
                "{stage}: {} lacks {want}",
                error_of(&e)
            );
        }
    }

    #[tokio::test]
    async fn enable_gives_a_zero_weight_server_group_traffic_and_waits_until_up() {
        let env = Env::new().await;
        env.fake
            .set_behavior("slow", Behavior::healthy_after(Duration::from_millis(300)));
        let g = env.given("prod", "slow", 1, false).await;
        ferry_provider::Provider::set_weight(env.fake.as_ref(), "local", &g.name, 0)
            .await
            .unwrap();
        env.fake.clear_events();
        let e = env
            .run_stage(json!({"type": "enableServerGroup", "serverGroupName": g.name}))
            .await;
        assert_succeeded(&e);
        assert_eq!(
            env.fake.events(),
            ["weight shop-prod-v000 100", "enable shop-prod-v000"]
        );
        assert!(env.group(&g.name).await.unwrap().is_up());
        // A server group that never comes up fails the stage after waitTimeoutSec.
        env.fake.set_behavior("bad", Behavior::never_healthy());
        let bad = env.given("prod", "bad", 1, false).await;
        let e = env.run_stage(json!({"type": "enableServerGroup", "serverGroupName": bad.name, "waitTimeoutSec": 1})).await;
        assert_eq!(e.status, Status::Terminal);
        assert!(
            error_of(&e)
                .contains("shop-prod-v001 did not become up within 1 s: 0 of 1 instances healthy"),
            "{}",
            error_of(&e)
        );
    }
}
