//! The `rollout` stage: Argo Rollouts' canary strategy on Ferry's server groups.
//!
//! ```json
//! {"type": "rollout", "name": "Roll out",
//!  "cluster": {"account": "local", "application": "shop", "stack": "prod", "freeFormDetails": "kids",
//!              "capacity": {"min": 3, "max": 3, "desired": 3}, "loadBalancers": ["shop"],
//!              "artifact": {...}, "healthCheck": {...}},
//!  "strategy": {"canary": {
//!     "steps": [{"setWeight": 20}, {"pause": {"duration": "30s"}},
//!               {"analysis": {"templates": [{"templateName": "errors"}], "args": [{"name": "x", "value": "y"}]}},
//!               {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}],
//!     "scaleDownDelaySeconds": 30, "failedChecksLimit": 0}},
//!  "webhooks": [{"name": "load", "type": "rollout", "url": "http://…"}]}
//! ```
//!
//! The new server group (the canary) is created beside the enabled ones (the stable) with
//! weight 0 and its full capacity, and waits until healthy. Then the steps run in order:
//! - `setWeight: N` gives the canary N % of the cluster's traffic (the stable share the rest);
//! - `pause: {duration}` waits; `pause: {}` waits until promoted;
//! - `analysis` runs an analysis (stored `AnalysisTemplate`s by name, or inline `metrics`) and
//!   blocks until it ends: Successful goes on, Failed or Error aborts, Inconclusive pauses for
//!   a person (promote goes on, abort aborts).
//!
//! After the last step the canary takes all traffic, the stable server groups are disabled and,
//! after `scaleDownDelaySeconds` (default 30), resized to 0 — kept as revisions, so `undo`
//! (the rollback operation) can bring one back. An abort (a failed analysis, a failed check, a
//! `rollback` webhook, a user) gives the stable its weights back at once, then disables and
//! destroys the canary; the stage fails and the rollout is **Degraded**. `retry` is a restart
//! of the stage.
//!
//! Commands are stage input: `{"promote": true}` (next step), `{"promote": "full"}` (skip every
//! remaining step and analysis), `{"abort": true}` or `{"abort": "why"}`.
//!
//! The first rollout of a cluster (nothing serving yet) has nothing to compare against and is
//! promoted at once, as Argo Rollouts does.
//!
//! Blue/green (`strategy.blueGreen`): the new server group (the preview) is created disabled —
//! no traffic — with `previewReplicaCount` instances (default all) and waits until healthy;
//! `prePromotionAnalysis` runs against it (args `preview` and `preview-address`, the
//! `host:port` of one of its instances); then, with `autoPromotionEnabled: false` it waits to be
//! promoted, with `autoPromotionSeconds` it waits that long; it is scaled to full capacity and
//! traffic switches at once (the new one enabled, the old ones disabled, draining).
//! `postPromotionAnalysis` runs next; if it fails, the old version — still running — is switched
//! back instantly. After `scaleDownDelaySeconds` the old version is scaled to 0. The cluster's
//! load balancers are the active service; their `previewListeners` are the preview service
//! (they route to the newest server group with instances up: the preview until promotion).
//!
//! Status (output `rollout.status`): Progressing, Paused, Healthy, Degraded.

use crate::analysis::{self, AnalysisPhase, AnalysisRun};
use crate::webhook::{self, HookPayload, HookType, Webhook};
use crate::{RolloutServices, TEMPLATE_KIND};
use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_core::now_millis;
use ferry_deploy::deploy::{ClusterDeploy, DEFAULT_DEPLOY_TIMEOUT_SEC, cluster_deploy};
use ferry_deploy::health::{Readiness, describe, readiness};
use ferry_deploy::state;
use ferry_deploy::target::cluster_groups;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use ferry_provider::{Capacity, Moniker, Provider, ServerGroup, ServerGroupSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Context key of the rollout's state.
const STATE: &str = "rollout.state";
/// How often a gate (confirm webhook) is asked again.
const GATE_RETRY: Duration = Duration::from_secs(5);

/// The `rollout` stage.
pub struct Rollout {
    /// Providers, store, HTTP client and metric sources.
    pub services: RolloutServices,
}

/// One canary step.
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutStep {
    /// `setWeight: N`.
    SetWeight(u32),
    /// `pause: {duration}`; `None` waits until promoted.
    Pause(Option<Duration>),
    /// `analysis: {templates, args}` or inline `{metrics}`.
    Analysis(AnalysisStep),
}

/// An analysis step as written.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisStep {
    /// Stored `AnalysisTemplate` names.
    pub templates: Vec<String>,
    /// Inline metrics (`{metrics: [...]}`), checked when the pipeline is saved.
    pub inline: Option<Value>,
    /// `args[{name, value}]`.
    pub args: BTreeMap<String, String>,
}

/// `rollout`'s configuration.
#[derive(Debug, Clone)]
pub struct RolloutConfig {
    /// The server group to roll out.
    pub cluster: ClusterDeploy,
    /// `strategy.canary.steps`.
    pub steps: Vec<RolloutStep>,
    /// `strategy.canary.scaleDownDelaySeconds`, default 30.
    pub scale_down_delay: Duration,
    /// `strategy.canary.failedChecksLimit`: failed `rollout` webhook checks tolerated, default 0.
    pub failed_checks_limit: u32,
    /// `strategy.blueGreen`, instead of canary steps.
    pub blue_green: Option<BlueGreen>,
    /// `webhooks[]`.
    pub webhooks: Vec<Webhook>,
}

