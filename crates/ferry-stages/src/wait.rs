//! `wait` (a number of seconds, skippable by a user) and `waitUntil` (an epoch-millis instant).

use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_core::now_millis;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use serde_json::{Map, Value};
use std::time::Duration;

/// The `wait` stage.
pub struct Wait;

/// `wait`'s configuration.
pub struct WaitConfig {
    /// `waitTime`, seconds.
    pub wait_time: u64,
}

fn skipped(ctx: &StageCtx) -> bool {
    ctx.context
        .get("skipRemainingWait")
        .and_then(Value::as_bool)
        == Some(true)
}

fn accept_skip(input: &Map<String, Value>) -> Result<(), String> {
    match input.get("skipRemainingWait") {
        Some(Value::Bool(true)) if input.len() == 1 => Ok(()),
        _ => Err("a wait stage only accepts {\"skipRemainingWait\": true}".into()),
    }
}

fn until(deadline: i64) -> Step {
    let left = deadline - now_millis();
    if left <= 0 {
        Step::Succeeded
    } else {
        Step::Running {
            poll_after: Duration::from_millis(left as u64),
        }
    }
}

#[async_trait]
impl TypedStage for Wait {
    type Config = WaitConfig;
    const TYPE: &'static str = "wait";
    const TASK: &'static str = "waitTask";

    fn config(f: &mut Fields<'_>) -> Option<WaitConfig> {
        if f.is_deferred("waitTime") {
            return None;
        }
        match f.opt_u64("waitTime") {
            Some(w) => Some(WaitConfig { wait_time: w }),
            None => {
                if f.get("waitTime").is_none() {
                    f.problem("waitTime", "is required (seconds to wait)");
                }
                None
            }
        }
    }

    fn accept_input(_c: &Map<String, Value>, input: &Map<String, Value>) -> Result<(), String> {
        accept_skip(input)
    }

    async fn step(&self, c: &WaitConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        if skipped(ctx) {
            return Ok(Step::Succeeded);
        }
        let paused = ctx.execution.stages[ctx.stage_index].paused_ms;
        Ok(until(
            ctx.started_at() + (c.wait_time as i64) * 1000 + paused,
        ))
    }
}

/// The `waitUntil` stage.
pub struct WaitUntil;

/// `waitUntil`'s configuration.
pub struct WaitUntilConfig {
    /// `epochMillis`.
    pub epoch_millis: u64,
}

#[async_trait]
impl TypedStage for WaitUntil {
    type Config = WaitUntilConfig;
    const TYPE: &'static str = "waitUntil";
    const TASK: &'static str = "waitUntilTask";

    fn config(f: &mut Fields<'_>) -> Option<WaitUntilConfig> {
        if f.is_deferred("epochMillis") {
            return None;
        }
        match f.opt_u64("epochMillis") {
            Some(e) => Some(WaitUntilConfig { epoch_millis: e }),
            None => {
                if f.get("epochMillis").is_none() {
                    f.problem(
                        "epochMillis",
                        "is required (the instant to wait for, in epoch milliseconds)",
                    );
                }
                None
            }
        }
    }

    fn accept_input(_c: &Map<String, Value>, input: &Map<String, Value>) -> Result<(), String> {
        accept_skip(input)
    }

    async fn step(&self, c: &WaitUntilConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        if skipped(ctx) {
            return Ok(Step::Succeeded);
        }
        Ok(until(c.epoch_millis as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;
    use ferry_engine::conformance::{Case, run};
    use serde_json::json;

    #[tokio::test]
    async fn wait_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _g) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(dir.path()));
        let skip: Map<String, Value> =
            serde_json::from_value(json!({"skipRemainingWait": true})).unwrap();
        run(
            registry,
            store,
            Case {
                succeeds: json!({"type": "wait", "waitTime": 0}),
                long_running: json!({"type": "wait", "waitTime": 3600}),
                completing_input: Some(skip),
                invalid: vec![
                    (json!({"type": "wait"}), "stages[0].waitTime"),
                    (
                        json!({"type": "wait", "waitTime": -1}),
                        "stages[0].waitTime",
                    ),
                    (
                        json!({"type": "wait", "waitTime": "soon"}),
                        "stages[0].waitTime",
                    ),
                ],
            },
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn wait_until_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _g) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(dir.path()));
        let skip: Map<String, Value> =
            serde_json::from_value(json!({"skipRemainingWait": true})).unwrap();
        run(
            registry,
            store,
            Case {
                succeeds: json!({"type": "waitUntil", "epochMillis": now_millis() + 200}),
                long_running: json!({"type": "waitUntil", "epochMillis": now_millis() + 3_600_000}),
                completing_input: Some(skip),
                invalid: vec![
                    (json!({"type": "waitUntil"}), "stages[0].epochMillis"),
                    (
                        json!({"type": "waitUntil", "epochMillis": true}),
                        "stages[0].epochMillis",
                    ),
                ],
            },
        )
        .await
        .unwrap();
    }

    #[test]
    fn only_skip_is_accepted() {
        let ok: Map<String, Value> =
            serde_json::from_value(json!({"skipRemainingWait": true})).unwrap();
        let bad: Map<String, Value> =
            serde_json::from_value(json!({"judgmentStatus": "continue"})).unwrap();
        assert!(accept_skip(&ok).is_ok());
        assert!(accept_skip(&bad).is_err());
    }
}
