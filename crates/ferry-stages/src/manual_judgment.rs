//! `manualJudgment`: waits for a person to continue or stop the pipeline, optionally choosing
//! one of `judgmentInputs` (read later with `#judgment('stage name')`). Default timeout 3 days.

use crate::{Notification, Notifier};
use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The `manualJudgment` stage.
pub struct ManualJudgment {
    /// Told when a judgment is awaited.
    pub notifier: Arc<dyn Notifier>,
}

/// `manualJudgment`'s configuration.
pub struct JudgmentConfig {
    /// `instructions` shown to the judge.
    pub instructions: Option<String>,
    /// Allowed `judgmentInputs` values (empty: any or none).
    pub inputs: Vec<String>,
}

fn read_inputs(f: &mut Fields<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(items) = f.opt_array("judgmentInputs") {
        for (i, item) in items.iter().enumerate() {
            match item.get("value").and_then(Value::as_str) {
                Some(v) if !v.is_empty() => out.push(v.to_string()),
                _ => f.problem(
                    &format!("judgmentInputs[{i}].value"),
                    "is required and must be a non-empty string",
                ),
            }
        }
    }
    out
}

#[async_trait]
impl TypedStage for ManualJudgment {
    type Config = JudgmentConfig;
    const TYPE: &'static str = "manualJudgment";
    const TASK: &'static str = "waitForJudgmentTask";

    fn config(f: &mut Fields<'_>) -> Option<JudgmentConfig> {
        let instructions = f.opt_str("instructions");
        let inputs = read_inputs(f);
        let _ = f.opt_array("notifications");
        Some(JudgmentConfig {
            instructions,
            inputs,
        })
    }

    fn default_timeout() -> Option<Duration> {
        Some(Duration::from_secs(3 * 24 * 3600))
    }

    fn accept_input(
        context: &Map<String, Value>,
        input: &Map<String, Value>,
    ) -> Result<(), String> {
        if context
            .get("judgmentStatus")
            .and_then(Value::as_str)
            .is_some()
        {
            return Err("this stage has already been judged".into());
        }
        match input.get("judgmentStatus").and_then(Value::as_str) {
            Some("continue" | "stop") => {}
            _ => return Err("judgmentStatus must be \"continue\" or \"stop\"".into()),
        }
        for key in input.keys() {
            if !matches!(key.as_str(), "judgmentStatus" | "judgmentInput") {
                return Err(format!("unexpected field \"{key}\" in a judgment"));
            }
        }
        let mut problems = Vec::new();
        let ctx = Value::Object(context.clone());
        let allowed = read_inputs(&mut Fields::new(&ctx, "", &mut problems));
        if let Some(v) = input.get("judgmentInput") {
            let Some(v) = v.as_str() else {
                return Err("judgmentInput must be a string".into());
            };
            if !allowed.is_empty() && !allowed.iter().any(|a| a == v) {
                return Err(format!(
                    "\"{v}\" is not one of the judgment inputs: {}",
                    allowed.join(", ")
                ));
            }
        }
        Ok(())
    }

    async fn step(&self, c: &JudgmentConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let who = ctx
            .context
            .get("lastModifiedBy")
            .and_then(Value::as_str)
            .unwrap_or("someone")
            .to_string();
        match ctx.context.get("judgmentStatus").and_then(Value::as_str) {
            Some("continue") => {
                ctx.context.insert("judgedBy".into(), Value::String(who));
                if let Some(input) = ctx.context.get("judgmentInput").cloned() {
                    ctx.outputs.insert("judgmentInput".into(), input);
                }
                ctx.outputs
                    .insert("judgmentStatus".into(), Value::String("continue".into()));
                Ok(Step::Succeeded)
            }
            Some("stop") => {
                ctx.context
                    .insert("judgedBy".into(), Value::String(who.clone()));
                Ok(Step::Failed {
                    error: format!("stopped by {who} at manual judgment"),
                })
            }
            _ => {
                if ctx.context.get("notified").and_then(Value::as_bool) != Some(true) {
                    let stage = ctx.def().name.clone();
                    self.notifier.notify(Notification {
                        kind: "manualJudgment.awaiting".into(),
                        execution_id: ctx.execution.id.clone(),
                        application: ctx.execution.application.clone(),
                        stage: stage.clone(),
                        message: match &c.instructions {
                            Some(i) => format!("Judgment needed at \"{stage}\": {i}"),
                            None => format!("Judgment needed at \"{stage}\""),
                        },
                    });
                    ctx.context.insert("notified".into(), Value::Bool(true));
                }
                Ok(Step::AwaitInput)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;
    use ferry_engine::conformance::{Case, run};
    use serde_json::json;

    #[tokio::test]
    async fn manual_judgment_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _g) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(dir.path()));
        let judge: Map<String, Value> =
            serde_json::from_value(json!({"judgmentStatus": "continue", "judgmentInput": "yes"}))
                .unwrap();
        run(
            registry,
            store,
            Case {
                // A stage that is already judged completes by itself.
                succeeds: json!({"type": "manualJudgment", "judgmentStatus": "continue"}),
                long_running: json!({"type": "manualJudgment", "judgmentInputs": [{"value": "yes"}, {"value": "no"}]}),
                completing_input: Some(judge),
                invalid: vec![
                    (json!({"type": "manualJudgment", "judgmentInputs": [{"label": "x"}]}), "stages[0].judgmentInputs[0].value"),
                    (json!({"type": "manualJudgment", "judgmentInputs": "yes"}), "stages[0].judgmentInputs"),
                ],
            },
        )
        .await
        .unwrap();
    }

    #[test]
    fn judgments_are_checked() {
        let ctx: Map<String, Value> =
            serde_json::from_value(json!({"judgmentInputs": [{"value": "yes"}]})).unwrap();
        let m = |v: Value| -> Map<String, Value> { serde_json::from_value(v).unwrap() };
        assert!(
            ManualJudgment::accept_input(
                &ctx,
                &m(json!({"judgmentStatus": "continue", "judgmentInput": "yes"}))
            )
            .is_ok()
        );
        assert!(ManualJudgment::accept_input(&ctx, &m(json!({"judgmentStatus": "stop"}))).is_ok());
        let e = ManualJudgment::accept_input(
            &ctx,
            &m(json!({"judgmentStatus": "continue", "judgmentInput": "maybe"})),
        )
        .unwrap_err();
        assert!(e.contains("not one of the judgment inputs"), "{e}");
        assert!(
            ManualJudgment::accept_input(&ctx, &m(json!({"judgmentStatus": "later"}))).is_err()
        );
        let judged: Map<String, Value> =
            serde_json::from_value(json!({"judgmentStatus": "stop"})).unwrap();
        assert!(
            ManualJudgment::accept_input(&judged, &m(json!({"judgmentStatus": "continue"})))
                .is_err()
        );
    }
}