/// The rollout's status, as Argo Rollouts names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RolloutStatus {
    /// Steps are running.
    #[default]
    Progressing,
    /// Waiting: a pause, an inconclusive analysis, a gate.
    Paused,
    /// Promoted: the new version serves everything.
    Healthy,
    /// Aborted: the stable version serves; the new one was removed.
    Degraded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Phase {
    #[default]
    Start,
    Creating,
    WaitingUp,
    Steps,
    PrePromotion,
    AwaitingPromotion,
    ScalingUp,
    Switching,
    PostPromotion,
    Promoting,
    ScaleDownDelay,
    Done,
    Aborting,
    Aborted,
}

/// What the stage records in its context between steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RolloutState {
    phase: Phase,
    status: RolloutStatus,
    provider: String,
    account: String,
    application: String,
    cluster: String,
    canary: Option<String>,
    stable: Vec<String>,
    stable_weights: BTreeMap<String, u32>,
    step: usize,
    step_started: i64,
    weight: u32,
    analysis: Option<AnalysisRun>,
    /// The analysis spec in force for the current step (templates resolved when it began).
    analysis_spec: Option<Value>,
    failed_checks: u32,
    /// `host:port` of the new server group's first healthy instance.
    preview_address: Option<String>,
    /// Blue/green: the preview was given its full capacity.
    scaled_up: bool,
    up_deadline: i64,
    scale_down_at: i64,
    message: Option<String>,
    abort_reason: Option<String>,
}

fn parse_step(f: &mut Fields<'_>) -> Option<RolloutStep> {
    let keys: Vec<&str> = ["setWeight", "pause", "analysis"]
        .into_iter()
        .filter(|k| f.get(k).is_some())
        .collect();
    if keys.len() != 1 {
        f.problem(
            "",
            "each step needs exactly one of setWeight, pause or analysis",
        );
        return None;
    }
    match keys[0] {
        "setWeight" => match f.opt_u64("setWeight") {
            Some(w) if w <= 100 => Some(RolloutStep::SetWeight(w as u32)),
            Some(_) => {
                f.problem("setWeight", "must be from 0 to 100");
                None
            }
            None => None,
        },
        "pause" => {
            let mut p = f.child("pause")?;
            match p.get("duration") {
                None => Some(RolloutStep::Pause(None)),
                Some(v) => match crate::duration::parse_value(v) {
                    Some(d) => Some(RolloutStep::Pause(Some(d))),
                    None => {
                        p.problem("duration", "must be a duration such as 30s, 5m or 1h");
                        None
                    }
                },
            }
        }
        _ => analysis_ref(f, "analysis").map(RolloutStep::Analysis),
    }
}

/// Reads an analysis reference at `key`: `{templates: [{templateName}], args: [{name, value}]}`
/// and/or inline `{metrics: [...]}`.
fn analysis_ref(f: &mut Fields<'_>, key: &str) -> Option<AnalysisStep> {
    let path = f.path_of(key);
    let value = f.get(key)?.clone();
    let mut a = f.child(key)?;
    let mut templates = Vec::new();
    ferry_deploy::spec::each_element(&mut a, "templates", |t, _| {
        if let Some(name) = t.required_str("templateName") {
            templates.push(name);
        }
    });
    let mut args = BTreeMap::new();
    ferry_deploy::spec::each_element(&mut a, "args", |t, _| {
        if let (Some(name), Some(value)) = (t.required_str("name"), t.required_str("value")) {
            args.insert(name, value);
        }
    });
    let inline = if a.get("metrics").is_some() {
        if a.is_lenient() {
            let _ = analysis::parse_analysis_lenient(&value, &path, a.problems);
        } else {
            let _ = analysis::parse_analysis(&value, &path, a.problems);
        }
        Some(value.clone())
    } else {
        None
    };
    if templates.is_empty() && inline.is_none() {
        a.problem(
            "templates",
            "is required: [{templateName}] of applied AnalysisTemplates, or give metrics inline",
        );
        return None;
    }
    Some(AnalysisStep {
        templates,
        inline,
        args,
    })
}

/// `strategy.blueGreen`.
#[derive(Debug, Clone, PartialEq)]
pub struct BlueGreen {
    /// `autoPromotionEnabled` (default true): promote without a person.
    pub auto_promotion_enabled: bool,
    /// `autoPromotionSeconds`: wait this long before promoting by itself.
    pub auto_promotion_after: Option<Duration>,
    /// `prePromotionAnalysis`: runs against the preview before the switch.
    pub pre_promotion: Option<AnalysisStep>,
    /// `postPromotionAnalysis`: runs after the switch; failing switches back.
    pub post_promotion: Option<AnalysisStep>,
    /// `previewReplicaCount`: instances of the preview until promotion (default: all).
    pub preview_replicas: Option<u32>,
}

