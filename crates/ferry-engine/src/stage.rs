//! The stage-type contract: what every stage implementation provides and what the engine gives it.
//!
//! A stage runs as a sequence of *steps*. The engine calls [`StageType::step`] when the stage
//! starts, again after each [`Step::Running`] (after `poll_after`), after a command touched the
//! stage (a judgment, a skip), and after Ferry restarts. Whatever a step writes into
//! [`StageCtx::context`] and [`StageCtx::outputs`] is committed together with the step's outcome,
//! before anything else happens. A step that starts a side effect should first return
//! `Running { poll_after: ZERO }` with a marker in the context, so the marker is durable before
//! the effect; [`StageCtx::recovered`] tells the first step after a restart to look for it.

use crate::EngineHandle;
use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_core::{Execution, Problem, StageDef};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a step reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The stage is done and succeeded.
    Succeeded,
    /// Not done: step again after this long (sooner if a command touches the stage).
    Running {
        /// Delay before the next step.
        poll_after: Duration,
    },
    /// Not done, and only a command (judgment, skip) or the timeout moves it on.
    AwaitInput,
    /// The stage failed; the failure policy decides what that means for the pipeline.
    Failed {
        /// What went wrong, shown to users.
        error: String,
    },
}

/// Errors a step can return. Either way the stage fails with the message; the variant only says
/// whether the engine may step again.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The stage's configuration (after expression evaluation) is invalid.
    #[error("invalid stage configuration: {0}")]
    Config(String),
    /// Something the stage depends on failed and retrying will not help.
    #[error("{0}")]
    Fatal(String),
}

/// What a step can see and change.
pub struct StageCtx {
    /// The execution as it was when the step began (read-only snapshot).
    pub execution: Arc<Execution>,
    /// Index of this stage in `execution.stages`.
    pub stage_index: usize,
    /// The stage's context: the evaluated definition plus whatever earlier steps recorded.
    /// Changes are committed with the step's outcome.
    pub context: Map<String, Value>,
    /// The stage's outputs, visible to downstream stages. Changes are committed with the outcome.
    pub outputs: Map<String, Value>,
    /// True for the first step after Ferry restarted while this stage was running.
    pub recovered: bool,
    /// Tripped when the stage is canceled or times out: stop promptly.
    pub cancel: CancellationToken,
    /// The engine, for stages that start or inspect other executions.
    pub engine: EngineHandle,
}

impl StageCtx {
    /// The stage's definition.
    pub fn def(&self) -> &StageDef {
        &self.execution.stage_defs[self.stage_index]
    }

    /// The stage's id.
    pub fn stage_id(&self) -> &str {
        &self.execution.stages[self.stage_index].id
    }

    /// When the current attempt of the stage started, epoch millis.
    pub fn started_at(&self) -> i64 {
        self.execution.stages[self.stage_index]
            .start_time
            .unwrap_or_else(ferry_core::now_millis)
    }

    /// A stable key for side effects of this attempt (execution, stage, attempt): receivers
    /// can use it to drop duplicates after a restart.
    pub fn idempotency_key(&self) -> String {
        let s = &self.execution.stages[self.stage_index];
        format!("{}:{}:{}", self.execution.id, s.id, s.attempt)
    }
}

/// A stage type as the engine sees it (object-safe). Implement [`TypedStage`] instead; the
/// adapter [`Typed`] turns it into this.
#[async_trait]
pub trait StageType: Send + Sync + 'static {
    /// The type key, e.g. `wait`.
    fn type_name(&self) -> &'static str;
    /// Name of the task shown for the stage.
    fn task_name(&self) -> &'static str;
    /// Checks the stage as written (expressions not yet evaluated), pushing every problem.
    fn validate(&self, def: &StageDef, path: &str, problems: &mut Vec<Problem>);
    /// Context keys that must not be expression-evaluated when the stage starts (their text is
    /// passed on as written; e.g. a script body or a manifest).
    fn raw_fields(&self, def: &StageDef) -> Vec<String>;
    /// The timeout applied when the stage sets no `stageTimeoutMs`.
    fn default_timeout(&self) -> Option<Duration>;
    /// One step (see the module docs).
    async fn step(&self, ctx: &mut StageCtx) -> Result<Step, StageError>;
    /// Undo or stop what the stage started, after it was canceled or timed out.
    async fn cancel(&self, ctx: &mut StageCtx) -> Result<(), StageError>;
    /// Decides whether a user's input (a judgment, a skip) applies to the running stage with
    /// this context. On `Ok` the engine merges the input into the context and steps the stage.
    fn accept_input(
        &self,
        context: &Map<String, Value>,
        input: &Map<String, Value>,
    ) -> Result<(), String>;
}

