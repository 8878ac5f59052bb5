//! Tests of the `rollout` stage against the fake provider, a real SQLite store and the real
//! engine: steps and weights, pauses and promotion, aborts, analysis, webhooks, conformance.

use super::*;
use ferry_core::{Execution, Status, Store};
use ferry_engine::conformance::{Case, run, wait_for};
use ferry_engine::{Command, Engine, EngineConfig, EngineHandle, Registry, RunRequest};
use ferry_provider::fake::FakeProvider;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

struct Env {
    fake: Arc<FakeProvider>,
    store: Arc<dyn Store>,
    engine: EngineHandle,
    _dir: tempfile::TempDir,
}

fn services(fake: &Arc<FakeProvider>, store: &Arc<dyn Store>) -> RolloutServices {
    let mut policy = ferry_http::UrlPolicy::public_internet();
    policy.allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
    RolloutServices {
        providers: ferry_deploy::Providers::new()
            .with(fake.clone())
            .with_poll_interval(Duration::from_millis(20)),
        store: store.clone(),
        http: ferry_http::GuardedClient::new(policy).unwrap(),
        prometheus: None,
        canary: None,
    }
}

fn registry(fake: &Arc<FakeProvider>, store: &Arc<dyn Store>) -> Registry {
    let mut r = Registry::new();
    crate::register(&mut r, services(fake, store));
    r
}

impl Env {
    async fn new() -> Env {
        let fake = Arc::new(FakeProvider::new().with_kind("host"));
        let dir = tempfile::tempdir().unwrap();
        let cfg = ferry_store::StoreConfig::Sqlite {
            path: dir.path().join("ferry.db"),
        };
        let store = ferry_store::open(&cfg).await.unwrap();
        let engine = Engine::start(
            store.clone(),
            registry(&fake, &store),
            EngineConfig::default(),
        )
        .await
        .unwrap()
        .0;
        Env {
            fake,
            store,
            engine,
            _dir: dir,
        }
    }

    /// v1 serving in `shop-prod`, as a previous deploy left it.
    async fn stable(&self) -> String {
        let spec = ServerGroupSpec {
            account: "local".into(),
            moniker: Moniker::cluster("shop", Some("prod"), None).unwrap(),
            capacity: Capacity {
                min: 0,
                max: 4,
                desired: 2,
            },
            artifact: serde_json::from_value(artifact("1")).unwrap(),
            health_check: Default::default(),
            load_balancers: vec![],
            enabled: true,
            weight: 100,
            deployed_by: "setup".into(),
            execution_id: None,
        };
        self.fake.create_server_group(spec).await.unwrap().name
    }

    async fn start(&self, stage: Value) -> String {
        let mut s = stage.as_object().cloned().unwrap();
        s.insert("refId".into(), json!("1"));
        s.insert("name".into(), json!("Roll out"));
        let doc = json!({"application": "shop", "name": "ro", "stages": [Value::Object(s)]});
        let p = ferry_engine::validate_pipeline(&doc, self.engine.registry()).unwrap();
        let record = self.store.save_pipeline(&p, "t").await.unwrap();
        self.engine
            .run_pipeline(
                &record,
                RunRequest {
                    user: "t".into(),
                    ..RunRequest::default()
                },
            )
            .await
            .unwrap()
    }

    async fn until(&self, id: &str, what: &str, f: impl Fn(&Execution) -> bool) -> Execution {
        wait_for(&self.engine, id, Duration::from_secs(20), what, f)
            .await
            .unwrap()
    }

    async fn done(&self, id: &str) -> Execution {
        self.until(id, "completion", |e| e.status.is_complete())
            .await
    }

    async fn input(&self, id: &str, input: Value) {
        let e = self.engine.get_execution(id).await.unwrap().unwrap();
        self.engine
            .command(
                id,
                Command::StageInput {
                    stage: e.stages[0].id.clone(),
                    input: input.as_object().cloned().unwrap(),
                    user: "t".into(),
                },
            )
            .await
            .unwrap();
    }
}

fn artifact(version: &str) -> Value {
    json!({"name": "shop", "version": version, "source": {"type": "command", "command": ["shop-service"]}})
}

