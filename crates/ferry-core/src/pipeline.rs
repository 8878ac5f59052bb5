//! Pipeline documents in Spinnaker's JSON shape: parsing into [`Pipeline`] and the structural
//! checks every pipeline passes (identity, stage graph, failure flags, windows, parameters).
//! Stage-type-specific checks and expression checks are added by the engine, which knows the
//! stage registry; see `ferry_engine::validate`.

use crate::fields::{Fields, kind};
use crate::problem::Problem;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// A pipeline that passed the structural checks. `spec` keeps the document exactly as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    /// Stable id; becomes `pipelineConfigId` of each execution. Assigned by the store when absent.
    pub id: String,
    /// Owning application.
    pub application: String,
    /// Unique within the application.
    pub name: String,
    /// The stage graph, in document order.
    pub stages: Vec<StageDef>,
    /// Parameters a run accepts.
    pub parameter_config: Vec<ParameterConfig>,
    /// `limitConcurrent`: a new run waits while one runs.
    pub limit_concurrent: bool,
    /// `maxConcurrentExecutions`; 0 = unlimited.
    pub max_concurrent_executions: u32,
    /// `keepWaitingPipelines`: when false, only the newest waiting run starts.
    pub keep_waiting_pipelines: bool,
    /// `disabled`: a disabled pipeline cannot be run.
    pub disabled: bool,
    /// The document as the user wrote it (with `id` filled in).
    pub spec: Value,
}

/// One stage as declared in a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageDef {
    /// Unique within the pipeline.
    pub ref_id: String,
    /// Upstream stages; empty for a root.
    pub requisite_stage_ref_ids: Vec<String>,
    /// Stage type key, e.g. `wait`.
    #[serde(rename = "type")]
    pub stage_type: String,
    /// Display name (defaults to the type).
    pub name: String,
    /// `stageEnabled.expression`, when the stage is conditional.
    pub stage_enabled: Option<String>,
    /// What a failure of this stage does.
    pub failure: FailurePolicy,
    /// `failOnFailedExpressions`.
    pub fail_on_failed_expressions: bool,
    /// `stageTimeoutMs`.
    pub stage_timeout_ms: Option<u64>,
    /// `restrictedExecutionWindow`, when `restrictExecutionDuringTimeWindow` is true.
    pub execution_window: Option<ExecutionWindow>,
    /// The whole stage object as written: Spinnaker's stage context.
    pub context: Map<String, Value>,
}

/// The stage's failure flags (the reference's "if stage fails" table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// `failPipeline` (default true).
    pub fail_pipeline: bool,
    /// `continuePipeline`.
    pub continue_pipeline: bool,
    /// `completeOtherBranchesThenFail`.
    pub complete_other_branches_then_fail: bool,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            fail_pipeline: true,
            continue_pipeline: false,
            complete_other_branches_then_fail: false,
        }
    }
}

impl FailurePolicy {
    /// The status a failing stage ends with under this policy.
    pub fn failed_status(&self) -> crate::Status {
        use crate::Status;
        if self.continue_pipeline {
            Status::FailedContinue
        } else if self.fail_pipeline {
            Status::Terminal
        } else {
            Status::Stopped
        }
    }
}

/// `restrictedExecutionWindow`: days (1 = Sunday … 7 = Saturday, as Spinnaker's Java calendar)
/// and time ranges in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionWindow {
    /// Allowed days; empty = every day.
    pub days: Vec<u8>,
    /// Allowed time ranges; empty = all day.
    pub whitelist: Vec<TimeRange>,
    /// Random extra delay inside the window, in seconds.
    pub jitter: Option<Jitter>,
}

/// A time-of-day range `[start, end)` in UTC; an end before the start wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeRange {
    /// Start hour, 0–23.
    pub start_hour: u8,
    /// Start minute, 0–59.
    pub start_min: u8,
    /// End hour, 0–23.
    pub end_hour: u8,
    /// End minute, 0–59.
    pub end_min: u8,
}

/// Jitter inside an execution window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Jitter {
    /// Minimum delay, seconds.
    pub min_delay: u64,
    /// Maximum delay, seconds.
    pub max_delay: u64,
    /// Skip the jitter for manually triggered runs.
    pub skip_manual: bool,
}

