//! The cluster-wide stages `scaleDownCluster` and `shrinkCluster`.
//!
//! Both rank the cluster's server groups, keep the first N, and act on the rest:
//! - ranking: newest first, or (with `preferLargerOverNewer` / `retainLargerOverNewer`) most
//!   desired instances first, the newer on a tie;
//! - `scaleDownCluster` keeps `remainingFullSizeServerGroups` (default 1) and resizes the rest
//!   to 0 instances; enabled ones only with `allowScaleDownActive`;
//! - `shrinkCluster` keeps `shrinkToSize` (default 1) and disables (draining) and destroys the
//!   rest; enabled ones only with `allowDeleteActive`.
//!
//! The plan is computed once and recorded (`op.plan`, and `op.spared` for enabled server groups
//! left alone) before anything is changed, so a restart finishes the same plan.

use crate::ops::{
    OP_ACCOUNT, OP_PROVIDER, disable_and_destroy, failed, now_step, phase, set_phase,
};
use crate::providers::Providers;
use crate::spec::{self, Location};
use crate::state;
use crate::target::{application_of, cluster_groups};
use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use ferry_provider::{Capacity, ServerGroup};
use serde_json::json;

/// The configuration of `scaleDownCluster` and `shrinkCluster`.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Provider and account.
    pub location: Location,
    /// `application`.
    pub application: Option<String>,
    /// `cluster`.
    pub cluster: String,
    /// How many server groups to keep.
    pub keep: u32,
    /// Rank by size before age.
    pub prefer_larger: bool,
    /// Whether enabled server groups may be acted on.
    pub allow_active: bool,
}

fn cluster_config(
    f: &mut Fields<'_>,
    keep_key: &str,
    larger_key: &str,
    active_key: &str,
) -> Option<ClusterConfig> {
    let at = spec::cluster_ref(f);
    let keep = spec::opt_u32_in(f, keep_key, 0, 1000).unwrap_or(1);
    let prefer_larger = f.bool_or(larger_key, false);
    let allow_active = f.bool_or(active_key, false);
    let (location, application, cluster) = at?;
    Some(ClusterConfig {
        location,
        application,
        cluster,
        keep,
        prefer_larger,
        allow_active,
    })
}

/// Splits the cluster (oldest first) into (kept, acted on, spared because enabled).
pub fn plan(groups: &[ServerGroup], c: &ClusterConfig) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut ranked: Vec<(usize, &ServerGroup)> = groups.iter().enumerate().collect();
    ranked.sort_by(|(ia, a), (ib, b)| {
        if c.prefer_larger {
            b.capacity.desired.cmp(&a.capacity.desired).then(ib.cmp(ia))
        } else {
            ib.cmp(ia)
        }
    });
    let (mut kept, mut act, mut spared) = (Vec::new(), Vec::new(), Vec::new());
    for (n, (_, g)) in ranked.into_iter().enumerate() {
        if n < c.keep as usize {
            kept.push(g.name.clone());
        } else if g.enabled && !c.allow_active {
            spared.push(g.name.clone());
        } else {
            act.push(g.name.clone());
        }
    }
    (kept, act, spared)
}

/// What the stage does to each planned server group.
#[derive(Clone, Copy)]
enum Action {
    ScaleDown,
    Destroy,
}

