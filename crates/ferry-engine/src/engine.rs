//! The engine: one actor that owns every live execution, commits each state transition to the
//! store before acting on it, and runs stage steps as tasks beside it.
//!
//! Life of a transition: an event arrives (a step finished, a timer fired, a command, a start);
//! the actor changes the execution in memory and notes what it must do next (steps to spawn,
//! timers, cancel hooks); it commits the execution header and the changed stages in one
//! transaction; only then does it do those things. A crash at any point therefore leaves the
//! store at a state from which [`Engine::start`] resumes: running stages are stepped again (with
//! `recovered = true`), waiting runs are reconsidered, and queued commands are applied.

use crate::expr::{self, UrlFetcher};
use crate::registry::Registry;
use crate::stage::{StageCtx, StageError, StageType, Step};
use crate::validate::validate_pipeline;
use crate::window;
use ferry_core::pipeline::value_as_param_string;
use ferry_core::{
    Execution, ExecutionWrite, PausedDetails, PipelineRecord, Problem, Problems, RestartDetails,
    StageExecution, Status, Store, StoreError, TaskExecution, Trigger, now_millis,
};
use ferry_expr::Limits;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Engine settings.
#[derive(Clone)]
pub struct EngineConfig {
    /// At most this many stage steps run at once; more wait for a slot.
    pub max_concurrent_steps: usize,
    /// Limits for every expression evaluation.
    pub limits: Limits,
    /// Fetcher for `#fromUrl`; `None` refuses every URL.
    pub url_fetcher: Option<Arc<dyn UrlFetcher>>,
    /// Delay between attempts when a commit fails (the engine retries until it succeeds,
    /// because acting on an uncommitted transition would break durability).
    pub commit_retry: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_concurrent_steps: 512,
            limits: Limits::default(),
            url_fetcher: None,
            commit_retry: Duration::from_millis(500),
        }
    }
}

/// Errors from starting a run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The pipeline (or an orchestration's stages) or the run's parameters are invalid: every
    /// problem with its path.
    #[error(transparent)]
    Invalid(#[from] Problems),
    /// The pipeline is disabled.
    #[error("pipeline \"{0}\" is disabled")]
    Disabled(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    Shutdown,
}

/// Errors from a command on an execution.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such execution or stage.
    #[error("{0}")]
    NotFound(String),
    /// The execution's state does not allow the command (e.g. judging a finished stage).
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    Shutdown,
}

/// A user's action on an execution. Commands are queued durably before they are applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum Command {
    /// Cancel the run: running stages are canceled and told to stop.
    Cancel {
        /// Who.
        user: String,
        /// Why.
        reason: Option<String>,
    },
    /// Pause the run: no step runs and no stage starts until resumed.
    Pause {
        /// Who.
        user: String,
    },
    /// Resume a paused run.
    Resume {
        /// Who.
        user: String,
    },
    /// Restart a completed (or not started) stage and everything downstream of it.
    RestartStage {
        /// The stage's refId or id.
        stage: String,
        /// Who.
        user: String,
    },
    /// Input for a running stage: a manual judgment, a skip of a wait.
    StageInput {
        /// The stage's refId or id.
        stage: String,
        /// Fields merged into the stage's context.
        input: Map<String, Value>,
        /// Who.
        user: String,
    },
}

/// A change to an execution, published after it is committed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionEvent {
    /// Execution id.
    pub execution_id: String,
    /// Application.
    pub application: String,
    /// The execution's status after the change.
    pub status: Status,
    /// Time of the commit, epoch millis.
    pub time: i64,
}

/// What starts a run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Trigger type (`manual` when empty).
    pub trigger_type: String,
    /// Who the run acts as.
    pub user: String,
    /// Parameter values given by the caller.
    pub parameters: Map<String, Value>,
    /// Anything else the trigger carries (parent execution, payload…).
    pub extra: Map<String, Value>,
}

/// Counters the engine keeps, readable at any time.
#[derive(Default)]
pub struct EngineStats {
    /// State transitions applied (stage or execution status changes).
    pub transitions: AtomicU64,
    /// Store commits.
    pub commits: AtomicU64,
    /// Executions held in memory (running, paused or waiting).
    pub live_executions: AtomicU64,
    /// Steps running now.
    pub steps_in_flight: AtomicU64,
    /// Commits that failed and were retried.
    pub commit_failures: AtomicU64,
    /// Latency samples (nanoseconds) from a stage's step finishing to the next stage's step
    /// starting, kept only when [`EngineStats::record_latency`] is on (benchmarks).
    pub latencies: samples::Samples,
}

/// A tiny sample buffer without extra dependencies.
pub mod samples {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Optional latency samples, in nanoseconds.
    #[derive(Default)]
    pub struct Samples {
        on: AtomicBool,
        data: Mutex<Vec<u64>>,
    }

    impl Samples {
        /// Starts or stops recording.
        pub fn record(&self, on: bool) {
            self.on.store(on, Ordering::Relaxed);
        }
        pub(crate) fn push(&self, ns: u64) {
            if self.on.load(Ordering::Relaxed)
                && let Ok(mut d) = self.data.lock()
            {
                d.push(ns);
            }
        }
        /// Takes the recorded samples.
        pub fn take(&self) -> Vec<u64> {
            self.data
                .lock()
                .map(|mut d| std::mem::take(&mut *d))
                .unwrap_or_default()
        }
    }
}

/// The engine's public face: cheap to clone, usable from any task.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    registry: Registry,
    config: EngineConfig,
    tx: mpsc::UnboundedSender<Msg>,
    events: broadcast::Sender<ExecutionEvent>,
    stats: EngineStats,
    shutdown: CancellationToken,
    /// Bounds how many steps run at once.
    steps: Semaphore,
}

enum Msg {
    Start {
        execution: Box<Execution>,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Command {
        execution_id: String,
        command: Command,
        queue_id: Option<i64>,
        reply: Option<oneshot::Sender<Result<(), CommandError>>>,
    },
    StepDone(Box<StepDone>),
    Get {
        id: String,
        reply: oneshot::Sender<Option<Execution>>,
    },
    Poke {
        execution_id: String,
        stage_id: String,
    },
}

struct StepDone {
    execution_id: String,
    stage_index: usize,
    generation: u64,
    evaluated: Option<Map<String, Value>>,
    messages: Vec<String>,
    skipped: bool,
    context: Map<String, Value>,
    outputs: Map<String, Value>,
    outcome: Result<Step, StageError>,
    finished: Instant,
}

/// Runtime bookkeeping for one stage (not persisted).
#[derive(Default)]
struct StageRt {
    generation: u64,
    in_flight: bool,
    /// A poke arrived while a step was in flight: step again as soon as it returns.
    poked: bool,
    recovered: bool,
    cancel: CancellationToken,
    deferred: Vec<Deferred>,
}

struct Deferred {
    command: Command,
    queue_id: Option<i64>,
    reply: Option<oneshot::Sender<Result<(), CommandError>>>,
}

struct Live {
    exec: Execution,
    rt: Vec<StageRt>,
}

/// A timer: when, a sequence number (ties), the execution, the stage index and why.
type TimerEntry = (Instant, u64, String, usize, Timer);

/// Why a timer was armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Step the stage again, unless it was stepped since (`generation` moved on).
    Poll { generation: u64 },
    /// Check the stage's timeout for this attempt.
    Deadline { attempt: u32 },
}

/// What must happen after the commit of one event.
#[derive(Default)]
struct Effects {
    dirty: BTreeSet<usize>,
    header: bool,
    create: bool,
    transitions: u64,
    spawn: Vec<usize>,
    timers: Vec<(Instant, usize)>,
    deadlines: Vec<(Instant, usize)>,
    cancel_hooks: Vec<usize>,
    acks: Vec<i64>,
    completed: bool,
    caused_at: Option<Instant>,
}