/// A stage type with a typed configuration. The configuration is read from the stage context
/// twice: leniently when the pipeline is validated (expression fields accepted as they are),
/// strictly when the stage starts (after evaluation).
#[async_trait]
pub trait TypedStage: Send + Sync + 'static {
    /// The configuration read from the stage context.
    type Config: Send + Sync + 'static;
    /// The type key, e.g. `wait`.
    const TYPE: &'static str;
    /// The task name shown for the stage.
    const TASK: &'static str;
    /// Reads the configuration, pushing a problem for every wrong field. Returns `None` when a
    /// problem was found or (lenient mode) a field is only known after evaluation.
    fn config(fields: &mut Fields<'_>) -> Option<Self::Config>;
    /// Extra fields not to evaluate; see [`StageType::raw_fields`].
    fn raw_fields(_def: &StageDef) -> Vec<String> {
        Vec::new()
    }
    /// See [`StageType::default_timeout`].
    fn default_timeout() -> Option<Duration> {
        None
    }
    /// One step with the parsed configuration.
    async fn step(&self, config: &Self::Config, ctx: &mut StageCtx) -> Result<Step, StageError>;
    /// See [`StageType::accept_input`]. By default a stage takes no input.
    fn accept_input(
        _context: &Map<String, Value>,
        _input: &Map<String, Value>,
    ) -> Result<(), String> {
        Err(format!("a {} stage takes no input", Self::TYPE))
    }
    /// See [`StageType::cancel`].
    async fn cancel(
        &self,
        _config: Option<&Self::Config>,
        _ctx: &mut StageCtx,
    ) -> Result<(), StageError> {
        Ok(())
    }
}

/// Adapts a [`TypedStage`] to [`StageType`].
pub struct Typed<T>(pub T);

impl<T: TypedStage> Typed<T> {
    fn parse(ctx: &StageCtx) -> Result<T::Config, StageError> {
        let value = Value::Object(ctx.context.clone());
        let mut problems = Vec::new();
        let config = T::config(&mut Fields::new(&value, "", &mut problems));
        match (config, problems.is_empty()) {
            (Some(c), true) => Ok(c),
            _ => Err(StageError::Config(
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }
}

#[async_trait]
impl<T: TypedStage> StageType for Typed<T> {
    fn type_name(&self) -> &'static str {
        T::TYPE
    }
    fn task_name(&self) -> &'static str {
        T::TASK
    }
    fn validate(&self, def: &StageDef, path: &str, problems: &mut Vec<Problem>) {
        let value = Value::Object(def.context.clone());
        let _ = T::config(&mut Fields::lenient(&value, path, problems));
    }
    fn raw_fields(&self, def: &StageDef) -> Vec<String> {
        T::raw_fields(def)
    }
    fn default_timeout(&self) -> Option<Duration> {
        T::default_timeout()
    }
    async fn step(&self, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let config = Self::parse(ctx)?;
        self.0.step(&config, ctx).await
    }
    async fn cancel(&self, ctx: &mut StageCtx) -> Result<(), StageError> {
        let config = Self::parse(ctx).ok();
        self.0.cancel(config.as_ref(), ctx).await
    }
    fn accept_input(
        &self,
        context: &Map<String, Value>,
        input: &Map<String, Value>,
    ) -> Result<(), String> {
        T::accept_input(context, input)
    }
}

/// A stage type known only by its configuration: it validates pipelines like the real one but
/// refuses to run. For checking documents where the stage's services do not exist
/// (`ferry validate` offline).
pub struct ValidateOnly<T>(std::marker::PhantomData<fn() -> T>);

impl<T> ValidateOnly<T> {
    /// The validating stand-in for `T`.
    pub fn new() -> Self {
        ValidateOnly(std::marker::PhantomData)
    }
}

impl<T> Default for ValidateOnly<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl<T: TypedStage> StageType for ValidateOnly<T> {
    fn type_name(&self) -> &'static str {
        T::TYPE
    }
    fn task_name(&self) -> &'static str {
        T::TASK
    }
    fn validate(&self, def: &StageDef, path: &str, problems: &mut Vec<Problem>) {
        let value = Value::Object(def.context.clone());
        let _ = T::config(&mut Fields::lenient(&value, path, problems));
    }
    fn raw_fields(&self, def: &StageDef) -> Vec<String> {
        T::raw_fields(def)
    }
    fn default_timeout(&self) -> Option<Duration> {
        T::default_timeout()
    }
    async fn step(&self, _ctx: &mut StageCtx) -> Result<Step, StageError> {
        Err(StageError::Fatal(format!(
            "the {} stage type is registered for validation only here",
            T::TYPE
        )))
    }
    async fn cancel(&self, _ctx: &mut StageCtx) -> Result<(), StageError> {
        Ok(())
    }
    fn accept_input(
        &self,
        context: &Map<String, Value>,
        input: &Map<String, Value>,
    ) -> Result<(), String> {
        T::accept_input(context, input)
    }
}