async fn run(
    providers: &Providers,
    c: &ClusterConfig,
    ctx: &mut StageCtx,
    action: Action,
) -> Result<Step, StageError> {
    let provider = match providers.get(c.location.provider.as_deref(), &c.location.account) {
        Ok(p) => p,
        Err(e) => return failed(e.to_string()),
    };
    let account = &c.location.account;
    if phase(ctx).is_none() {
        let app = application_of(
            c.application.as_deref(),
            &c.cluster,
            &ctx.execution.application,
        );
        let groups = match cluster_groups(provider.as_ref(), &app, account, &c.cluster).await {
            Ok(g) => g,
            Err(e) => return failed(format!("could not list cluster {}: {e}", c.cluster)),
        };
        let (kept, act, spared) = plan(&groups, c);
        ctx.context.insert("op.kept".into(), json!(kept));
        ctx.context.insert("op.plan".into(), json!(act));
        ctx.context.insert("op.spared".into(), json!(spared));
        ctx.context.insert(OP_ACCOUNT.into(), json!(account));
        ctx.context.insert(
            OP_PROVIDER.into(),
            json!(providers.kind_or_default(c.location.provider.as_deref())),
        );
        set_phase(ctx, "act");
        return Ok(now_step());
    }
    let todo: Vec<String> = state::get(&ctx.context, "op.plan").unwrap_or_default();
    for name in &todo {
        let r = match action {
            Action::Destroy => disable_and_destroy(provider.as_ref(), account, name).await,
            Action::ScaleDown => match provider.server_group(account, name).await {
                Ok(Some(g)) if g.capacity.desired == 0 => Ok(()),
                Ok(Some(g)) => provider
                    .resize(
                        account,
                        name,
                        Capacity {
                            min: 0,
                            max: g.capacity.max,
                            desired: 0,
                        },
                    )
                    .await
                    .map_err(|e| format!("could not resize {name} to 0: {e}")),
                Ok(None) => Ok(()),
                Err(e) => Err(format!("could not read {name}: {e}")),
            },
        };
        if let Err(e) = r {
            return failed(e);
        }
    }
    Ok(Step::Succeeded)
}

/// `scaleDownCluster`.
pub struct ScaleDownCluster {
    /// Providers.
    pub providers: Providers,
}

#[async_trait]
impl TypedStage for ScaleDownCluster {
    type Config = ClusterConfig;
    const TYPE: &'static str = "scaleDownCluster";
    const TASK: &'static str = "scaleDownCluster";

    fn config(f: &mut Fields<'_>) -> Option<ClusterConfig> {
        cluster_config(
            f,
            "remainingFullSizeServerGroups",
            "preferLargerOverNewer",
            "allowScaleDownActive",
        )
    }

    async fn step(&self, c: &ClusterConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        run(&self.providers, c, ctx, Action::ScaleDown).await
    }
}

/// `shrinkCluster`.
pub struct ShrinkCluster {
    /// Providers.
    pub providers: Providers,
}

#[async_trait]
impl TypedStage for ShrinkCluster {
    type Config = ClusterConfig;
    const TYPE: &'static str = "shrinkCluster";
    const TASK: &'static str = "shrinkCluster";

    fn config(f: &mut Fields<'_>) -> Option<ClusterConfig> {
        cluster_config(
            f,
            "shrinkToSize",
            "retainLargerOverNewer",
            "allowDeleteActive",
        )
    }

    async fn step(&self, c: &ClusterConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        run(&self.providers, c, ctx, Action::Destroy).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Env, assert_succeeded, op_conforms};

