//! Executions: one run of a pipeline (or of an orchestration, an ad-hoc list of stages), with
//! its stages, tasks, contexts, outputs and timing. This is the persisted and wire shape
//! (camelCase, as Spinnaker's Orca returns it).

use crate::pipeline::StageDef;
use crate::status::Status;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One run of a pipeline, or an orchestration (see [`Execution::ORCHESTRATION`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// Unique, time-ordered id.
    pub id: String,
    /// [`Execution::PIPELINE`] for a run of a stored pipeline, [`Execution::ORCHESTRATION`] for
    /// an ad-hoc run of stages (Spinnaker's two execution types). Stored executions written
    /// without it are pipelines.
    #[serde(rename = "type", default = "pipeline_type")]
    pub execution_type: String,
    /// Owning application.
    pub application: String,
    /// The pipeline's id; empty for an orchestration (stored pipelines never have an empty id).
    pub pipeline_config_id: String,
    /// The pipeline's name when the run started; an orchestration's description.
    pub name: String,
    /// The stored pipeline version the run uses; 0 for an orchestration.
    pub pipeline_version: i64,
    /// Overall status.
    pub status: Status,
    /// What started the run.
    pub trigger: Trigger,
    /// When the run was created, epoch millis.
    pub build_time: i64,
    /// When it started running.
    pub start_time: Option<i64>,
    /// When it completed.
    pub end_time: Option<i64>,
    /// Whether a cancel was requested.
    pub canceled: bool,
    /// Who canceled.
    pub canceled_by: Option<String>,
    /// Why.
    pub cancellation_reason: Option<String>,
    /// Pause details, present while (or after) paused.
    pub paused: Option<PausedDetails>,
    /// `limitConcurrent` copied from the pipeline.
    pub limit_concurrent: bool,
    /// `maxConcurrentExecutions` copied from the pipeline.
    pub max_concurrent_executions: u32,
    /// `keepWaitingPipelines` copied from the pipeline.
    pub keep_waiting_pipelines: bool,
    /// The stage definitions the run was started with (a snapshot).
    pub stage_defs: Vec<StageDef>,
    /// The stages' runtime state, in the same order as `stage_defs`.
    pub stages: Vec<StageExecution>,
}

fn pipeline_type() -> String {
    Execution::PIPELINE.into()
}

/// What started a run. `parameters` holds the resolved parameter values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// `manual`, `cron`, `git`, `webhook`, `pipeline`, …
    #[serde(rename = "type")]
    pub trigger_type: String,
    /// The user (or service account) the run acts as.
    pub user: String,
    /// Parameter values after defaults were applied.
    pub parameters: Map<String, Value>,
    /// Everything else the trigger carried (payload, parent execution, artifacts…).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Who paused a run and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PausedDetails {
    /// Who paused.
    pub paused_by: String,
    /// When, epoch millis.
    pub pause_time: i64,
    /// Who resumed, once resumed.
    pub resumed_by: Option<String>,
    /// When, epoch millis.
    pub resume_time: Option<i64>,
}

/// The runtime state of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageExecution {
    /// Unique id (`<execution id>-<refId>`).
    pub id: String,
    /// The stage's refId.
    pub ref_id: String,
    /// Stage type.
    #[serde(rename = "type")]
    pub stage_type: String,
    /// Display name.
    pub name: String,
    /// Upstream refIds.
    pub requisite_stage_ref_ids: Vec<String>,
    /// Status.
    pub status: Status,
    /// The stage's context after expression evaluation, plus what its implementation recorded
    /// while running (e.g. a webhook's status URL). Survives restarts.
    pub context: Map<String, Value>,
    /// Values the stage produced for later stages.
    pub outputs: Map<String, Value>,
    /// The stage's tasks, for display.
    pub tasks: Vec<TaskExecution>,
    /// When it started, epoch millis.
    pub start_time: Option<i64>,
    /// When it completed, epoch millis.
    pub end_time: Option<i64>,
    /// Expression warnings and other messages worth showing.
    pub messages: Vec<String>,
    /// Set when a user restarted the stage.
    pub restart_details: Option<RestartDetails>,
    /// Number of times the stage has been started (1 on the first run).
    pub attempt: u32,
    /// True once `context` holds the evaluated expressions (they are evaluated exactly once per
    /// attempt, when the stage starts).
    #[serde(default)]
    pub evaluated: bool,
    /// Milliseconds this stage spent paused; not counted against `stageTimeoutMs`.
    #[serde(default)]
    pub paused_ms: i64,
}