/// One entry of `parameterConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterConfig {
    /// Parameter name.
    pub name: String,
    /// Default value when the trigger does not give one.
    pub default: Option<Value>,
    /// A run without a value (and no default) is refused.
    pub required: bool,
    /// When true, the value must be one of `options`.
    pub has_options: bool,
    /// Allowed values.
    pub options: Vec<String>,
    /// Description shown to users.
    pub description: Option<String>,
}

/// Reads a pipeline document, returning the best-effort pipeline and every structural problem.
/// The caller must treat the pipeline as invalid when the list is not empty.
pub fn parse_pipeline(doc: &Value) -> (Pipeline, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut f = Fields::new(doc, "", &mut problems);
    let id = f.opt_str("id").unwrap_or_default();
    let application = f.required_str("application").unwrap_or_default();
    let name = f.required_str("name").unwrap_or_default();
    if let Some(n) = f.get("name").and_then(Value::as_str)
        && n.len() > 256
    {
        f.problem("name", "must be at most 256 characters");
    }
    let limit_concurrent = f.bool_or("limitConcurrent", false);
    let keep_waiting_pipelines = f.bool_or("keepWaitingPipelines", false);
    let disabled = f.bool_or("disabled", false);
    let max_concurrent_executions = match f.opt_u64("maxConcurrentExecutions") {
        Some(n) if n > u64::from(u32::MAX) => {
            f.problem("maxConcurrentExecutions", "is too large");
            0
        }
        Some(n) => n as u32,
        None => 0,
    };
    let stage_values = f.opt_array("stages").cloned().unwrap_or_default();
    let param_values = f.opt_array("parameterConfig").cloned().unwrap_or_default();
    let trigger_values = f.opt_array("triggers").cloned().unwrap_or_default();
    let _ = f.opt_array("notifications");
    let _ = f.opt_array("expectedArtifacts");

    let stages: Vec<StageDef> = stage_values
        .iter()
        .enumerate()
        .map(|(i, v)| parse_stage(v, &format!("stages[{i}]"), &mut problems))
        .collect();
    check_graph(&stages, &mut problems);

    let mut parameter_config = Vec::new();
    let mut seen_params = HashSet::new();
    for (i, v) in param_values.iter().enumerate() {
        let path = format!("parameterConfig[{i}]");
        if let Some(p) = parse_parameter(v, &path, &mut problems) {
            if !seen_params.insert(p.name.clone()) {
                problems.push(Problem::new(
                    format!("{path}.name"),
                    format!("duplicate parameter \"{}\"", p.name),
                ));
            }
            parameter_config.push(p);
        }
    }
    for (i, v) in trigger_values.iter().enumerate() {
        let path = format!("triggers[{i}]");
        let mut t = Fields::new(v, &path, &mut problems);
        t.required_str("type");
        t.bool_or("enabled", true);
    }

    let mut spec = doc.clone();
    if let Some(obj) = spec.as_object_mut()
        && !id.is_empty()
    {
        obj.insert("id".into(), Value::String(id.clone()));
    }
    (
        Pipeline {
            id,
            application,
            name,
            stages,
            parameter_config,
            limit_concurrent,
            max_concurrent_executions,
            keep_waiting_pipelines,
            disabled,
            spec,
        },
        problems,
    )
}