/// A caller waiting for the group commit that includes its change.
enum AfterCommit {
    Start(oneshot::Sender<Result<(), EngineError>>),
    Command(oneshot::Sender<Result<(), CommandError>>),
    Get(String, oneshot::Sender<Option<Execution>>),
}

impl Effects {
    fn needs_commit(&self) -> bool {
        self.create || self.header || !self.dirty.is_empty() || !self.acks.is_empty()
    }

    /// Adds a later change to the same execution within one group commit.
    fn merge(&mut self, other: Effects) {
        self.dirty.extend(other.dirty);
        self.header |= other.header;
        self.create |= other.create;
        self.transitions += other.transitions;
        self.spawn.extend(other.spawn);
        self.timers.extend(other.timers);
        self.deadlines.extend(other.deadlines);
        self.cancel_hooks.extend(other.cancel_hooks);
        self.acks.extend(other.acks);
        self.completed |= other.completed;
        self.caused_at = self.caused_at.or(other.caused_at);
    }

    fn stage(&mut self, i: usize) {
        self.dirty.insert(i);
        self.transitions += 1;
    }
}

/// Starts the engine.
pub struct Engine;

impl Engine {
    /// Recovers every incomplete execution from the store, applies queued commands, and starts
    /// the actor. The returned handle drives it; the join handle ends after
    /// [`EngineHandle::shutdown`].
    pub async fn start(
        store: Arc<dyn Store>,
        registry: Registry,
        config: EngineConfig,
    ) -> Result<(EngineHandle, tokio::task::JoinHandle<()>), StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            store: store.clone(),
            registry,
            steps: Semaphore::new(config.max_concurrent_steps.max(1)),
            config,
            tx,
            events,
            stats: EngineStats::default(),
            shutdown: CancellationToken::new(),
        });
        let handle = EngineHandle {
            inner: inner.clone(),
        };
        let recovered = store.incomplete_executions().await?;
        let commands = store.pending_commands(10_000).await?;
        let mut actor = Actor {
            handle: handle.clone(),
            pending: Vec::new(),
            after_commit: Vec::new(),
            live: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
        };
        actor.recover(recovered).await;
        for c in commands {
            match serde_json::from_value::<Command>(c.payload.clone()) {
                Ok(command) => {
                    actor
                        .command(c.execution_id, command, Some(c.id), None)
                        .await
                }
                Err(e) => {
                    tracing::warn!(queue_id = c.id, error = %e, "dropping unreadable queued command");
                    let _ = store.ack(c.id).await;
                }
            }
        }
        actor.commit_pending().await;
        let join = tokio::spawn(actor.run(rx));
        Ok((handle, join))
    }
}

/// Most events applied in one group commit.
const MAX_BATCH: usize = 256;

struct Actor {
    handle: EngineHandle,
    /// Changes staged for the next group commit, per execution.
    pending: Vec<(String, Effects)>,
    /// Callers to answer once the pending changes are committed.
    after_commit: Vec<AfterCommit>,
    live: HashMap<String, Live>,
    timers: BinaryHeap<Reverse<TimerEntry>>,
    timer_seq: u64,
}

impl EngineHandle {
    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The stage registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The limits and `#fromUrl` fetcher every evaluation uses.
    pub fn expression_settings(&self) -> (Limits, Option<Arc<dyn UrlFetcher>>) {
        (
            self.inner.config.limits,
            self.inner.config.url_fetcher.clone(),
        )
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Live updates, published after each commit.
    pub fn subscribe(&self) -> broadcast::Receiver<ExecutionEvent> {
        self.inner.events.subscribe()
    }

    /// Asks the actor to stop. Running executions stay running in the store and resume when an
    /// engine starts again.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// True until [`EngineHandle::shutdown`].
    pub fn is_running(&self) -> bool {
        !self.inner.shutdown.is_cancelled() && !self.inner.tx.is_closed()
    }

    /// Starts a run of a stored pipeline. Returns the new execution's id once it is committed.
    pub async fn run_pipeline(
        &self,
        record: &PipelineRecord,
        request: RunRequest,
    ) -> Result<String, EngineError> {
        let pipeline = validate_pipeline(&record.spec, &self.inner.registry)?;
        if pipeline.disabled {
            return Err(EngineError::Disabled(pipeline.name));
        }
        let parameters = resolve_parameters(&pipeline.parameter_config, request.parameters)?;
        let request = RunRequest {
            parameters,
            ..request
        };
        self.start(
            Execution::PIPELINE,
            &record.id,
            record.version,
            pipeline,
            request,
        )
        .await
    }

    /// Starts an orchestration: `stages` (in a pipeline's `stages` shape) run once, ad hoc,
    /// without a stored pipeline — Spinnaker's ORCHESTRATION, e.g. a server-group operation
    /// asked for through the API. The stages are validated as the pipeline document
    /// `{application, name: description, stages}` would be, so every problem comes back with its
    /// path (`stages[0].capacity.min`). The execution has type [`Execution::ORCHESTRATION`], an
    /// empty `pipelineConfigId`, version 0 and no concurrency limit; it is stored, recovered
    /// after a restart and commanded exactly like a pipeline's run. `request.parameters` are
    /// kept as given (an orchestration declares none). Returns the new execution's id once it is
    /// committed.
    pub async fn run_orchestration(
        &self,
        application: &str,
        description: &str,
        stages: Vec<Value>,
        request: RunRequest,
    ) -> Result<String, EngineError> {
        let doc = json!({"application": application, "name": description, "stages": stages});
        let mut pipeline = validate_pipeline(&doc, &self.inner.registry)?;
        pipeline.limit_concurrent = false;
        pipeline.max_concurrent_executions = 0;
        pipeline.keep_waiting_pipelines = false;
        self.start(Execution::ORCHESTRATION, "", 0, pipeline, request)
            .await
    }

    /// Builds the execution of a validated pipeline and hands it to the actor.
    async fn start(
        &self,
        execution_type: &str,
        pipeline_config_id: &str,
        pipeline_version: i64,
        pipeline: ferry_core::Pipeline,
        request: RunRequest,
    ) -> Result<String, EngineError> {
        let id = ferry_core::new_time_id();
        let trigger = Trigger {
            trigger_type: if request.trigger_type.is_empty() {
                "manual".into()
            } else {
                request.trigger_type
            },
            user: if request.user.is_empty() {
                "anonymous".into()
            } else {
                request.user
            },
            parameters: request.parameters,
            extra: request.extra,
        };
        let stages = pipeline.stages.iter().map(|d| new_stage(&id, d)).collect();
        let execution = Execution {
            id: id.clone(),
            execution_type: execution_type.into(),
            application: pipeline.application.clone(),
            pipeline_config_id: pipeline_config_id.into(),
            name: pipeline.name.clone(),
            pipeline_version,
            status: Status::NotStarted,
            trigger,
            build_time: now_millis(),
            start_time: None,
            end_time: None,
            canceled: false,
            canceled_by: None,
            cancellation_reason: None,
            paused: None,
            limit_concurrent: pipeline.limit_concurrent,
            max_concurrent_executions: pipeline.max_concurrent_executions,
            keep_waiting_pipelines: pipeline.keep_waiting_pipelines,
            stage_defs: pipeline.stages,
            stages,
        };
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Start {
            execution: Box::new(execution),
            reply,
        })
        .map_err(|_| EngineError::Shutdown)?;
        rx.await.map_err(|_| EngineError::Shutdown)??;
        Ok(id)
    }

