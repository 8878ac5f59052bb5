//! Helpers shared by this crate's tests: a fake provider standing in for `host`, a real SQLite
//! store, the real engine with this crate's stages (plus a tiny `echo` stage that copies its
//! evaluated context into its outputs), and waiting for runs.

use crate::Providers;
use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_core::{Execution, Status, Store};
use ferry_engine::conformance::wait_for;
use ferry_engine::{
    Engine, EngineConfig, EngineHandle, Registry, RunRequest, StageCtx, StageError, Step, Typed,
    TypedStage,
};
use ferry_provider::fake::FakeProvider;
use ferry_provider::{
    Artifact, ArtifactSource, Capacity, HealthCheck, Moniker, Provider, ServerGroup,
    ServerGroupSpec,
};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// `echo`: copies its (evaluated) `values` into its outputs.
pub struct Echo;

#[async_trait]
impl TypedStage for Echo {
    type Config = Map<String, Value>;
    const TYPE: &'static str = "echo";
    const TASK: &'static str = "echo";

    fn config(f: &mut Fields<'_>) -> Option<Map<String, Value>> {
        Some(f.opt_object("values").cloned().unwrap_or_default())
    }

    async fn step(&self, c: &Map<String, Value>, ctx: &mut StageCtx) -> Result<Step, StageError> {
        for (k, v) in c {
            ctx.outputs.insert(k.clone(), v.clone());
        }
        Ok(Step::Succeeded)
    }
}

/// A fake standing in for the host provider, polled every 20 ms.
pub fn fake() -> (Arc<FakeProvider>, Providers) {
    let fake = Arc::new(FakeProvider::new().with_kind("host"));
    let providers = Providers::new()
        .with(fake.clone())
        .with_poll_interval(Duration::from_millis(20));
    (fake, providers)
}

/// A registry with every stage of this crate and `echo`.
pub fn registry(providers: &Providers) -> Registry {
    let mut r = Registry::new();
    crate::register(&mut r, providers.clone());
    r.register(Typed(Echo));
    r
}

/// A fresh SQLite store in a temp dir (kept alive by the returned guard).
pub async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ferry_store::StoreConfig::Sqlite {
        path: dir.path().join("ferry.db"),
    };
    (ferry_store::open(&cfg).await.unwrap(), dir)
}

/// The engine, the store and the fake provider of one test.
pub struct Env {
    pub fake: Arc<FakeProvider>,
    pub providers: Providers,
    pub store: Arc<dyn Store>,
    pub engine: EngineHandle,
    _dir: tempfile::TempDir,
}

impl Env {
    pub async fn new() -> Env {
        let (fake, providers) = fake();
        let (store, dir) = sqlite_store().await;
        let engine = start(&store, &providers).await;
        Env {
            fake,
            providers,
            store,
            engine,
            _dir: dir,
        }
    }

    /// Saves and runs a pipeline of `shop` with these stages; returns the execution id.
    pub async fn run(&self, stages: Value) -> String {
        run_on(&self.engine, stages).await
    }

    /// Waits until the run completes.
    pub async fn done(&self, id: &str) -> Execution {
        wait_for(
            &self.engine,
            id,
            Duration::from_secs(20),
            "completion",
            |e| e.status.is_complete(),
        )
        .await
        .unwrap()
    }

    /// Runs a one-stage pipeline to completion.
    pub async fn run_stage(&self, stage: Value) -> Execution {
        let mut s = stage.as_object().cloned().unwrap();
        s.insert("refId".into(), json!("1"));
        s.entry("name").or_insert(json!("stage"));
        let id = self.run(json!([s])).await;
        self.done(&id).await
    }

    /// Creates a server group directly (setting the scene).
    pub async fn given(
        &self,
        stack: &str,
        version: &str,
        desired: u32,
        enabled: bool,
    ) -> ServerGroup {
        self.fake
            .create_server_group(spec(stack, version, desired, enabled))
            .await
            .unwrap()
    }

    pub async fn group(&self, name: &str) -> Option<ServerGroup> {
        self.fake.server_group("local", name).await.unwrap()
    }
}

