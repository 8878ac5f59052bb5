//! `setTrafficWeights`: splits a cluster's traffic between its server groups.
//!
//! `weights` maps a server group name of `cluster` or a dynamic target
//! (`current_asg_dynamic`, `ancestor_asg_dynamic`, …) to a whole percentage; the percentages
//! sum to 100. Every other enabled server group of the cluster gets weight 0, so the split is
//! exactly what was asked. A server group given a share above 0 must be enabled and have a
//! healthy instance; this is checked for all of them before any weight changes. Weights that
//! grow are set before weights that shrink, so the cluster never has a moment with no weight.
//! The plan (`op.weights`, in the order applied) is recorded before it is applied.

use crate::ops::{OP_ACCOUNT, OP_PROVIDER, failed, now_step, phase, set_phase};
use crate::providers::Providers;
use crate::spec::{self, Location};
use crate::state;
use crate::target::{Target, application_of, cluster_groups, resolve};
use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use ferry_provider::Moniker;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One entry of `weights`: what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightKey {
    /// A dynamic target.
    Target(Target),
    /// A server group name.
    Name(String),
}

/// `setTrafficWeights`' configuration.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// Provider and account.
    pub location: Location,
    /// `application`.
    pub application: Option<String>,
    /// `cluster`.
    pub cluster: String,
    /// `weights`, in the order written.
    pub weights: Vec<(WeightKey, u32)>,
}

/// The `setTrafficWeights` stage type.
pub struct SetTrafficWeights {
    /// Providers.
    pub providers: Providers,
}

#[async_trait]
impl TypedStage for SetTrafficWeights {
    type Config = TrafficConfig;
    const TYPE: &'static str = "setTrafficWeights";
    const TASK: &'static str = "setTrafficWeights";

    fn config(f: &mut Fields<'_>) -> Option<TrafficConfig> {
        let at = spec::cluster_ref(f);
        let cluster = at.as_ref().map(|(_, _, c)| c.clone());
        if f.get("weights").is_none() {
            f.problem(
                "weights",
                "is required: {serverGroupName or target: percent}, summing to 100",
            );
            return None;
        }
        let obj = f.opt_object("weights")?;
        let mut weights = Vec::new();
        let mut complete = true;
        let mut sum: u64 = 0;
        for (k, v) in obj {
            let path = format!("weights.{k}");
            let key = if let Some(t) = Target::parse(k) {
                Some(WeightKey::Target(t))
            } else if ferry_core::looks_like_expression(k) {
                None
            } else {
                match Moniker::parse(k) {
                    Ok(m) if m.sequence.is_some() => {
                        if let Some(c) = &cluster
                            && m.cluster_name() != *c
                        {
                            f.problem(&path, format!("server group {k} is not in cluster {c}"));
                            None
                        } else {
                            Some(WeightKey::Name(k.clone()))
                        }
                    }
                    _ => {
                        f.problem(
                            &path,
                            format!(
                                "\"{k}\" is neither a server group name nor a target ({})",
                                Target::names()
                            ),
                        );
                        None
                    }
                }
            };
            let weight = match v {
                Value::Number(n) => match n.as_u64() {
                    Some(w) if w <= 100 => Some(w as u32),
                    _ => {
                        f.problem(
                            &path,
                            format!("must be a whole percentage from 0 to 100, found {n}"),
                        );
                        None
                    }
                },
                Value::String(s) if ferry_core::looks_like_expression(s) => {
                    if !f.is_lenient() {
                        f.problem(
                            &path,
                            format!("the expression `{s}` could not be evaluated"),
                        );
                    }
                    None
                }
                Value::String(s) => match s.trim().parse::<u32>() {
                    Ok(w) if w <= 100 => Some(w),
                    _ => {
                        f.problem(
                            &path,
                            format!("must be a whole percentage from 0 to 100, found \"{s}\""),
                        );
                        None
                    }
                },
                other => {
                    f.problem(
                        &path,
                        format!(
                            "must be a percentage, found {}",
                            ferry_core::fields::kind(other)
                        ),
                    );
                    None
                }
            };
            match (key, weight) {
                (Some(k), Some(w)) => {
                    sum += u64::from(w);
                    weights.push((k, w));
                }
                _ => complete = false,
            }
        }
        if obj.is_empty() {
            f.problem("weights", "must name at least one server group");
            return None;
        }
        if complete && sum != 100 {
            f.problem(
                "weights",
                format!("the percentages must sum to 100, not {sum}"),
            );
            return None;
        }
        let (location, application, cluster) = at?;
        complete.then_some(TrafficConfig {
            location,
            application,
            cluster,
            weights,
        })
    }