    /// Applies a command to an execution. The command is queued durably first, so it is applied
    /// even if Ferry stops before the actor gets to it.
    pub async fn command(&self, execution_id: &str, command: Command) -> Result<(), CommandError> {
        let payload = serde_json::to_value(&command)
            .map_err(|e| CommandError::Conflict(format!("cannot encode command: {e}")))?;
        let queue_id = self.inner.store.enqueue(execution_id, &payload).await?;
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Command {
            execution_id: execution_id.to_string(),
            command,
            queue_id: Some(queue_id),
            reply: Some(reply),
        })
        .map_err(|_| CommandError::Shutdown)?;
        rx.await.map_err(|_| CommandError::Shutdown)?
    }

    /// The current state of an execution: from memory while it is live, else from the store.
    pub async fn get_execution(&self, id: &str) -> Result<Option<Execution>, StoreError> {
        let (reply, rx) = oneshot::channel();
        if self
            .send(Msg::Get {
                id: id.to_string(),
                reply,
            })
            .is_ok()
            && let Ok(Some(e)) = rx.await
        {
            return Ok(Some(e));
        }
        self.inner.store.get_execution(id).await
    }

    /// Steps a running stage now (used when a child execution completes).
    pub fn poke(&self, execution_id: &str, stage_id: &str) {
        let _ = self.send(Msg::Poke {
            execution_id: execution_id.to_string(),
            stage_id: stage_id.to_string(),
        });
    }

    fn send(&self, msg: Msg) -> Result<(), ()> {
        if self.inner.shutdown.is_cancelled() {
            return Err(());
        }
        self.inner.tx.send(msg).map_err(|_| ())
    }
}

/// Applies parameter defaults and checks required and optioned parameters.
fn resolve_parameters(
    config: &[ferry_core::ParameterConfig],
    mut given: Map<String, Value>,
) -> Result<Map<String, Value>, Problems> {
    let mut problems = Vec::new();
    for p in config {
        let present = given
            .get(&p.name)
            .is_some_and(|v| !v.is_null() && v != &Value::String(String::new()));
        if !present {
            match &p.default {
                Some(d) => {
                    given.insert(p.name.clone(), d.clone());
                }
                None if p.required => problems.push(Problem::new(
                    format!("parameters.{}", p.name),
                    "is required",
                )),
                None => {
                    given.insert(p.name.clone(), Value::String(String::new()));
                }
            }
        }
        if p.has_options
            && let Some(v) = given.get(&p.name)
        {
            let s = value_as_param_string(v);
            if !s.is_empty() && !p.options.contains(&s) {
                problems.push(Problem::new(
                    format!("parameters.{}", p.name),
                    format!("\"{s}\" is not one of: {}", p.options.join(", ")),
                ));
            }
        }
    }
    Problems::into_result(problems, given)
}

fn new_rt(n: usize) -> Vec<StageRt> {
    (0..n).map(|_| StageRt::default()).collect()
}

fn new_stage(execution_id: &str, def: &ferry_core::StageDef) -> StageExecution {
    StageExecution {
        id: format!("{execution_id}-{}", def.ref_id),
        ref_id: def.ref_id.clone(),
        stage_type: def.stage_type.clone(),
        name: def.name.clone(),
        requisite_stage_ref_ids: def.requisite_stage_ref_ids.clone(),
        status: Status::NotStarted,
        context: def.context.clone(),
        outputs: Map::new(),
        tasks: Vec::new(),
        start_time: None,
        end_time: None,
        messages: Vec::new(),
        restart_details: None,
        attempt: 0,
        evaluated: false,
        paused_ms: 0,
    }
}

fn reset_stage(s: &mut StageExecution, def: &ferry_core::StageDef) {
    s.status = Status::NotStarted;
    s.context = def.context.clone();
    s.outputs = Map::new();
    s.tasks.clear();
    s.start_time = None;
    s.end_time = None;
    s.messages.clear();
    s.evaluated = false;
    s.paused_ms = 0;
}

impl Actor {
    fn inner(&self) -> &Inner {
        &self.handle.inner
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let shutdown = self.inner().shutdown.clone();
        loop {
            let next_timer = self.timers.peek().map(|Reverse(t)| t.0);
            let sleep = async {
                match next_timer {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(m) => {
                        self.handle_msg(m).await;
                        // Take whatever else is waiting into the same group commit.
                        for _ in 1..MAX_BATCH {
                            match rx.try_recv() {
                                Ok(m) => self.handle_msg(m).await,
                                Err(_) => break,
                            }
                        }
                        self.commit_pending().await;
                    }
                    None => break,
                },
                _ = sleep => {
                    self.fire_timers().await;
                    self.commit_pending().await;
                }
            }
        }
        for live in self.live.values() {
            for rt in &live.rt {
                rt.cancel.cancel();
            }
        }
        tracing::info!("engine stopped");
    }

    async fn handle_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Start { execution, reply } => match self.start_execution(*execution).await {
                Ok(()) => self.after_commit.push(AfterCommit::Start(reply)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Msg::Command {
                execution_id,
                command,
                queue_id,
                reply,
            } => self.command(execution_id, command, queue_id, reply).await,
            Msg::StepDone(done) => self.step_done(*done).await,
            // Answered after the pending commit, so no caller sees an uncommitted state.
            Msg::Get { id, reply } => self.after_commit.push(AfterCommit::Get(id, reply)),
            Msg::Poke {
                execution_id,
                stage_id,
            } => self.poke(&execution_id, &stage_id).await,
        }
    }

    // ----- recovery -----

    async fn recover(&mut self, executions: Vec<Execution>) {
        let count = executions.len();
        let mut ids = Vec::new();
        for exec in executions {
            let n = exec.stages.len();
            let id = exec.id.clone();
            self.live.insert(
                id.clone(),
                Live {
                    exec,
                    rt: new_rt(n),
                },
            );
            ids.push(id);
        }
        self.update_live_gauge();
        for id in ids {
            let mut fx = Effects::default();
            let Some(live) = self.live.get_mut(&id) else {
                continue;
            };
            match live.exec.status {
                Status::Running => {
                    for i in 0..live.exec.stages.len() {
                        if live.exec.stages[i].status == Status::Running {
                            live.rt[i].recovered = true;
                            fx.spawn.push(i);
                            fx.deadlines.push((Instant::now(), i));
                        }
                    }
                    self.advance(&id, &mut fx);
                }
                Status::NotStarted => {
                    // Waiting behind limitConcurrent: reconsidered below.
                }
                _ => {}
            }
            self.flush(&id, fx).await;
        }
        let pipelines: BTreeSet<String> = self
            .live
            .values()
            .filter(|l| l.exec.status == Status::NotStarted)
            .map(|l| l.exec.pipeline_config_id.clone())
            .collect();
        for p in pipelines {
            self.start_waiting(&p).await;
        }
        if count > 0 {
            tracing::info!(executions = count, "recovered incomplete executions");
        }
    }

    // ----- starting -----

    fn active_count(&self, pipeline_id: &str, except: &str) -> usize {
        self.live
            .values()
            .filter(|l| {
                l.exec.pipeline_config_id == pipeline_id
                    && l.exec.id != except
                    && matches!(l.exec.status, Status::Running | Status::Paused)
            })
            .count()
    }

    fn concurrency_limit(exec: &Execution) -> Option<usize> {
        if exec.max_concurrent_executions > 0 {
            Some(exec.max_concurrent_executions as usize)
        } else if exec.limit_concurrent {
            Some(1)
        } else {
            None
        }
    }