pub async fn start(store: &Arc<dyn Store>, providers: &Providers) -> EngineHandle {
    let (engine, _) = Engine::start(store.clone(), registry(providers), EngineConfig::default())
        .await
        .unwrap();
    engine
}

pub async fn run_on(engine: &EngineHandle, stages: Value) -> String {
    let doc = json!({"application": "shop", "name": format!("p-{}", uuid_ish()), "stages": stages});
    let p = ferry_engine::validate_pipeline(&doc, engine.registry()).unwrap();
    let rec = engine.store().save_pipeline(&p, "tester").await.unwrap();
    engine
        .run_pipeline(
            &rec,
            RunRequest {
                user: "tester".into(),
                ..RunRequest::default()
            },
        )
        .await
        .unwrap()
}

fn uuid_ish() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A command artifact of `shop` at `version`.
pub fn artifact(version: &str) -> Artifact {
    Artifact {
        name: "shop".into(),
        version: version.into(),
        source: ArtifactSource::Command {
            command: vec!["shop-service".into()],
        },
        env: Default::default(),
    }
}

/// The artifact as a stage writes it.
pub fn artifact_json(version: &str) -> Value {
    serde_json::to_value(artifact(version)).unwrap()
}

pub fn spec(stack: &str, version: &str, desired: u32, enabled: bool) -> ServerGroupSpec {
    ServerGroupSpec {
        account: "local".into(),
        moniker: Moniker::cluster("shop", Some(stack), None).unwrap(),
        capacity: Capacity {
            min: 0,
            max: desired.max(1) * 4,
            desired,
        },
        artifact: artifact(version),
        health_check: HealthCheck::default(),
        load_balancers: vec![],
        enabled,
        weight: 100,
        deployed_by: "setup".into(),
        execution_id: None,
    }
}

/// A `deploy` stage of one cluster `shop-<stack>`.
pub fn deploy_stage(
    stack: &str,
    version: &str,
    desired: u32,
    strategy: &str,
    extra: Value,
) -> Value {
    let mut cluster = json!({
        "account": "local",
        "application": "shop",
        "stack": stack,
        "capacity": {"min": 1, "max": desired * 2, "desired": desired},
        "strategy": strategy,
        "artifact": artifact_json(version),
        "healthCheck": {"path": "/health", "intervalMs": 100},
        "deployTimeoutSec": 5,
    });
    if let (Some(c), Some(x)) = (cluster.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            c.insert(k.clone(), v.clone());
        }
    }
    json!({"type": "deploy", "name": "Deploy", "clusters": [cluster]})
}

/// The stage's error message.
pub fn error_of(e: &Execution) -> String {
    e.stages[0]
        .context
        .get("exception")
        .map(Value::to_string)
        .unwrap_or_default()
}

/// Asserts a run ended SUCCEEDED.
pub fn assert_succeeded(e: &Execution) {
    assert_eq!(e.status, Status::Succeeded, "{}", error_of(e));
}

/// Runs the engine's stage conformance kit for a server-group stage type. The fake provider
/// holds `groups` (version, desired, enabled) in cluster `conformance-prod` of application
/// `conformance` (the kit's), and every listing takes a second, so the stage's first step is in
/// flight long enough to be canceled, timed out, or interrupted by a restart.
pub async fn op_conforms(
    groups: &[(&str, u32, bool)],
    succeeds: Value,
    long_running: Value,
    invalid: Vec<(Value, &'static str)>,
) -> Arc<FakeProvider> {
    let (fake, providers) = fake();
    for (version, desired, enabled) in groups {
        let mut s = spec("prod", version, *desired, *enabled);
        s.moniker = Moniker::cluster("conformance", Some("prod"), None).unwrap();
        fake.create_server_group(s).await.unwrap();
    }
    fake.set_latency(ferry_provider::fake::Op::List, Duration::from_secs(1));
    let (store, _g) = sqlite_store().await;
    ferry_engine::conformance::run(
        registry(&providers),
        store,
        ferry_engine::conformance::Case {
            succeeds,
            long_running,
            completing_input: None,
            invalid,
        },
    )
    .await
    .unwrap();
    fake
}
