//! `rollbackServerGroup`: moves traffic back from a server group to an older one.
//!
//! - `rollbackType: EXPLICIT` with `rollbackServerGroupName` (the one to leave) and
//!   `restoreServerGroupName` (the one to go back to), at the top level or inside
//!   `rollbackContext` as Spinnaker writes them.
//! - `rollbackType: PREVIOUS_IMAGE` (or `AUTOMATIC`): in `cluster`, leave the current server
//!   group (`current_asg_dynamic`, or `serverGroupName`) for the newest older one that runs
//!   another artifact version (the newest older one when all run the same version). Unlike
//!   Spinnaker, no new server group is deployed: the previous one is re-enabled.
//! - `rollbackType: PREVIOUS_SERVER_GROUP` (Ferry's own): the same, but always to the newest
//!   older server group, whatever it runs. This is what `ferry rollback` and the API's
//!   `POST /api/v1/serverGroups/{account}/{name}/rollback` run.
//!
//! Steps, each recorded in `op.phase`: resolve both server groups once (`op.rollback`,
//! `op.restore`); resize the restore server group to the rolled-back one's capacity when it
//! has fewer instances, give it weight 100 if it had 0, enable it; wait until it is up
//! (`waitTimeoutSec`, default 300); only then disable the rolled-back one. If the restore
//! server group never becomes up, the stage fails and the rolled-back one keeps serving (the
//! restore one is disabled again if it was disabled before).

use crate::health::{Readiness, describe, readiness};
use crate::ops::{
    DEFAULT_WAIT_TIMEOUT_SEC, OP_ACCOUNT, OP_PHASE, OP_PROVIDER, OP_WAIT, failed, now_step, phase,
    set_phase,
};
use crate::providers::Providers;
use crate::spec::{self, Location};
use crate::state;
use crate::target::{Target, application_of, cluster_groups, resolve};
use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_core::now_millis;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use ferry_provider::{Capacity, Moniker, ServerGroup};
use serde_json::json;

/// Which server groups a rollback moves between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackKind {
    /// `EXPLICIT`.
    Explicit {
        /// `rollbackServerGroupName`: the one to leave.
        rollback: String,
        /// `restoreServerGroupName`: the one to go back to.
        restore: String,
    },
    /// `PREVIOUS_IMAGE` / `AUTOMATIC`: from the current (or named) server group to the newest
    /// older one running another artifact version (the newest older one if all run the same).
    Previous {
        /// `serverGroupName`: the one to leave (default: the cluster's current one).
        from: Option<String>,
    },
    /// `PREVIOUS_SERVER_GROUP`: from the current (or named) server group to the newest older
    /// one, whatever it runs.
    PreviousServerGroup {
        /// `serverGroupName`: the one to leave (default: the cluster's current one).
        from: Option<String>,
    },
}

/// `rollbackServerGroup`'s configuration.
#[derive(Debug, Clone)]
pub struct RollbackConfig {
    /// Provider and account.
    pub location: Location,
    /// `application`.
    pub application: Option<String>,
    /// The cluster (from the names when explicit).
    pub cluster: String,
    /// What to roll back.
    pub kind: RollbackKind,
    /// `waitTimeoutSec`.
    pub wait_timeout_sec: u64,
}

/// The `rollbackServerGroup` stage type.
pub struct RollbackServerGroup {
    /// Providers.
    pub providers: Providers,
}

fn checked_name(f: &mut Fields<'_>, key: &str) -> Option<String> {
    let v = spec::opt_string(f, &[key])?;
    if spec::unresolved(f, key, &v) {
        return None;
    }
    if !matches!(Moniker::parse(&v), Ok(m) if m.sequence.is_some()) {
        f.problem(
            key,
            format!("\"{v}\" is not a server group name (app-stack-detail-vNNN)"),
        );
        return None;
    }
    Some(v)
}

/// A server group name at `key`, at the top level or inside `rollbackContext`.
fn named(f: &mut Fields<'_>, key: &str, required: bool) -> Option<String> {
    if f.get(key).is_some() {
        return checked_name(f, key);
    }
    if f.get("rollbackContext").and_then(|c| c.get(key)).is_some() {
        let mut rc = f.child("rollbackContext")?;
        return checked_name(&mut rc, key);
    }
    if required {
        f.problem(key, "is required for an EXPLICIT rollback");
    }
    None
}