    async fn start_execution(&mut self, mut exec: Execution) -> Result<(), EngineError> {
        let id = exec.id.clone();
        let can_run = match Self::concurrency_limit(&exec) {
            Some(limit) => self.active_count(&exec.pipeline_config_id, &id) < limit,
            None => true,
        };
        let mut fx = Effects {
            create: true,
            header: true,
            ..Effects::default()
        };
        if can_run {
            exec.status = Status::Running;
            exec.start_time = Some(now_millis());
            fx.transitions += 1;
        }
        let n = exec.stages.len();
        self.live.insert(
            id.clone(),
            Live {
                exec,
                rt: new_rt(n),
            },
        );
        self.update_live_gauge();
        if can_run {
            self.advance(&id, &mut fx);
        }
        self.flush(&id, fx).await;
        Ok(())
    }

    /// Starts runs of a pipeline that wait behind its concurrency limit, as far as the limit
    /// allows. Without `keepWaitingPipelines`, only the newest waiting run starts and older
    /// waiting runs are canceled.
    async fn start_waiting(&mut self, pipeline_id: &str) {
        let mut waiting: Vec<(i64, String)> = self
            .live
            .values()
            .filter(|l| {
                l.exec.pipeline_config_id == pipeline_id && l.exec.status == Status::NotStarted
            })
            .map(|l| (l.exec.build_time, l.exec.id.clone()))
            .collect();
        if waiting.is_empty() {
            return;
        }
        waiting.sort();
        let keep = self
            .live
            .get(&waiting[waiting.len() - 1].1)
            .is_some_and(|l| l.exec.keep_waiting_pipelines);
        let limit = self
            .live
            .get(&waiting[0].1)
            .and_then(|l| Self::concurrency_limit(&l.exec))
            .unwrap_or(usize::MAX);
        let mut free = limit.saturating_sub(self.active_count(pipeline_id, ""));
        if !keep {
            // Cancel every waiting run but the newest, unless it is a restarted run (those keep
            // their place).
            let newest = waiting.len() - 1;
            for (_, id) in waiting.iter().take(newest) {
                let restarted = self
                    .live
                    .get(id)
                    .is_some_and(|l| l.exec.start_time.is_some());
                if !restarted {
                    self.cancel_waiting(id, "superseded by a newer waiting run")
                        .await;
                }
            }
            waiting.retain(|(_, id)| {
                self.live
                    .get(id)
                    .is_some_and(|l| l.exec.status == Status::NotStarted)
            });
        }
        for (_, id) in waiting {
            if free == 0 {
                break;
            }
            free -= 1;
            let mut fx = Effects {
                header: true,
                transitions: 1,
                ..Effects::default()
            };
            if let Some(live) = self.live.get_mut(&id) {
                live.exec.status = Status::Running;
                if live.exec.start_time.is_none() {
                    live.exec.start_time = Some(now_millis());
                }
            }
            self.advance(&id, &mut fx);
            self.flush(&id, fx).await;
        }
    }

    async fn cancel_waiting(&mut self, id: &str, reason: &str) {
        let mut fx = Effects {
            header: true,
            transitions: 1,
            ..Effects::default()
        };
        if let Some(live) = self.live.get_mut(id) {
            live.exec.status = Status::Canceled;
            live.exec.canceled = true;
            live.exec.canceled_by = Some("ferry".into());
            live.exec.cancellation_reason = Some(reason.into());
            live.exec.end_time = Some(now_millis());
            fx.completed = true;
        }
        self.flush(id, fx).await;
    }

    /// Starts every stage whose parents all allow it, and completes the execution when nothing
    /// runs and nothing can start.
    fn advance(&mut self, id: &str, fx: &mut Effects) {
        let Some(live) = self.live.get_mut(id) else {
            return;
        };
        let exec = &mut live.exec;
        if exec.status != Status::Running {
            return;
        }
        let now = now_millis();
        let n = exec.stages.len();
        for i in 0..n {
            if exec.stages[i].status != Status::NotStarted {
                continue;
            }
            let ready = exec.stages[i]
                .requisite_stage_ref_ids
                .iter()
                .all(|r| exec.stage(r).is_some_and(|p| p.status.allows_downstream()));
            if !ready {
                continue;
            }
            let task_name = self
                .handle
                .inner
                .registry
                .get(&exec.stages[i].stage_type)
                .map(|t| t.task_name())
                .unwrap_or("execute");
            let s = &mut exec.stages[i];
            s.status = Status::Running;
            s.start_time = Some(now);
            s.end_time = None;
            s.attempt += 1;
            s.evaluated = false;
            s.tasks = vec![TaskExecution {
                id: "1".into(),
                name: task_name.into(),
                status: Status::Running,
                start_time: Some(now),
                end_time: None,
            }];
            fx.stage(i);
            let timeout = exec.stage_defs[i]
                .stage_timeout_ms
                .map(Duration::from_millis)
                .or_else(|| {
                    self.handle
                        .inner
                        .registry
                        .get(&exec.stages[i].stage_type)
                        .and_then(|t| t.default_timeout())
                });
            if let Some(t) = timeout {
                fx.deadlines.push((Instant::now() + t, i));
            }
            // Execution windows: wait until the window opens (plus jitter) before the first step.
            if let Some(w) = &exec.stage_defs[i].execution_window {
                match window::next_open(w, now) {
                    Some(open) => {
                        let jitter = w
                            .jitter
                            .filter(|j| !(j.skip_manual && exec.trigger.trigger_type == "manual"))
                            .map(|j| {
                                let span = j.max_delay.saturating_sub(j.min_delay);
                                let extra = if span == 0 {
                                    0
                                } else {
                                    rand::random::<u64>() % (span + 1)
                                };
                                ((j.min_delay + extra) * 1000) as i64
                            })
                            .unwrap_or(0);
                        let at = open + jitter;
                        if at > now {
                            exec.stages[i]
                                .context
                                .insert("executionWindow".into(), json!({"waitingUntil": at}));
                            let delay = Duration::from_millis((at - now) as u64);
                            fx.timers.push((Instant::now() + delay, i));
                            continue;
                        }
                    }
                    None => {
                        exec.stages[i]
                            .messages
                            .push("the execution window never opens".into());
                    }
                }
            }
            fx.spawn.push(i);
        }
        let busy = exec
            .stages
            .iter()
            .any(|s| matches!(s.status, Status::Running | Status::Paused));
        if !busy {
            exec.status = exec.outcome();
            exec.end_time = Some(now);
            fx.header = true;
            fx.transitions += 1;
            fx.completed = true;
        }
    }

    // ----- steps -----