/// One task of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskExecution {
    /// Task id within the stage.
    pub id: String,
    /// Task name.
    pub name: String,
    /// Status.
    pub status: Status,
    /// Start time, epoch millis.
    pub start_time: Option<i64>,
    /// End time, epoch millis.
    pub end_time: Option<i64>,
}

/// `restartDetails` as Spinnaker records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartDetails {
    /// Who restarted the stage.
    pub restarted_by: String,
    /// When, epoch millis.
    pub restart_time: i64,
    /// The stage's error before the restart, if any.
    pub previous_exception: Option<Value>,
}

impl Execution {
    /// `type` of a run of a stored pipeline.
    pub const PIPELINE: &'static str = "PIPELINE";
    /// `type` of an orchestration: stages run once, ad hoc, without a stored pipeline (what the
    /// API's server-group operations start). Stored, recovered and commanded exactly like a
    /// pipeline's run; its `pipeline_config_id` is empty and it has no concurrency limit.
    pub const ORCHESTRATION: &'static str = "ORCHESTRATION";

    /// True for an orchestration.
    pub fn is_orchestration(&self) -> bool {
        self.execution_type == Execution::ORCHESTRATION
    }

    /// The type of an execution with this pipeline id: only orchestrations have an empty one
    /// (a stored pipeline's id never is), so listings need not read the stored document.
    pub fn type_for_pipeline_id(pipeline_config_id: &str) -> &'static str {
        if pipeline_config_id.is_empty() {
            Execution::ORCHESTRATION
        } else {
            Execution::PIPELINE
        }
    }

    /// The stage with this refId.
    pub fn stage(&self, ref_id: &str) -> Option<&StageExecution> {
        self.stages.iter().find(|s| s.ref_id == ref_id)
    }

    /// Index of the stage with this refId or id.
    pub fn stage_index(&self, ref_or_id: &str) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| s.ref_id == ref_or_id || s.id == ref_or_id)
    }

    /// True when the execution is complete.
    pub fn is_complete(&self) -> bool {
        self.status.is_complete()
    }

    /// The execution outcome from its stages once nothing runs (the reference's rules):
    /// all SUCCEEDED/SKIPPED/FAILED_CONTINUE → SUCCEEDED; else any TERMINAL → TERMINAL; else any
    /// CANCELED → CANCELED; else STOPPED → SUCCEEDED unless a STOPPED stage had
    /// `completeOtherBranchesThenFail` → TERMINAL.
    pub fn outcome(&self) -> Status {
        let mut any_terminal = false;
        let mut any_canceled = false;
        let mut stopped_fails = false;
        for (s, def) in self.stages.iter().zip(&self.stage_defs) {
            match s.status {
                Status::Terminal => any_terminal = true,
                Status::Canceled => any_canceled = true,
                Status::Stopped if def.failure.complete_other_branches_then_fail => {
                    stopped_fails = true
                }
                _ => {}
            }
        }
        if any_terminal || stopped_fails {
            Status::Terminal
        } else if any_canceled {
            Status::Canceled
        } else {
            Status::Succeeded
        }
    }

    /// A short summary row for listings.
    pub fn summary(&self) -> ExecutionSummary {
        ExecutionSummary {
            id: self.id.clone(),
            execution_type: self.execution_type.clone(),
            application: self.application.clone(),
            pipeline_config_id: self.pipeline_config_id.clone(),
            name: self.name.clone(),
            status: self.status,
            build_time: self.build_time,
            start_time: self.start_time,
            end_time: self.end_time,
            trigger_type: self.trigger.trigger_type.clone(),
            user: self.trigger.user.clone(),
        }
    }
}

