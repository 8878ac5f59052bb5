//! The one place the engine evaluates expressions: builds what an expression can see for a stage
//! (ancestor outputs, the stage context, `execution`, `trigger`, `parameters`) and answers the
//! helper functions (`#stage`, `#judgment`, …) from the execution. Every evaluation in Ferry goes
//! through [`evaluate_stage_value`] or [`evaluate_condition`], which use the sandboxed
//! `ferry-expr` evaluator with the engine's limits.

use ferry_core::{Execution, StageExecution};
use ferry_expr::{EvalContext, FieldError, Host, Limits, Template};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;

/// Fetches a URL for `#fromUrl` through Ferry's URL guard. Blocking: evaluation runs on a
/// blocking thread.
pub trait UrlFetcher: Send + Sync {
    /// The body of the URL, or why it may not or could not be fetched.
    fn fetch(&self, url: &str) -> Result<String, String>;
}

/// Answers helper functions from one execution.
pub struct ExecutionHost<'a> {
    execution: &'a Execution,
    stage_index: Option<usize>,
    fetcher: Option<Arc<dyn UrlFetcher>>,
}

/// The JSON an expression sees for a stage (`#stage('x')`).
pub fn stage_json(s: &StageExecution) -> Value {
    json!({
        "id": s.id,
        "refId": s.ref_id,
        "name": s.name,
        "type": s.stage_type,
        "status": s.status.as_str(),
        "context": s.context,
        "outputs": s.outputs,
        "startTime": s.start_time,
        "endTime": s.end_time,
    })
}

impl<'a> ExecutionHost<'a> {
    /// A host for evaluating in the context of `stage_index` (or the execution itself).
    pub fn new(
        execution: &'a Execution,
        stage_index: Option<usize>,
        fetcher: Option<Arc<dyn UrlFetcher>>,
    ) -> Self {
        ExecutionHost {
            execution,
            stage_index,
            fetcher,
        }
    }
}

impl Host for ExecutionHost<'_> {
    fn stage(&self, name_or_id: &str) -> Option<Value> {
        let stages = &self.execution.stages;
        stages
            .iter()
            .find(|s| s.name == name_or_id)
            .or_else(|| stages.iter().find(|s| s.id == name_or_id))
            .map(stage_json)
    }
    fn stage_by_ref_id(&self, ref_id: &str) -> Option<Value> {
        self.execution.stage(ref_id).map(stage_json)
    }
    fn current_stage(&self) -> Option<Value> {
        self.stage_index
            .and_then(|i| self.execution.stages.get(i))
            .map(stage_json)
    }
    fn judgment(&self, stage_name: &str) -> Option<Value> {
        self.execution
            .stages
            .iter()
            .find(|s| s.name == stage_name && s.stage_type == "manualJudgment")
            .and_then(|s| s.context.get("judgmentInput").cloned())
    }
    fn current_user(&self) -> Option<String> {
        Some(self.execution.trigger.user.clone())
    }
    fn deployed_server_groups(&self, stage: Option<&str>) -> Option<Value> {
        let groups: Vec<Value> = self
            .execution
            .stages
            .iter()
            .filter(|s| stage.is_none_or(|n| s.name == n || s.id == n))
            .filter_map(|s| s.outputs.get("deployedServerGroups"))
            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            .collect();
        Some(Value::Array(groups))
    }
    fn fetch_url(&self, url: &str) -> Result<String, String> {
        match &self.fetcher {
            Some(f) => f.fetch(url),
            None => Err("no hosts are allow-listed for #fromUrl".into()),
        }
    }
}

/// Indexes of every stage upstream of `index`, nearest last.
fn ancestors(execution: &Execution, index: usize) -> Vec<usize> {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut stack = vec![index];
    while let Some(i) = stack.pop() {
        for r in &execution.stages[i].requisite_stage_ref_ids {
            if let Some(p) = execution.stage_index(r)
                && seen.insert(p)
            {
                order.push(p);
                stack.push(p);
            }
        }
    }
    order.reverse();
    order
}