    fn spawn_step(&mut self, id: &str, i: usize) {
        let inner = self.handle.inner.clone();
        let handle = self.handle.clone();
        let Some(live) = self.live.get_mut(id) else {
            return;
        };
        if live.exec.stages[i].status != Status::Running || live.rt[i].in_flight {
            return;
        }
        let Some(stage_type) = inner.registry.get(&live.exec.stages[i].stage_type).cloned() else {
            // Validation refuses unknown types; an execution recovered after a type was removed
            // fails the stage instead of hanging.
            let error = format!("unknown stage type \"{}\"", live.exec.stages[i].stage_type);
            let _ = inner.tx.send(Msg::StepDone(Box::new(StepDone {
                execution_id: id.to_string(),
                stage_index: i,
                generation: live.rt[i].generation,
                evaluated: None,
                messages: Vec::new(),
                skipped: false,
                context: live.exec.stages[i].context.clone(),
                outputs: live.exec.stages[i].outputs.clone(),
                outcome: Err(StageError::Fatal(error)),
                finished: Instant::now(),
            })));
            return;
        };
        let rt = &mut live.rt[i];
        rt.in_flight = true;
        let recovered = std::mem::take(&mut rt.recovered);
        if rt.cancel.is_cancelled() {
            rt.cancel = CancellationToken::new();
        }
        let cancel = rt.cancel.clone();
        let generation = rt.generation;
        let snapshot = Arc::new(live.exec.clone());
        let exec_id = id.to_string();
        inner.stats.steps_in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let done = run_step(
                &inner, handle, snapshot, i, stage_type, recovered, cancel, generation, exec_id,
            )
            .await;
            inner.stats.steps_in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = inner.tx.send(Msg::StepDone(Box::new(done)));
        });
    }

    async fn step_done(&mut self, done: StepDone) {
        let id = done.execution_id.clone();
        let i = done.stage_index;
        let mut fx = Effects {
            caused_at: Some(done.finished),
            ..Effects::default()
        };
        let registry = self.handle.inner.registry.clone();
        {
            let Some(live) = self.live.get_mut(&id) else {
                return;
            };
            if i >= live.rt.len() || live.rt[i].generation != done.generation {
                return;
            }
            live.rt[i].in_flight = false;
            let s = &mut live.exec.stages[i];
            if !matches!(s.status, Status::Running | Status::Paused) {
                return;
            }
            let before_ctx = s.context.len();
            let mut changed = false;
            if let Some(ev) = done.evaluated {
                s.evaluated = true;
                changed = true;
                s.context = ev;
            }
            if !done.messages.is_empty() {
                s.messages.extend(done.messages);
                changed = true;
            }
            if !done.skipped && s.evaluated {
                if s.context != done.context {
                    s.context = done.context;
                    changed = true;
                }
                if s.outputs != done.outputs {
                    s.outputs = done.outputs;
                    changed = true;
                }
            }
            let _ = before_ctx;
            let now = now_millis();
            let def = &live.exec.stage_defs[i];
            let timeout = def.stage_timeout_ms.map(Duration::from_millis).or_else(|| {
                registry
                    .get(&s.stage_type)
                    .and_then(|t| t.default_timeout())
            });
            let deadline =
                timeout.map(|t| s.start_time.unwrap_or(now) + t.as_millis() as i64 + s.paused_ms);
            let outcome = if done.skipped {
                Ok(None)
            } else {
                match done.outcome {
                    Ok(step) => Ok(Some(step)),
                    Err(e) => Err(e.to_string()),
                }
            };
            let paused = s.status == Status::Paused;
            match outcome {
                Ok(None) => self.finish_stage(&id, i, Status::Skipped, None, &mut fx),
                Ok(Some(Step::Succeeded)) => {
                    self.finish_stage(&id, i, Status::Succeeded, None, &mut fx)
                }
                Err(error) | Ok(Some(Step::Failed { error })) => {
                    self.fail_stage(&id, i, error, &mut fx)
                }
                Ok(Some(step @ (Step::Running { .. } | Step::AwaitInput))) => {
                    if changed {
                        fx.dirty.insert(i);
                    }
                    if let Some(d) = deadline
                        && now >= d
                    {
                        let t = timeout.map(|t| t.as_millis()).unwrap_or(0);
                        self.fail_stage(&id, i, format!("stage timed out after {t} ms"), &mut fx);
                        fx.cancel_hooks.push(i);
                    } else if !paused && std::mem::take(&mut live.rt[i].poked) {
                        fx.spawn.push(i);
                    } else if !paused {
                        // The deadline timer handles the timeout; the poll need not wake for it.
                        let deadline: Option<i64> = None;
                        let wait = match step {
                            Step::Running { poll_after } => Some(poll_after),
                            _ => None,
                        };
                        let until_deadline =
                            deadline.map(|d| Duration::from_millis((d - now).max(0) as u64));
                        let delay = match (wait, until_deadline) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        if let Some(delay) = delay {
                            if delay.is_zero() {
                                fx.spawn.push(i);
                            } else {
                                fx.timers.push((Instant::now() + delay, i));
                            }
                        }
                    }
                }
            }
        }
        self.flush(&id, fx).await;
        // Commands that arrived while the step ran.
        let deferred = self
            .live
            .get_mut(&id)
            .map(|l| std::mem::take(&mut l.rt[i].deferred))
            .unwrap_or_default();
        for d in deferred {
            self.command(id.clone(), d.command, d.queue_id, d.reply)
                .await;
        }
    }

    /// Completes a stage with `status` and moves the execution on.
    fn finish_stage(
        &mut self,
        id: &str,
        i: usize,
        status: Status,
        error: Option<String>,
        fx: &mut Effects,
    ) {
        let Some(live) = self.live.get_mut(id) else {
            return;
        };
        let now = now_millis();
        let s = &mut live.exec.stages[i];
        s.status = status;
        s.end_time = Some(now);
        for t in &mut s.tasks {
            if !t.status.is_complete() {
                t.status = if status == Status::Skipped {
                    Status::Skipped
                } else {
                    status
                };
                t.end_time = Some(now);
            }
        }
        if let Some(e) = error {
            s.context.insert(
                "exception".into(),
                json!({"details": {"error": e, "errors": [e]}}),
            );
        }
        live.rt[i].generation += 1;
        fx.stage(i);
        self.advance(id, fx);
    }

    /// Fails a stage under its failure policy. With `failPipeline`, the run ends TERMINAL and
    /// other running stages are canceled.
    fn fail_stage(&mut self, id: &str, i: usize, error: String, fx: &mut Effects) {
        let Some(live) = self.live.get_mut(id) else {
            return;
        };
        let status = live.exec.stage_defs[i].failure.failed_status();
        if status == Status::Terminal {
            let now = now_millis();
            live.exec.stages[i].status = Status::Terminal;
            live.exec.stages[i].end_time = Some(now);
            for t in &mut live.exec.stages[i].tasks {
                t.status = Status::Terminal;
                t.end_time = Some(now);
            }
            live.exec.stages[i].context.insert(
                "exception".into(),
                json!({"details": {"error": error, "errors": [error]}}),
            );
            live.rt[i].generation += 1;
            fx.stage(i);
            cancel_running(live, fx, None);
            live.exec.status = Status::Terminal;
            live.exec.end_time = Some(now);
            fx.header = true;
            fx.transitions += 1;
            fx.completed = true;
        } else {
            self.finish_stage(id, i, status, Some(error), fx);
        }
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(Reverse(t)) = self.timers.peek() {
            if t.0 > now {
                break;
            }
            if let Some(Reverse(t)) = self.timers.pop() {
                due.push(t);
            }
        }
        for (_, _, id, i, timer) in due {
            match timer {
                Timer::Poll { generation } => self.poll_timer(&id, i, generation).await,
                Timer::Deadline { attempt } => self.deadline_timer(&id, i, attempt).await,
            }
        }
    }

    async fn poll_timer(&mut self, id: &str, i: usize, generation: u64) {
        let Some(live) = self.live.get(id) else {
            return;
        };
        if live
            .rt
            .get(i)
            .is_none_or(|rt| rt.generation != generation || rt.in_flight)
        {
            return;
        }
        if live.exec.status != Status::Running || live.exec.stages[i].status != Status::Running {
            return;
        }
        let mut fx = Effects::default();
        // A stage waiting for its execution window: start once it is open.
        if !live.exec.stages[i].evaluated
            && let Some(until) = live.exec.stages[i]
                .context
                .get("executionWindow")
                .and_then(|w| w.get("waitingUntil"))
                .and_then(Value::as_i64)
        {
            let left = until - now_millis();
            if left > 0 {
                fx.timers
                    .push((Instant::now() + Duration::from_millis(left as u64), i));
                self.flush(id, fx).await;
                return;
            }
        }
        fx.spawn.push(i);
        self.flush(id, fx).await;
    }

    /// Times a stage out when its attempt has run (unpaused) for longer than its timeout.
    async fn deadline_timer(&mut self, id: &str, i: usize, attempt: u32) {
        let registry = self.handle.inner.registry.clone();
        let Some(live) = self.live.get(id) else {
            return;
        };
        let s = &live.exec.stages[i];
        if s.attempt != attempt || !matches!(s.status, Status::Running | Status::Paused) {
            return;
        }
        let timeout = live.exec.stage_defs[i]
            .stage_timeout_ms
            .map(Duration::from_millis)
            .or_else(|| {
                registry
                    .get(&s.stage_type)
                    .and_then(|t| t.default_timeout())
            });
        let Some(timeout) = timeout else { return };
        let mut fx = Effects::default();
        let deadline = s.start_time.unwrap_or(0) + timeout.as_millis() as i64 + s.paused_ms;
        let left = deadline - now_millis();
        if s.status == Status::Paused || left > 0 {
            // Paused time does not count: look again later.
            let again = if left > 0 {
                Duration::from_millis(left as u64)
            } else {
                Duration::from_secs(1)
            };
            fx.deadlines.push((Instant::now() + again, i));
            self.flush(id, fx).await;
            return;
        }
        let ms = timeout.as_millis();
        self.fail_stage(id, i, format!("stage timed out after {ms} ms"), &mut fx);
        fx.cancel_hooks.push(i);
        self.flush(id, fx).await;
    }

    async fn poke(&mut self, id: &str, stage_id: &str) {
        let Some(live) = self.live.get_mut(id) else {
            return;
        };
        let Some(i) = live.exec.stage_index(stage_id) else {
            return;
        };
        if live.rt[i].in_flight {
            live.rt[i].poked = true;
            return;
        }
        if live.exec.status == Status::Running && live.exec.stages[i].status == Status::Running {
            live.rt[i].generation += 1;
            let fx = Effects {
                spawn: vec![i],
                ..Effects::default()
            };
            self.flush(id, fx).await;
        }
    }

    // ----- commands -----

    async fn command(
        &mut self,
        id: String,
        command: Command,
        queue_id: Option<i64>,
        reply: Option<oneshot::Sender<Result<(), CommandError>>>,
    ) {
        if !self.live.contains_key(&id) {
            // Completed executions are not in memory; a restart brings one back.
            match self.handle.inner.store.get_execution(&id).await {
                Ok(Some(exec)) => {
                    let n = exec.stages.len();
                    self.live.insert(
                        id.clone(),
                        Live {
                            exec,
                            rt: new_rt(n),
                        },
                    );
                }
                Ok(None) => {
                    self.refuse(
                        queue_id,
                        reply,
                        CommandError::NotFound(format!("no execution \"{id}\"")),
                    )
                    .await;
                    return;
                }
                Err(e) => {
                    self.refuse(queue_id, reply, CommandError::Store(e)).await;
                    return;
                }
            }
        }
        // A command for a stage whose step is running waits for the step.
        if let Command::StageInput { stage, .. } | Command::RestartStage { stage, .. } = &command
            && let Some(live) = self.live.get_mut(&id)
            && let Some(i) = live.exec.stage_index(stage)
            && live.rt[i].in_flight
        {
            live.rt[i].deferred.push(Deferred {
                command,
                queue_id,
                reply,
            });
            return;
        }
        let mut fx = Effects {
            acks: queue_id.into_iter().collect(),
            ..Effects::default()
        };
        let result = self.apply(&id, command, &mut fx);
        match result {
            Ok(()) => {
                self.flush(&id, fx).await;
                if let Some(r) = reply {
                    self.after_commit.push(AfterCommit::Command(r));
                }
            }
            Err(e) => {
                // Drop a completed execution loaded only for this command.
                if self
                    .live
                    .get(&id)
                    .is_some_and(|l| l.exec.status.is_complete())
                {
                    self.live.remove(&id);
                }
                self.refuse(queue_id, reply, e).await;
            }
        }
        if self
            .live
            .get(&id)
            .is_some_and(|l| l.exec.status == Status::NotStarted)
        {
            let p = self.live[&id].exec.pipeline_config_id.clone();
            self.start_waiting(&p).await;
        }
    }

    async fn refuse(
        &self,
        queue_id: Option<i64>,
        reply: Option<oneshot::Sender<Result<(), CommandError>>>,
        error: CommandError,
    ) {
        if let Some(q) = queue_id
            && let Err(e) = self.handle.inner.store.ack(q).await
        {
            tracing::warn!(error = %e, "could not remove a refused command from the queue");
        }
        if let Some(r) = reply {
            let _ = r.send(Err(error));
        }
    }

    fn apply(&mut self, id: &str, command: Command, fx: &mut Effects) -> Result<(), CommandError> {
        let registry = self.handle.inner.registry.clone();
        let active_elsewhere = {
            let live = &self.live[id];
            let limit = Self::concurrency_limit(&live.exec);
            limit.is_some_and(|l| self.active_count(&live.exec.pipeline_config_id, id) >= l)
        };
        let Some(live) = self.live.get_mut(id) else {
            return Err(CommandError::NotFound(format!("no execution \"{id}\"")));
        };
        let now = now_millis();
        match command {
            Command::Cancel { user, reason } => {
                if live.exec.status.is_complete() {
                    return Err(CommandError::Conflict(format!(
                        "execution is already {}",
                        live.exec.status
                    )));
                }
                live.exec.canceled = true;
                live.exec.canceled_by = Some(user);
                live.exec.cancellation_reason = reason;
                cancel_running(live, fx, None);
                live.exec.status = Status::Canceled;
                live.exec.end_time = Some(now);
                fx.header = true;
                fx.transitions += 1;
                fx.completed = true;
            }
            Command::Pause { user } => {
                if live.exec.status != Status::Running {
                    return Err(CommandError::Conflict(format!(
                        "only a RUNNING execution can be paused; this one is {}",
                        live.exec.status
                    )));
                }
                live.exec.status = Status::Paused;
                live.exec.paused = Some(PausedDetails {
                    paused_by: user,
                    pause_time: now,
                    resumed_by: None,
                    resume_time: None,
                });
                for (i, s) in live.exec.stages.iter_mut().enumerate() {
                    if s.status == Status::Running {
                        s.status = Status::Paused;
                        live.rt[i].generation += 1;
                        fx.stage(i);
                    }
                }
                fx.header = true;
                fx.transitions += 1;
            }
            Command::Resume { user } => {
                if live.exec.status != Status::Paused {
                    return Err(CommandError::Conflict(format!(
                        "only a PAUSED execution can be resumed; this one is {}",
                        live.exec.status
                    )));
                }
                let paused_for = live
                    .exec
                    .paused
                    .as_ref()
                    .map(|p| now - p.pause_time)
                    .unwrap_or(0);
                if let Some(p) = &mut live.exec.paused {
                    p.resumed_by = Some(user);
                    p.resume_time = Some(now);
                }
                live.exec.status = Status::Running;
                for (i, s) in live.exec.stages.iter_mut().enumerate() {
                    if s.status == Status::Paused {
                        s.status = Status::Running;
                        s.paused_ms += paused_for;
                        fx.stage(i);
                        if !live.rt[i].in_flight {
                            fx.spawn.push(i);
                        }
                    }
                }
                fx.header = true;
                fx.transitions += 1;
                self.advance(id, fx);
            }
            Command::RestartStage { stage, user } => {
                let Some(i) = live.exec.stage_index(&stage) else {
                    return Err(CommandError::NotFound(format!(
                        "no stage \"{stage}\" in execution \"{id}\""
                    )));
                };
                let st = live.exec.stages[i].status;
                if !(st.is_complete() || st == Status::NotStarted) {
                    return Err(CommandError::Conflict(format!(
                        "stage \"{stage}\" is {st}; only a completed or not started stage can be restarted"
                    )));
                }
                if live.exec.status == Status::Paused {
                    return Err(CommandError::Conflict(
                        "resume the execution before restarting a stage".into(),
                    ));
                }
                let previous = live.exec.stages[i].context.get("exception").cloned();
                for j in downstream_of(&live.exec, i) {
                    let def = live.exec.stage_defs[j].clone();
                    reset_stage(&mut live.exec.stages[j], &def);
                    live.rt[j].generation += 1;
                    fx.stage(j);
                }
                live.exec.stages[i].restart_details = Some(RestartDetails {
                    restarted_by: user,
                    restart_time: now,
                    previous_exception: previous,
                });
                live.exec.canceled = false;
                live.exec.canceled_by = None;
                live.exec.cancellation_reason = None;
                live.exec.end_time = None;
                fx.header = true;
                fx.transitions += 1;
                if active_elsewhere {
                    live.exec.status = Status::NotStarted;
                } else {
                    live.exec.status = Status::Running;
                    if live.exec.start_time.is_none() {
                        live.exec.start_time = Some(now);
                    }
                    self.advance(id, fx);
                }
                self.update_live_gauge();
            }
            Command::StageInput { stage, input, user } => {
                let Some(i) = live.exec.stage_index(&stage) else {
                    return Err(CommandError::NotFound(format!(
                        "no stage \"{stage}\" in execution \"{id}\""
                    )));
                };
                let s = &mut live.exec.stages[i];
                if !matches!(s.status, Status::Running | Status::Paused) {
                    return Err(CommandError::Conflict(format!(
                        "stage \"{stage}\" is {}, not running",
                        s.status
                    )));
                }
                let Some(t) = registry.get(&s.stage_type) else {
                    return Err(CommandError::Conflict(format!(
                        "stage type \"{}\" is not registered",
                        s.stage_type
                    )));
                };
                t.accept_input(&s.context, &input)
                    .map_err(CommandError::Conflict)?;
                for (k, v) in input {
                    s.context.insert(k, v);
                }
                s.context
                    .insert("lastModifiedBy".into(), Value::String(user));
                fx.dirty.insert(i);
                if s.status == Status::Running && s.evaluated {
                    live.rt[i].generation += 1;
                    fx.spawn.push(i);
                }
            }
        }
        Ok(())
    }

    // ----- commit and act -----

    /// Stages what `fx` changed for the next group commit. Nothing acts on it until
    /// [`Actor::commit_pending`] has committed it.
    async fn flush(&mut self, id: &str, fx: Effects) {
        match self.pending.iter_mut().find(|(p, _)| p == id) {
            Some((_, existing)) => existing.merge(fx),
            None => self.pending.push((id.to_string(), fx)),
        }
    }

    /// Group commit: writes every staged change in one transaction, then acts on them (spawns
    /// steps, arms timers, runs cancel hooks, publishes events, releases completed executions)
    /// and answers the callers waiting for the commit. Acting may stage more changes; those are
    /// committed in the next round, before anything acts on them.
    async fn commit_pending(&mut self) {
        let inner = self.handle.inner.clone();
        while !self.pending.is_empty() || !self.after_commit.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            let dirty: Vec<Vec<usize>> = batch
                .iter()
                .map(|(_, fx)| fx.dirty.iter().copied().collect())
                .collect();
            let writes: Vec<ExecutionWrite<'_>> = batch
                .iter()
                .zip(&dirty)
                .filter(|((_, fx), _)| fx.needs_commit())
                .filter_map(|((id, fx), d)| {
                    self.live.get(id).map(|live| ExecutionWrite {
                        execution: &live.exec,
                        create: fx.create,
                        changed_stages: d,
                        acks: &fx.acks,
                    })
                })
                .collect();
            if !writes.is_empty() {
                let mut attempt = 0u32;
                while let Err(e) = inner.store.write_executions(&writes).await {
                    attempt += 1;
                    inner.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(executions = writes.len(), attempt, error = %e, "commit failed; retrying");
                    tokio::time::sleep(inner.config.commit_retry).await;
                }
                inner.stats.commits.fetch_add(1, Ordering::Relaxed);
            }
            drop(writes);
            for (id, fx) in batch {
                self.act(&id, fx).await;
            }
            for reply in std::mem::take(&mut self.after_commit) {
                match reply {
                    AfterCommit::Start(r) => {
                        let _ = r.send(Ok(()));
                    }
                    AfterCommit::Command(r) => {
                        let _ = r.send(Ok(()));
                    }
                    AfterCommit::Get(id, r) => {
                        let _ = r.send(self.live.get(&id).map(|l| l.exec.clone()));
                    }
                }
            }
        }
    }

    /// What happens once a change is committed.
    async fn act(&mut self, id: &str, fx: Effects) {
        let inner = self.handle.inner.clone();
        let Some(live) = self.live.get(id) else {
            return;
        };
        inner
            .stats
            .transitions
            .fetch_add(fx.transitions, Ordering::Relaxed);
        let event = fx.needs_commit().then(|| ExecutionEvent {
            execution_id: id.to_string(),
            application: live.exec.application.clone(),
            status: live.exec.status,
            time: now_millis(),
        });
        for i in fx.spawn {
            self.spawn_step(id, i);
            if let Some(t) = fx.caused_at {
                inner.stats.latencies.push(t.elapsed().as_nanos() as u64);
            }
        }
        for (at, i) in fx.timers {
            if let Some(live) = self.live.get(id) {
                let generation = live.rt[i].generation;
                self.timer_seq += 1;
                self.timers.push(Reverse((
                    at,
                    self.timer_seq,
                    id.to_string(),
                    i,
                    Timer::Poll { generation },
                )));
            }
        }
        for (at, i) in fx.deadlines {
            if let Some(live) = self.live.get(id) {
                let attempt = live.exec.stages[i].attempt;
                self.timer_seq += 1;
                self.timers.push(Reverse((
                    at,
                    self.timer_seq,
                    id.to_string(),
                    i,
                    Timer::Deadline { attempt },
                )));
            }
        }
        for i in fx.cancel_hooks {
            self.spawn_cancel_hook(id, i);
        }
        if let Some(event) = event {
            let _ = inner.events.send(event);
        }
        if fx.completed {
            self.complete(id).await;
        }
    }

    fn spawn_cancel_hook(&mut self, id: &str, i: usize) {
        let inner = self.handle.inner.clone();
        let handle = self.handle.clone();
        let Some(live) = self.live.get_mut(id) else {
            return;
        };
        live.rt[i].cancel.cancel();
        let Some(stage_type) = inner.registry.get(&live.exec.stages[i].stage_type).cloned() else {
            return;
        };
        let snapshot = Arc::new(live.exec.clone());
        let s = &live.exec.stages[i];
        let mut ctx = StageCtx {
            context: s.context.clone(),
            outputs: s.outputs.clone(),
            execution: snapshot,
            stage_index: i,
            recovered: false,
            cancel: CancellationToken::new(),
            engine: handle,
        };
        let exec_id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = stage_type.cancel(&mut ctx).await {
                tracing::warn!(execution = %exec_id, stage = i, error = %e, "cancel hook failed");
            }
        });
    }

    /// Releases a completed execution: cancel hooks for stages still marked, parent pokes,
    /// and the next waiting run of the same pipeline.
    async fn complete(&mut self, id: &str) {
        let Some(live) = self.live.get(id) else {
            return;
        };
        if !live.exec.status.is_complete() {
            return;
        }
        let pipeline_id = live.exec.pipeline_config_id.clone();
        let parent = live
            .exec
            .trigger
            .extra
            .get("parentExecutionId")
            .and_then(Value::as_str)
            .zip(
                live.exec
                    .trigger
                    .extra
                    .get("parentStageId")
                    .and_then(Value::as_str),
            )
            .map(|(a, b)| (a.to_string(), b.to_string()));
        let cancel_stages: Vec<usize> = live
            .exec
            .stages
            .iter()
            .enumerate()
            .filter(|(i, s)| s.status == Status::Canceled && live.rt[*i].in_flight)
            .map(|(i, _)| i)
            .collect();
        for rt in &live.rt {
            rt.cancel.cancel();
        }
        let _ = cancel_stages;
        self.live.remove(id);
        self.update_live_gauge();
        if let Some((pe, ps)) = parent {
            self.poke(&pe, &ps).await;
        }
        self.start_waiting(&pipeline_id).await;
    }

    fn update_live_gauge(&self) {
        self.handle
            .inner
            .stats
            .live_executions
            .store(self.live.len() as u64, Ordering::Relaxed);
    }
}