fn stage(steps: Value, extra: Value) -> Value {
    let mut s = json!({
        "type": "rollout",
        "cluster": {"account": "local", "application": "shop", "stack": "prod",
                    "capacity": {"min": 1, "max": 2, "desired": 2},
                    "artifact": artifact("2"), "deployTimeoutSec": 5},
        "strategy": {"canary": {"steps": steps, "scaleDownDelaySeconds": 0}}
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

fn rollout_of(e: &Execution) -> &Value {
    &e.stages[0].outputs["rollout"]
}

fn error_of(e: &Execution) -> String {
    e.stages[0].context["exception"]["details"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn weights(env: &Env) -> Vec<String> {
    env.fake
        .events()
        .into_iter()
        .filter(|e| e.starts_with("weight"))
        .collect()
}

#[tokio::test]
async fn steps_shift_traffic_pause_and_promote() {
    let env = Env::new().await;
    let v1 = env.stable().await;
    let id = env
        .start(stage(
            json!([{"setWeight": 25}, {"pause": {"duration": "200ms"}}, {"setWeight": 50}, {"pause": {}}]),
            json!({}),
        ))
        .await;
    let e = env
        .until(&id, "paused for promotion", |e| {
            e.stages[0].outputs["rollout"]["status"] == json!("Paused")
                && e.stages[0].outputs["rollout"]["step"] == json!(3)
        })
        .await;
    let canary = rollout_of(&e)["canary"].as_str().unwrap().to_string();
    assert_eq!(
        env.fake.serving("shop-prod"),
        vec![(v1.clone(), 50), (canary.clone(), 50)]
    );
    env.input(&id, json!({"promote": true})).await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
    assert_eq!(rollout_of(&e)["status"], json!("Healthy"));
    assert_eq!(env.fake.serving("shop-prod"), vec![(canary.clone(), 100)]);
    assert_eq!(
        weights(&env),
        vec![
            format!("weight {v1} 75"),
            format!("weight {canary} 25"),
            format!("weight {v1} 50"),
            format!("weight {canary} 50"),
            format!("weight {v1} 0"),
            format!("weight {canary} 100"),
        ]
    );
    // The old version stays as a revision, scaled to zero.
    let old = env.fake.server_group("local", &v1).await.unwrap().unwrap();
    assert!(!old.enabled);
    assert_eq!(old.capacity.desired, 0);
    assert!(
        env.fake.traffic_gaps().is_empty(),
        "{:?}",
        env.fake.traffic_gaps()
    );
}

#[tokio::test]
async fn abort_gives_the_stable_its_traffic_back_and_removes_the_canary() {
    let env = Env::new().await;
    let v1 = env.stable().await;
    let id = env
        .start(stage(json!([{"setWeight": 40}, {"pause": {}}]), json!({})))
        .await;
    env.until(&id, "paused", |e| {
        e.stages[0].outputs["rollout"]["status"] == json!("Paused")
    })
    .await;
    env.input(&id, json!({"abort": "errors in the logs"})).await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Terminal);
    assert_eq!(rollout_of(&e)["status"], json!("Degraded"));
    assert!(
        error_of(&e).contains("aborted by a user: errors in the logs"),
        "{}",
        error_of(&e)
    );
    assert_eq!(env.fake.serving("shop-prod"), vec![(v1.clone(), 100)]);
    assert_eq!(env.fake.server_group_names(), vec![v1]);
    assert!(env.fake.traffic_gaps().is_empty());
}

#[tokio::test]
async fn full_promotion_skips_the_remaining_steps() {
    let env = Env::new().await;
    env.stable().await;
    let id = env
        .start(stage(
            json!([{"setWeight": 10}, {"pause": {}}, {"setWeight": 20}, {"pause": {"duration": "1h"}}]),
            json!({}),
        ))
        .await;
    env.until(&id, "paused", |e| {
        e.stages[0].outputs["rollout"]["status"] == json!("Paused")
    })
    .await;
    env.input(&id, json!({"promote": "full"})).await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
    assert_eq!(rollout_of(&e)["canaryWeight"], json!(100));
    assert!(
        !weights(&env).iter().any(|w| w.ends_with(" 20")),
        "{:?}",
        weights(&env)
    );
}

#[tokio::test]
async fn the_first_rollout_of_a_cluster_is_promoted_at_once() {
    let env = Env::new().await;
    let e = env
        .start(stage(json!([{"setWeight": 10}, {"pause": {}}]), json!({})))
        .await;
    let e = env.done(&e).await;
    assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
    let canary = rollout_of(&e)["canary"].as_str().unwrap().to_string();
    assert_eq!(env.fake.serving("shop-prod"), vec![(canary, 100)]);
}

#[tokio::test]
async fn a_canary_that_never_becomes_healthy_aborts() {
    let env = Env::new().await;
    let v1 = env.stable().await;
    env.fake
        .set_behavior("2", ferry_provider::fake::Behavior::never_healthy());
    let mut s = stage(json!([{"setWeight": 50}]), json!({}));
    s["cluster"]["deployTimeoutSec"] = json!(1);
    let id = env.start(s).await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Terminal);
    assert!(
        error_of(&e).contains("did not become healthy"),
        "{}",
        error_of(&e)
    );
    assert_eq!(env.fake.serving("shop-prod"), vec![(v1, 100)]);
}

/// Scripted answers per path: status and JSON body, the last one repeated.
type Answers = Arc<Mutex<BTreeMap<String, Vec<(u16, Value)>>>>;

/// A local HTTP server answering each path with a scripted status and JSON body, and
/// recording every request's path and body.
struct Hooks {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    answers: Answers,
}

impl Hooks {
    async fn start() -> Hooks {
        use axum::extract::{Path, State};
        use axum::routing::any;
        type Shared = (Arc<Mutex<Vec<(String, Value)>>>, Answers);
        async fn answer(
            State((seen, answers)): State<Shared>,
            Path(path): Path<String>,
            body: axum::body::Bytes,
        ) -> (http::StatusCode, axum::Json<Value>) {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen.lock().unwrap().push((path.clone(), v));
            let mut a = answers.lock().unwrap();
            let list = a.entry(path).or_default();
            let (code, body) = if list.len() > 1 {
                list.remove(0)
            } else {
                list.first().cloned().unwrap_or((200, json!({})))
            };
            (http::StatusCode::from_u16(code).unwrap(), axum::Json(body))
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(BTreeMap::new()));
        let app = axum::Router::new()
            .route("/{*path}", any(answer))
            .with_state((seen.clone(), answers.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Hooks {
            addr,
            seen,
            answers,
        }
    }

    fn answer(&self, path: &str, script: Vec<(u16, Value)>) {
        self.answers
            .lock()
            .unwrap()
            .insert(path.to_string(), script);
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn calls(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

#[tokio::test]
async fn webhooks_gate_check_and_roll_back() {
    let env = Env::new().await;
    let v1 = env.stable().await;
    let hooks = Hooks::start().await;
    hooks.answer("confirm", vec![(503, json!({})), (200, json!({}))]);
    hooks.answer("step", vec![(200, json!({})), (500, json!({}))]);
    hooks.answer("rollback", vec![(404, json!({}))]);
    let webhooks = json!({"webhooks": [
        {"name": "gate", "type": "confirm-rollout", "url": hooks.url("confirm")},
        {"name": "load", "type": "rollout", "url": hooks.url("step"), "timeout": "2s", "metadata": {"cmd": "hey"}},
        {"name": "undo", "type": "rollback", "url": hooks.url("rollback")},
    ]});
    let id = env
        .start(stage(
            json!([{"setWeight": 10}, {"setWeight": 20}]),
            webhooks,
        ))
        .await;
    let e = env.done(&id).await;
    // The gate said no once, then yes; the second `rollout` check failed: aborted.
    assert_eq!(hooks.calls("confirm").len(), 2);
    assert_eq!(e.status, Status::Terminal);
    let error = error_of(&e);
    assert!(
        error.contains("webhook load (rollout) answered 500"),
        "{error}"
    );
    assert_eq!(env.fake.serving("shop-prod"), vec![(v1.clone(), 100)]);
    let step_calls = hooks.calls("step");
    assert_eq!(step_calls[0]["metadata"]["cmd"], json!("hey"));
    assert_eq!(step_calls[0]["name"], json!("shop-prod"));
    assert_eq!(step_calls[0]["namespace"], json!("shop"));
    assert_eq!(step_calls[0]["weight"], json!(10));
    assert!(!hooks.calls("rollback").is_empty());

    // A rollback webhook answering 2xx rolls back.
    hooks.answer("rollback", vec![(200, json!({}))]);
    hooks.answer("step", vec![(200, json!({}))]);
    let id = env
        .start(stage(
            json!([{"setWeight": 10}, {"pause": {"duration": "1s"}}]),
            json!({"webhooks": [{"name": "undo", "type": "rollback", "url": hooks.url("rollback")}]}),
        ))
        .await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Terminal);
    assert!(
        error_of(&e).contains("rollback webhook undo asked to roll back"),
        "{}",
        error_of(&e)
    );
    assert_eq!(env.fake.serving("shop-prod"), vec![(v1, 100)]);
}

#[tokio::test]
async fn a_failed_analysis_aborts_and_an_inconclusive_one_waits_for_a_person() {
    let env = Env::new().await;
    let v1 = env.stable().await;
    let hooks = Hooks::start().await;
    hooks.answer("bad", vec![(200, json!({"data": {"ok": false}}))]);
    hooks.answer("unsure", vec![(200, json!({"data": {"rate": 0.5}}))]);
    let analysis = |path: &str, success: &str, failure: Option<&str>| {
        let mut m = json!({"name": "check", "count": 1,
            "successCondition": success,
            "provider": {"web": {"url": hooks.url(path), "jsonPath": "{$.data}"}}});
        if let Some(f) = failure {
            m["failureCondition"] = json!(f);
        }
        json!({"analysis": {"metrics": [m]}})
    };
    let id = env
        .start(stage(
            json!([{"setWeight": 20}, analysis("bad", "result.ok == true", None)]),
            json!({}),
        ))
        .await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Terminal);
    assert!(
        error_of(&e).contains("analysis at step 2 ended Failed"),
        "{}",
        error_of(&e)
    );
    assert_eq!(env.fake.serving("shop-prod"), vec![(v1.clone(), 100)]);

    let id = env
        .start(stage(
            json!([{"setWeight": 20}, analysis("unsure", "result.rate > 0.9", Some("result.rate < 0.1")), {"setWeight": 60}]),
            json!({}),
        ))
        .await;
    let e = env
        .until(&id, "paused on inconclusive", |e| {
            e.stages[0].outputs["rollout"]["status"] == json!("Paused")
        })
        .await;
    assert_eq!(rollout_of(&e)["analysis"]["phase"], json!("Inconclusive"));
    env.input(&id, json!({"promote": true})).await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
}

#[tokio::test]
async fn analysis_templates_are_read_from_the_store() {
    let env = Env::new().await;
    env.stable().await;
    let hooks = Hooks::start().await;
    hooks.answer("ok", vec![(200, json!({"ok": true}))]);
    env.store
        .save_document(
            TEMPLATE_KIND,
            "health",
            &json!({"metrics": [{"name": "ok", "successCondition": "result == true",
                "provider": {"web": {"url": hooks.url("ok"), "jsonPath": "$.ok"}}}]}),
            "t",
        )
        .await
        .unwrap();
    let id = env
        .start(stage(
            json!([{"setWeight": 30}, {"analysis": {"templates": [{"templateName": "health"}]}}]),
            json!({}),
        ))
        .await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
    assert_eq!(hooks.calls("ok").len(), 1);

    let id = env
        .start(stage(
            json!([{"analysis": {"templates": [{"templateName": "missing"}]}}]),
            json!({}),
        ))
        .await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Terminal);
    assert!(
        error_of(&e).contains("analysis template \"missing\" not found"),
        "{}",
        error_of(&e)
    );
}

#[tokio::test]
async fn rollout_conforms() {
    let fake = Arc::new(FakeProvider::new().with_kind("host"));
    let dir = tempfile::tempdir().unwrap();
    let store = ferry_store::open(&ferry_store::StoreConfig::Sqlite {
        path: dir.path().join("ferry.db"),
    })
    .await
    .unwrap();
    let promote: Map<String, Value> = serde_json::from_value(json!({"promote": "full"})).unwrap();
    run(
        registry(&fake, &store),
        store.clone(),
        Case {
            succeeds: stage(json!([{"setWeight": 50}]), json!({})),
            long_running: stage(json!([{"setWeight": 50}, {"pause": {}}]), json!({})),
            completing_input: Some(promote),
            invalid: vec![
                (json!({"type": "rollout"}), "stages[0].cluster"),
                (
                    stage(json!([{"setWeight": 150}]), json!({})),
                    "stages[0].strategy.canary.steps[0].setWeight",
                ),
                (
                    stage(json!([{"pause": {"duration": "soon"}}]), json!({})),
                    "stages[0].strategy.canary.steps[0].pause.duration",
                ),
                (
                    stage(json!([{"setWeight": 5, "pause": {}}]), json!({})),
                    "stages[0].strategy.canary.steps[0]",
                ),
                (
                    stage(
                        json!([]),
                        json!({"webhooks": [{"name": "x", "type": "later", "url": "http://x"}]}),
                    ),
                    "stages[0].webhooks[0].type",
                ),
            ],
        },
    )
    .await
    .unwrap();
}

fn blue_green(config: Value) -> Value {
    let mut s = stage(json!([]), json!({}));
    s["strategy"] = json!({"blueGreen": config});
    s
}

#[tokio::test]
async fn blue_green_previews_switches_at_once_and_keeps_the_old_until_the_delay() {
    let env = Env::new().await;
    let v1 = env.stable().await;
    let hooks = Hooks::start().await;
    hooks.answer("smoke", vec![(200, json!({"ok": true}))]);
    let id = env
        .start(blue_green(json!({
            "autoPromotionEnabled": false,
            "previewReplicaCount": 1,
            "scaleDownDelaySeconds": 0,
            "prePromotionAnalysis": {"metrics": [{"name": "smoke", "successCondition": "result.ok == true",
                "provider": {"web": {"url": format!("{}?sg={{{{args.preview}}}}", hooks.url("smoke"))}}}]}
        })))
        .await;
    let e = env
        .until(&id, "waiting for promotion", |e| {
            e.stages[0].outputs["rollout"]["status"] == json!("Paused")
        })
        .await;
    let green = rollout_of(&e)["canary"].as_str().unwrap().to_string();
    // The preview has one instance and no traffic; the analysis ran against it.
    let preview = env
        .fake
        .server_group("local", &green)
        .await
        .unwrap()
        .unwrap();
    assert!(!preview.enabled);
    assert_eq!(preview.capacity.desired, 1);
    assert_eq!(env.fake.serving("shop-prod"), vec![(v1.clone(), 100)]);
    assert_eq!(hooks.calls("smoke").len(), 1);

    env.input(&id, json!({"promote": true})).await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
    assert_eq!(rollout_of(&e)["status"], json!("Healthy"));
    let green_now = env
        .fake
        .server_group("local", &green)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        green_now.capacity.desired, 2,
        "scaled to full capacity before the switch"
    );
    assert_eq!(env.fake.serving("shop-prod"), vec![(green.clone(), 100)]);
    let blue = env.fake.server_group("local", &v1).await.unwrap().unwrap();
    assert!(!blue.enabled);
    assert_eq!(blue.capacity.desired, 0);
    assert!(
        env.fake.traffic_gaps().is_empty(),
        "{:?}",
        env.fake.traffic_gaps()
    );
}

#[tokio::test]
async fn blue_green_switches_back_when_post_promotion_analysis_fails() {
    let env = Env::new().await;
    let v1 = env.stable().await;
    let hooks = Hooks::start().await;
    hooks.answer("after", vec![(200, json!({"errors": 12}))]);
    let id = env
        .start(blue_green(json!({
            "autoPromotionSeconds": 0,
            "postPromotionAnalysis": {"metrics": [{"name": "errors", "failureCondition": "result.errors > 5",
                "provider": {"web": {"url": hooks.url("after")}}}]}
        })))
        .await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Terminal);
    assert_eq!(rollout_of(&e)["status"], json!("Degraded"));
    assert!(
        error_of(&e).contains("post-promotion ended Failed"),
        "{}",
        error_of(&e)
    );
    // The old version, still running, serves again; the new one is gone.
    assert_eq!(env.fake.serving("shop-prod"), vec![(v1.clone(), 100)]);
    assert_eq!(env.fake.server_group_names(), vec![v1]);
}

#[tokio::test]
async fn blue_green_validation_reports_every_problem() {
    let env = Env::new().await;
    let doc = json!({"application": "shop", "name": "bg", "stages": [{"refId": "1", "name": "x",
        "type": "rollout",
        "cluster": {"stack": "prod", "capacity": {"min": 1, "max": 1, "desired": 1}, "artifact": artifact("2")},
        "strategy": {"blueGreen": {"activeService": "x", "autoPromotionSeconds": "soon",
            "prePromotionAnalysis": {"metrics": [{"name": "m", "provider": {"web": {"url": "http://x"}}}]}}}}]});
    let err = ferry_engine::validate_pipeline(&doc, env.engine.registry())
        .unwrap_err()
        .to_string();
    for want in [
        "stages[0].strategy.blueGreen.activeService",
        "stages[0].strategy.blueGreen.autoPromotionSeconds",
        "stages[0].strategy.blueGreen.prePromotionAnalysis.metrics[0]",
    ] {
        assert!(err.contains(want), "missing {want} in {err}");
    }
}
