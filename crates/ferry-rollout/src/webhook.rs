//! Flagger-style webhooks: gates and notifications at fixed points of a rollout.
//!
//! | type | when | a non-2xx answer (or no answer) |
//! |---|---|---|
//! | `confirm-rollout` | before anything is created | the rollout waits and asks again (gate) |
//! | `pre-rollout` | the new server group is up, before the first step | the rollout aborts |
//! | `rollout` | at every step | a failed check; more than `failedChecksLimit` abort |
//! | `confirm-promotion` | before full promotion | the rollout waits and asks again (gate) |
//! | `post-rollout` | after promotion | logged only |
//! | `rollback` | at every step | — ; a **2xx** answer rolls the rollout back |
//!
//! Every call is a `POST` of JSON through Ferry's URL guard (`ferry-http`):
//! `{name, namespace, phase, type, canary, stable, weight, executionId, metadata}` where `name`
//! is the cluster and `namespace` the application, as Flagger sends the canary's name and
//! namespace.

use ferry_core::Problem;
use ferry_core::fields::Fields;
use ferry_http::{GuardedClient, GuardedRequest};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// When a webhook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookType {
    /// Gate before the rollout starts.
    ConfirmRollout,
    /// Check before the first step.
    PreRollout,
    /// Check at every step.
    Rollout,
    /// Gate before promotion.
    ConfirmPromotion,
    /// Notification after promotion.
    PostRollout,
    /// Polled at every step; 2xx rolls back.
    Rollback,
}

impl HookType {
    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            HookType::ConfirmRollout => "confirm-rollout",
            HookType::PreRollout => "pre-rollout",
            HookType::Rollout => "rollout",
            HookType::ConfirmPromotion => "confirm-promotion",
            HookType::PostRollout => "post-rollout",
            HookType::Rollback => "rollback",
        }
    }

    fn parse(s: &str) -> Option<HookType> {
        [
            HookType::ConfirmRollout,
            HookType::PreRollout,
            HookType::Rollout,
            HookType::ConfirmPromotion,
            HookType::PostRollout,
            HookType::Rollback,
        ]
        .into_iter()
        .find(|h| h.name() == s)
    }
}

/// One webhook as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// `name`.
    pub name: String,
    /// `type`.
    pub hook: HookType,
    /// `url`.
    pub url: String,
    /// `timeout` (seconds or a duration such as `5s`), default 10 s.
    pub timeout: Duration,
    /// `metadata`, sent as it is.
    pub metadata: Map<String, Value>,
}

/// Reads `webhooks[]`, reporting every problem with its path.
pub fn parse_webhooks(f: &mut Fields<'_>) -> Option<Vec<Webhook>> {
    let mut out = Vec::new();
    let mut ok = true;
    ferry_deploy::spec::each_element(f, "webhooks", |w, _| {
        let before = w.problems.len();
        let name = w.required_str("name");
        let hook = match w.opt_str("type") {
            Some(t) => match HookType::parse(&t) {
                Some(h) => Some(h),
                None => {
                    w.problem(
                        "type",
                        format!("unknown webhook type \"{t}\"; use confirm-rollout, pre-rollout, rollout, confirm-promotion, post-rollout or rollback"),
                    );
                    None
                }
            },
            None => {
                w.problem("type", "is required");
                None
            }
        };
        let url = w.required_str("url");
        let timeout = match w.get("timeout") {
            None => Some(Duration::from_secs(10)),
            Some(v) => match crate::duration::parse_value(v) {
                Some(d) if !d.is_zero() => Some(d),
                _ => {
                    w.problem("timeout", "must be a duration such as 5s, or seconds");
                    None
                }
            },
        };
        let metadata = w.opt_object("metadata").cloned().unwrap_or_default();
        if w.problems.len() > before {
            ok = false;
            return;
        }
        if let (Some(name), Some(hook), Some(url), Some(timeout)) = (name, hook, url, timeout) {
            out.push(Webhook {
                name,
                hook,
                url,
                timeout,
                metadata,
            });
        }
    });
    ok.then_some(out)
}

/// What a rollout tells its webhooks.
#[derive(Debug, Clone)]
pub struct HookPayload<'a> {
    /// The cluster.
    pub cluster: &'a str,
    /// The application.
    pub application: &'a str,
    /// The rollout's status (`Progressing`, …).
    pub phase: &'a str,
    /// The new server group, if created.
    pub canary: Option<&'a str>,
    /// The server groups serving before the rollout.
    pub stable: &'a [String],
    /// The new server group's traffic weight.
    pub weight: u32,
    /// The execution.
    pub execution_id: &'a str,
}

/// Calls one webhook: `Ok(())` on a 2xx answer, else why not.
pub async fn call(
    http: &GuardedClient,
    hook: &Webhook,
    payload: &HookPayload<'_>,
) -> Result<(), String> {
    let body = json!({
        "name": payload.cluster,
        "namespace": payload.application,
        "phase": payload.phase,
        "type": hook.hook.name(),
        "canary": payload.canary,
        "stable": payload.stable,
        "weight": payload.weight,
        "executionId": payload.execution_id,
        "metadata": hook.metadata,
    });
    let request = GuardedRequest::new(http::Method::POST, hook.url.clone()).with_json(&body);
    match tokio::time::timeout(hook.timeout, http.send(request)).await {
        Err(_) => Err(format!(
            "webhook {} ({}) did not answer within {:?}",
            hook.name,
            hook.hook.name(),
            hook.timeout
        )),
        Ok(Err(e)) => Err(format!("webhook {} ({}): {e}", hook.name, hook.hook.name())),
        Ok(Ok(r)) if r.is_success() => Ok(()),
        Ok(Ok(r)) => Err(format!(
            "webhook {} ({}) answered {}",
            hook.name,
            hook.hook.name(),
            r.status
        )),
    }
}

/// Calls every webhook of `kind` in order; the first failure is returned.
pub async fn call_all(
    http: &GuardedClient,
    hooks: &[Webhook],
    kind: HookType,
    payload: &HookPayload<'_>,
) -> Result<(), String> {
    for hook in hooks.iter().filter(|h| h.hook == kind) {
        call(http, hook, payload).await?;
    }
    Ok(())
}

/// Polls the `rollback` webhooks: true when any answers 2xx (roll back now).
pub async fn rollback_requested(
    http: &GuardedClient,
    hooks: &[Webhook],
    payload: &HookPayload<'_>,
) -> Option<String> {
    for hook in hooks.iter().filter(|h| h.hook == HookType::Rollback) {
        if call(http, hook, payload).await.is_ok() {
            return Some(format!(
                "the rollback webhook {} asked to roll back",
                hook.name
            ));
        }
    }
    None
}

/// A problem for each webhook field that is wrong (for tests of callers).
pub fn problems_of(value: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let _ = parse_webhooks(&mut Fields::new(value, "", &mut problems));
    problems
}