fn has_named(f: &Fields<'_>, key: &str) -> bool {
    f.get(key).is_some() || f.get("rollbackContext").and_then(|c| c.get(key)).is_some()
}

fn cluster_of(name: &str) -> String {
    Moniker::parse(name)
        .map(|m| m.cluster_name())
        .unwrap_or_default()
}

#[async_trait]
impl TypedStage for RollbackServerGroup {
    type Config = RollbackConfig;
    const TYPE: &'static str = "rollbackServerGroup";
    const TASK: &'static str = "rollbackServerGroup";

    fn config(f: &mut Fields<'_>) -> Option<RollbackConfig> {
        let location = spec::location(f);
        let application = spec::application(f);
        let wait_timeout_sec =
            spec::seconds(f, "waitTimeoutSec", 1).unwrap_or(DEFAULT_WAIT_TIMEOUT_SEC);
        // (explicit, any version)
        let (explicit, any_version) = match f.opt_str("rollbackType").as_deref() {
            Some(t) if spec::unresolved(f, "rollbackType", t) => return None,
            Some("EXPLICIT") => (true, false),
            None => (has_named(f, "rollbackServerGroupName"), false),
            Some("PREVIOUS_IMAGE") | Some("AUTOMATIC") => (false, false),
            Some("PREVIOUS_SERVER_GROUP") => (false, true),
            Some(other) => {
                f.problem("rollbackType", format!("unknown rollbackType \"{other}\"; use EXPLICIT, PREVIOUS_IMAGE, AUTOMATIC or PREVIOUS_SERVER_GROUP"));
                return None;
            }
        };
        if explicit {
            let rollback = named(f, "rollbackServerGroupName", true);
            let restore = named(f, "restoreServerGroupName", true);
            let (rollback, restore) = (rollback?, restore?);
            if cluster_of(&rollback) != cluster_of(&restore) {
                f.problem(
                    "restoreServerGroupName",
                    format!("{restore} is not in the cluster of {rollback}"),
                );
                return None;
            }
            if rollback == restore {
                f.problem(
                    "restoreServerGroupName",
                    "must differ from rollbackServerGroupName",
                );
                return None;
            }
            return Some(RollbackConfig {
                location,
                application,
                cluster: cluster_of(&rollback),
                kind: RollbackKind::Explicit { rollback, restore },
                wait_timeout_sec,
            });
        }
        let from = checked_name(f, "serverGroupName");
        let cluster = match (spec::opt_string(f, &["cluster"]), &from) {
            (Some(c), _) => spec::cluster_name(f, "cluster", c),
            (None, Some(n)) => Some(cluster_of(n)),
            (None, None) => {
                if f.get("serverGroupName").is_none() {
                    f.problem(
                        "cluster",
                        "is required (or serverGroupName, or an EXPLICIT rollback)",
                    );
                }
                None
            }
        };
        Some(RollbackConfig {
            location,
            application,
            cluster: cluster?,
            kind: if any_version {
                RollbackKind::PreviousServerGroup { from }
            } else {
                RollbackKind::Previous { from }
            },
            wait_timeout_sec,
        })
    }

