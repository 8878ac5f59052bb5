//! `pipeline`: runs a child pipeline and (by default) waits for it, exposing the child's outputs.
//!
//! # Life of a pipeline stage
//! 1. **Look up and mark.** The first step finds the child pipeline (`pipeline` is an id, or a
//!    name within `application`), checks the chain of parent pipelines for runaway recursion,
//!    and records `childPipelineId` and `childRequestedAt`, returning
//!    `Running { poll_after: ZERO }` so the marker is committed before the child exists.
//! 2. **Start.** The next step starts the child with trigger type `pipeline`, the parent's user,
//!    `pipelineParameters`, and trigger fields `parentExecutionId`, `parentStageId`,
//!    `parentStageAttempt`, `parentPipelineName` and `parentApplication`; it records
//!    `executionId`. Without `waitForCompletion` the stage then succeeds.
//! 3. **Wait.** The engine steps the parent as soon as the child completes (the child's trigger
//!    names its parent); polls back off from 250 ms to 5 s as a fallback. A SUCCEEDED child
//!    succeeds the stage, with outputs `executionId`, `status` and `outputs` (the child's stage
//!    outputs merged in stage order); any other end fails it with the child's status and first
//!    stage error.
//!
//! # Durability
//! With `executionId` recorded, a restarted Ferry only polls. If Ferry stopped between marking
//! and recording (the child may or may not have been created), the first step after the restart
//! looks for a child whose trigger names this stage attempt and adopts it, so no second child
//! is started.
//!
//! # Cancel
//! Canceling (or timing out) the stage cancels the child.
//!
//! # Recursion
//! A child is refused when the chain of parents (followed through `parentExecutionId`) would be
//! deeper than [`MAX_CHAIN_DEPTH`] executions, or would hold the same pipeline more than
//! [`MAX_SAME_PIPELINE`] times.

use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_core::{Execution, ExecutionFilter, PipelineRecord, Status, now_millis};
use ferry_engine::{
    Command, CommandError, EngineError, RunRequest, StageCtx, StageError, Step, TypedStage,
};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Most executions in one chain of parent and child pipelines (the new child included).
pub const MAX_CHAIN_DEPTH: usize = 10;
/// Most times one pipeline may appear in a chain of parent and child pipelines.
pub const MAX_SAME_PIPELINE: usize = 3;
/// Longest delay between fallback polls of the child.
pub const MAX_POLL: Duration = Duration::from_secs(5);
/// Shortest delay between polls of the child.
const MIN_POLL: Duration = Duration::from_millis(250);
/// How many recent runs of the child pipeline are searched when adopting a child after a restart.
const ADOPT_SEARCH_LIMIT: usize = 50;

/// The `pipeline` stage.
pub struct PipelineStage;

/// The `pipeline` stage's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// `application` of the child pipeline.
    pub application: String,
    /// `pipeline`: the child pipeline's id, or its name within `application`.
    pub pipeline: String,
    /// `pipelineParameters`: parameter values for the child.
    pub parameters: Map<String, Value>,
    /// `waitForCompletion` (default true).
    pub wait_for_completion: bool,
}

#[async_trait]
impl TypedStage for PipelineStage {
    type Config = PipelineConfig;
    const TYPE: &'static str = "pipeline";
    const TASK: &'static str = "monitorPipelineTask";

    fn config(f: &mut Fields<'_>) -> Option<PipelineConfig> {
        let before = f.problems.len();
        let deferred = f.is_deferred("application")
            || f.is_deferred("pipeline")
            || f.is_deferred("pipelineParameters");
        let application = f.required_str("application");
        let pipeline = f.required_str("pipeline");
        let parameters = f
            .opt_object("pipelineParameters")
            .cloned()
            .unwrap_or_default();
        let wait_for_completion = f.bool_or("waitForCompletion", true);
        if deferred || f.problems.len() > before {
            return None;
        }
        Some(PipelineConfig {
            application: application?,
            pipeline: pipeline?,
            parameters,
            wait_for_completion,
        })
    }

