//! Engine behaviour tests: the DAG, failure policies, statuses, concurrency limits, commands and
//! recovery, against a real SQLite store, with a controllable `probe` stage type.

use crate::conformance::wait_for;
use crate::stage::{StageCtx, StageError, Step, Typed, TypedStage};
use crate::{Command, Engine, EngineConfig, EngineHandle, Registry, RunRequest};
use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_core::{Execution, Status, Store};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// `probe`: sleeps `sleepMs` (in one step), then succeeds or fails as `outcome` says, copying
/// `emit` into its outputs. With `await: true` it waits for input `{go: true}`.
struct Probe;

struct ProbeConfig {
    sleep_ms: u64,
    fail: bool,
    emit: Map<String, Value>,
    await_input: bool,
}

#[async_trait]
impl TypedStage for Probe {
    type Config = ProbeConfig;
    const TYPE: &'static str = "probe";
    const TASK: &'static str = "probeTask";

    fn config(f: &mut Fields<'_>) -> Option<ProbeConfig> {
        let sleep_ms = f.opt_u64("sleepMs").unwrap_or(0);
        let fail = match f.opt_str("outcome").as_deref() {
            None | Some("succeed") => false,
            Some("fail") => true,
            Some(other) => {
                f.problem("outcome", format!("must be succeed or fail, not {other}"));
                return None;
            }
        };
        let emit = f.opt_object("emit").cloned().unwrap_or_default();
        let await_input = f.bool_or("await", false);
        Some(ProbeConfig {
            sleep_ms,
            fail,
            emit,
            await_input,
        })
    }

    fn accept_input(_c: &Map<String, Value>, input: &Map<String, Value>) -> Result<(), String> {
        if input.get("go") == Some(&Value::Bool(true)) {
            Ok(())
        } else {
            Err("send {go: true}".into())
        }
    }

    async fn step(&self, c: &ProbeConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        if c.await_input && ctx.context.get("go") != Some(&Value::Bool(true)) {
            return Ok(Step::AwaitInput);
        }
        if c.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(c.sleep_ms)).await;
        }
        let runs = ctx.context.get("runs").and_then(Value::as_u64).unwrap_or(0) + 1;
        ctx.context.insert("runs".into(), json!(runs));
        for (k, v) in &c.emit {
            ctx.outputs.insert(k.clone(), v.clone());
        }
        if c.fail {
            Ok(Step::Failed {
                error: "probe failed on purpose".into(),
            })
        } else {
            Ok(Step::Succeeded)
        }
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Typed(Probe));
    r
}

struct Env {
    store: Arc<dyn Store>,
    engine: EngineHandle,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = ferry_store::open(&ferry_store::StoreConfig::Sqlite {
        path: dir.path().join("ferry.db"),
    })
    .await
    .unwrap();
    let (engine, _) = Engine::start(store.clone(), registry(), EngineConfig::default())
        .await
        .unwrap();
    Env {
        store,
        engine,
        _dir: dir,
    }
}

impl Env {
    /// Stops the engine (as a crash would leave the store) and starts a new one on the same store.
    async fn restart(&mut self) {
        self.engine.shutdown();
        let (engine, _) = Engine::start(self.store.clone(), registry(), EngineConfig::default())
            .await
            .unwrap();
        self.engine = engine;
    }

    async fn run(&self, doc: Value, params: Value) -> String {
        let p = crate::validate_pipeline(&doc, self.engine.registry()).unwrap();
        let rec = self.store.save_pipeline(&p, "test").await.unwrap();
        let parameters = params.as_object().cloned().unwrap_or_default();
        self.engine
            .run_pipeline(
                &rec,
                RunRequest {
                    user: "tester".into(),
                    parameters,
                    ..RunRequest::default()
                },
            )
            .await
            .unwrap()
    }

    async fn done(&self, id: &str) -> Execution {
        wait_for(
            &self.engine,
            id,
            Duration::from_secs(10),
            "completion",
            |e| e.status.is_complete(),
        )
        .await
        .unwrap()
    }
}

fn pipeline(name: &str, stages: Value) -> Value {
    json!({"application": "app", "name": name, "stages": stages})
}

fn statuses(e: &Execution) -> Vec<(String, Status)> {
    e.stages
        .iter()
        .map(|s| (s.ref_id.clone(), s.status))
        .collect()
}

fn st(pairs: &[(&str, Status)]) -> Vec<(String, Status)> {
    pairs.iter().map(|(r, s)| (r.to_string(), *s)).collect()
}