fn read_blue_green(b: &mut Fields<'_>) -> Option<BlueGreen> {
    let before = b.problems.len();
    for key in ["activeService", "previewService"] {
        if b.get(key).is_some() {
            b.problem(
                key,
                "does not apply: the cluster's load balancers are the active service, and their previewListeners the preview service",
            );
        }
    }
    let auto_promotion_enabled = b.bool_or("autoPromotionEnabled", true);
    let auto_promotion_after = b.opt_u64("autoPromotionSeconds").map(Duration::from_secs);
    let pre_promotion = analysis_ref(b, "prePromotionAnalysis");
    let post_promotion = analysis_ref(b, "postPromotionAnalysis");
    let preview_replicas = b.opt_u64("previewReplicaCount").map(|n| n.min(1000) as u32);
    (b.problems.len() == before).then_some(BlueGreen {
        auto_promotion_enabled,
        auto_promotion_after,
        pre_promotion,
        post_promotion,
        preview_replicas,
    })
}

fn read_config(f: &mut Fields<'_>) -> Option<RolloutConfig> {
    let before = f.problems.len();
    let default_timeout =
        ferry_deploy::spec::seconds(f, "deployTimeoutSec", 1).unwrap_or(DEFAULT_DEPLOY_TIMEOUT_SEC);
    let cluster = match f.child("cluster") {
        Some(mut c) => {
            if c.get("strategy").is_some() {
                c.problem(
                    "strategy",
                    "does not apply here: the rollout's strategy is the stage's `strategy`",
                );
            }
            cluster_deploy(&mut c, default_timeout)
        }
        None => {
            f.problem("cluster", "is required: the server group to roll out");
            None
        }
    };
    let mut steps = Vec::new();
    let mut scale_down_delay = Duration::from_secs(30);
    let mut failed_checks_limit = 0;
    let mut blue_green = None;
    match f.child("strategy") {
        Some(mut s) if s.get("blueGreen").is_some() => {
            if s.get("canary").is_some() {
                s.problem("canary", "give canary or blueGreen, not both");
            }
            if let Some(mut b) = s.child("blueGreen") {
                if let Some(d) = b.opt_u64("scaleDownDelaySeconds") {
                    scale_down_delay = Duration::from_secs(d);
                }
                blue_green = read_blue_green(&mut b);
            }
        }
        Some(mut s) => match s.child("canary") {
            Some(mut c) => {
                ferry_deploy::spec::each_element(&mut c, "steps", |st, _| {
                    if let Some(step) = parse_step(st) {
                        steps.push(step);
                    }
                });
                if let Some(d) = c.opt_u64("scaleDownDelaySeconds") {
                    scale_down_delay = Duration::from_secs(d);
                }
                if let Some(n) = c.opt_u64("failedChecksLimit") {
                    failed_checks_limit = n.min(u64::from(u32::MAX)) as u32;
                }
            }
            None => s.problem(
                "canary",
                "is required: {steps: [...]}, or give blueGreen: {...}",
            ),
        },
        None => f.problem(
            "strategy",
            "is required: {canary: {steps: [...]}} or {blueGreen: {...}}",
        ),
    }
    let webhooks = webhook::parse_webhooks(f);
    if f.problems.len() > before {
        return None;
    }
    Some(RolloutConfig {
        cluster: cluster?,
        steps,
        scale_down_delay,
        failed_checks_limit,
        blue_green,
        webhooks: webhooks.unwrap_or_default(),
    })
}

/// The rollout's cluster moniker, or the step failing with why it cannot be named.
fn moniker(st: &RolloutState, c: &RolloutConfig) -> Result<Moniker, Step> {
    Moniker::cluster(
        &st.application,
        c.cluster.stack.as_deref(),
        c.cluster.detail.as_deref(),
    )
    .map_err(|e| Step::Failed {
        error: e.to_string(),
    })
}

fn running(after: Duration) -> Step {
    Step::Running { poll_after: after }
}

fn now_step() -> Step {
    running(Duration::ZERO)
}

impl Rollout {
    fn payload<'a>(st: &'a RolloutState, execution_id: &'a str) -> HookPayload<'a> {
        HookPayload {
            cluster: &st.cluster,
            application: &st.application,
            phase: match st.status {
                RolloutStatus::Progressing => "Progressing",
                RolloutStatus::Paused => "Paused",
                RolloutStatus::Healthy => "Succeeded",
                RolloutStatus::Degraded => "Failed",
            },
            canary: st.canary.as_deref(),
            stable: &st.stable,
            weight: st.weight,
            execution_id,
        }
    }