    async fn step(&self, c: &TrafficConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let provider = match self
            .providers
            .get(c.location.provider.as_deref(), &c.location.account)
        {
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
            let mut wanted: BTreeMap<String, u32> = BTreeMap::new();
            for (key, w) in &c.weights {
                let g = match key {
                    WeightKey::Target(t) => match resolve(&c.cluster, &groups, *t) {
                        Ok(g) => g,
                        Err(e) => return failed(e.to_string()),
                    },
                    WeightKey::Name(n) => match groups.iter().find(|g| &g.name == n) {
                        Some(g) => g,
                        None => {
                            return failed(format!(
                                "server group {n} does not exist in cluster {}",
                                c.cluster
                            ));
                        }
                    },
                };
                if wanted.insert(g.name.clone(), *w).is_some() {
                    return failed(format!(
                        "{} is named twice in weights (directly or through a target)",
                        g.name
                    ));
                }
                if *w > 0 && !g.enabled {
                    return failed(format!(
                        "{} is disabled; enable it before giving it traffic",
                        g.name
                    ));
                }
                if *w > 0 && g.healthy() == 0 {
                    return failed(format!(
                        "{} has no healthy instance to take {w}% of the traffic",
                        g.name
                    ));
                }
            }
            let mut plan: Vec<(String, u32, bool)> = Vec::new();
            for g in &groups {
                let target = match wanted.get(&g.name) {
                    Some(w) => *w,
                    None if g.enabled => 0,
                    None => continue,
                };
                plan.push((g.name.clone(), target, target > g.weight));
            }
            // Growing weights first.
            plan.sort_by_key(|(_, _, grows)| !*grows);
            let plan: Vec<Value> = plan.into_iter().map(|(n, w, _)| json!([n, w])).collect();
            ctx.context.insert("op.weights".into(), Value::Array(plan));
            ctx.context.insert(OP_ACCOUNT.into(), json!(account));
            ctx.context.insert(
                OP_PROVIDER.into(),
                json!(
                    self.providers
                        .kind_or_default(c.location.provider.as_deref())
                ),
            );
            set_phase(ctx, "act");
            return Ok(now_step());
        }
        let plan: Vec<(String, u32)> = state::get(&ctx.context, "op.weights").unwrap_or_default();
        for (name, w) in &plan {
            if let Err(e) = provider.set_weight(account, name, *w).await {
                return failed(format!("could not set the weight of {name} to {w}: {e}"));
            }
        }
        Ok(Step::Succeeded)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{Env, assert_succeeded, error_of, op_conforms};
    use ferry_core::Status;
    use serde_json::json;

    #[tokio::test]
    async fn set_traffic_weights_conforms() {
        let stage = json!({"type": "setTrafficWeights", "cluster": "conformance-prod",
            "weights": {"current_asg_dynamic": 90, "conformance-prod-v000": 10}});
        op_conforms(
            &[("1", 1, true), ("2", 1, true)],
            stage.clone(),
            stage,
            vec![
                (json!({"type": "setTrafficWeights", "cluster": "conformance-prod"}), "stages[0].weights"),
                (json!({"type": "setTrafficWeights", "cluster": "conformance-prod", "weights": {"current_asg_dynamic": 60, "ancestor_asg_dynamic": 30}}), "stages[0].weights"),
                (json!({"type": "setTrafficWeights", "cluster": "conformance-prod", "weights": {"current_asg_dynamic": 101}}), "stages[0].weights.current_asg_dynamic"),
                (json!({"type": "setTrafficWeights", "cluster": "conformance-prod", "weights": {"newest": 100}}), "stages[0].weights.newest"),
                (json!({"type": "setTrafficWeights", "cluster": "conformance-prod", "weights": {"conformance-qa-v001": 100}}), "stages[0].weights.conformance-qa-v001"),
                (json!({"type": "setTrafficWeights", "weights": {"current_asg_dynamic": 100}}), "stages[0].cluster"),
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn weights_split_the_cluster_growing_ones_first() {
        let env = Env::new().await;
        env.given("prod", "1", 1, true).await;
        env.given("prod", "2", 1, true).await;
        env.given("prod", "3", 1, true).await;
        env.fake.clear_events();
        let e = env
            .run_stage(json!({"type": "setTrafficWeights", "cluster": "shop-prod",
                "weights": {"current_asg_dynamic": 80, "shop-prod-v001": 20}}))
            .await;
        assert_succeeded(&e);
        // The unnamed enabled server group gets 0.
        assert_eq!(
            env.fake.serving("shop-prod"),
            vec![
                ("shop-prod-v000".to_string(), 0),
                ("shop-prod-v001".to_string(), 20),
                ("shop-prod-v002".to_string(), 80)
            ]
        );
        env.fake.clear_events();
        let e = env
            .run_stage(json!({"type": "setTrafficWeights", "cluster": "shop-prod",
                "weights": {"current_asg_dynamic": 0, "shop-prod-v001": 50, "oldest_asg_dynamic": 50}}))
            .await;
        assert_succeeded(&e);
        assert_eq!(
            env.fake.events(),
            [
                "weight shop-prod-v000 50",
                "weight shop-prod-v001 50",
                "weight shop-prod-v002 0"
            ]
        );
        assert!(env.fake.traffic_gaps().is_empty());
    }

    #[tokio::test]
    async fn weights_for_a_disabled_or_doubly_named_group_change_nothing() {
        let env = Env::new().await;
        env.given("prod", "1", 1, false).await;
        env.given("prod", "2", 1, true).await;
        env.fake.clear_events();
        let cases = [
            (
                json!({"shop-prod-v000": 50, "current_asg_dynamic": 50}),
                "shop-prod-v000 is disabled",
            ),
            (
                json!({"shop-prod-v001": 50, "current_asg_dynamic": 50}),
                "shop-prod-v001 is named twice",
            ),
            (
                json!({"shop-prod-v009": 100}),
                "shop-prod-v009 does not exist",
            ),
        ];
        for (weights, want) in cases {
            let e = env.run_stage(json!({"type": "setTrafficWeights", "cluster": "shop-prod", "weights": weights})).await;
            assert_eq!(e.status, Status::Terminal);
            assert!(error_of(&e).contains(want), "{} lacks {want}", error_of(&e));
        }
        assert!(env.fake.events().is_empty(), "{:?}", env.fake.events());
    }
}
