//! `evaluateVariables`: evaluates `variables[{key, value}]` in order, so later values can use
//! earlier keys, and publishes each as an output for downstream stages.

use async_trait::async_trait;
use ferry_core::StageDef;
use ferry_core::fields::Fields;
use ferry_engine::expr::evaluate_for_stage;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use serde_json::{Map, Value};

/// The `evaluateVariables` stage.
pub struct EvaluateVariables;

/// `evaluateVariables`' configuration.
pub struct VariablesConfig {
    /// `(key, value as written)`, in order.
    pub variables: Vec<(String, Value)>,
}

#[async_trait]
impl TypedStage for EvaluateVariables {
    type Config = VariablesConfig;
    const TYPE: &'static str = "evaluateVariables";
    const TASK: &'static str = "evaluateVariablesTask";

    fn config(f: &mut Fields<'_>) -> Option<VariablesConfig> {
        let Some(items) = f.opt_array("variables") else {
            if f.get("variables").is_none() {
                f.problem("variables", "is required (a list of {key, value})");
            }
            return None;
        };
        let mut out: Vec<(String, Value)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = item.get("key").and_then(Value::as_str).unwrap_or_default();
            if key.is_empty() {
                f.problem(&format!("variables[{i}].key"), "is required");
                continue;
            }
            if out.iter().any(|(k, _)| k == key) {
                f.problem(
                    &format!("variables[{i}].key"),
                    format!("duplicate variable \"{key}\""),
                );
                continue;
            }
            let value = item.get("value").cloned().unwrap_or(Value::Null);
            // `variables` is evaluated by the step, not by the engine, so its expressions are
            // parse-checked here when the pipeline is validated.
            if f.is_lenient() {
                for e in ferry_expr::check_tree(&value) {
                    let path =
                        ferry_core::problem::join_path(&format!("variables[{i}].value"), &e.path);
                    f.problem(
                        &path,
                        format!("invalid expression `{}`: {}", e.expression, e.message),
                    );
                }
            }
            out.push((key.to_string(), value));
        }
        Some(VariablesConfig { variables: out })
    }

    fn raw_fields(_def: &StageDef) -> Vec<String> {
        // Evaluated by the step, one variable at a time.
        vec!["variables".into()]
    }

    async fn step(&self, c: &VariablesConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let fail_on_failed = ctx.def().fail_on_failed_expressions;
        let results = evaluate_for_stage(ctx, c.variables.clone(), true).await?;
        let mut values = Map::new();
        let mut errors = Vec::new();
        for (i, (key, value, errs)) in results.into_iter().enumerate() {
            for e in errs {
                errors.push(format!(
                    "variables[{i}].value: failed to evaluate `{}`: {}",
                    e.expression, e.message
                ));
            }
            values.insert(key, value);
        }
        if fail_on_failed && !errors.is_empty() {
            return Ok(Step::Failed {
                error: errors.join("; "),
            });
        }
        if !errors.is_empty() {
            ctx.context.insert("warnings".into(), Value::from(errors));
        }
        for (k, v) in values {
            ctx.outputs.insert(k, v);
        }
        Ok(Step::Succeeded)
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
    async fn evaluate_variables_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _g) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(dir.path()));
        run(
            registry,
            store,
            Case {
                succeeds: json!({"type": "evaluateVariables", "variables": [{"key": "a", "value": "${1 + 2}"}]}),
                long_running: json!({"type": "evaluateVariables",
                    "restrictExecutionDuringTimeWindow": true,
                    "restrictedExecutionWindow": {"jitter": {"enabled": true, "minDelay": 1, "maxDelay": 1}},
                    "variables": [{"key": "a", "value": "x"}]}),
                completing_input: None,
                invalid: vec![
                    (json!({"type": "evaluateVariables"}), "stages[0].variables"),
                    (json!({"type": "evaluateVariables", "variables": [{"value": 1}]}), "stages[0].variables[0].key"),
                    (json!({"type": "evaluateVariables", "variables": [{"key": "a"}, {"key": "a"}]}), "stages[0].variables[1].key"),
                    (json!({"type": "evaluateVariables", "variables": [{"key": "a", "value": "${(}"}]}), "stages[0].variables[0].value"),
                ],
            },
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn later_variables_see_earlier_ones_and_downstream_stages_see_all() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _g) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(dir.path()));
        let (engine, _j) = Engine::start(store.clone(), registry.clone(), EngineConfig::default())
            .await
            .unwrap();
        let doc = json!({"application": "app", "name": "vars", "parameterConfig": [{"name": "n", "default": "4"}],
            "stages": [
                {"refId": "1", "type": "evaluateVariables", "variables": [
                    {"key": "double", "value": "${#toInt(parameters.n) * 2}"},
                    {"key": "msg", "value": "double is ${double}"}]},
                {"refId": "2", "requisiteStageRefIds": ["1"], "type": "checkPreconditions", "preconditions": [
                    {"type": "expression", "context": {"expression": "${double == 8 && msg == 'double is 8'}"}}]}]});
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
        assert_eq!(
            e.status,
            Status::Succeeded,
            "{:?}",
            e.stages[1].context.get("exception")
        );
        assert_eq!(e.stages[0].outputs["double"], json!(8));
        assert_eq!(e.stages[0].outputs["msg"], json!("double is 8"));
    }
}