/// Cancels every running or paused stage of `live` except `except`, marking it CANCELED and
/// queueing its cancel hook.
fn cancel_running(live: &mut Live, fx: &mut Effects, except: Option<usize>) {
    let now = now_millis();
    for (i, s) in live.exec.stages.iter_mut().enumerate() {
        if Some(i) == except || !matches!(s.status, Status::Running | Status::Paused) {
            continue;
        }
        s.status = Status::Canceled;
        s.end_time = Some(now);
        for t in &mut s.tasks {
            if !t.status.is_complete() {
                t.status = Status::Canceled;
                t.end_time = Some(now);
            }
        }
        live.rt[i].generation += 1;
        fx.stage(i);
        fx.cancel_hooks.push(i);
    }
}

/// `index` and every stage downstream of it.
fn downstream_of(exec: &Execution, index: usize) -> Vec<usize> {
    let mut out = vec![index];
    let mut k = 0;
    while k < out.len() {
        let ref_id = exec.stages[out[k]].ref_id.clone();
        for (j, s) in exec.stages.iter().enumerate() {
            if s.requisite_stage_ref_ids.contains(&ref_id) && !out.contains(&j) {
                out.push(j);
            }
        }
        k += 1;
    }
    out
}

/// Runs one step: evaluates the stage's expressions on its first step, then calls the stage.
#[allow(clippy::too_many_arguments)]
async fn run_step(
    inner: &Arc<Inner>,
    handle: EngineHandle,
    snapshot: Arc<Execution>,
    i: usize,
    stage_type: Arc<dyn StageType>,
    recovered: bool,
    cancel: CancellationToken,
    generation: u64,
    execution_id: String,
) -> StepDone {
    let _permit = inner.steps.acquire().await.ok();
    let stage = &snapshot.stages[i];
    let def = &snapshot.stage_defs[i];
    let mut done = StepDone {
        execution_id,
        stage_index: i,
        generation,
        evaluated: None,
        messages: Vec::new(),
        skipped: false,
        context: stage.context.clone(),
        outputs: stage.outputs.clone(),
        outcome: Ok(Step::Running {
            poll_after: Duration::ZERO,
        }),
        finished: Instant::now(),
    };
    let mut context = stage.context.clone();
    if !stage.evaluated {
        match prepare(inner, &snapshot, i, stage_type.as_ref()).await {
            Prepared::Skip => {
                done.skipped = true;
                done.finished = Instant::now();
                return done;
            }
            Prepared::Fail(messages, error) => {
                done.messages = messages;
                done.outcome = Err(StageError::Fatal(error));
                done.finished = Instant::now();
                return done;
            }
            Prepared::Ready(ctx, messages) => {
                done.evaluated = Some(ctx.clone());
                done.messages = messages;
                context = ctx;
            }
        }
        let _ = def;
    }
    let mut ctx = StageCtx {
        execution: snapshot.clone(),
        stage_index: i,
        context,
        outputs: stage.outputs.clone(),
        recovered,
        cancel: cancel.clone(),
        engine: handle,
    };
    let st = stage_type.clone();
    let task = tokio::spawn(async move {
        let r = st.step(&mut ctx).await;
        (r, ctx.context, ctx.outputs)
    });
    let abort = task.abort_handle();
    let joined = tokio::select! {
        r = task => Some(r),
        _ = cancel.cancelled() => { abort.abort(); None }
    };
    match joined {
        Some(Ok((outcome, context, outputs))) => {
            done.outcome = outcome;
            done.context = context;
            done.outputs = outputs;
        }
        Some(Err(e)) => {
            let what = if e.is_panic() {
                "panicked"
            } else {
                "was aborted"
            };
            done.outcome = Err(StageError::Fatal(format!(
                "the {} stage implementation {what}",
                stage_type.type_name()
            )));
            if let Some(ev) = &done.evaluated {
                done.context = ev.clone();
            }
        }
        None => {
            done.outcome = Err(StageError::Fatal("stage was canceled".into()));
            if let Some(ev) = &done.evaluated {
                done.context = ev.clone();
            }
        }
    }
    done.finished = Instant::now();
    done
}