/// A listing row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSummary {
    /// Execution id.
    pub id: String,
    /// `PIPELINE` or `ORCHESTRATION`.
    #[serde(rename = "type", default = "pipeline_type")]
    pub execution_type: String,
    /// Application.
    pub application: String,
    /// Pipeline id; empty for an orchestration.
    pub pipeline_config_id: String,
    /// Pipeline name, or an orchestration's description.
    pub name: String,
    /// Status.
    pub status: Status,
    /// Creation time.
    pub build_time: i64,
    /// Start time.
    pub start_time: Option<i64>,
    /// End time.
    pub end_time: Option<i64>,
    /// Trigger type.
    pub trigger_type: String,
    /// Who it runs as.
    pub user: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse_pipeline;
    use serde_json::json;

    fn execution(policies: &[(Status, bool)]) -> Execution {
        let stages: Vec<Value> = policies
            .iter()
            .enumerate()
            .map(|(i, (_, cobtf))| {
                json!({"refId": i.to_string(), "type": "wait", "failPipeline": false,
                       "completeOtherBranchesThenFail": cobtf})
            })
            .collect();
        let (p, problems) =
            parse_pipeline(&json!({"application": "a", "name": "p", "stages": stages}));
        assert!(problems.is_empty());
        Execution {
            id: "e".into(),
            execution_type: "PIPELINE".into(),
            application: "a".into(),
            pipeline_config_id: "p".into(),
            name: "p".into(),
            pipeline_version: 1,
            status: Status::Running,
            trigger: Trigger {
                trigger_type: "manual".into(),
                user: "u".into(),
                parameters: Map::new(),
                extra: Map::new(),
            },
            build_time: 0,
            start_time: None,
            end_time: None,
            canceled: false,
            canceled_by: None,
            cancellation_reason: None,
            paused: None,
            limit_concurrent: false,
            max_concurrent_executions: 0,
            keep_waiting_pipelines: false,
            stages: p
                .stages
                .iter()
                .zip(policies)
                .map(|(d, (st, _))| StageExecution {
                    id: d.ref_id.clone(),
                    ref_id: d.ref_id.clone(),
                    stage_type: d.stage_type.clone(),
                    name: d.name.clone(),
                    requisite_stage_ref_ids: vec![],
                    status: *st,
                    context: Map::new(),
                    outputs: Map::new(),
                    tasks: vec![],
                    start_time: None,
                    end_time: None,
                    messages: vec![],
                    restart_details: None,
                    attempt: 1,
                    evaluated: false,
                    paused_ms: 0,
                })
                .collect(),
            stage_defs: p.stages,
        }
    }

    #[test]
    fn outcome_follows_the_reference() {
        use Status::*;
        let cases: &[(&[(Status, bool)], Status)] = &[
            (
                &[
                    (Succeeded, false),
                    (Skipped, false),
                    (FailedContinue, false),
                ],
                Succeeded,
            ),
            (
                &[(Succeeded, false), (Terminal, false), (Canceled, false)],
                Terminal,
            ),
            (&[(Canceled, false), (Stopped, false)], Canceled),
            (&[(Succeeded, false), (Stopped, false)], Succeeded),
            (&[(Succeeded, false), (Stopped, true)], Terminal),
            (&[], Succeeded),
        ];
        for (stages, want) in cases {
            assert_eq!(execution(stages).outcome(), *want, "{stages:?}");
        }
    }

    #[test]
    fn serializes_in_spinnaker_shape() {
        let e = execution(&[(Status::Succeeded, false)]);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "PIPELINE");
        assert_eq!(v["pipelineConfigId"], "p");
        assert_eq!(v["stages"][0]["status"], "SUCCEEDED");
        assert_eq!(v["trigger"]["type"], "manual");
        let back: Execution = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn execution_types() {
        let mut e = execution(&[(Status::Succeeded, false)]);
        assert!(!e.is_orchestration());
        // An execution stored without a type is a pipeline's run.
        let mut v = serde_json::to_value(&e).unwrap();
        v.as_object_mut().unwrap().remove("type");
        let back: Execution = serde_json::from_value(v).unwrap();
        assert_eq!(back.execution_type, Execution::PIPELINE);
        e.execution_type = Execution::ORCHESTRATION.into();
        e.pipeline_config_id = String::new();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "ORCHESTRATION");
        let back: Execution = serde_json::from_value(v).unwrap();
        assert!(back.is_orchestration());
        // Listings tell them apart by the pipeline id, as the store's do.
        let summary = serde_json::to_value(back.summary()).unwrap();
        assert_eq!(summary["type"], "ORCHESTRATION");
        assert_eq!(
            Execution::type_for_pipeline_id(&back.pipeline_config_id),
            "ORCHESTRATION"
        );
        assert_eq!(Execution::type_for_pipeline_id("p-1"), "PIPELINE");
    }
}