#[tokio::test]
async fn fan_out_runs_in_parallel_and_joins_wait_for_every_parent() {
    let env = env().await;
    let id = env
        .run(
            pipeline(
                "diamond",
                json!([
                    {"refId": "a", "type": "probe"},
                    {"refId": "b", "type": "probe", "requisiteStageRefIds": ["a"], "sleepMs": 300},
                    {"refId": "c", "type": "probe", "requisiteStageRefIds": ["a"], "sleepMs": 300},
                    {"refId": "d", "type": "probe", "requisiteStageRefIds": ["b", "c"]}
                ]),
            ),
            json!({}),
        )
        .await;
    let e = env.done(&id).await;
    use Status::*;
    assert_eq!(
        statuses(&e),
        st(&[
            ("a", Succeeded),
            ("b", Succeeded),
            ("c", Succeeded),
            ("d", Succeeded)
        ])
    );
    assert_eq!(e.status, Succeeded);
    let s = |r: &str| e.stage(r).unwrap().clone();
    // b and c overlapped: each started before the other ended.
    assert!(s("b").start_time.unwrap() < s("c").end_time.unwrap());
    assert!(s("c").start_time.unwrap() < s("b").end_time.unwrap());
    // d started after both parents ended.
    assert!(s("d").start_time.unwrap() >= s("b").end_time.unwrap().max(s("c").end_time.unwrap()));
    assert!(s("a").end_time.unwrap() <= s("b").start_time.unwrap());
}

#[tokio::test]
async fn fail_pipeline_halts_everything_and_cancels_other_branches() {
    let env = env().await;
    let id = env
        .run(
            pipeline(
                "halt",
                json!([
                    {"refId": "1", "type": "probe", "outcome": "fail"},
                    {"refId": "2", "type": "probe", "sleepMs": 5000},
                    {"refId": "3", "type": "probe", "requisiteStageRefIds": ["1"]}
                ]),
            ),
            json!({}),
        )
        .await;
    let e = env.done(&id).await;
    use Status::*;
    assert_eq!(e.status, Terminal);
    assert_eq!(
        statuses(&e),
        st(&[("1", Terminal), ("2", Canceled), ("3", NotStarted)])
    );
    let err = e.stages[0].context["exception"]["details"]["error"]
        .as_str()
        .unwrap();
    assert_eq!(err, "probe failed on purpose");
}

#[tokio::test]
async fn failure_policies_match_the_reference_table() {
    let env = env().await;
    use Status::*;
    // halt this branch: STOPPED, other branch completes, pipeline SUCCEEDED.
    let id = env
        .run(
            pipeline(
                "branch",
                json!([
                    {"refId": "1", "type": "probe", "outcome": "fail", "failPipeline": false},
                    {"refId": "2", "type": "probe", "sleepMs": 200},
                    {"refId": "3", "type": "probe", "requisiteStageRefIds": ["1"]},
                    {"refId": "4", "type": "probe", "requisiteStageRefIds": ["2"]}
                ]),
            ),
            json!({}),
        )
        .await;
    let e = env.done(&id).await;
    assert_eq!(
        statuses(&e),
        st(&[
            ("1", Stopped),
            ("2", Succeeded),
            ("3", NotStarted),
            ("4", Succeeded)
        ])
    );
    assert_eq!(e.status, Succeeded);

    // halt this branch, fail the pipeline after the others complete.
    let id = env
        .run(
            pipeline("branch-then-fail", json!([
                {"refId": "1", "type": "probe", "outcome": "fail", "failPipeline": false, "completeOtherBranchesThenFail": true},
                {"refId": "2", "type": "probe", "sleepMs": 200},
                {"refId": "4", "type": "probe", "requisiteStageRefIds": ["2"]}
            ])),
            json!({}),
        )
        .await;
    let e = env.done(&id).await;
    assert_eq!(
        statuses(&e),
        st(&[("1", Stopped), ("2", Succeeded), ("4", Succeeded)])
    );
    assert_eq!(e.status, Terminal);

    // ignore the failure: FAILED_CONTINUE and downstream runs.
    let id = env
        .run(
            pipeline("ignore", json!([
                {"refId": "1", "type": "probe", "outcome": "fail", "failPipeline": false, "continuePipeline": true},
                {"refId": "2", "type": "probe", "requisiteStageRefIds": ["1"]}
            ])),
            json!({}),
        )
        .await;
    let e = env.done(&id).await;
    assert_eq!(statuses(&e), st(&[("1", FailedContinue), ("2", Succeeded)]));
    assert_eq!(e.status, Succeeded);
}