enum Prepared {
    Skip,
    Fail(Vec<String>, String),
    Ready(Map<String, Value>, Vec<String>),
}

/// Evaluates `stageEnabled` and the stage context, off the async runtime.
async fn prepare(
    inner: &Arc<Inner>,
    snapshot: &Arc<Execution>,
    i: usize,
    stage_type: &dyn StageType,
) -> Prepared {
    let def = &snapshot.stage_defs[i];
    let context = snapshot.stages[i].context.clone();
    let skip_all = context
        .get("skipExpressionEvaluation")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let needs_eval = def.stage_enabled.is_some() || (!skip_all && expr::has_expressions(&context));
    if !needs_eval {
        return Prepared::Ready(context, Vec::new());
    }
    let mut raw = stage_type.raw_fields(def);
    if skip_all {
        raw.extend(context.keys().cloned());
    }
    let limits = inner.config.limits;
    let fetcher = inner.config.url_fetcher.clone();
    let snapshot = snapshot.clone();
    let enabled = def.stage_enabled.clone();
    let fail_on_failed = def.fail_on_failed_expressions;
    let r = tokio::task::spawn_blocking(move || {
        if let Some(cond) = enabled {
            match expr::evaluate_condition(&snapshot, i, &context, &cond, limits, fetcher.clone()) {
                Ok(false) => return Prepared::Skip,
                Ok(true) => {}
                Err(e) => {
                    let msg = format!("stageEnabled: {e}");
                    return Prepared::Fail(vec![msg.clone()], msg);
                }
            }
        }
        let ev = expr::evaluate_stage_value(&snapshot, i, &context, &raw, limits, fetcher);
        let messages: Vec<String> = ev
            .errors
            .iter()
            .map(|e| {
                format!(
                    "{}: failed to evaluate `{}`: {}",
                    e.path, e.expression, e.message
                )
            })
            .collect();
        if fail_on_failed && !messages.is_empty() {
            let error = messages.join("; ");
            return Prepared::Fail(messages, error);
        }
        Prepared::Ready(ev.context, messages)
    })
    .await;
    match r {
        Ok(p) => p,
        Err(e) => Prepared::Fail(Vec::new(), format!("expression evaluation failed: {e}")),
    }
}