    /// Gives the canary `weight` % and the stable groups the rest (in their old proportions).
    async fn set_weight(
        &self,
        provider: &dyn Provider,
        st: &mut RolloutState,
        weight: u32,
    ) -> Result<(), String> {
        let canary = st.canary.clone().unwrap_or_default();
        // Lower the side that shrinks first, so the total never overshoots.
        let stable_share = 100 - weight.min(100);
        let total: u32 = st.stable_weights.values().sum::<u32>().max(1);
        let mut stable: Vec<(String, u32)> = st
            .stable_weights
            .iter()
            .map(|(n, w)| (n.clone(), (stable_share * w).div_ceil(total).min(100)))
            .collect();
        if weight == 100 {
            stable.iter_mut().for_each(|(_, w)| *w = 0);
        }
        let canary_first = weight < st.weight;
        if canary_first {
            provider
                .set_weight(&st.account, &canary, weight)
                .await
                .map_err(|e| format!("could not set the weight of {canary} to {weight}: {e}"))?;
        }
        for (name, w) in &stable {
            provider
                .set_weight(&st.account, name, *w)
                .await
                .map_err(|e| format!("could not set the weight of {name} to {w}: {e}"))?;
        }
        if !canary_first {
            provider
                .set_weight(&st.account, &canary, weight)
                .await
                .map_err(|e| format!("could not set the weight of {canary} to {weight}: {e}"))?;
        }
        st.weight = weight;
        Ok(())
    }