/// What expressions in stage `index` can see: ancestor outputs (nearer stages win), the
/// stage's own context keys, then `execution`, `trigger` and `parameters`.
pub fn stage_root(execution: &Execution, index: usize, context: &Map<String, Value>) -> Value {
    let mut root = Map::new();
    for a in ancestors(execution, index) {
        for (k, v) in &execution.stages[a].outputs {
            root.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in context {
        root.insert(k.clone(), v.clone());
    }
    root.insert("execution".into(), execution_json(execution));
    root.insert(
        "trigger".into(),
        serde_json::to_value(&execution.trigger).unwrap_or(Value::Null),
    );
    root.insert(
        "parameters".into(),
        Value::Object(execution.trigger.parameters.clone()),
    );
    Value::Object(root)
}

/// The `execution` root: the execution as the API shows it, without the definitions snapshot.
pub fn execution_json(execution: &Execution) -> Value {
    let mut v = serde_json::to_value(execution).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("stageDefs");
    }
    v
}

/// The result of evaluating a stage's context when it starts.
pub struct Evaluated {
    /// The context with expressions replaced (failed ones left as written).
    pub context: Map<String, Value>,
    /// One message per failed expression, with its field path.
    pub errors: Vec<FieldError>,
}

/// Evaluates every expression in the context of stage `index`, except the keys in `raw`
/// (and `stageEnabled`, which the engine evaluates separately).
pub fn evaluate_stage_value(
    execution: &Execution,
    index: usize,
    context: &Map<String, Value>,
    raw: &[String],
    limits: Limits,
    fetcher: Option<Arc<dyn UrlFetcher>>,
) -> Evaluated {
    let root = stage_root(execution, index, context);
    let host = ExecutionHost::new(execution, Some(index), fetcher);
    let ctx = EvalContext {
        root: &root,
        host: &host,
        limits,
    };
    let mut out = Map::new();
    let mut errors = Vec::new();
    for (k, v) in context {
        if k == "stageEnabled" || raw.iter().any(|r| r == k) {
            out.insert(k.clone(), v.clone());
            continue;
        }
        let (value, errs) = ferry_expr::evaluate_tree(v, &ctx);
        errors.extend(errs.into_iter().map(|mut e| {
            e.path = ferry_core::problem::join_path(k, &e.path);
            e
        }));
        out.insert(k.clone(), value);
    }
    Evaluated {
        context: out,
        errors,
    }
}

/// Evaluates a condition such as `stageEnabled.expression`: a `${...}` template or a bare
/// expression; the result must be a boolean (or the strings "true"/"false").
pub fn evaluate_condition(
    execution: &Execution,
    index: usize,
    context: &Map<String, Value>,
    source: &str,
    limits: Limits,
    fetcher: Option<Arc<dyn UrlFetcher>>,
) -> Result<bool, String> {
    let text = if ferry_core::looks_like_expression(source) {
        source.to_string()
    } else {
        format!("${{{source}}}")
    };
    let template = Template::parse(&text).map_err(|e| e.to_string())?;
    let root = stage_root(execution, index, context);
    let host = ExecutionHost::new(execution, Some(index), fetcher);
    let ctx = EvalContext {
        root: &root,
        host: &host,
        limits,
    };
    match template.evaluate(&ctx).map_err(|e| e.to_string())? {
        Value::Bool(b) => Ok(b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        other => Err(format!(
            "`{source}` must evaluate to a boolean, got {other}"
        )),
    }
}

/// Evaluates an analysis condition such as `result[0] >= 0.95` (Argo Rollouts'
/// `successCondition` / `failureCondition`) with `result` bound to a measurement and no access
/// to the execution. A bare expression or a `${...}` template; the answer must be a boolean.
pub fn evaluate_result_condition(
    source: &str,
    result: &Value,
    limits: Limits,
) -> Result<bool, String> {
    let template = if ferry_core::looks_like_expression(source) {
        Template::parse(source)
    } else {
        Template::parse_expression(source, &limits)
    }
    .map_err(|e| e.to_string())?;
    let root = json!({ "result": result });
    let ctx = EvalContext {
        root: &root,
        host: &ferry_expr::NullHost,
        limits,
    };
    match template.evaluate(&ctx).map_err(|e| e.to_string())? {
        Value::Bool(b) => Ok(b),
        other => Err(format!(
            "`{source}` must evaluate to a boolean, got {other}"
        )),
    }
}

/// Checks that an analysis condition parses (for validation before a run).
pub fn check_result_condition(source: &str, limits: &Limits) -> Result<(), String> {
    if ferry_core::looks_like_expression(source) {
        Template::parse(source).map(|_| ())
    } else {
        Template::parse_expression(source, limits).map(|_| ())
    }
    .map_err(|e| e.to_string())
}

/// Evaluates `items` in order for the stage of `ctx`, on a blocking thread, with the engine's
/// limits and URL fetcher. With `bind`, each result is added to the root under its name before
/// the next item is evaluated (so later items can use earlier ones, as `evaluateVariables`
/// needs). Returns, per item, its name, value and the expression errors found in it.
pub async fn evaluate_for_stage(
    ctx: &crate::StageCtx,
    items: Vec<(String, Value)>,
    bind: bool,
) -> Result<Vec<(String, Value, Vec<FieldError>)>, crate::StageError> {
    let (limits, fetcher) = ctx.engine.expression_settings();
    let execution = ctx.execution.clone();
    let index = ctx.stage_index;
    let context = ctx.context.clone();
    tokio::task::spawn_blocking(move || {
        let mut root = stage_root(&execution, index, &context);
        let host = ExecutionHost::new(&execution, Some(index), fetcher);
        let mut out = Vec::with_capacity(items.len());
        for (name, raw) in items {
            let ectx = EvalContext {
                root: &root,
                host: &host,
                limits,
            };
            let (value, errors) = ferry_expr::evaluate_tree(&raw, &ectx);
            if bind && let Some(o) = root.as_object_mut() {
                o.insert(name.clone(), value.clone());
            }
            out.push((name, value, errors));
        }
        out
    })
    .await
    .map_err(|e| crate::StageError::Fatal(format!("expression evaluation failed: {e}")))
}

/// True when any string in the map holds an expression (so evaluation can be skipped cheaply).
pub fn has_expressions(context: &Map<String, Value>) -> bool {
    fn walk(v: &Value) -> bool {
        match v {
            Value::String(s) => ferry_core::looks_like_expression(s),
            Value::Array(a) => a.iter().any(walk),
            Value::Object(o) => o.values().any(walk),
            _ => false,
        }
    }
    context.values().any(walk)
}

#[cfg(test)]
mod result_condition_tests {
    use super::*;

    #[test]
    fn conditions_see_only_the_result() {
        let limits = Limits::default();
        let r = json!([0.97, 0.5]);
        assert_eq!(
            evaluate_result_condition("result[0] >= 0.95", &r, limits),
            Ok(true)
        );
        assert_eq!(
            evaluate_result_condition("${result[1] > 0.9}", &r, limits),
            Ok(false)
        );
        assert_eq!(
            evaluate_result_condition("result.score >= 75", &json!({"score": 80}), limits),
            Ok(true)
        );
        let err = evaluate_result_condition("result[0]", &r, limits).unwrap_err();
        assert!(err.contains("boolean"), "{err}");
        // No execution, no helpers that reach outside.
        assert!(evaluate_result_condition("#stage('x') != null", &r, limits).is_err());
        assert!(check_result_condition("result[0] >=", &limits).is_err());
        assert!(check_result_condition("result[0] >= 1", &limits).is_ok());
    }
}