#[tokio::test]
async fn stage_enabled_skips_and_expressions_see_parameters_and_upstream_outputs() {
    let env = env().await;
    let doc = json!({"application": "app", "name": "expr",
    "parameterConfig": [{"name": "env", "default": "qa"}],
    "stages": [
        {"refId": "1", "type": "probe", "emit": {"image": "nginx:1.27"}},
        {"refId": "2", "type": "probe", "requisiteStageRefIds": ["1"],
         "stageEnabled": {"type": "expression", "expression": "parameters.env == 'prod'"}},
        {"refId": "3", "type": "probe", "requisiteStageRefIds": ["2"],
         "emit": {"seen": "${image} for ${parameters.env} by ${trigger.user}", "status2": "${#stage('probe').status}"}},
        {"refId": "4", "type": "probe", "requisiteStageRefIds": ["3"], "sleepMs": "${1 + 1}",
         "failOnFailedExpressions": false, "emit": {"broken": "${nosuch.field}"}}
    ]});
    let id = env.run(doc, json!({})).await;
    let e = env.done(&id).await;
    use Status::*;
    assert_eq!(
        statuses(&e),
        st(&[
            ("1", Succeeded),
            ("2", Skipped),
            ("3", Succeeded),
            ("4", Succeeded)
        ])
    );
    // Evaluated once, at start, into the context; the probe copies `emit` to outputs.
    assert_eq!(
        e.stages[2].outputs["seen"],
        json!("nginx:1.27 for qa by tester")
    );
    assert_eq!(e.stages[2].outputs["status2"], json!("SUCCEEDED"));
    assert_eq!(e.stages[3].context["sleepMs"], json!(2));
    // A failed expression is a warning: text left as written, message recorded.
    assert_eq!(e.stages[3].outputs["broken"], json!("${nosuch.field}"));
    assert!(
        e.stages[3]
            .messages
            .iter()
            .any(|m| m.starts_with("emit.broken")),
        "{:?}",
        e.stages[3].messages
    );
}

#[tokio::test]
async fn fail_on_failed_expressions_fails_the_stage() {
    let env = env().await;
    let id = env
        .run(
            pipeline("strict", json!([{"refId": "1", "type": "probe", "failOnFailedExpressions": true, "emit": {"x": "${nosuch.field}"}}])),
            json!({}),
        )
        .await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Terminal);
    assert!(
        e.stages[0].context["exception"]
            .to_string()
            .contains("emit.x")
    );
    // The stage never ran.
    assert!(e.stages[0].context.get("runs").is_none());
}

