//! `checkPreconditions`: fails the stage unless every precondition holds. Expression
//! preconditions are evaluated with the stage's context when it starts, so by the time the step
//! runs each `context.expression` is a boolean (or, if it could not be evaluated, its text).

use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use serde_json::Value;

/// The `checkPreconditions` stage.
pub struct CheckPreconditions;

/// One precondition.
pub struct Precondition {
    /// Its position in `preconditions`.
    pub index: usize,
    /// `context.expression` after evaluation.
    pub expression: Option<Value>,
    /// `context.failureMessage`.
    pub failure_message: Option<String>,
}

/// `checkPreconditions`' configuration.
pub struct PreconditionsConfig {
    /// The preconditions, in order.
    pub preconditions: Vec<Precondition>,
}

#[async_trait]
impl TypedStage for CheckPreconditions {
    type Config = PreconditionsConfig;
    const TYPE: &'static str = "checkPreconditions";
    const TASK: &'static str = "checkPreconditionsTask";

    fn config(f: &mut Fields<'_>) -> Option<PreconditionsConfig> {
        let Some(items) = f.opt_array("preconditions") else {
            if f.get("preconditions").is_none() {
                f.problem("preconditions", "is required (a list of preconditions)");
            }
            return None;
        };
        let base = f.path_of("preconditions");
        let lenient = f.is_lenient();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{base}[{i}]");
            let mut p = if lenient {
                Fields::lenient(item, &path, f.problems)
            } else {
                Fields::new(item, &path, f.problems)
            };
            let kind = p.required_str("type");
            p.bool_or("failPipeline", true);
            match kind.as_deref() {
                Some("expression") => {
                    let expression = p.child("context").and_then(|c| c.get("expression").cloned());
                    if expression.is_none() {
                        p.problem("context.expression", "is required for an expression precondition");
                    }
                    let failure_message = p
                        .get("context")
                        .and_then(|c| c.get("failureMessage"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    out.push(Precondition { index: i, expression, failure_message });
                }
                Some("clusterSize") => p.problem(
                    "type",
                    "clusterSize preconditions need a server-group provider, which this Ferry does not have yet",
                ),
                Some(other) => p.problem("type", format!("unknown precondition type \"{other}\"; use \"expression\"")),
                None => {}
            }
        }
        Some(PreconditionsConfig { preconditions: out })
    }

    async fn step(&self, c: &PreconditionsConfig, _ctx: &mut StageCtx) -> Result<Step, StageError> {
        let mut failures = Vec::new();
        for p in &c.preconditions {
            let holds = match &p.expression {
                Some(Value::Bool(b)) => Ok(*b),
                Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
                Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
                Some(other) => Err(format!("expression did not evaluate to a boolean: {other}")),
                None => Err("no expression".into()),
            };
            match holds {
                Ok(true) => {}
                Ok(false) => failures.push(format!(
                    "preconditions[{}]: {}",
                    p.index,
                    p.failure_message
                        .clone()
                        .unwrap_or_else(|| "expression is false".into())
                )),
                Err(e) => failures.push(format!("preconditions[{}]: {e}", p.index)),
            }
        }
        if failures.is_empty() {
            Ok(Step::Succeeded)
        } else {
            Ok(Step::Failed {
                error: failures.join("; "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil;
    use ferry_core::Status;
    use ferry_engine::conformance::{Case, run, wait_for};
    use ferry_engine::{Engine, EngineConfig, RunRequest};
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test]
    async fn check_preconditions_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _g) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(dir.path()));
        run(
            registry,
            store,
            Case {
                succeeds: json!({"type": "checkPreconditions", "preconditions": [
                    {"type": "expression", "context": {"expression": "${1 + 1 == 2}"}}]}),
                // Preconditions never run long; a stage behind an hour-long window stands in for
                // "running" (the engine holds it before its first step).
                long_running: json!({"type": "checkPreconditions",
                    "restrictExecutionDuringTimeWindow": true,
                    "restrictedExecutionWindow": {"jitter": {"enabled": true, "minDelay": 1, "maxDelay": 1}},
                    "preconditions": [{"type": "expression", "context": {"expression": true}}]}),
                completing_input: None,
                invalid: vec![
                    (json!({"type": "checkPreconditions"}), "stages[0].preconditions"),
                    (json!({"type": "checkPreconditions", "preconditions": [{"type": "expression"}]}), "stages[0].preconditions[0].context.expression"),
                    (json!({"type": "checkPreconditions", "preconditions": [{"type": "clusterSize"}]}), "stages[0].preconditions[0].type"),
                    (json!({"type": "checkPreconditions", "preconditions": [{"type": "expression", "context": {"expression": "${1 +}"}}]}), "stages[0].preconditions[0].context.expression"),
                ],
            },
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_false_precondition_fails_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _g) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(dir.path()));
        let (engine, _j) = Engine::start(store.clone(), registry.clone(), EngineConfig::default())
            .await
            .unwrap();
        let doc = json!({"application": "app", "name": "pre", "parameterConfig": [{"name": "env", "default": "qa"}],
            "stages": [{"refId": "1", "type": "checkPreconditions", "preconditions": [
                {"type": "expression", "context": {"expression": "${parameters.env == 'prod'}", "failureMessage": "only prod"}},
                {"type": "expression", "context": {"expression": "${true}"}}]}]});
        let p = ferry_engine::validate_pipeline(&doc, &registry).unwrap();
        let rec = store.save_pipeline(&p, "t").await.unwrap();
        let id = engine
            .run_pipeline(&rec, RunRequest::default())
            .await
            .unwrap();
        let e = wait_for(&engine, &id, Duration::from_secs(5), "done", |e| {
            e.status.is_complete()
        })
        .await
        .unwrap();
        assert_eq!(e.status, Status::Terminal);
        let err = e.stages[0].context["exception"].to_string();
        assert!(err.contains("preconditions[0]: only prod"), "{err}");
        assert!(!err.contains("preconditions[1]"), "{err}");
    }
}
