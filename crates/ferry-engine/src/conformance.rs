//! The stage-type conformance kit: one suite every stage type passes (house rule: "one
//! conformance suite that every provider and stage type passes").
//!
//! A stage type supplies a [`Case`]: a stage that finishes by itself, a stage that keeps running
//! (until canceled, timed out or given input), and invalid stages with the path each must be
//! reported at. [`run`] then checks, against a real store:
//! 1. every invalid stage is refused with a problem at its path, and nothing is stored;
//! 2. the finishing stage SUCCEEDS;
//! 3. restarting it runs it again (attempt 2, `restartDetails` recorded) and it SUCCEEDS again;
//! 4. cancel: the long-running stage ends CANCELED promptly and the run is CANCELED;
//! 5. timeout: with `stageTimeoutMs` it ends TERMINAL with a "timed out" error;
//! 6. resume after a crash: the engine is stopped while the stage runs, a new engine on the
//!    same store picks the run up and it completes (given the case's completing input, if any).
//!
//! The kit returns a readable error instead of panicking so callers' tests show what failed.

use crate::{Command, Engine, EngineConfig, EngineHandle, Registry, RunRequest};
use ferry_core::{Execution, Status, Store, now_millis};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// What a stage type provides to the kit.
pub struct Case {
    /// A stage object (without `refId`) that SUCCEEDS by itself within a few seconds.
    pub succeeds: Value,
    /// A stage object that stays RUNNING until canceled, timed out or given `completing_input`.
    pub long_running: Value,
    /// Input that completes `long_running` successfully (a judgment, a skip); `None` when the
    /// stage completes by itself after a while (then it must do so within 10 s).
    pub completing_input: Option<Map<String, Value>>,
    /// Invalid stage objects and, for each, a path that must appear in the problems
    /// (e.g. `stages[0].waitTime`).
    pub invalid: Vec<(Value, &'static str)>,
}

/// Runs the whole suite. `store` must be empty or dedicated to this run.
pub async fn run(registry: Registry, store: Arc<dyn Store>, case: Case) -> Result<(), String> {
    check_invalid(&registry, &store, &case).await?;
    let engine = start(&registry, &store).await?;
    check_succeeds_and_restart(&engine, &case).await?;
    check_cancel(&engine, &case).await?;
    check_timeout(&engine, &case).await?;
    engine.shutdown();
    check_resume_after_crash(&registry, &store, &case).await?;
    Ok(())
}

async fn start(registry: &Registry, store: &Arc<dyn Store>) -> Result<EngineHandle, String> {
    let (engine, _join) = Engine::start(store.clone(), registry.clone(), EngineConfig::default())
        .await
        .map_err(|e| format!("engine did not start: {e}"))?;
    Ok(engine)
}

fn pipeline(name: &str, stage: &Value, extra: &[(&str, Value)]) -> Value {
    let mut s = stage.as_object().cloned().unwrap_or_default();
    s.insert("refId".into(), json!("1"));
    s.insert("name".into(), json!("stage under test"));
    for (k, v) in extra {
        s.insert((*k).into(), v.clone());
    }
    json!({"application": "conformance", "name": name, "stages": [Value::Object(s)]})
}

async fn save_and_run(engine: &EngineHandle, doc: Value) -> Result<String, String> {
    let p = crate::validate_pipeline(&doc, engine.registry()).map_err(|e| e.to_string())?;
    let record = engine
        .store()
        .save_pipeline(&p, "conformance")
        .await
        .map_err(|e| e.to_string())?;
    engine
        .run_pipeline(
            &record,
            RunRequest {
                user: "conformance".into(),
                ..RunRequest::default()
            },
        )
        .await
        .map_err(|e| e.to_string())
}

/// Polls until `pred` holds for the execution, or fails after `within`.
pub async fn wait_for(
    engine: &EngineHandle,
    id: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&Execution) -> bool,
) -> Result<Execution, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let e = engine
            .get_execution(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("execution {id} vanished"))?;
        if pred(&e) {
            return Ok(e);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "timed out waiting for {what}; execution is {} with stages {:?}",
                e.status,
                e.stages
                    .iter()
                    .map(|s| (
                        s.ref_id.clone(),
                        s.status,
                        s.context.get("exception").cloned()
                    ))
                    .collect::<Vec<_>>()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn check_invalid(
    registry: &Registry,
    store: &Arc<dyn Store>,
    case: &Case,
) -> Result<(), String> {
    for (stage, path) in &case.invalid {
        let doc = pipeline("invalid", stage, &[]);
        match crate::validate_pipeline(&doc, registry) {
            Ok(_) => return Err(format!("invalid stage {stage} was accepted")),
            Err(problems) => {
                if !problems.0.iter().any(|p| p.path.starts_with(path)) {
                    return Err(format!(
                        "invalid stage {stage}: no problem at {path}; got {problems}"
                    ));
                }
            }
        }
    }
    let stored = store
        .find_pipeline("conformance", "invalid")
        .await
        .map_err(|e| e.to_string())?;
    if stored.is_some() {
        return Err("an invalid pipeline was stored".into());
    }
    Ok(())
}

async fn check_succeeds_and_restart(engine: &EngineHandle, case: &Case) -> Result<(), String> {
    let id = save_and_run(engine, pipeline("succeeds", &case.succeeds, &[])).await?;
    let e = wait_for(engine, &id, Duration::from_secs(15), "SUCCEEDED", |e| {
        e.status.is_complete()
    })
    .await?;
    if e.status != Status::Succeeded || e.stages[0].status != Status::Succeeded {
        return Err(format!(
            "expected SUCCEEDED, got {} / {}: {:?}",
            e.status,
            e.stages[0].status,
            e.stages[0].context.get("exception")
        ));
    }
    if e.stages[0].start_time.is_none() || e.stages[0].end_time.is_none() {
        return Err("a completed stage must have start and end times".into());
    }
    engine
        .command(
            &id,
            Command::RestartStage {
                stage: "1".into(),
                user: "restarter".into(),
            },
        )
        .await
        .map_err(|e| format!("restart refused: {e}"))?;
    let e = wait_for(
        engine,
        &id,
        Duration::from_secs(15),
        "SUCCEEDED after restart",
        |e| e.status.is_complete() && e.stages[0].attempt == 2,
    )
    .await?;
    if e.status != Status::Succeeded {
        return Err(format!(
            "after restart expected SUCCEEDED, got {}",
            e.status
        ));
    }
    match &e.stages[0].restart_details {
        Some(d) if d.restarted_by == "restarter" => Ok(()),
        other => Err(format!("restartDetails not recorded: {other:?}")),
    }
}

async fn check_cancel(engine: &EngineHandle, case: &Case) -> Result<(), String> {
    let id = save_and_run(engine, pipeline("cancel", &case.long_running, &[])).await?;
    wait_for(engine, &id, Duration::from_secs(10), "RUNNING", |e| {
        e.stages[0].status == Status::Running
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = now_millis();
    engine
        .command(
            &id,
            Command::Cancel {
                user: "canceler".into(),
                reason: Some("conformance".into()),
            },
        )
        .await
        .map_err(|e| format!("cancel refused: {e}"))?;
    let e = wait_for(engine, &id, Duration::from_secs(5), "CANCELED", |e| {
        e.status.is_complete()
    })
    .await?;
    if e.status != Status::Canceled || e.stages[0].status != Status::Canceled {
        return Err(format!(
            "expected CANCELED, got {} / {}",
            e.status, e.stages[0].status
        ));
    }
    if e.canceled_by.as_deref() != Some("canceler") {
        return Err("canceledBy not recorded".into());
    }
    if e.end_time.unwrap_or(0) - asked > 2_000 {
        return Err("cancel took more than 2 s".into());
    }
    // A second cancel is refused: the execution is complete.
    if engine
        .command(
            &id,
            Command::Cancel {
                user: "x".into(),
                reason: None,
            },
        )
        .await
        .is_ok()
    {
        return Err("canceling a completed execution was accepted".into());
    }
    Ok(())
}

async fn check_timeout(engine: &EngineHandle, case: &Case) -> Result<(), String> {
    let id = save_and_run(
        engine,
        pipeline(
            "timeout",
            &case.long_running,
            &[("stageTimeoutMs", json!(300))],
        ),
    )
    .await?;
    let e = wait_for(engine, &id, Duration::from_secs(10), "timeout", |e| {
        e.status.is_complete()
    })
    .await?;
    if e.status != Status::Terminal || e.stages[0].status != Status::Terminal {
        return Err(format!(
            "expected TERMINAL after timeout, got {} / {}",
            e.status, e.stages[0].status
        ));
    }
    let error = e.stages[0]
        .context
        .get("exception")
        .map(Value::to_string)
        .unwrap_or_default();
    if !error.contains("timed out") {
        return Err(format!("timeout error not recorded: {error}"));
    }
    Ok(())
}

async fn check_resume_after_crash(
    registry: &Registry,
    store: &Arc<dyn Store>,
    case: &Case,
) -> Result<(), String> {
    let first = start(registry, store).await?;
    let id = save_and_run(&first, pipeline("resume", &case.long_running, &[])).await?;
    wait_for(&first, &id, Duration::from_secs(10), "RUNNING", |e| {
        e.stages[0].status == Status::Running
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // "Crash": the first engine stops with the stage mid-flight; only the store survives.
    first.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = start(registry, store).await?;
    let e = second
        .get_execution(&id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("execution lost after restart")?;
    if e.status != Status::Running {
        return Err(format!(
            "after restart the execution is {}, not RUNNING",
            e.status
        ));
    }
    if let Some(input) = &case.completing_input {
        second
            .command(
                &id,
                Command::StageInput {
                    stage: "1".into(),
                    input: input.clone(),
                    user: "resumer".into(),
                },
            )
            .await
            .map_err(|e| format!("input refused after restart: {e}"))?;
    }
    let e = wait_for(
        &second,
        &id,
        Duration::from_secs(15),
        "completion after restart",
        |e| e.status.is_complete(),
    )
    .await?;
    second.shutdown();
    if e.status != Status::Succeeded {
        return Err(format!(
            "after restart expected SUCCEEDED, got {}: {:?}",
            e.status,
            e.stages[0].context.get("exception")
        ));
    }
    Ok(())
}