#[tokio::test]
async fn timeouts_pause_resume_and_stage_input() {
    let env = env().await;
    let id = env.run(pipeline("pause", json!([{"refId": "1", "type": "probe", "await": true}, {"refId": "2", "type": "probe", "requisiteStageRefIds": ["1"]}])), json!({})).await;
    wait_for(&env.engine, &id, Duration::from_secs(5), "running", |e| {
        e.stages[0].status == Status::Running
    })
    .await
    .unwrap();
    env.engine
        .command(&id, Command::Pause { user: "p".into() })
        .await
        .unwrap();
    let e = env.engine.get_execution(&id).await.unwrap().unwrap();
    assert_eq!(e.status, Status::Paused);
    assert_eq!(e.stages[0].status, Status::Paused);
    assert!(
        env.engine
            .command(&id, Command::Pause { user: "p".into() })
            .await
            .is_err(),
        "pausing twice is refused"
    );
    // Bad input is refused with the stage's reason.
    let bad: Map<String, Value> = serde_json::from_value(json!({"go": false})).unwrap();
    let err = env
        .engine
        .command(
            &id,
            Command::StageInput {
                stage: "1".into(),
                input: bad,
                user: "u".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("send {go: true}"));
    let go: Map<String, Value> = serde_json::from_value(json!({"go": true})).unwrap();
    env.engine
        .command(
            &id,
            Command::StageInput {
                stage: "1".into(),
                input: go,
                user: "u".into(),
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Paused: nothing moves.
    let e = env.engine.get_execution(&id).await.unwrap().unwrap();
    assert_eq!(e.stages[1].status, Status::NotStarted);
    env.engine
        .command(&id, Command::Resume { user: "r".into() })
        .await
        .unwrap();
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Succeeded);
    let p = e.paused.unwrap();
    assert_eq!(
        (p.paused_by.as_str(), p.resumed_by.as_deref()),
        ("p", Some("r"))
    );
    assert!(e.stages[0].paused_ms >= 150);
}

#[tokio::test]
async fn restart_resets_the_stage_and_everything_downstream() {
    let env = env().await;
    let id = env
        .run(
            pipeline("restart", json!([
                {"refId": "1", "type": "probe"},
                {"refId": "2", "type": "probe", "requisiteStageRefIds": ["1"], "outcome": "fail"},
                {"refId": "3", "type": "probe", "requisiteStageRefIds": ["2"]}
            ])),
            json!({}),
        )
        .await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Terminal);
    let first_start = e.stages[0].start_time;
    // Restarting a running or unknown stage is refused; a terminal one is allowed.
    assert!(
        env.engine
            .command(
                &id,
                Command::RestartStage {
                    stage: "9".into(),
                    user: "u".into()
                }
            )
            .await
            .is_err()
    );
    env.engine
        .command(
            &id,
            Command::RestartStage {
                stage: "2".into(),
                user: "fixer".into(),
            },
        )
        .await
        .unwrap();
    let e = wait_for(
        &env.engine,
        &id,
        Duration::from_secs(5),
        "done again",
        |e| e.status.is_complete() && e.stages[1].attempt == 2,
    )
    .await
    .unwrap();
    // Still fails (the definition did not change) but stage 1 was not re-run.
    assert_eq!(e.status, Status::Terminal);
    assert_eq!(e.stages[0].start_time, first_start);
    assert_eq!(e.stages[0].attempt, 1);
    let d = e.stages[1].restart_details.as_ref().unwrap();
    assert_eq!(d.restarted_by, "fixer");
    assert!(
        d.previous_exception
            .as_ref()
            .unwrap()
            .to_string()
            .contains("probe failed")
    );
    assert_eq!(e.stages[2].status, Status::NotStarted);
}

#[tokio::test]
async fn limit_concurrent_queues_and_keep_waiting_false_cancels_older_waiters() {
    let env = env().await;
    let doc = json!({"application": "app", "name": "serial", "limitConcurrent": true, "keepWaitingPipelines": false,
        "stages": [{"refId": "1", "type": "probe", "await": true}]});
    let first = env.run(doc.clone(), json!({})).await;
    let second = env.run(doc.clone(), json!({})).await;
    let third = env.run(doc.clone(), json!({})).await;
    let e2 = env.engine.get_execution(&second).await.unwrap().unwrap();
    assert_eq!(e2.status, Status::NotStarted, "waits behind the first run");
    let go: Map<String, Value> = serde_json::from_value(json!({"go": true})).unwrap();
    wait_for(
        &env.engine,
        &first,
        Duration::from_secs(5),
        "running",
        |e| e.stages[0].status == Status::Running,
    )
    .await
    .unwrap();
    env.engine
        .command(
            &first,
            Command::StageInput {
                stage: "1".into(),
                input: go.clone(),
                user: "u".into(),
            },
        )
        .await
        .unwrap();
    env.done(&first).await;
    // The newest waiter starts; the older one is canceled.
    let e2 = env.done(&second).await;
    assert_eq!(e2.status, Status::Canceled);
    let e3 = wait_for(
        &env.engine,
        &third,
        Duration::from_secs(5),
        "third running",
        |e| e.status == Status::Running,
    )
    .await
    .unwrap();
    assert_eq!(e3.status, Status::Running);
}

#[tokio::test]
async fn max_concurrent_executions_with_keep_waiting_runs_in_order() {
    let env = env().await;
    let doc = json!({"application": "app", "name": "two-at-a-time", "maxConcurrentExecutions": 2, "keepWaitingPipelines": true,
        "stages": [{"refId": "1", "type": "probe", "sleepMs": 300}]});
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(env.run(doc.clone(), json!({})).await);
    }
    let mut ends = Vec::new();
    for id in &ids {
        let e = env.done(id).await;
        assert_eq!(e.status, Status::Succeeded);
        ends.push((e.start_time.unwrap(), e.end_time.unwrap()));
    }
    // Never more than two overlapping.
    for (i, (s, _)) in ends.iter().enumerate() {
        let overlapping = ends.iter().filter(|(s2, e2)| s2 <= s && e2 > s).count();
        assert!(overlapping <= 2, "run {i} overlapped {overlapping}");
    }
}