    async fn step(&self, c: &PipelineConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        if let Some(id) = str_field(&ctx.context, "executionId") {
            return Ok(poll(c, ctx, &id).await);
        }
        let Some(child_pipeline) = str_field(&ctx.context, "childPipelineId") else {
            return Ok(mark(c, ctx).await);
        };
        if ctx.recovered {
            // The child may have been started just before Ferry stopped: adopt it.
            match find_started_child(ctx, &child_pipeline).await {
                Ok(Some(id)) => {
                    tracing::info!(stage = %ctx.stage_id(), child = %id, "adopted the child execution started before a restart");
                    ctx.context
                        .insert("executionId".into(), Value::String(id.clone()));
                    ctx.context
                        .insert("childStartedAt".into(), json!(now_millis()));
                    if !c.wait_for_completion {
                        started_outputs(ctx, &id);
                        return Ok(Step::Succeeded);
                    }
                    return Ok(poll(c, ctx, &id).await);
                }
                Ok(None) => {}
                Err(e) => return Err(StageError::Fatal(e)),
            }
        }
        Ok(start_child(c, ctx, &child_pipeline).await)
    }

    async fn cancel(
        &self,
        _c: Option<&PipelineConfig>,
        ctx: &mut StageCtx,
    ) -> Result<(), StageError> {
        let mut child = str_field(&ctx.context, "executionId");
        if child.is_none()
            && let Some(pipeline_id) = str_field(&ctx.context, "childPipelineId")
        {
            // The step that starts the child may have been stopped midway: look for the child
            // a few times while its start is being committed.
            for _ in 0..3 {
                child = find_started_child(ctx, &pipeline_id)
                    .await
                    .map_err(StageError::Fatal)?;
                if child.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        let Some(child) = child else { return Ok(()) };
        let user = ctx
            .execution
            .canceled_by
            .clone()
            .unwrap_or_else(|| "ferry".into());
        let reason = format!(
            "the parent execution {} (stage \"{}\") was canceled or timed out",
            ctx.execution.id,
            ctx.def().name
        );
        match ctx
            .engine
            .command(
                &child,
                Command::Cancel {
                    user,
                    reason: Some(reason),
                },
            )
            .await
        {
            // A child that already finished needs nothing.
            Ok(()) | Err(CommandError::Conflict(_)) | Err(CommandError::NotFound(_)) => Ok(()),
            Err(e) => Err(StageError::Fatal(format!(
                "could not cancel the child execution {child}: {e}"
            ))),
        }
    }
}

fn str_field(context: &Map<String, Value>, key: &str) -> Option<String> {
    context
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// First step: finds the child pipeline, checks the recursion limits and records the marker.
async fn mark(c: &PipelineConfig, ctx: &mut StageCtx) -> Step {
    let record = match find_pipeline(c, ctx).await {
        Ok(r) => r,
        Err(error) => return Step::Failed { error },
    };
    if let Err(error) = check_ancestry(ctx, &record).await {
        return Step::Failed { error };
    }
    ctx.context
        .insert("childPipelineId".into(), Value::String(record.id.clone()));
    ctx.context.insert(
        "childPipelineName".into(),
        Value::String(record.name.clone()),
    );
    ctx.context
        .insert("childRequestedAt".into(), json!(now_millis()));
    Step::Running {
        poll_after: Duration::ZERO,
    }
}

/// Looks the pipeline up by id, then by name within the application.
async fn find_pipeline(c: &PipelineConfig, ctx: &StageCtx) -> Result<PipelineRecord, String> {
    let store = ctx.engine.store();
    let read_error = |e| format!("could not read pipeline \"{}\": {e}", c.pipeline);
    if let Some(r) = store.get_pipeline(&c.pipeline).await.map_err(read_error)? {
        if !r.application.eq_ignore_ascii_case(&c.application) {
            return Err(format!(
                "pipeline {} belongs to application \"{}\", not \"{}\"",
                c.pipeline, r.application, c.application
            ));
        }
        return Ok(r);
    }
    store
        .find_pipeline(&c.application, &c.pipeline)
        .await
        .map_err(read_error)?
        .ok_or_else(|| {
            format!(
                "application \"{}\" has no pipeline with the id or name \"{}\"",
                c.application, c.pipeline
            )
        })
}

/// Refuses a child that would make the chain of parents too deep or too repetitive.
async fn check_ancestry(ctx: &StageCtx, child: &PipelineRecord) -> Result<(), String> {
    let mut chain: Vec<(String, String)> = vec![(
        ctx.execution.pipeline_config_id.clone(),
        ctx.execution.name.clone(),
    )];
    let mut parent = parent_of(&ctx.execution);
    // Bounded even if the parent links form a loop.
    while let Some(id) = parent {
        if chain.len() >= MAX_CHAIN_DEPTH {
            break;
        }
        match ctx.engine.get_execution(&id).await {
            Ok(Some(e)) => {
                chain.push((e.pipeline_config_id.clone(), e.name.clone()));
                parent = parent_of(&e);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(format!(
                    "could not check the chain of parent pipelines: {e}"
                ));
            }
        }
    }
    let shown = || {
        let mut names: Vec<&str> = chain.iter().rev().map(|(_, n)| n.as_str()).collect();
        names.push(&child.name);
        names.join(" → ")
    };
    let depth = chain.len() + 1;
    if depth > MAX_CHAIN_DEPTH {
        return Err(format!(
            "refusing to start pipeline \"{}\": the chain of parent pipelines would be more than {MAX_CHAIN_DEPTH} levels deep ({})",
            child.name,
            shown()
        ));
    }
    let same = chain.iter().filter(|(id, _)| *id == child.id).count() + 1;
    if same > MAX_SAME_PIPELINE {
        return Err(format!(
            "refusing to start pipeline \"{}\": it would run {same} times in one chain of parent pipelines (at most {MAX_SAME_PIPELINE}); \
             the pipelines seem to start each other without end ({})",
            child.name,
            shown()
        ));
    }
    Ok(())
}

fn parent_of(e: &Execution) -> Option<String> {
    e.trigger
        .extra
        .get("parentExecutionId")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The attempt of the current stage, as recorded in a child's trigger.
fn attempt_of(ctx: &StageCtx) -> u32 {
    ctx.execution.stages[ctx.stage_index].attempt
}

/// Second step: starts the child and records its id.
async fn start_child(c: &PipelineConfig, ctx: &mut StageCtx, pipeline_id: &str) -> Step {
    let record = match ctx.engine.store().get_pipeline(pipeline_id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Step::Failed {
                error: format!(
                    "the child pipeline {pipeline_id} was deleted before it could start"
                ),
            };
        }
        Err(e) => {
            return Step::Failed {
                error: format!("could not read the child pipeline {pipeline_id}: {e}"),
            };
        }
    };
    let mut extra = Map::new();
    extra.insert(
        "parentExecutionId".into(),
        Value::String(ctx.execution.id.clone()),
    );
    extra.insert(
        "parentStageId".into(),
        Value::String(ctx.stage_id().to_string()),
    );
    extra.insert("parentStageAttempt".into(), json!(attempt_of(ctx)));
    extra.insert(
        "parentPipelineName".into(),
        Value::String(ctx.execution.name.clone()),
    );
    extra.insert(
        "parentApplication".into(),
        Value::String(ctx.execution.application.clone()),
    );
    let request = RunRequest {
        trigger_type: "pipeline".into(),
        user: ctx.execution.trigger.user.clone(),
        parameters: c.parameters.clone(),
        extra,
    };
    let id = match ctx.engine.run_pipeline(&record, request).await {
        Ok(id) => id,
        Err(EngineError::Invalid(problems)) => {
            return Step::Failed {
                error: format!(
                    "the child pipeline \"{}\" could not start: {problems}",
                    record.name
                ),
            };
        }
        Err(e) => {
            return Step::Failed {
                error: format!(
                    "the child pipeline \"{}\" could not start: {e}",
                    record.name
                ),
            };
        }
    };
    tracing::info!(stage = %ctx.stage_id(), child = %id, pipeline = %record.name, "started child pipeline");
    ctx.context
        .insert("executionId".into(), Value::String(id.clone()));
    ctx.context
        .insert("executionName".into(), Value::String(record.name.clone()));
    ctx.context
        .insert("childStartedAt".into(), json!(now_millis()));
    if !c.wait_for_completion {
        started_outputs(ctx, &id);
        return Step::Succeeded;
    }
    Step::Running {
        poll_after: MIN_POLL,
    }
}

fn started_outputs(ctx: &mut StageCtx, id: &str) {
    ctx.outputs
        .insert("executionId".into(), Value::String(id.to_string()));
    ctx.outputs.insert(
        "status".into(),
        Value::String(Status::Running.as_str().into()),
    );
}

/// Looks for a child that this stage attempt started (after a restart, or when canceling).
async fn find_started_child(ctx: &StageCtx, pipeline_id: &str) -> Result<Option<String>, String> {
    let filter = ExecutionFilter {
        pipeline_config_id: Some(pipeline_id.to_string()),
        limit: ADOPT_SEARCH_LIMIT,
        ..ExecutionFilter::default()
    };
    let store = ctx.engine.store();
    let runs = store
        .list_executions(&filter)
        .await
        .map_err(|e| format!("could not look for the child execution: {e}"))?;
    let attempt = attempt_of(ctx);
    for run in runs.iter().filter(|r| r.trigger_type == "pipeline") {
        let Some(e) = ctx
            .engine
            .get_execution(&run.id)
            .await
            .map_err(|e| format!("could not look for the child execution: {e}"))?
        else {
            continue;
        };
        let extra = &e.trigger.extra;
        let mine = extra.get("parentExecutionId").and_then(Value::as_str)
            == Some(ctx.execution.id.as_str())
            && extra.get("parentStageId").and_then(Value::as_str) == Some(ctx.stage_id())
            && extra.get("parentStageAttempt").and_then(Value::as_u64) == Some(u64::from(attempt));
        if mine {
            return Ok(Some(e.id));
        }
    }
    Ok(None)
}

/// Checks on the child and decides the step.
async fn poll(c: &PipelineConfig, ctx: &mut StageCtx, id: &str) -> Step {
    let child = match ctx.engine.get_execution(id).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return Step::Failed {
                error: format!("the child execution {id} no longer exists"),
            };
        }
        Err(e) => {
            // The store may come back; the stage timeout bounds the wait.
            tracing::warn!(stage = %ctx.stage_id(), child = %id, error = %e, "could not read the child execution");
            return Step::Running {
                poll_after: MAX_POLL,
            };
        }
    };
    ctx.context
        .insert("status".into(), Value::String(child.status.as_str().into()));
    if !c.wait_for_completion {
        started_outputs(ctx, id);
        return Step::Succeeded;
    }
    if !child.status.is_complete() {
        return Step::Running {
            poll_after: poll_delay(&ctx.context),
        };
    }
    ctx.outputs
        .insert("executionId".into(), Value::String(child.id.clone()));
    ctx.outputs
        .insert("status".into(), Value::String(child.status.as_str().into()));
    ctx.outputs
        .insert("outputs".into(), Value::Object(merged_outputs(&child)));
    if child.status == Status::Succeeded {
        return Step::Succeeded;
    }
    let why = first_stage_error(&child)
        .or_else(|| {
            child
                .canceled_by
                .as_ref()
                .map(|by| format!("canceled by {by}"))
        })
        .unwrap_or_else(|| "no stage error was recorded".into());
    Step::Failed {
        error: format!(
            "child pipeline \"{}\" ({}) ended {}: {why}",
            child.name,
            child.id,
            child.status.as_str()
        ),
    }
}

/// Polls back off with the child's age: every half of its age, between 250 ms and 5 s.
fn poll_delay(context: &Map<String, Value>) -> Duration {
    let started = context
        .get("childStartedAt")
        .and_then(Value::as_i64)
        .unwrap_or_else(now_millis);
    let age = u64::try_from(now_millis() - started).unwrap_or(0);
    Duration::from_millis(age / 2).clamp(MIN_POLL, MAX_POLL)
}

/// The outputs of the child's stages, later stages winning.
fn merged_outputs(child: &Execution) -> Map<String, Value> {
    let mut out = Map::new();
    for s in &child.stages {
        for (k, v) in &s.outputs {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The first error recorded by one of the child's stages.
fn first_stage_error(child: &Execution) -> Option<String> {
    child.stages.iter().find_map(|s| {
        let details = s.context.get("exception")?.get("details")?;
        details
            .get("error")
            .and_then(Value::as_str)
            .map(|e| format!("stage \"{}\": {e}", s.name))
    })
}

#[cfg(test)]
// Tests may unwrap (house rule 2); the crate has no clippy.toml saying so yet.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil;
    use crate::testutil::finished;
    use ferry_core::Store;
    use ferry_engine::conformance::{Case, run, wait_for};
    use ferry_engine::{Engine, EngineConfig, EngineHandle, Registry};
    use std::sync::Arc;

    async fn save(registry: &Registry, store: &Arc<dyn Store>, doc: Value) -> PipelineRecord {
        let p = ferry_engine::validate_pipeline(&doc, registry).unwrap();
        store.save_pipeline(&p, "tester").await.unwrap()
    }

    async fn run_doc_as_alice(engine: &EngineHandle, doc: Value) -> String {
        crate::testutil::run_doc(engine, doc, "alice").await
    }

    fn error_of(e: &Execution) -> String {
        crate::testutil::error_at(e, 0)
    }

    fn child(app: &str, name: &str, stages: Value) -> Value {
        json!({"application": app, "name": name, "stages": stages})
    }

    async fn engine(work: &std::path::Path) -> (EngineHandle, tempfile::TempDir) {
        let (store, guard) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(work));
        let (engine, _join) = Engine::start(store, registry, EngineConfig::default())
            .await
            .unwrap();
        (engine, guard)
    }

    fn parent(name: &str, stage: Value) -> Value {
        let mut stage = stage;
        stage["refId"] = json!("1");
        stage["type"] = json!("pipeline");
        stage["name"] = json!("run child");
        json!({"application": "family", "name": name, "stages": [stage]})
    }

    #[tokio::test]
    async fn pipeline_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _g) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(dir.path()));
        save(
            &registry,
            &store,
            child(
                "conformance",
                "child-ok",
                json!([{"refId": "1", "type": "wait", "waitTime": 0}]),
            ),
        )
        .await;
        save(
            &registry,
            &store,
            child(
                "conformance",
                "child-long",
                json!([{"refId": "1", "type": "wait", "waitTime": 3}]),
            ),
        )
        .await;
        run(
            registry,
            store,
            Case {
                succeeds: json!({"type": "pipeline", "application": "conformance", "pipeline": "child-ok"}),
                // The child waits 3 s: long enough for the cancel and timeout checks, and it
                // completes after the simulated crash.
                long_running: json!({"type": "pipeline", "application": "conformance", "pipeline": "child-long"}),
                completing_input: None,
                invalid: vec![
                    (json!({"type": "pipeline", "pipeline": "x"}), "stages[0].application"),
                    (json!({"type": "pipeline", "application": "conformance"}), "stages[0].pipeline"),
                    (json!({"type": "pipeline", "application": "a", "pipeline": "x", "pipelineParameters": [1]}), "stages[0].pipelineParameters"),
                    (json!({"type": "pipeline", "application": "a", "pipeline": "x", "waitForCompletion": "maybe"}), "stages[0].waitForCompletion"),
                ],
            },
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_parent_waits_for_its_child_and_gets_its_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        let kid = save(
            engine.registry(),
            engine.store(),
            json!({
                "application": "family", "name": "kid",
                "parameterConfig": [{"name": "tag", "required": true}],
                "stages": [
                    {"refId": "1", "type": "wait", "waitTime": 1},
                    {"refId": "2", "requisiteStageRefIds": ["1"], "type": "evaluateVariables",
                     "variables": [{"key": "image", "value": "app:${parameters.tag}"}]},
                ],
            }),
        )
        .await;
        // By id this time; by name in the other tests.
        let id = run_doc_as_alice(
            &engine,
            parent("parent", json!({"application": "family", "pipeline": kid.id, "pipelineParameters": {"tag": "v7"}})),
        )
        .await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
        let outputs = &e.stages[0].outputs;
        assert_eq!(outputs["status"], json!("SUCCEEDED"));
        assert_eq!(outputs["outputs"]["image"], json!("app:v7"));
        let child_id = outputs["executionId"].as_str().unwrap();
        assert_eq!(e.stages[0].context["executionId"], json!(child_id));
        let c = engine.get_execution(child_id).await.unwrap().unwrap();
        assert_eq!(c.trigger.trigger_type, "pipeline");
        assert_eq!(c.trigger.user, "alice");
        assert_eq!(c.trigger.extra["parentExecutionId"], json!(e.id));
        assert_eq!(c.trigger.extra["parentStageId"], json!(e.stages[0].id));
        assert_eq!(c.trigger.extra["parentPipelineName"], json!("parent"));
        assert_eq!(c.trigger.extra["parentApplication"], json!("family"));
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_failing_child_fails_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        save(
            engine.registry(),
            engine.store(),
            child("family", "sad-kid", json!([{"refId": "1", "name": "judge", "type": "manualJudgment", "judgmentStatus": "stop"}])),
        )
        .await;
        let id = run_doc_as_alice(
            &engine,
            parent(
                "sad-parent",
                json!({"application": "family", "pipeline": "sad-kid"}),
            ),
        )
        .await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Terminal);
        let error = error_of(&e);
        assert!(error.contains("child pipeline \"sad-kid\""), "{error}");
        assert!(error.contains("ended TERMINAL"), "{error}");
        assert!(error.contains("stage \"judge\": stopped by"), "{error}");
        assert_eq!(e.stages[0].outputs["status"], json!("TERMINAL"));