fn parse_stage(v: &Value, path: &str, problems: &mut Vec<Problem>) -> StageDef {
    let mut f = Fields::new(v, path, problems);
    let ref_id = f.required_str("refId").unwrap_or_default();
    let stage_type = f.required_str("type").unwrap_or_default();
    let name = f.opt_str("name").unwrap_or_else(|| stage_type.clone());
    let requisite_stage_ref_ids = f.string_list("requisiteStageRefIds");
    let failure = FailurePolicy {
        fail_pipeline: f.bool_or("failPipeline", true),
        continue_pipeline: f.bool_or("continuePipeline", false),
        complete_other_branches_then_fail: f.bool_or("completeOtherBranchesThenFail", false),
    };
    let fail_on_failed_expressions = f.bool_or("failOnFailedExpressions", false);
    let stage_timeout_ms = f.opt_u64("stageTimeoutMs");
    if stage_timeout_ms == Some(0) {
        f.problem("stageTimeoutMs", "must be greater than 0");
    }
    let stage_enabled = match f.get("stageEnabled") {
        None => None,
        Some(se @ Value::Object(_)) => {
            let p = f.path_of("stageEnabled");
            Fields::new(se, &p, f.problems).required_str("expression")
        }
        Some(other) => {
            let msg = format!(
                "must be an object {{type, expression}}, found {}",
                kind(other)
            );
            f.problem("stageEnabled", msg);
            None
        }
    };
    let restrict = f.bool_or("restrictExecutionDuringTimeWindow", false);
    let execution_window = match (restrict, f.get("restrictedExecutionWindow")) {
        (true, Some(w)) => {
            let p = f.path_of("restrictedExecutionWindow");
            Some(parse_window(w, &p, f.problems))
        }
        (true, None) => {
            f.problem(
                "restrictedExecutionWindow",
                "is required when restrictExecutionDuringTimeWindow is true",
            );
            None
        }
        _ => None,
    };
    StageDef {
        ref_id,
        requisite_stage_ref_ids,
        stage_type,
        name,
        stage_enabled,
        failure,
        fail_on_failed_expressions,
        stage_timeout_ms,
        execution_window,
        context: v.as_object().cloned().unwrap_or_default(),
    }
}

fn parse_window(v: &Value, path: &str, problems: &mut Vec<Problem>) -> ExecutionWindow {
    let mut f = Fields::new(v, path, problems);
    let mut days = Vec::new();
    if let Some(items) = f.opt_array("days") {
        for (i, d) in items.iter().enumerate() {
            match d.as_u64() {
                Some(n @ 1..=7) => days.push(n as u8),
                _ => f.problem(
                    &format!("days[{i}]"),
                    "must be a day number from 1 (Sunday) to 7 (Saturday)",
                ),
            }
        }
    }
    let mut whitelist = Vec::new();
    if let Some(items) = f.opt_array("whitelist") {
        let base = f.path_of("whitelist");
        for (i, r) in items.iter().enumerate() {
            let p = format!("{base}[{i}]");
            let mut rf = Fields::new(r, &p, f.problems);
            let num = |rf: &mut Fields<'_>, key: &str, max: u64| -> u8 {
                match rf.opt_u64(key) {
                    Some(n) if n <= max => n as u8,
                    Some(_) => {
                        rf.problem(key, format!("must be between 0 and {max}"));
                        0
                    }
                    None => {
                        if rf.get(key).is_none() {
                            rf.problem(key, "is required");
                        }
                        0
                    }
                }
            };
            let range = TimeRange {
                start_hour: num(&mut rf, "startHour", 23),
                start_min: num(&mut rf, "startMin", 59),
                end_hour: num(&mut rf, "endHour", 23),
                end_min: num(&mut rf, "endMin", 59),
            };
            whitelist.push(range);
        }
    }
    let jitter = match f.get("jitter") {
        Some(j) => {
            let p = f.path_of("jitter");
            let mut jf = Fields::new(j, &p, f.problems);
            if jf.bool_or("enabled", false) {
                let min_delay = jf.opt_u64("minDelay").unwrap_or(0);
                let max_delay = jf.opt_u64("maxDelay").unwrap_or(0);
                if max_delay < min_delay {
                    jf.problem("maxDelay", "must not be less than minDelay");
                }
                Some(Jitter {
                    min_delay,
                    max_delay,
                    skip_manual: jf.bool_or("skipManual", false),
                })
            } else {
                None
            }
        }
        None => None,
    };
    ExecutionWindow {
        days,
        whitelist,
        jitter,
    }
}

