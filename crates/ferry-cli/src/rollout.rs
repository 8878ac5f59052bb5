//! `ferry rollout get|promote|abort|retry|undo`: Argo Rollouts' commands on a `rollout` stage.
//!
//! They act on the rollout stage of an execution (`--stage` when there are several):
//! promote, full promote and abort are stage input; retry restarts the stage; undo rolls the
//! cluster back from the server group the rollout created to the previous one.

use crate::cli::{RolloutArgs, RolloutCommand};
use crate::client::ApiClient;
use crate::error::CliError;
use crate::render::{Output, structured, table, text};
use crate::say;
use serde_json::{Value, json};

/// The rollout stage of an execution: the one named by `--stage`, or the only one.
fn rollout_stage<'a>(execution: &'a Value, wanted: Option<&str>) -> Result<&'a Value, CliError> {
    let stages: Vec<&Value> = execution
        .get("stages")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter(|s| s.get("type").and_then(Value::as_str) == Some("rollout"))
                .collect()
        })
        .unwrap_or_default();
    let id = text(execution, "id");
    match wanted {
        Some(w) => stages
            .into_iter()
            .find(|s| text(s, "refId") == w || text(s, "name") == w || text(s, "id") == w)
            .ok_or_else(|| {
                CliError::Failed(format!("execution {id} has no rollout stage \"{w}\""))
            }),
        None => match stages.as_slice() {
            [one] => Ok(one),
            [] => Err(CliError::Failed(format!(
                "execution {id} has no rollout stage"
            ))),
            many => Err(CliError::Usage(format!(
                "execution {id} has {} rollout stages; name one with --stage ({})",
                many.len(),
                many.iter()
                    .map(|s| text(s, "refId"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
    }
}

/// The rollout's status block, as `ferry rollout get` prints it.
pub fn status_text(stage: &Value) -> String {
    let r = stage.pointer("/outputs/rollout").unwrap_or(&Value::Null);
    let mut out = format!(
        "rollout {} ({}): {} — step {}/{}, canary weight {}%\n",
        text(stage, "name"),
        text(stage, "refId"),
        text(r, "status"),
        text(r, "step"),
        text(r, "steps"),
        text(r, "canaryWeight"),
    );
    out.push_str(&format!(
        "  canary: {}   stable: {}\n",
        text(r, "canary"),
        r.get("stable")
            .and_then(Value::as_array)
            .map(|s| s
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    ));
    if let Some(m) = r.get("message").and_then(Value::as_str) {
        out.push_str(&format!("  {m}\n"));
    }
    if let Some(a) = r.get("analysis").filter(|a| !a.is_null()) {
        out.push_str(&format!("  analysis: {}\n", text(a, "phase")));
        let rows: Vec<Vec<String>> = a
            .get("metrics")
            .and_then(Value::as_array)
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        vec![
                            text(m, "name"),
                            text(m, "phase"),
                            text(m, "count"),
                            text(m, "successful"),
                            text(m, "failed"),
                            text(m, "inconclusive"),
                            text(m, "error"),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&table(
            &[
                "METRIC",
                "PHASE",
                "COUNT",
                "OK",
                "FAILED",
                "INCONCLUSIVE",
                "ERROR",
            ],
            &rows,
        ));
    }
    out
}

/// `ferry rollout …`.
pub async fn run(client: &ApiClient, cmd: &RolloutCommand) -> Result<(), CliError> {
    let args: &RolloutArgs = match cmd {
        RolloutCommand::Get { args, .. }
        | RolloutCommand::Promote { args, .. }
        | RolloutCommand::Abort { args, .. }
        | RolloutCommand::Retry { args }
        | RolloutCommand::Undo { args } => args,
    };
    let id = args.execution.as_str();
    let execution = client.get(&["api", "v1", "executions", id], &[]).await?;
    let stage = rollout_stage(&execution, args.stage.as_deref())?;
    let ref_id = text(stage, "refId");
    let input = |body: Value| {
        let ref_id = ref_id.clone();
        async move {
            client
                .post(
                    &["api", "v1", "executions", id, "stages", &ref_id, "input"],
                    &body,
                )
                .await
        }
    };
    match cmd {
        RolloutCommand::Get { output, .. } => {
            let text = match output {
                Output::Table => status_text(stage),
                other => structured(
                    *other,
                    stage.pointer("/outputs/rollout").unwrap_or(&Value::Null),
                )?,
            };
            say(text.trim_end_matches('\n'));
        }
        RolloutCommand::Promote { full, .. } => {
            input(json!({"promote": if *full { json!("full") } else { json!(true) }})).await?;
            say(&format!(
                "execution {id}: rollout {ref_id} {}",
                if *full {
                    "fully promoted"
                } else {
                    "promoted to its next step"
                }
            ));
        }
        RolloutCommand::Abort { reason, .. } => {
            let body = match reason {
                Some(r) => json!({"abort": r}),
                None => json!({"abort": true}),
            };
            input(body).await?;
            say(&format!("execution {id}: rollout {ref_id} abort requested"));
        }
        RolloutCommand::Retry { .. } => {
            client
                .post(
                    &["api", "v1", "executions", id, "stages", &ref_id, "restart"],
                    &json!({}),
                )
                .await?;
            say(&format!("execution {id}: rollout {ref_id} restarted"));
        }
        RolloutCommand::Undo { .. } => {
            let canary = stage
                .pointer("/outputs/rollout/canary")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    CliError::Failed(format!("rollout {ref_id} created no server group"))
                })?;
            let account = stage
                .pointer("/context/cluster/account")
                .and_then(Value::as_str)
                .unwrap_or("local");
            let rollback =
                crate::commands::start_operation(client, account, canary, "rollback", &json!({}))
                    .await?;
            crate::commands::finish_operation(client, &rollback).await?;
            say(&format!(
                "execution {id}: rolled back from {canary} to the previous server group (execution {rollback})"
            ));
        }
    }
    Ok(())
}