        let missing = run_doc_as_alice(
            &engine,
            parent(
                "lost-parent",
                json!({"application": "family", "pipeline": "nobody"}),
            ),
        )
        .await;
        let e = finished(&engine, &missing).await;
        assert_eq!(e.status, Status::Terminal);
        assert!(
            error_of(&e).contains("has no pipeline with the id or name \"nobody\""),
            "{}",
            error_of(&e)
        );
        engine.shutdown();
    }

    #[tokio::test]
    async fn canceling_the_parent_cancels_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        save(
            engine.registry(),
            engine.store(),
            child(
                "family",
                "slow-kid",
                json!([{"refId": "1", "type": "wait", "waitTime": 3600}]),
            ),
        )
        .await;
        let id = run_doc_as_alice(
            &engine,
            parent(
                "impatient",
                json!({"application": "family", "pipeline": "slow-kid"}),
            ),
        )
        .await;
        let e = wait_for(
            &engine,
            &id,
            Duration::from_secs(10),
            "child started",
            |e| e.stages[0].context.contains_key("executionId"),
        )
        .await
        .unwrap();
        let child_id = e.stages[0].context["executionId"]
            .as_str()
            .unwrap()
            .to_string();
        wait_for(
            &engine,
            &child_id,
            Duration::from_secs(10),
            "child running",
            |c| c.status == Status::Running,
        )
        .await
        .unwrap();
        engine
            .command(
                &id,
                Command::Cancel {
                    user: "bob".into(),
                    reason: None,
                },
            )
            .await
            .unwrap();
        let c = finished(&engine, &child_id).await;
        assert_eq!(c.status, Status::Canceled);
        assert_eq!(c.canceled_by.as_deref(), Some("bob"));
        assert!(c.cancellation_reason.unwrap_or_default().contains(&id));
        assert_eq!(finished(&engine, &id).await.status, Status::Canceled);
        engine.shutdown();
    }

    #[tokio::test]
    async fn without_waiting_the_parent_succeeds_once_the_child_started() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        save(
            engine.registry(),
            engine.store(),
            child(
                "family",
                "slow-kid",
                json!([{"refId": "1", "type": "wait", "waitTime": 3600}]),
            ),
        )
        .await;
        let id = run_doc_as_alice(
            &engine,
            parent("fire-and-forget", json!({"application": "family", "pipeline": "slow-kid", "waitForCompletion": false})),
        )
        .await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
        let child_id = e.stages[0].outputs["executionId"]
            .as_str()
            .unwrap()
            .to_string();
        let c = engine.get_execution(&child_id).await.unwrap().unwrap();
        assert_eq!(c.status, Status::Running);
        engine
            .command(
                &child_id,
                Command::Cancel {
                    user: "cleanup".into(),
                    reason: None,
                },
            )
            .await
            .unwrap();
        engine.shutdown();
    }

    #[tokio::test]
    async fn pipelines_that_start_themselves_are_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        let id = run_doc_as_alice(
            &engine,
            parent(
                "ouroboros",
                json!({"application": "family", "pipeline": "ouroboros"}),
            ),
        )
        .await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Terminal);
        let error = error_of(&e);
        assert!(
            error.contains("refusing to start pipeline \"ouroboros\""),
            "{error}"
        );
        assert!(error.contains("run 4 times"), "{error}");
        // Three runs in all: the one started here and two descendants; the fourth was refused.
        let runs = engine
            .store()
            .list_executions(&ExecutionFilter {
                application: Some("family".into()),
                ..ExecutionFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(runs.len(), 3, "{runs:?}");
        assert!(runs.iter().all(|r| r.status == Status::Terminal));
        engine.shutdown();
    }

    #[tokio::test]
    async fn chains_deeper_than_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        // level-1 → level-2 → … → level-11: eleven distinct pipelines, one too many.
        for i in 1..=11 {
            let stage = if i == 11 {
                json!({"refId": "1", "type": "wait", "waitTime": 0})
            } else {
                json!({"refId": "1", "type": "pipeline", "application": "family", "pipeline": format!("level-{}", i + 1)})
            };
            save(
                engine.registry(),
                engine.store(),
                child("family", &format!("level-{i}"), json!([stage])),
            )
            .await;
        }
        let top = engine
            .store()
            .find_pipeline("family", "level-1")
            .await
            .unwrap()
            .unwrap();
        let id = engine
            .run_pipeline(&top, RunRequest::default())
            .await
            .unwrap();
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Terminal);
        let error = error_of(&e);
        assert!(
            error.contains("refusing to start pipeline \"level-11\""),
            "{error}"
        );
        assert!(error.contains("more than 10 levels deep"), "{error}");
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_child_started_before_a_restart_is_adopted_not_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        save(
            engine.registry(),
            engine.store(),
            child(
                "family",
                "slow-kid",
                json!([{"refId": "1", "type": "wait", "waitTime": 3600}]),
            ),
        )
        .await;
        let id = run_doc_as_alice(
            &engine,
            parent(
                "adopter",
                json!({"application": "family", "pipeline": "slow-kid"}),
            ),
        )
        .await;
        let e = wait_for(
            &engine,
            &id,
            Duration::from_secs(10),
            "child started",
            |e| e.stages[0].context.contains_key("executionId"),
        )
        .await
        .unwrap();
        let child_id = e.stages[0].context["executionId"]
            .as_str()
            .unwrap()
            .to_string();
        // As if Ferry had stopped after starting the child but before recording its id.
        let mut context = e.stages[0].context.clone();
        context.remove("executionId");
        let value = Value::Object(context.clone());
        let mut problems = Vec::new();
        let config = PipelineStage::config(&mut Fields::new(&value, "", &mut problems)).unwrap();
        let mut ctx = StageCtx {
            execution: Arc::new(e.clone()),
            stage_index: 0,
            context,
            outputs: Map::new(),
            recovered: true,
            cancel: tokio_util::sync::CancellationToken::new(),
            engine: engine.clone(),
        };
        let step = PipelineStage.step(&config, &mut ctx).await.unwrap();
        assert!(matches!(step, Step::Running { .. }), "{step:?}");
        assert_eq!(ctx.context["executionId"], json!(child_id));
        let runs = engine
            .store()
            .list_executions(&ExecutionFilter {
                application: Some("family".into()),
                ..ExecutionFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            runs.iter().filter(|r| r.name == "slow-kid").count(),
            1,
            "a second child was started"
        );
        engine
            .command(
                &id,
                Command::Cancel {
                    user: "cleanup".into(),
                    reason: None,
                },
            )
            .await
            .unwrap();
        engine.shutdown();
    }
}