fn parse_parameter(v: &Value, path: &str, problems: &mut Vec<Problem>) -> Option<ParameterConfig> {
    let mut f = Fields::new(v, path, problems);
    let name = f.required_str("name")?;
    let required = f.bool_or("required", false);
    let has_options = f.bool_or("hasOptions", false);
    let description = f.opt_str("description");
    let mut options = Vec::new();
    if let Some(items) = f.opt_array("options") {
        for (i, o) in items.iter().enumerate() {
            match o.get("value") {
                Some(Value::String(s)) => options.push(s.clone()),
                Some(Value::Number(n)) => options.push(n.to_string()),
                Some(Value::Bool(b)) => options.push(b.to_string()),
                _ => f.problem(
                    &format!("options[{i}].value"),
                    "is required and must be a string",
                ),
            }
        }
    }
    if has_options && options.is_empty() {
        f.problem(
            "options",
            "must list at least one option when hasOptions is true",
        );
    }
    let default = f
        .get("default")
        .cloned()
        .filter(|d| d != &Value::String(String::new()));
    if let (true, Some(d)) = (has_options, &default) {
        let d = value_as_param_string(d);
        if !options.contains(&d) {
            f.problem("default", format!("\"{d}\" is not one of the options"));
        }
    }
    Some(ParameterConfig {
        name,
        default,
        required,
        has_options,
        options,
        description,
    })
}