    async fn step(&self, c: &RollbackConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        if phase(ctx).is_none() {
            return self.resolve(c, ctx).await;
        }
        let (Some(account), Some(rollback), Some(restore)) = (
            state::get::<String>(&ctx.context, OP_ACCOUNT),
            state::get::<String>(&ctx.context, "op.rollback"),
            state::get::<String>(&ctx.context, "op.restore"),
        ) else {
            return failed("the rollback's server groups were not recorded");
        };
        let kind: Option<String> = state::get(&ctx.context, OP_PROVIDER);
        let provider = match self.providers.get(kind.as_deref(), &account) {
            Ok(p) => p,
            Err(e) => return failed(e.to_string()),
        };
        match phase(ctx).as_deref() {
            Some("restore") => {
                if let Some(cap) = state::get::<Capacity>(&ctx.context, "op.restoreCapacity")
                    && let Err(e) = provider.resize(&account, &restore, cap).await
                {
                    return failed(format!(
                        "could not resize {restore} to {}: {e}; {rollback} keeps serving",
                        cap.desired
                    ));
                }
                if state::get::<bool>(&ctx.context, "op.restoreWeight") == Some(true)
                    && let Err(e) = provider.set_weight(&account, &restore, 100).await
                {
                    return failed(format!(
                        "could not set the weight of {restore}: {e}; {rollback} keeps serving"
                    ));
                }
                if let Err(e) = provider.enable(&account, &restore).await {
                    return failed(format!(
                        "could not enable {restore}: {e}; {rollback} keeps serving"
                    ));
                }
                set_phase(ctx, "wait");
                ctx.context.insert(OP_WAIT.into(), json!(now_millis()));
                Ok(now_step())
            }
            Some("wait") => {
                let started: i64 = state::get(&ctx.context, OP_WAIT).unwrap_or_else(now_millis);
                let overdue = now_millis() >= started + (c.wait_timeout_sec as i64) * 1000;
                let problem = match provider.server_group(&account, &restore).await {
                    Ok(Some(g)) => match readiness(&g) {
                        Readiness::Up => {
                            set_phase(ctx, "disable");
                            return Ok(now_step());
                        }
                        Readiness::CrashLooping => {
                            format!("server group {restore} is crash-looping: {}", describe(&g))
                        }
                        Readiness::Waiting if overdue => {
                            format!(
                                "server group {restore} did not become up within {} s: {}",
                                c.wait_timeout_sec,
                                describe(&g)
                            )
                        }
                        Readiness::Waiting => {
                            return Ok(Step::Running {
                                poll_after: self.providers.poll_interval(),
                            });
                        }
                    },
                    Ok(None) => format!("server group {restore} no longer exists"),
                    Err(e) if overdue => format!("server group {restore} could not be read: {e}"),
                    Err(_) => {
                        return Ok(Step::Running {
                            poll_after: self.providers.poll_interval(),
                        });
                    }
                };
                let mut error = problem;
                if state::get::<bool>(&ctx.context, "op.restoreWasEnabled") == Some(false)
                    && let Err(e) = provider.disable(&account, &restore).await
                {
                    error.push_str(&format!("; could not disable {restore} again: {e}"));
                }
                error.push_str(&format!("; rollback abandoned, {rollback} keeps serving"));
                ctx.context.insert(OP_PHASE.into(), json!("failed"));
                failed(error)
            }
            Some("disable") => match provider.disable(&account, &rollback).await {
                Ok(()) => Ok(Step::Succeeded),
                Err(e) => failed(format!(
                    "{restore} is serving, but {rollback} could not be disabled: {e}"
                )),
            },
            Some(other) => failed(format!("rollback ended in phase {other}")),
            None => failed("no phase recorded"),
        }
    }
}