    #[tokio::test]
    async fn scale_down_cluster_conforms() {
        let stage = json!({"type": "scaleDownCluster", "cluster": "conformance-prod", "remainingFullSizeServerGroups": 1, "allowScaleDownActive": true});
        op_conforms(
            &[("1", 1, true), ("2", 1, true)],
            stage.clone(),
            stage,
            vec![
                (json!({"type": "scaleDownCluster"}), "stages[0].cluster"),
                (json!({"type": "scaleDownCluster", "cluster": "conformance-prod", "remainingFullSizeServerGroups": -1}), "stages[0].remainingFullSizeServerGroups"),
                (json!({"type": "scaleDownCluster", "cluster": "conformance-prod", "allowScaleDownActive": "yes"}), "stages[0].allowScaleDownActive"),
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn shrink_cluster_conforms() {
        let groups: Vec<(&str, u32, bool)> = (0..6).map(|_| ("1", 1, false)).collect();
        let stage =
            json!({"type": "shrinkCluster", "cluster": "conformance-prod", "shrinkToSize": 1});
        op_conforms(
            &groups,
            stage.clone(),
            stage,
            vec![
                (json!({"type": "shrinkCluster", "cluster": "conformance-prod-v001"}), "stages[0].cluster"),
                (json!({"type": "shrinkCluster", "cluster": "conformance-prod", "shrinkToSize": "two"}), "stages[0].shrinkToSize"),
            ],
        )
        .await;
    }

    fn group(seq: u32, desired: u32, enabled: bool) -> ServerGroup {
        let mut s = crate::testutil::spec("prod", "1", desired, enabled);
        s.moniker = s.moniker.with_sequence(seq);
        ServerGroup {
            name: s.moniker.server_group_name(seq),
            account: s.account,
            provider: "host".into(),
            moniker: s.moniker,
            capacity: s.capacity,
            artifact: s.artifact,
            health_check: s.health_check,
            load_balancers: vec![],
            enabled,
            weight: 100,
            created_at: i64::from(seq),
            deployed_by: "t".into(),
            execution_id: None,
            instances: vec![],
        }
    }

    #[test]
    fn plans_rank_by_age_or_size() {
        let groups = [
            group(0, 5, false),
            group(1, 1, false),
            group(2, 2, true),
            group(3, 1, true),
        ];
        let config = |keep, prefer_larger, allow_active| ClusterConfig {
            location: Location {
                provider: None,
                account: "local".into(),
            },
            application: None,
            cluster: "shop-prod".into(),
            keep,
            prefer_larger,
            allow_active,
        };
        let names = |v: &[&str]| {
            v.iter()
                .map(|s| format!("shop-prod-{s}"))
                .collect::<Vec<_>>()
        };
        // (keep, larger first, allow active) -> (kept, acted on, spared)
        let table = [
            (
                (1, false, false),
                (names(&["v003"]), names(&["v001", "v000"]), names(&["v002"])),
            ),
            (
                (1, false, true),
                (names(&["v003"]), names(&["v002", "v001", "v000"]), vec![]),
            ),
            (
                (1, true, false),
                (names(&["v000"]), names(&["v001"]), names(&["v002", "v003"])),
            ),
            (
                (2, true, true),
                (names(&["v000", "v002"]), names(&["v003", "v001"]), vec![]),
            ),
            (
                (0, false, false),
                (vec![], names(&["v001", "v000"]), names(&["v003", "v002"])),
            ),
            (
                (9, false, false),
                (names(&["v003", "v002", "v001", "v000"]), vec![], vec![]),
            ),
        ];
        for ((keep, larger, active), want) in table {
            assert_eq!(
                plan(&groups, &config(keep, larger, active)),
                want,
                "keep {keep}, larger {larger}, active {active}"
            );
        }
    }

    #[tokio::test]
    async fn scale_down_cluster_keeps_the_newest_full_size_and_spares_active_ones() {
        let env = Env::new().await;
        env.given("prod", "1", 2, false).await;
        env.given("prod", "2", 2, true).await;
        env.given("prod", "3", 2, true).await;
        env.fake.clear_events();
        let e = env.run_stage(json!({"type": "scaleDownCluster", "cluster": "shop-prod", "remainingFullSizeServerGroups": 1})).await;
        assert_succeeded(&e);
        assert_eq!(env.fake.events(), ["resize shop-prod-v000 0"]);
        assert_eq!(e.stages[0].context["op.spared"], json!(["shop-prod-v001"]));
        let e = env
            .run_stage(json!({"type": "scaleDownCluster", "cluster": "shop-prod", "remainingFullSizeServerGroups": 1, "allowScaleDownActive": true}))
            .await;
        assert_succeeded(&e);
        assert_eq!(
            env.fake.events(),
            ["resize shop-prod-v000 0", "resize shop-prod-v001 0"]
        );
        assert_eq!(
            env.fake.serving("shop-prod"),
            vec![("shop-prod-v002".to_string(), 100)]
        );
    }

    #[tokio::test]
    async fn shrink_cluster_destroys_all_but_the_kept_ones() {
        let env = Env::new().await;
        env.given("prod", "1", 5, false).await;
        env.given("prod", "2", 1, false).await;
        env.given("prod", "3", 1, false).await;
        env.given("prod", "4", 1, true).await;
        env.fake.clear_events();
        let e = env
            .run_stage(json!({"type": "shrinkCluster", "cluster": "shop-prod", "shrinkToSize": 1, "retainLargerOverNewer": true}))
            .await;
        assert_succeeded(&e);
        // v000 is the largest and kept; v003 is enabled and spared; the rest go.
        assert_eq!(
            env.fake.events(),
            [
                "disable shop-prod-v002",
                "destroy shop-prod-v002",
                "disable shop-prod-v001",
                "destroy shop-prod-v001"
            ]
        );
        let e = env
            .run_stage(json!({"type": "shrinkCluster", "cluster": "shop-prod", "shrinkToSize": 1, "allowDeleteActive": true}))
            .await;
        assert_succeeded(&e);
        assert_eq!(env.fake.server_group_names(), ["shop-prod-v003"]);
    }
}