/// The string form of a parameter value, as triggers carry them.
pub fn value_as_param_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Checks the stage graph: unique refIds, known requisites, no self-loops and no cycles.
fn check_graph(stages: &[StageDef], problems: &mut Vec<Problem>) {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, s) in stages.iter().enumerate() {
        if s.ref_id.is_empty() {
            continue;
        }
        if let Some(first) = index.get(s.ref_id.as_str()) {
            problems.push(Problem::new(
                format!("stages[{i}].refId"),
                format!(
                    "duplicate refId \"{}\" (also used by stages[{first}])",
                    s.ref_id
                ),
            ));
        } else {
            index.insert(&s.ref_id, i);
        }
    }
    for (i, s) in stages.iter().enumerate() {
        let mut seen = HashSet::new();
        for (j, r) in s.requisite_stage_ref_ids.iter().enumerate() {
            let path = format!("stages[{i}].requisiteStageRefIds[{j}]");
            if r == &s.ref_id {
                problems.push(Problem::new(path, "a stage cannot depend on itself"));
            } else if !index.contains_key(r.as_str()) {
                problems.push(Problem::new(
                    path,
                    format!("names no stage: there is no refId \"{r}\""),
                ));
            } else if !seen.insert(r) {
                problems.push(Problem::new(path, format!("\"{r}\" is listed twice")));
            }
        }
    }
    // Cycle detection: Kahn's algorithm; whatever cannot be ordered sits on or behind a cycle.
    let n = stages.len();
    let mut indegree = vec![0usize; n];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, s) in stages.iter().enumerate() {
        for r in &s.requisite_stage_ref_ids {
            if let Some(&p) = index.get(r.as_str())
                && p != i
            {
                indegree[i] += 1;
                children[p].push(i);
            }
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut ordered = 0;
    while let Some(i) = ready.pop() {
        ordered += 1;
        for &c in &children[i] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(c);
            }
        }
    }
    if ordered < n {
        let stuck: Vec<String> = (0..n)
            .filter(|&i| indegree[i] > 0)
            .map(|i| format!("\"{}\"", stages[i].ref_id))
            .collect();
        let first = (0..n).find(|&i| indegree[i] > 0).unwrap_or(0);
        problems.push(Problem::new(
            format!("stages[{first}].requisiteStageRefIds"),
            format!(
                "the stage graph has a cycle through refIds {}",
                stuck.join(", ")
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems_of(doc: Value) -> Vec<String> {
        parse_pipeline(&doc)
            .1
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn a_spinnaker_pipeline_parses() {
        let doc = json!({
            "application": "shop", "name": "deploy", "id": "abc",
            "limitConcurrent": true, "keepWaitingPipelines": false,
            "parameterConfig": [{"name": "env", "default": "qa", "hasOptions": true,
                                  "options": [{"value": "qa"}, {"value": "prod"}]}],
            "stages": [
                {"refId": "1", "requisiteStageRefIds": [], "type": "wait", "name": "Wait", "waitTime": 1},
                {"refId": 2, "requisiteStageRefIds": ["1"], "type": "wait", "waitTime": 2,
                 "failPipeline": false, "continuePipeline": true,
                 "stageEnabled": {"type": "expression", "expression": "${parameters.env == 'prod'}"}}
            ],
            "triggers": [{"type": "cron", "enabled": true, "cronExpression": "0 0 * * * ?"}]
        });
        let (p, problems) = parse_pipeline(&doc);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(p.id, "abc");
        assert!(p.limit_concurrent);
        assert_eq!(p.stages[1].ref_id, "2");
        assert_eq!(p.stages[1].name, "wait");
        assert_eq!(
            p.stages[1].failure.failed_status(),
            crate::Status::FailedContinue
        );
        assert_eq!(
            p.stages[1].stage_enabled.as_deref(),
            Some("${parameters.env == 'prod'}")
        );
        assert_eq!(p.stages[0].context["waitTime"], json!(1));
        assert_eq!(p.parameter_config[0].options, vec!["qa", "prod"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let got = problems_of(json!({
            "name": 5.5,
            "stages": [
                {"refId": "1", "type": "wait"},
                {"refId": "1", "type": "wait", "requisiteStageRefIds": ["9", "1"]},
                {"type": "wait", "failPipeline": "sometimes", "stageTimeoutMs": -3},
                "not a stage"
            ]
        }));
        let expected = [
            "application: is required",
            "stages[1].refId: duplicate refId \"1\" (also used by stages[0])",
            "stages[1].requisiteStageRefIds[0]: names no stage: there is no refId \"9\"",
            "stages[1].requisiteStageRefIds[1]: a stage cannot depend on itself",
            "stages[2].refId: is required",
            "stages[2].failPipeline: must be a boolean, found a string",
            "stages[2].stageTimeoutMs: must be a non-negative integer",
            "stages[3]: must be an object, found a string",
        ];
        for e in expected {
            assert!(got.iter().any(|g| g == e), "missing {e:?} in {got:#?}");
        }
        // `name` 5.5 is accepted as the string "5.5" (numbers are coerced) — no problem there.
        assert!(!got.iter().any(|g| g.starts_with("name")), "{got:#?}");
    }

    #[test]
    fn cycles_are_found() {
        let got = problems_of(json!({
            "application": "a", "name": "p",
            "stages": [
                {"refId": "a", "type": "wait", "requisiteStageRefIds": ["c"]},
                {"refId": "b", "type": "wait", "requisiteStageRefIds": ["a"]},
                {"refId": "c", "type": "wait", "requisiteStageRefIds": ["b"]},
                {"refId": "d", "type": "wait"}
            ]
        }));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("cycle through refIds \"a\", \"b\", \"c\""),
            "{got:?}"
        );
    }

    #[test]
    fn windows_and_parameters_are_checked() {
        let got = problems_of(json!({
            "application": "a", "name": "p",
            "parameterConfig": [{"name": "x"}, {"name": "x", "hasOptions": true, "default": "z",
                                 "options": [{"value": "y"}]}, {"label": "no name"}],
            "stages": [{"refId": "1", "type": "wait", "restrictExecutionDuringTimeWindow": true,
                        "restrictedExecutionWindow": {"days": [0, 3], "whitelist": [{"startHour": 25, "startMin": 0, "endHour": 3}]}}]
        }));
        for e in [
            "parameterConfig[1].name: duplicate parameter \"x\"",
            "parameterConfig[1].default: \"z\" is not one of the options",
            "parameterConfig[2].name: is required",
            "stages[0].restrictedExecutionWindow.days[0]: must be a day number from 1 (Sunday) to 7 (Saturday)",
            "stages[0].restrictedExecutionWindow.whitelist[0].startHour: must be between 0 and 23",
            "stages[0].restrictedExecutionWindow.whitelist[0].endMin: is required",
        ] {
            assert!(got.iter().any(|g| g == e), "missing {e:?} in {got:#?}");
        }
    }

    #[test]
    fn failure_policy_table() {
        use crate::Status;
        let p = |fp, cp| FailurePolicy {
            fail_pipeline: fp,
            continue_pipeline: cp,
            complete_other_branches_then_fail: false,
        };
        assert_eq!(p(true, false).failed_status(), Status::Terminal);
        assert_eq!(p(false, false).failed_status(), Status::Stopped);
        assert_eq!(p(false, true).failed_status(), Status::FailedContinue);
    }
}
