//! `ferry canary judge` (offline, recorded samples) and `ferry canary report` (the intervals a
//! `kayentaCanary` stage judged).

use crate::cli::{CanaryCommand, CanaryJudgeArgs};
use crate::client::ApiClient;
use crate::error::{ApiProblem, CliError};
use crate::render::{self, Output, table, text};
use crate::say;
use serde_json::{Value, json};
use std::path::Path;

/// Reads one JSON or YAML document from a file.
fn read_document(path: &Path, what: &str) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut docs = ferry_server::documents::parse_text(&text)
        .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        n => Err(CliError::Failed(format!(
            "{}: expected one {what} document, found {n}",
            path.display()
        ))),
    }
}

/// The body `POST /api/v1/canary/judge` takes, built from the three files.
fn judge_body(args: &CanaryJudgeArgs) -> Result<Value, CliError> {
    let mut config = read_document(&args.config, "canary config")?;
    if let Some(o) = config.as_object_mut() {
        o.remove("kind");
        o.remove("apiVersion");
    }
    Ok(json!({
        "config": config,
        "baseline": read_document(&args.baseline, "baseline samples")?,
        "canary": read_document(&args.canary, "canary samples")?,
        "thresholds": {"pass": args.pass, "marginal": args.marginal},
    }))
}

/// `ferry canary judge`: judges recorded samples on this machine, no server needed.
pub fn judge(args: &CanaryJudgeArgs) -> Result<(), CliError> {
    let body = judge_body(args)?;
    match ferry_canary::recorded::judge_request(&body) {
        Ok(result) => {
            let text = match args.output {
                Output::Table => judge_table(&result),
                other => render::structured(other, &result)?,
            };
            say(text.trim_end_matches('\n'));
            Ok(())
        }
        Err(problems) => {
            let lines = problems
                .0
                .into_iter()
                .map(|p| {
                    ApiProblem {
                        path: p.path,
                        message: p.message,
                    }
                    .to_string()
                })
                .collect::<Vec<_>>();
            Err(CliError::Invalid {
                summary: format!("{} problem(s) found", lines.len()),
                lines,
            })
        }
    }
}

fn number(v: &Value, key: &str, digits: usize) -> String {
    match v.get(key).and_then(Value::as_f64) {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "-".into(),
    }
}

/// One row per metric, then the group scores and the summary.
pub fn judge_table(result: &Value) -> String {
    let metrics = result
        .get("metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = metrics
        .iter()
        .map(|m| {
            let ci = m.get("confidenceInterval").unwrap_or(&Value::Null);
            let effect = m.get("effectSize").unwrap_or(&Value::Null);
            vec![
                text(m, "name"),
                text(m, "classification"),
                number(m, "pValue", 4),
                number(m, "estimate", 4),
                format!("[{}, {}]", number(ci, "lower", 4), number(ci, "upper", 4)),
                number(effect, "value", 3),
                text(m, "classificationReason"),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "METRIC", "RESULT", "P-VALUE", "ESTIMATE", "98% CI", "EFFECT", "REASON",
        ],
        &rows,
    );
    let groups = result
        .get("groups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for g in &groups {
        out.push_str(&format!(
            "group {}: score {} (weight {})\n",
            text(g, "name"),
            number(g, "score", 2),
            number(g, "weight", 2)
        ));
    }
    let summary = result.get("summary").unwrap_or(&Value::Null);
    out.push_str(&format!(
        "summary: {} — score {}",
        text(summary, "classification"),
        number(summary, "score", 2)
    ));
    if let Some(reason) = summary.get("reason").and_then(Value::as_str) {
        out.push_str(&format!(" ({reason})"));
    }
    out.push('\n');
    out
}

/// The `kayentaCanary` stages of an execution with their outputs.
fn canary_stages(execution: &Value) -> Vec<&Value> {
    execution
        .get("stages")
        .and_then(Value::as_array)
        .map(|stages| {
            stages
                .iter()
                .filter(|s| s.get("type").and_then(Value::as_str) == Some("kayentaCanary"))
                .collect()
        })
        .unwrap_or_default()
}

/// Every canary stage of the execution: each interval's score and window, then the last
/// interval's per-metric table.
pub fn report_text(execution: &Value) -> Result<String, CliError> {
    let stages = canary_stages(execution);
    if stages.is_empty() {
        return Err(CliError::Failed(format!(
            "execution {} has no kayentaCanary stage",
            text(execution, "id")
        )));
    }
    let mut out = String::new();
    for stage in stages {
        let outputs = stage.get("outputs").unwrap_or(&Value::Null);
        out.push_str(&format!(
            "stage {} ({}): {} — config {} v{}, overall score {}\n",
            text(stage, "name"),
            text(stage, "refId"),
            text(stage, "status"),
            text(outputs, "canaryConfigName"),
            text(outputs, "canaryConfigVersion"),
            number(outputs, "overallScore", 2),
        ));
        if let Some(message) = outputs.get("canaryScoreMessage").and_then(Value::as_str) {
            out.push_str(&format!("  {message}\n"));
        }
        let intervals = outputs
            .get("intervals")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let rows: Vec<Vec<String>> = intervals
            .iter()
            .map(|i| {
                let summary = i.get("summary").unwrap_or(&Value::Null);
                let canary = i.get("canary").unwrap_or(&Value::Null);
                let window = match (
                    canary.get("start").and_then(Value::as_i64),
                    canary.get("end").and_then(Value::as_i64),
                ) {
                    (Some(a), Some(b)) => {
                        format!("{}–{}", render::clock(a * 1000), render::clock(b * 1000))
                    }
                    _ => "-".into(),
                };
                vec![
                    text(i, "interval"),
                    window,
                    number(summary, "score", 2),
                    text(summary, "classification"),
                ]
            })
            .collect();
        out.push_str(&table(&["INTERVAL", "WINDOW", "SCORE", "RESULT"], &rows));
        if let Some(last) = intervals.last() {
            out.push_str("last interval:\n");
            out.push_str(&judge_table(last));
        }
    }
    Ok(out)
}

/// `ferry canary …`.
pub async fn run(client: Option<ApiClient>, cmd: &CanaryCommand) -> Result<(), CliError> {
    match cmd {
        CanaryCommand::Judge(args) => judge(args),
        CanaryCommand::Report { execution, output } => {
            let client = client.ok_or_else(|| CliError::Usage("no server to ask".into()))?;
            let raw = client
                .get(&["api", "v1", "executions", execution], &[])
                .await?;
            let text = match output {
                Output::Table => report_text(&raw)?,
                other => {
                    let stages: Vec<Value> = canary_stages(&raw)
                        .into_iter()
                        .map(|s| {
                            json!({
                                "refId": s.get("refId"),
                                "name": s.get("name"),
                                "status": s.get("status"),
                                "outputs": s.get("outputs"),
                            })
                        })
                        .collect();
                    render::structured(*other, &Value::Array(stages))?
                }
            };
            say(text.trim_end_matches('\n'));
            Ok(())
        }
    }
}