#[tokio::test]
async fn cancel_tells_running_tasks_and_stops_everything() {
    let env = env().await;
    let id = env.run(pipeline("cancel", json!([{"refId": "1", "type": "probe", "sleepMs": 10000}, {"refId": "2", "type": "probe", "requisiteStageRefIds": ["1"]}])), json!({})).await;
    wait_for(&env.engine, &id, Duration::from_secs(5), "running", |e| {
        e.stages[0].status == Status::Running
    })
    .await
    .unwrap();
    env.engine
        .command(
            &id,
            Command::Cancel {
                user: "c".into(),
                reason: Some("because".into()),
            },
        )
        .await
        .unwrap();
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Canceled);
    assert_eq!(
        statuses(&e),
        st(&[("1", Status::Canceled), ("2", Status::NotStarted)])
    );
    assert_eq!(e.cancellation_reason.as_deref(), Some("because"));
}

#[tokio::test]
async fn queued_commands_survive_a_restart() {
    let mut env = env().await;
    let doc = pipeline("q", json!([{"refId": "1", "type": "probe", "await": true}]));
    let id = env.run(doc, json!({})).await;
    wait_for(&env.engine, &id, Duration::from_secs(5), "running", |e| {
        e.stages[0].status == Status::Running
    })
    .await
    .unwrap();
    env.engine.shutdown();
    // A command accepted (queued) while no engine ran, e.g. just before a crash.
    let cmd = serde_json::to_value(Command::StageInput {
        stage: "1".into(),
        input: serde_json::from_value(json!({"go": true})).unwrap(),
        user: "late".into(),
    })
    .unwrap();
    env.store.enqueue(&id, &cmd).await.unwrap();
    env.restart().await;
    let e = wait_for(&env.engine, &id, Duration::from_secs(5), "done", |e| {
        e.status.is_complete()
    })
    .await
    .unwrap();
    assert_eq!(e.status, Status::Succeeded);
    assert_eq!(e.stages[0].context["lastModifiedBy"], "late");
    assert!(env.store.pending_commands(10).await.unwrap().is_empty());
}

fn api_request(user: &str) -> RunRequest {
    RunRequest {
        trigger_type: "api".into(),
        user: user.into(),
        ..RunRequest::default()
    }
}

#[tokio::test]
async fn an_orchestration_runs_without_a_pipeline_and_resumes_after_a_restart() {
    let mut env = env().await;
    let id = env
        .engine
        .run_orchestration(
            "app",
            "Poke the probe",
            vec![
                json!({"refId": "1", "type": "probe", "await": true}),
                json!({"refId": "2", "type": "probe", "requisiteStageRefIds": ["1"], "emit": {"done": true}}),
            ],
            api_request("ann"),
        )
        .await
        .unwrap();
    let e = wait_for(&env.engine, &id, Duration::from_secs(5), "running", |e| {
        e.stages[0].status == Status::Running
    })
    .await
    .unwrap();
    assert_eq!(e.execution_type, "ORCHESTRATION");
    assert!(e.is_orchestration());
    assert_eq!((e.pipeline_config_id.as_str(), e.pipeline_version), ("", 0));
    assert_eq!(e.name, "Poke the probe");
    assert_eq!(
        (e.trigger.trigger_type.as_str(), e.trigger.user.as_str()),
        ("api", "ann")
    );
    // Listed with the application's executions; an empty pipeline id lists only orchestrations.
    let listed = |pipeline: Option<&str>| ferry_core::ExecutionFilter {
        application: Some("app".into()),
        pipeline_config_id: pipeline.map(str::to_string),
        ..Default::default()
    };
    let ids = |v: Vec<ferry_core::ExecutionSummary>| -> Vec<String> {
        v.into_iter().map(|s| s.id).collect()
    };
    for pipeline in [None, Some("")] {
        let listed = ids(env.store.list_executions(&listed(pipeline)).await.unwrap());
        assert_eq!(listed, vec![id.clone()], "{pipeline:?}");
    }

    // Ferry stops while the first stage runs; a new engine resumes the orchestration.
    env.restart().await;
    let e = wait_for(&env.engine, &id, Duration::from_secs(5), "recovered", |e| {
        e.status == Status::Running && e.stages[0].status == Status::Running
    })
    .await
    .unwrap();
    assert_eq!(e.execution_type, "ORCHESTRATION");
    env.engine
        .command(
            &id,
            Command::StageInput {
                stage: "1".into(),
                input: serde_json::from_value(json!({"go": true})).unwrap(),
                user: "ann".into(),
            },
        )
        .await
        .unwrap();
    let e = wait_for(&env.engine, &id, Duration::from_secs(5), "done", |e| {
        e.status.is_complete()
    })
    .await
    .unwrap();
    assert_eq!(e.status, Status::Succeeded);
    assert_eq!(e.execution_type, "ORCHESTRATION");
    assert_eq!(e.stages[0].context["runs"], 1);
    assert_eq!(e.stages[1].outputs["done"], true);
    let stored = env.store.get_execution(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.execution_type.as_str(), stored.status),
        ("ORCHESTRATION", Status::Succeeded)
    );
}