impl RollbackServerGroup {
    /// Picks and records both server groups (phase `restore`).
    async fn resolve(&self, c: &RollbackConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let provider = match self
            .providers
            .get(c.location.provider.as_deref(), &c.location.account)
        {
            Ok(p) => p,
            Err(e) => return failed(e.to_string()),
        };
        let app = application_of(
            c.application.as_deref(),
            &c.cluster,
            &ctx.execution.application,
        );
        let groups =
            match cluster_groups(provider.as_ref(), &app, &c.location.account, &c.cluster).await {
                Ok(g) => g,
                Err(e) => return failed(format!("could not list cluster {}: {e}", c.cluster)),
            };
        let find = |name: &str| -> Result<&ServerGroup, String> {
            groups.iter().find(|g| g.name == name).ok_or_else(|| {
                format!(
                    "server group {name} does not exist in account {}",
                    c.location.account
                )
            })
        };
        let picked = match &c.kind {
            RollbackKind::Explicit { rollback, restore } => {
                find(rollback).and_then(|r| Ok((r, find(restore)?)))
            }
            RollbackKind::Previous { from } | RollbackKind::PreviousServerGroup { from } => {
                let any_version = matches!(c.kind, RollbackKind::PreviousServerGroup { .. });
                let from = match from {
                    Some(n) => find(n),
                    None => {
                        resolve(&c.cluster, &groups, Target::Current).map_err(|e| e.to_string())
                    }
                };
                from.and_then(|r| {
                    let older: Vec<&ServerGroup> =
                        groups.iter().take_while(|g| g.name != r.name).collect();
                    older
                        .iter()
                        .rev()
                        .find(|g| !any_version && g.artifact.version != r.artifact.version)
                        .or(older.last())
                        .map(|s| (r, *s))
                        .ok_or_else(|| {
                            format!(
                                "cluster {} has no server group older than {} to roll back to",
                                c.cluster, r.name
                            )
                        })
                })
            }
        };
        let (rollback, restore) = match picked {
            Ok(x) => x,
            Err(e) => return failed(e),
        };
        ctx.context
            .insert("op.rollback".into(), json!(rollback.name));
        ctx.context.insert("op.restore".into(), json!(restore.name));
        ctx.context
            .insert(OP_ACCOUNT.into(), json!(c.location.account));
        ctx.context.insert(
            OP_PROVIDER.into(),
            json!(
                self.providers
                    .kind_or_default(c.location.provider.as_deref())
            ),
        );
        ctx.context
            .insert("op.restoreWasEnabled".into(), json!(restore.enabled));
        ctx.context
            .insert("op.restoreWeight".into(), json!(restore.weight == 0));
        if restore.capacity.desired < rollback.capacity.desired {
            state::put(&mut ctx.context, "op.restoreCapacity", &rollback.capacity);
        }
        set_phase(ctx, "restore");
        Ok(now_step())
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{Env, assert_succeeded, error_of, op_conforms};
    use ferry_core::Status;
    use ferry_provider::fake::Behavior;
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test]
    async fn rollback_conforms() {
        let stage = json!({"type": "rollbackServerGroup", "rollbackType": "EXPLICIT", "rollbackContext": {
            "rollbackServerGroupName": "conformance-prod-v001", "restoreServerGroupName": "conformance-prod-v000"}});
        op_conforms(
            &[("1", 1, false), ("2", 1, true)],
            stage.clone(),
            stage,
            vec![
                (json!({"type": "rollbackServerGroup", "rollbackType": "EXPLICIT"}), "stages[0].rollbackServerGroupName"),
                (
                    json!({"type": "rollbackServerGroup", "rollbackServerGroupName": "conformance-prod-v001"}),
                    "stages[0].restoreServerGroupName",
                ),
                (
                    json!({"type": "rollbackServerGroup", "rollbackServerGroupName": "conformance-prod-v001", "restoreServerGroupName": "conformance-qa-v000"}),
                    "stages[0].restoreServerGroupName",
                ),
                (json!({"type": "rollbackServerGroup", "rollbackType": "SIDEWAYS", "cluster": "conformance-prod"}), "stages[0].rollbackType"),
                (json!({"type": "rollbackServerGroup", "rollbackType": "PREVIOUS_IMAGE"}), "stages[0].cluster"),
                (json!({"type": "rollbackServerGroup", "rollbackType": "PREVIOUS_SERVER_GROUP"}), "stages[0].cluster"),
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn explicit_rollback_restores_capacity_and_traffic_before_disabling() {
        let env = Env::new().await;
        env.fake
            .set_behavior("1", Behavior::healthy_after(Duration::from_millis(300)));
        env.given("prod", "1", 1, false).await;
        env.given("prod", "2", 3, true).await;
        env.fake.clear_events();
        let e = env
            .run_stage(json!({"type": "rollbackServerGroup", "rollbackType": "EXPLICIT",
                "rollbackServerGroupName": "shop-prod-v001", "restoreServerGroupName": "shop-prod-v000"}))
            .await;
        assert_succeeded(&e);
        assert_eq!(
            env.fake.events(),
            [
                "resize shop-prod-v000 3",
                "enable shop-prod-v000",
                "disable shop-prod-v001"
            ]
        );
        assert_eq!(
            env.fake.serving("shop-prod"),
            vec![("shop-prod-v000".to_string(), 100)]
        );
        assert!(env.fake.traffic_gaps().is_empty());
    }

    #[tokio::test]
    async fn previous_image_rollback_goes_back_to_the_previous_version() {
        let env = Env::new().await;
        env.given("prod", "1", 2, false).await;
        env.given("prod", "2", 2, false).await;
        let current = env.given("prod", "2", 2, true).await;
        // After a rolling deploy the old server group was left with weight 0.
        ferry_provider::Provider::set_weight(env.fake.as_ref(), "local", "shop-prod-v000", 0)
            .await
            .unwrap();
        env.fake.clear_events();
        let e = env
            .run_stage(json!({"type": "rollbackServerGroup", "rollbackType": "PREVIOUS_IMAGE", "cluster": "shop-prod"}))
            .await;
        assert_succeeded(&e);
        assert_eq!(e.stages[0].context["op.restore"], json!("shop-prod-v000"));
        assert_eq!(e.stages[0].context["op.rollback"], json!(current.name));
        assert_eq!(
            env.fake.events(),
            [
                "weight shop-prod-v000 100",
                "enable shop-prod-v000",
                "disable shop-prod-v002"
            ]
        );
        assert_eq!(
            env.fake.serving("shop-prod"),
            vec![("shop-prod-v000".to_string(), 100)]
        );
    }

    #[tokio::test]
    async fn previous_server_group_goes_back_one_server_group_whatever_it_runs() {
        let env = Env::new().await;
        env.given("prod", "1", 1, false).await;
        env.given("prod", "2", 1, false).await;
        env.given("prod", "2", 3, true).await;
        env.fake.clear_events();
        // PREVIOUS_IMAGE would skip v001 (same version as v002) for v000.
        let e = env
            .run_stage(
                json!({"type": "rollbackServerGroup", "rollbackType": "PREVIOUS_SERVER_GROUP",
                "serverGroupName": "shop-prod-v002", "credentials": "local"}),
            )
            .await;
        assert_succeeded(&e);
        assert_eq!(e.stages[0].context["op.restore"], json!("shop-prod-v001"));
        assert_eq!(e.stages[0].context["op.rollback"], json!("shop-prod-v002"));
        assert_eq!(
            env.fake.events(),
            [
                "resize shop-prod-v001 3",
                "enable shop-prod-v001",
                "disable shop-prod-v002"
            ]
        );
        assert_eq!(
            env.fake.serving("shop-prod"),
            vec![("shop-prod-v001".to_string(), 100)]
        );
        // The oldest has nothing to go back to.
        let e = env
            .run_stage(
                json!({"type": "rollbackServerGroup", "rollbackType": "PREVIOUS_SERVER_GROUP",
                "serverGroupName": "shop-prod-v000"}),
            )
            .await;
        assert_eq!(e.status, Status::Terminal);
        assert!(
            error_of(&e)
                .contains("cluster shop-prod has no server group older than shop-prod-v000"),
            "{}",
            error_of(&e)
        );
    }

    #[tokio::test]
    async fn a_rollback_target_that_never_comes_up_leaves_the_current_serving() {
        let env = Env::new().await;
        env.fake.set_behavior("bad", Behavior::never_healthy());
        env.given("prod", "bad", 1, false).await;
        env.given("prod", "2", 1, true).await;
        env.fake.clear_events();
        let e = env
            .run_stage(
                json!({"type": "rollbackServerGroup", "cluster": "shop-prod", "waitTimeoutSec": 1}),
            )
            .await;
        assert_eq!(e.status, Status::Terminal);
        let error = error_of(&e);
        assert!(
            error.contains("shop-prod-v000 did not become up within 1 s"),
            "{error}"
        );
        assert!(error.contains("shop-prod-v001 keeps serving"), "{error}");
        assert_eq!(
            env.fake.events(),
            ["enable shop-prod-v000", "disable shop-prod-v000"]
        );
        assert_eq!(
            env.fake.serving("shop-prod"),
            vec![("shop-prod-v001".to_string(), 100)]
        );
        // Nothing older than the oldest: a clear failure.
        let e = env
            .run_stage(json!({"type": "rollbackServerGroup", "serverGroupName": "shop-prod-v000"}))
            .await;
        assert!(
            error_of(&e).contains("no server group older than shop-prod-v000"),
            "{}",
            error_of(&e)
        );
    }
}