    /// The analysis spec of a step: its inline metrics and every template's, merged.
    async fn resolve_analysis(&self, a: &AnalysisStep) -> Result<Value, String> {
        let mut metrics = Vec::new();
        let mut args = Vec::new();
        if let Some(inline) = &a.inline {
            metrics.extend(inline["metrics"].as_array().cloned().unwrap_or_default());
            args.extend(inline["args"].as_array().cloned().unwrap_or_default());
        }
        for name in &a.templates {
            let record = self
                .services
                .store
                .get_document(TEMPLATE_KIND, name, None)
                .await
                .map_err(|e| format!("could not read analysis template \"{name}\": {e}"))?
                .ok_or_else(|| {
                    format!("analysis template \"{name}\" not found; apply an AnalysisTemplate named \"{name}\" first")
                })?;
            metrics.extend(
                record.body["metrics"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            args.extend(record.body["args"].as_array().cloned().unwrap_or_default());
        }
        Ok(json!({"metrics": metrics, "args": args}))
    }

    /// Advances the analysis of the current step; `Ok(None)` while it runs (with when to look
    /// again), `Ok(Some(phase))` once it ended.
    async fn advance_analysis(
        &self,
        a: &AnalysisStep,
        st: &mut RolloutState,
    ) -> Result<Result<AnalysisPhase, Duration>, String> {
        if st.analysis_spec.is_none() {
            st.analysis_spec = Some(self.resolve_analysis(a).await?);
        }
        let doc = st.analysis_spec.clone().unwrap_or(Value::Null);
        let mut problems = Vec::new();
        let Some(spec) = analysis::parse_analysis(&doc, "analysis", &mut problems) else {
            return Err(format!(
                "the analysis is invalid: {}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        };
        let now = now_millis();
        let mut run = st
            .analysis
            .take()
            .unwrap_or_else(|| AnalysisRun::new(&spec, now));
        let mut args = a.args.clone();
        args.insert("canary".into(), st.canary.clone().unwrap_or_default());
        args.insert(
            "stable".into(),
            st.stable.first().cloned().unwrap_or_default(),
        );
        args.insert("canary-weight".into(), st.weight.to_string());
        args.insert("cluster".into(), st.cluster.clone());
        args.insert("preview".into(), st.canary.clone().unwrap_or_default());
        args.insert(
            "active".into(),
            st.stable.first().cloned().unwrap_or_default(),
        );
        if let Some(address) = &st.preview_address {
            args.insert("preview-address".into(), address.clone());
        }
        args.insert("application".into(), st.application.clone());
        let prometheus = self.services.prometheus.as_deref();
        let env = analysis::AnalysisEnv {
            prometheus: prometheus.map(|p| p as &dyn analysis::InstantQuery),
            http: &self.services.http,
            canary: self.services.canary.as_ref(),
            args: &args,
            limits: ferry_expr::Limits::default(),
        };
        let next = analysis::tick(&spec, &mut run, &env, now).await;
        let phase = run.phase;
        st.analysis = Some(run);
        Ok(match next {
            Some(after) => Err(after),
            None => Ok(phase),
        })
    }

    /// One step of the state machine.
    async fn advance(&self, c: &RolloutConfig, st: &mut RolloutState, ctx: &mut StageCtx) -> Step {
        if st.phase == Phase::Start {
            st.provider = self
                .services
                .providers
                .kind_or_default(c.cluster.location.provider.as_deref())
                .to_string();
            st.account = c.cluster.location.account.clone();
            st.application = c
                .cluster
                .application
                .clone()
                .unwrap_or_else(|| ctx.execution.application.clone());
        }
        let provider = match self.services.providers.get(Some(&st.provider), &st.account) {
            Ok(p) => p,
            Err(e) => {
                return Step::Failed {
                    error: e.to_string(),
                };
            }
        };
        let provider = provider.as_ref();
        let execution_id = ctx.execution.id.clone();

        // User commands, in the context since the engine merged them.
        if let Some(reason) = ctx.context.remove("abort")
            && !matches!(st.phase, Phase::Done | Phase::Aborting | Phase::Aborted)
        {
            st.abort_reason = Some(match reason {
                Value::String(s) if !s.is_empty() => format!("aborted by a user: {s}"),
                _ => "aborted by a user".into(),
            });
            st.phase = Phase::Aborting;
        }
        let promote = ctx.context.remove("promote");
        if matches!(promote, Some(Value::String(ref s)) if s == "full") {
            match st.phase {
                Phase::Steps => {
                    st.message = Some("fully promoted by a user: remaining steps skipped".into());
                    st.step = c.steps.len();
                }
                Phase::PrePromotion | Phase::AwaitingPromotion => {
                    st.message = Some("fully promoted by a user: analysis skipped".into());
                    st.analysis = None;
                    st.analysis_spec = None;
                    st.phase = Phase::ScalingUp;
                }
                _ => {}
            }
        }

        match st.phase {
            Phase::Start => {
                let moniker = match moniker(st, c) {
                    Ok(m) => m,
                    Err(failed) => return failed,
                };
                st.cluster = moniker.cluster_name();
                let groups =
                    match cluster_groups(provider, &st.application, &st.account, &st.cluster).await
                    {
                        Ok(g) => g,
                        Err(e) => {
                            return Step::Failed {
                                error: format!("could not list cluster {}: {e}", st.cluster),
                            };
                        }
                    };
                if let Some(wait) = self
                    .gate(c, st, &execution_id, HookType::ConfirmRollout)
                    .await
                {
                    return wait;
                }
                let serving: Vec<&ServerGroup> = groups.iter().filter(|g| g.enabled).collect();
                st.stable = serving.iter().map(|g| g.name.clone()).collect();
                st.stable_weights = serving.iter().map(|g| (g.name.clone(), g.weight)).collect();
                st.status = RolloutStatus::Progressing;
                st.message = None;
                // Committed before the create call: after a restart the created group is adopted.
                st.phase = Phase::Creating;
                now_step()
            }
            Phase::Creating => {
                let started = ctx.started_at();
                // Only a step re-run after a restart can find a create whose outcome was not
                // committed; it must run this rollout's artifact.
                let adopted = if ctx.recovered {
                    cluster_groups(provider, &st.application, &st.account, &st.cluster)
                        .await
                        .ok()
                        .and_then(|groups| {
                            groups.into_iter().rev().find(|g| {
                                !st.stable.contains(&g.name)
                                    && g.execution_id.as_deref() == Some(execution_id.as_str())
                                    && g.created_at >= started - 1_000
                                    && g.artifact == c.cluster.artifact
                            })
                        })
                } else {
                    None
                };
                let first = st.stable.is_empty();
                let group = match adopted {
                    Some(g) => g,
                    None => {
                        let moniker = match moniker(st, c) {
                            Ok(m) => m,
                            Err(failed) => return failed,
                        };
                        let blue_green = c.blue_green.as_ref().filter(|_| !first);
                        let mut capacity = c.cluster.capacity;
                        if let Some(n) = blue_green.and_then(|b| b.preview_replicas) {
                            capacity.desired = n.min(capacity.desired);
                            capacity.min = capacity.min.min(capacity.desired);
                        }
                        let spec = ServerGroupSpec {
                            account: st.account.clone(),
                            moniker,
                            capacity,
                            artifact: c.cluster.artifact.clone(),
                            health_check: c.cluster.health_check.clone(),
                            load_balancers: c.cluster.load_balancers.clone(),
                            // Blue/green: the preview takes no traffic until the switch.
                            enabled: blue_green.is_none(),
                            weight: if first || blue_green.is_some() {
                                100
                            } else {
                                0
                            },
                            deployed_by: ctx.execution.trigger.user.clone(),
                            execution_id: Some(execution_id.clone()),
                        };
                        match provider.create_server_group(spec).await {
                            Ok(g) => g,
                            Err(e) => {
                                return Step::Failed {
                                    error: format!(
                                        "could not create a server group in cluster {}: {e}",
                                        st.cluster
                                    ),
                                };
                            }
                        }
                    }
                };
                st.weight = if first { 100 } else { 0 };
                if c.blue_green.is_some() && !first {
                    st.weight = 0;
                }
                st.canary = Some(group.name.clone());
                ctx.context
                    .insert("serverGroupName".into(), json!(group.name));
                st.up_deadline = now_millis() + (c.cluster.deploy_timeout_sec as i64) * 1000;
                st.phase = Phase::WaitingUp;
                now_step()
            }
            Phase::WaitingUp | Phase::ScalingUp => {
                let name = st.canary.clone().unwrap_or_default();
                if st.phase == Phase::ScalingUp && !st.scaled_up {
                    // The preview runs previewReplicaCount instances: give it all of them first.
                    if c.blue_green
                        .as_ref()
                        .and_then(|b| b.preview_replicas)
                        .is_some()
                        && let Err(e) = provider
                            .resize(&st.account, &name, c.cluster.capacity)
                            .await
                    {
                        return self.abort(st, format!("could not scale {name} up: {e}"));
                    }
                    st.up_deadline = now_millis() + (c.cluster.deploy_timeout_sec as i64) * 1000;
                    st.scaled_up = true;
                }
                let group = match provider.server_group(&st.account, &name).await {
                    Ok(Some(g)) => g,
                    Ok(None) => return self.abort(st, format!("{name} disappeared")),
                    Err(e) => return self.abort(st, format!("could not read {name}: {e}")),
                };
                match readiness(&group) {
                    Readiness::Up => {}
                    Readiness::CrashLooping => {
                        return self
                            .abort(st, format!("{name} is crash-looping: {}", describe(&group)));
                    }
                    Readiness::Waiting if now_millis() > st.up_deadline => {
                        return self.abort(
                            st,
                            format!(
                                "{name} did not become healthy within {} s: {}",
                                c.cluster.deploy_timeout_sec,
                                describe(&group)
                            ),
                        );
                    }
                    Readiness::Waiting => return running(self.services.providers.poll_interval()),
                }
                st.preview_address = group
                    .instances
                    .iter()
                    .find(|i| i.state == ferry_provider::InstanceState::Up)
                    .map(|i| i.address.clone());
                if st.stable.is_empty() {
                    st.message = Some("first rollout of the cluster: promoted at once".into());
                    st.phase = Phase::Promoting;
                    return now_step();
                }
                if st.phase == Phase::ScalingUp {
                    st.phase = Phase::Switching;
                    return now_step();
                }
                let payload = Self::payload(st, &execution_id);
                if let Err(e) = webhook::call_all(
                    &self.services.http,
                    &c.webhooks,
                    HookType::PreRollout,
                    &payload,
                )
                .await
                {
                    return self.abort(st, format!("pre-rollout check failed: {e}"));
                }
                if c.blue_green.is_some() {
                    st.phase = Phase::PrePromotion;
                    st.step_started = now_millis();
                    return now_step();
                }
                st.phase = Phase::Steps;
                st.step = 0;
                st.step_started = now_millis();
                now_step()
            }
            Phase::Steps => {
                self.run_steps(c, st, provider, &execution_id, promote)
                    .await
            }
            Phase::PrePromotion => {
                let Some(a) = c.blue_green.as_ref().and_then(|b| b.pre_promotion.clone()) else {
                    st.phase = Phase::AwaitingPromotion;
                    st.step_started = now_millis();
                    return now_step();
                };
                match self
                    .analysis_gate(&a, st, promote.is_some(), "pre-promotion")
                    .await
                {
                    Ok(()) => {
                        st.phase = Phase::AwaitingPromotion;
                        st.step_started = now_millis();
                        now_step()
                    }
                    Err(step) => step,
                }
            }
            Phase::AwaitingPromotion => {
                let Some(b) = c.blue_green.as_ref() else {
                    st.phase = Phase::Promoting;
                    return now_step();
                };
                if let Some(wait) = self
                    .gate(c, st, &execution_id, HookType::ConfirmPromotion)
                    .await
                {
                    return wait;
                }
                if promote.is_none() {
                    if !b.auto_promotion_enabled {
                        st.status = RolloutStatus::Paused;
                        st.message = Some("the preview is ready: promote to switch traffic".into());
                        return Step::AwaitInput;
                    }
                    if let Some(after) = b.auto_promotion_after {
                        let left = st.step_started + after.as_millis() as i64 - now_millis();
                        if left > 0 {
                            st.status = RolloutStatus::Paused;
                            st.message =
                                Some(format!("promoting by itself in {} s", left / 1000 + 1));
                            return running(Duration::from_millis(left as u64));
                        }
                    }
                }
                st.status = RolloutStatus::Progressing;
                st.message = None;
                st.phase = Phase::ScalingUp;
                now_step()
            }
            Phase::Switching => {
                let name = st.canary.clone().unwrap_or_default();
                if let Err(e) = provider.enable(&st.account, &name).await {
                    return self.abort(st, format!("could not enable {name}: {e}"));
                }
                st.weight = 100;
                for old in st.stable.clone() {
                    if let Err(e) = provider.disable(&st.account, &old).await {
                        return self.abort(st, format!("could not disable {old}: {e}"));
                    }
                }
                st.phase = Phase::PostPromotion;
                st.step_started = now_millis();
                now_step()
            }
            Phase::PostPromotion => {
                if let Some(a) = c.blue_green.as_ref().and_then(|b| b.post_promotion.clone())
                    && let Err(step) = self
                        .analysis_gate(&a, st, promote.is_some(), "post-promotion")
                        .await
                {
                    return step;
                }
                st.status = RolloutStatus::Healthy;
                st.scale_down_at = now_millis() + c.scale_down_delay.as_millis() as i64;
                st.phase = Phase::ScaleDownDelay;
                now_step()
            }
            Phase::Promoting => {
                if let Err(e) = self.set_weight(provider, st, 100).await {
                    return self.abort(st, e);
                }
                for name in st.stable.clone() {
                    if let Err(e) = provider.disable(&st.account, &name).await {
                        return self.abort(st, format!("could not disable {name}: {e}"));
                    }
                }
                st.status = RolloutStatus::Healthy;
                st.scale_down_at = now_millis() + c.scale_down_delay.as_millis() as i64;
                st.phase = Phase::ScaleDownDelay;
                now_step()
            }
            Phase::ScaleDownDelay => {
                let left = st.scale_down_at - now_millis();
                if left > 0 {
                    return running(Duration::from_millis(left as u64));
                }
                for name in st.stable.clone() {
                    let zero = Capacity {
                        min: 0,
                        max: 0,
                        desired: 0,
                    };
                    if let Err(e) = provider.resize(&st.account, &name, zero).await {
                        tracing::warn!(server_group = %name, error = %e, "could not scale down the old version");
                    }
                }
                let payload = Self::payload(st, &execution_id);
                if let Err(e) = webhook::call_all(
                    &self.services.http,
                    &c.webhooks,
                    HookType::PostRollout,
                    &payload,
                )
                .await
                {
                    tracing::warn!(error = %e, "post-rollout webhook");
                }
                st.phase = Phase::Done;
                Step::Succeeded
            }
            Phase::Done => Step::Succeeded,
            Phase::Aborting => {
                let reason = st.abort_reason.clone().unwrap_or_else(|| "aborted".into());
                let errors = roll_back(st, provider).await;
                st.message = Some(if errors.is_empty() {
                    reason
                } else {
                    format!("{reason}; {}", errors.join("; "))
                });
                now_step()
            }
            Phase::Aborted => Step::Failed {
                error: format!(
                    "rollout aborted: {}",
                    st.message.clone().unwrap_or_default()
                ),
            },
        }
    }

    /// Runs an analysis to its end: `Ok` once it is Successful (or Inconclusive and promoted
    /// by a person); otherwise the step to return — wait, pause for a person, or abort.
    async fn analysis_gate(
        &self,
        a: &AnalysisStep,
        st: &mut RolloutState,
        promoted: bool,
        label: &str,
    ) -> Result<(), Step> {
        if st
            .analysis
            .as_ref()
            .is_some_and(|r| r.phase == AnalysisPhase::Inconclusive)
        {
            if promoted {
                st.analysis = None;
                st.analysis_spec = None;
                return Ok(());
            }
            st.status = RolloutStatus::Paused;
            return Err(Step::AwaitInput);
        }
        match self.advance_analysis(a, st).await {
            Err(e) => Err(self.abort(st, format!("{label}: {e}"))),
            Ok(Err(after)) => {
                st.status = RolloutStatus::Progressing;
                Err(running(after))
            }
            Ok(Ok(AnalysisPhase::Successful)) => {
                st.analysis_spec = None;
                Ok(())
            }
            Ok(Ok(AnalysisPhase::Inconclusive)) => {
                st.status = RolloutStatus::Paused;
                st.message = Some(format!(
                    "{label} was inconclusive: promote to go on, or abort"
                ));
                Err(Step::AwaitInput)
            }
            Ok(Ok(phase)) => {
                let detail = st
                    .analysis
                    .as_ref()
                    .and_then(|r| r.message.clone())
                    .unwrap_or_default();
                Err(self.abort(st, format!("{label} ended {phase:?}: {detail}")))
            }
        }
    }

    /// Asks the gate webhooks of `kind` (`confirm-rollout`, `confirm-promotion`): `None` when
    /// they all said yes, else the step that waits and asks again.
    async fn gate(
        &self,
        c: &RolloutConfig,
        st: &mut RolloutState,
        execution_id: &str,
        kind: HookType,
    ) -> Option<Step> {
        let payload = Self::payload(st, execution_id);
        let answer = webhook::call_all(&self.services.http, &c.webhooks, kind, &payload).await;
        let e = answer.err()?;
        st.status = RolloutStatus::Paused;
        st.message = Some(format!("waiting for {}: {e}", kind.name()));
        Some(running(GATE_RETRY))
    }

    fn abort(&self, st: &mut RolloutState, reason: String) -> Step {
        st.abort_reason = Some(reason);
        st.phase = Phase::Aborting;
        now_step()
    }

    async fn run_steps(
        &self,
        c: &RolloutConfig,
        st: &mut RolloutState,
        provider: &dyn Provider,
        execution_id: &str,
        promote: Option<Value>,
    ) -> Step {
        let payload = Self::payload(st, execution_id);
        if let Some(reason) =
            webhook::rollback_requested(&self.services.http, &c.webhooks, &payload).await
        {
            return self.abort(st, reason);
        }
        let Some(step) = c.steps.get(st.step).cloned() else {
            if let Some(wait) = self
                .gate(c, st, execution_id, HookType::ConfirmPromotion)
                .await
            {
                return wait;
            }
            st.phase = Phase::Promoting;
            return now_step();
        };
        let next = |st: &mut RolloutState| {
            st.step += 1;
            st.step_started = now_millis();
            st.status = RolloutStatus::Progressing;
            st.analysis = None;
            st.analysis_spec = None;
            now_step()
        };
        match step {
            RolloutStep::SetWeight(w) => {
                if let Err(e) = self.set_weight(provider, st, w).await {
                    return self.abort(st, e);
                }
                let payload = Self::payload(st, execution_id);
                if let Err(e) = webhook::call_all(
                    &self.services.http,
                    &c.webhooks,
                    HookType::Rollout,
                    &payload,
                )
                .await
                {
                    st.failed_checks += 1;
                    if st.failed_checks > c.failed_checks_limit {
                        return self.abort(
                            st,
                            format!(
                                "{e} ({} failed check(s), limit {})",
                                st.failed_checks, c.failed_checks_limit
                            ),
                        );
                    }
                }
                next(st)
            }
            RolloutStep::Pause(duration) => {
                if promote.is_some() {
                    return next(st);
                }
                st.status = RolloutStatus::Paused;
                match duration {
                    None => {
                        st.message =
                            Some(format!("paused at step {}: promote to go on", st.step + 1));
                        Step::AwaitInput
                    }
                    Some(d) => {
                        let left = st.step_started + d.as_millis() as i64 - now_millis();
                        if left <= 0 {
                            return next(st);
                        }
                        st.message = Some(format!("paused at step {} for {d:?}", st.step + 1));
                        running(Duration::from_millis(left as u64))
                    }
                }
            }
            RolloutStep::Analysis(a) => {
                let label = format!("analysis at step {}", st.step + 1);
                match self.analysis_gate(&a, st, promote.is_some(), &label).await {
                    Ok(()) => next(st),
                    Err(step) => step,
                }
            }
        }
    }
}

fn publish(st: &RolloutState, c: &RolloutConfig, ctx: &mut StageCtx) {
    state::put(&mut ctx.context, STATE, st);
    ctx.outputs.insert(
        "rollout".into(),
        json!({
            "status": st.status,
            "step": st.step.min(c.steps.len()),
            "steps": c.steps.len(),
            "canary": st.canary,
            "stable": st.stable,
            "canaryWeight": st.weight,
            "message": st.message,
            "analysis": st.analysis,
        }),
    );
}

#[async_trait]
impl TypedStage for Rollout {
    type Config = RolloutConfig;
    const TYPE: &'static str = "rollout";
    const TASK: &'static str = "rollout";

    fn config(f: &mut Fields<'_>) -> Option<RolloutConfig> {
        read_config(f)
    }

    fn accept_input(
        context: &Map<String, Value>,
        input: &Map<String, Value>,
    ) -> Result<(), String> {
        let st: RolloutState = state::get(context, STATE).unwrap_or_default();
        if matches!(st.phase, Phase::Done | Phase::Aborted) {
            return Err("the rollout has ended".into());
        }
        let ok = input.len() == 1
            && match (input.get("promote"), input.get("abort")) {
                (Some(Value::Bool(true)), None) => true,
                (Some(Value::String(s)), None) => s == "full",
                (None, Some(Value::Bool(true) | Value::String(_))) => true,
                _ => false,
            };
        if ok {
            Ok(())
        } else {
            Err(
                "a rollout takes {\"promote\": true}, {\"promote\": \"full\"} or {\"abort\": true}"
                    .into(),
            )
        }
    }

    async fn step(&self, c: &RolloutConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let mut st: RolloutState = state::get(&ctx.context, STATE).unwrap_or_default();
        let step = self.advance(c, &mut st, ctx).await;
        publish(&st, c, ctx);
        Ok(step)
    }

    async fn cancel(
        &self,
        c: Option<&RolloutConfig>,
        ctx: &mut StageCtx,
    ) -> Result<(), StageError> {
        // A canceled rollout leaves the stable version serving, as an abort does.
        let mut st: RolloutState = state::get(&ctx.context, STATE).unwrap_or_default();
        if st.canary.is_none()
            || matches!(
                st.phase,
                Phase::Done | Phase::Aborted | Phase::ScaleDownDelay
            )
        {
            return Ok(());
        }
        let provider = self
            .services
            .providers
            .get(Some(&st.provider), &st.account)
            .map_err(|e| StageError::Fatal(e.to_string()))?;
        let errors = roll_back(&mut st, provider.as_ref()).await;
        st.message = Some(if errors.is_empty() {
            "canceled".into()
        } else {
            format!("canceled; {}", errors.join("; "))
        });
        if let Some(c) = c {
            publish(&st, c, ctx);
        }
        Ok(())
    }
}

/// Gives the stable server groups their weights back (and enables them), then takes the
/// canary out of traffic and destroys it. Returns what went wrong; the rest is still done.
async fn roll_back(st: &mut RolloutState, provider: &dyn Provider) -> Vec<String> {
    let mut errors = Vec::new();
    // Stable first: it takes its traffic back before the canary leaves.
    for (name, w) in st.stable_weights.clone() {
        if let Err(e) = provider.set_weight(&st.account, &name, w).await {
            errors.push(format!("could not restore the weight of {name}: {e}"));
        }
        if let Err(e) = provider.enable(&st.account, &name).await {
            errors.push(format!("could not enable {name}: {e}"));
        }
    }
    if let Some(canary) = st.canary.clone() {
        if let Err(e) = provider.set_weight(&st.account, &canary, 0).await {
            errors.push(format!("could not take traffic from {canary}: {e}"));
        }
        if let Err(e) = provider.disable(&st.account, &canary).await {
            errors.push(format!("could not disable {canary}: {e}"));
        }
        if let Err(e) = provider.destroy(&st.account, &canary).await {
            errors.push(format!("could not destroy {canary}: {e}"));
        }
    }
    st.weight = 0;
    st.status = RolloutStatus::Degraded;
    st.phase = Phase::Aborted;
    errors
}

#[cfg(test)]
mod tests;