#[tokio::test]
async fn orchestrations_are_validated_whole_fail_like_pipelines_and_never_wait_for_each_other() {
    let env = env().await;
    let err = env
        .engine
        .run_orchestration(
            "",
            "Bad",
            vec![
                json!({"refId": "1", "type": "probe", "outcome": "maybe"}),
                json!({"refId": "2", "type": "warp", "requisiteStageRefIds": ["9"]}),
            ],
            api_request("ann"),
        )
        .await
        .unwrap_err();
    let crate::EngineError::Invalid(problems) = err else {
        panic!("expected Invalid, got {err}");
    };
    let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "application",
        "stages[0].outcome",
        "stages[1].type",
        "stages[1].requisiteStageRefIds[0]",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }

    // A failing stage ends the orchestration TERMINAL with the stage's error.
    let id = env
        .engine
        .run_orchestration(
            "app",
            "Fail",
            vec![json!({"refId": "1", "type": "probe", "outcome": "fail"})],
            api_request("ann"),
        )
        .await
        .unwrap();
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Terminal);
    assert_eq!(
        e.stages[0].context["exception"]["details"]["error"],
        "probe failed on purpose"
    );

    // Orchestrations share the empty pipeline id but no concurrency limit: both run at once.
    let mut ids = Vec::new();
    for n in 0..2 {
        let id = env
            .engine
            .run_orchestration(
                "app",
                &format!("Wait {n}"),
                vec![json!({"refId": "1", "type": "probe", "await": true})],
                api_request("ann"),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    for id in &ids {
        wait_for(&env.engine, id, Duration::from_secs(5), "running", |e| {
            e.status == Status::Running && e.stages[0].status == Status::Running
        })
        .await
        .unwrap();
    }
    for id in &ids {
        env.engine
            .command(
                id,
                Command::StageInput {
                    stage: "1".into(),
                    input: serde_json::from_value(json!({"go": true})).unwrap(),
                    user: "ann".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(env.done(id).await.status, Status::Succeeded);
    }
}

#[tokio::test]
async fn missing_and_invalid_parameters_are_refused_with_paths() {
    let env = env().await;
    let doc = json!({"application": "app", "name": "params",
        "parameterConfig": [{"name": "a", "required": true}, {"name": "b", "hasOptions": true, "options": [{"value": "x"}]}],
        "stages": []});
    let p = crate::validate_pipeline(&doc, env.engine.registry()).unwrap();
    let rec = env.store.save_pipeline(&p, "t").await.unwrap();
    let mut params = Map::new();
    params.insert("b".into(), json!("y"));
    let err = env
        .engine
        .run_pipeline(
            &rec,
            RunRequest {
                parameters: params,
                ..RunRequest::default()
            },
        )
        .await
        .unwrap_err();
    let s = err.to_string();
    assert!(
        s.contains("parameters.a: is required")
            && s.contains("parameters.b: \"y\" is not one of: x"),
        "{s}"
    );
    // An empty pipeline succeeds at once.
    let mut params = Map::new();
    params.insert("a".into(), json!("1"));
    let id = env
        .engine
        .run_pipeline(
            &rec,
            RunRequest {
                parameters: params,
                ..RunRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(env.done(&id).await.status, Status::Succeeded);
}

#[tokio::test]
async fn probe_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = ferry_store::open(&ferry_store::StoreConfig::Sqlite {
        path: dir.path().join("ferry.db"),
    })
    .await
    .unwrap();
    crate::conformance::run(
        registry(),
        store,
        crate::conformance::Case {
            succeeds: json!({"type": "probe"}),
            long_running: json!({"type": "probe", "await": true}),
            completing_input: Some(serde_json::from_value(json!({"go": true})).unwrap()),
            invalid: vec![(
                json!({"type": "probe", "outcome": "maybe"}),
                "stages[0].outcome",
            )],
        },
    )
    .await
    .unwrap();
}
