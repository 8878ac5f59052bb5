//! API tests through `tower::ServiceExt::oneshot`, against a real SQLite store and engine.

use super::*;
use crate::auth::{Action, AdminOnly, LocalAdmin};
use crate::error::ApiError;
use crate::routes::ROUTES;
use axum::body::Body;
use ferry_engine::{Engine, EngineConfig, Registry};
use ferry_provider::Provider as _;
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::json;
use std::sync::Arc;
use tower::ServiceExt;

const TOKEN: &str = "test-token-0123456789abcdef0123456789abcdef";

struct Harness {
    app: Router,
    state: AppState,
    dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(Vec::new()).await
}

async fn harness_with(providers: Vec<Arc<dyn ferry_provider::Provider>>) -> Harness {
    harness_as(providers, Arc::new(LocalAdmin::with_token(TOKEN))).await
}

/// The core stage types, and the server-group ones over `providers` (polling every 20 ms).
fn registry(dir: &std::path::Path, providers: &[Arc<dyn ferry_provider::Provider>]) -> Registry {
    let mut registry = ferry_stages::core_registry(&ferry_stages::StageServices {
        http: ferry_http::GuardedClient::new(ferry_http::UrlPolicy::deny_all()).unwrap(),
        notifier: Arc::new(ferry_stages::LogNotifier),
        work_dir: dir.join("work"),
    });
    let mut deploy =
        ferry_deploy::Providers::new().with_poll_interval(std::time::Duration::from_millis(20));
    for p in providers {
        deploy.insert(p.clone());
    }
    ferry_deploy::register(&mut registry, deploy);
    registry
}

async fn harness_as(
    providers: Vec<Arc<dyn ferry_provider::Provider>>,
    auth: Arc<dyn crate::auth::Authenticator>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = ferry_store::open(&ferry_store::StoreConfig::Sqlite {
        path: dir.path().join("ferry.db"),
    })
    .await
    .unwrap();
    let (engine, _join) = Engine::start(
        store.clone(),
        registry(dir.path(), &providers),
        EngineConfig::default(),
    )
    .await
    .unwrap();
    let state = AppState {
        engine,
        store,
        auth,
        authz: Arc::new(AdminOnly),
        metrics: Arc::new(metrics::Metrics::default()),
        max_body_bytes: 64 * 1024,
        providers,
        canary_sources: ferry_canary::Sources::offline(),
        shutdown: Default::default(),
    };
    Harness {
        app: app(state.clone()),
        state,
        dir,
    }
}

/// One request through `app`.
async fn call_app(
    app: Router,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: bool,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if token {
        req = req.header("authorization", format!("Bearer {TOKEN}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

impl Harness {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: bool,
    ) -> (StatusCode, Value) {
        call_app(self.app.clone(), method, path, body, token).await
    }

    /// A restart of Ferry: the engine stops, a new one starts on the same store (the providers
    /// keep their state, as processes outlive Ferry).
    async fn restart(&mut self) {
        self.state.engine.shutdown();
        let (engine, _join) = Engine::start(
            self.state.store.clone(),
            registry(self.dir.path(), &self.state.providers),
            EngineConfig::default(),
        )
        .await
        .unwrap();
        self.state.engine = engine;
        self.state.shutdown = Default::default();
        self.app = app(self.state.clone());
    }

    async fn wait_status(&self, id: &str, want: &str) -> Value {
        for _ in 0..200 {
            let (_, e) = self
                .call(Method::GET, &format!("/api/v1/executions/{id}"), None, true)
                .await;
            if e["status"] == want {
                return e;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("execution {id} never reached {want}");
    }
}

fn concrete(path: &str) -> String {
    path.replace("{app}", "shop")
        .replace("{id}", "x")
        .replace("{name}", "p")
        .replace("{stage}", "1")
}

#[tokio::test]
async fn every_route_needs_a_token_except_the_public_list() {
    let h = harness().await;
    let public: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.action == Action::Public)
        .map(|r| r.path)
        .collect();
    assert_eq!(
        public,
        vec!["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"]
    );
    for r in ROUTES {
        let body = r.body.then(|| json!({}));
        let (status, v) = h
            .call(r.method.clone(), &concrete(r.path), body.clone(), false)
            .await;
        if r.action == Action::Public {
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path);
        } else {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{} {} must require a token",
                r.method,
                r.path
            );
            assert_eq!(v["error"]["code"], "unauthenticated");
        }
        // With a token, every route reaches a real handler.
        let (status, v) = h
            .call(r.method.clone(), &concrete(r.path), body, true)
            .await;
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{} {} -> {v}",
            r.method,
            r.path
        );
    }
    let (status, _) = h
        .call(Method::GET, "/api/v1/applications", None, false)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let h = harness().await;
    let (status, doc) = h
        .call(Method::GET, "/api/v1/openapi.json", None, false)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing from OpenAPI",
            r.method,
            r.path
        );
    }
}

#[tokio::test]
async fn errors_have_one_shape() {
    let h = harness().await;
    let (status, v) = h.call(Method::GET, "/api/v1/nope", None, true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
    let (status, v) = h
        .call(Method::GET, "/api/v1/executions/missing", None, true)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"]["message"].as_str().unwrap().contains("missing"));
    let (status, v) = h
        .call(Method::PUT, "/api/v1/applications", None, true)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(v["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let h = harness().await;
    let big = json!({"name": "x".repeat(100 * 1024)});
    let (status, v) = h
        .call(Method::POST, "/api/v1/applications", Some(big), true)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"]["code"], "too_large");
}

#[tokio::test]
async fn an_invalid_batch_reports_every_problem_and_stores_nothing() {
    let h = harness().await;
    let batch = json!({"documents": [
        {"kind": "Application", "name": "shop"},
        {"kind": "Pipeline", "application": "shop", "name": "bad", "stages": [
            {"refId": "1", "type": "wait"},
            {"refId": "1", "type": "warp", "requisiteStageRefIds": ["9"]},
            {"refId": "3", "type": "wait", "waitTime": "${parameters.t +}"}
        ]}
    ]});
    let (status, v) = h
        .call(Method::POST, "/api/v1/apply", Some(batch), true)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let paths: Vec<&str> = v["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    for want in [
        "documents[1].stages[0].waitTime",
        "documents[1].stages[1].refId",
        "documents[1].stages[1].type",
        "documents[1].stages[1].requisiteStageRefIds[0]",
        "documents[1].stages[2].waitTime",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
    let (_, apps) = h
        .call(Method::GET, "/api/v1/applications", None, true)
        .await;
    assert_eq!(
        apps,
        json!([]),
        "nothing may be stored from an invalid batch"
    );
}

#[tokio::test]
async fn apply_run_judge_and_watch_a_pipeline() {
    let h = harness().await;
    let batch = json!({"documents": [
        {"kind": "Application", "name": "shop", "email": "team@example.com"},
        {"kind": "Pipeline", "application": "shop", "name": "release",
         "parameterConfig": [{"name": "env", "default": "qa", "hasOptions": true, "options": [{"value": "qa"}, {"value": "prod"}]}],
         "stages": [
            {"refId": "1", "type": "evaluateVariables", "variables": [{"key": "target", "value": "${parameters.env}-cluster"}]},
            {"refId": "2", "requisiteStageRefIds": ["1"], "type": "manualJudgment", "name": "Approve",
             "judgmentInputs": [{"value": "ship"}, {"value": "hold"}]},
            {"refId": "3", "requisiteStageRefIds": ["2"], "type": "checkPreconditions", "preconditions": [
                {"type": "expression", "context": {"expression": "${#judgment('Approve') == 'ship' && target == 'prod-cluster'}"}}]}
         ]}
    ]});
    let (status, v) = h
        .call(Method::POST, "/api/v1/apply", Some(batch.clone()), true)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["applied"][1]["version"], 1);
    // Re-applying the same documents writes no new version.
    let (_, v) = h
        .call(Method::POST, "/api/v1/apply", Some(batch), true)
        .await;
    assert_eq!(v["applied"][1]["version"], 1);

    let (status, v) = h
        .call(
            Method::POST,
            "/api/v1/applications/shop/pipelines/release/run",
            Some(json!({"parameters": {"env": "staging"}})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["problems"][0]["path"], "parameters.env");

    let (status, v) = h
        .call(
            Method::POST,
            "/api/v1/applications/shop/pipelines/release/run",
            Some(json!({"parameters": {"env": "prod"}})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let e = h.wait_status(&id, "RUNNING").await;
    assert_eq!(e["trigger"]["user"], "admin");
    assert!(e.get("stageDefs").is_none());

    // Wait for the judgment stage, then judge with a wrong input, then the right one.
    for _ in 0..200 {
        let (_, e) = h
            .call(Method::GET, &format!("/api/v1/executions/{id}"), None, true)
            .await;
        if e["stages"][1]["status"] == "RUNNING" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let judge = format!("/api/v1/executions/{id}/stages/2/judgment");
    let (status, v) = h
        .call(
            Method::POST,
            &judge,
            Some(json!({"judgmentStatus": "continue", "judgmentInput": "maybe"})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let (status, _) = h
        .call(
            Method::POST,
            &judge,
            Some(json!({"judgmentStatus": "continue", "judgmentInput": "ship"})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let e = h.wait_status(&id, "SUCCEEDED").await;
    assert_eq!(e["stages"][1]["context"]["lastModifiedBy"], "admin");
    assert_eq!(e["stages"][0]["outputs"]["target"], "prod-cluster");

    let (_, list) = h
        .call(
            Method::GET,
            "/api/v1/executions?application=shop&status=SUCCEEDED",
            None,
            true,
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, _) = h
        .call(Method::GET, "/api/v1/executions?status=BOGUS", None, true)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, m) = h.call(Method::GET, "/metrics", None, false).await;
    assert_eq!(status, StatusCode::OK);
    let m = m.as_str().unwrap().to_string();
    assert!(m.contains("ferry_http_requests_total{"), "{m}");
    assert!(m.contains("ferry_engine_transitions"), "{m}");
}

#[tokio::test]
async fn secrets_are_redacted_in_executions() {
    let mut v = json!({"stages": [{"context": {"customHeaders": {"X-Api": "abc"}, "password": "p", "nested": {"apiToken": "t", "name": "ok"}}}]});
    redact_secrets(&mut v);
    let s = v.to_string();
    assert!(
        !s.contains("abc") && !s.contains("\"p\"") && !s.contains("\"t\""),
        "{s}"
    );
    assert!(s.contains("\"ok\""));
}

fn spec(version: &str) -> ferry_provider::ServerGroupSpec {
    use ferry_provider::*;
    ServerGroupSpec {
        account: "local".into(),
        moniker: Moniker::cluster("shop", Some("prod"), Some("kids")).unwrap(),
        capacity: Capacity::fixed(2),
        artifact: Artifact {
            name: "kids".into(),
            version: version.into(),
            source: ArtifactSource::Command {
                command: vec!["shop-service".into()],
            },
            env: Default::default(),
        },
        health_check: HealthCheck::default(),
        load_balancers: vec![],
        enabled: true,
        weight: 100,
        deployed_by: "tester".into(),
        execution_id: None,
    }
}

#[tokio::test]
async fn infrastructure_routes_read_and_act_through_providers() {
    let fake = Arc::new(ferry_provider::fake::FakeProvider::new());
    let provider: Arc<dyn ferry_provider::Provider> = fake.clone();
    provider.create_server_group(spec("1.0.0")).await.unwrap();
    let mut second = spec("1.1.0");
    second.enabled = true;
    provider.create_server_group(second).await.unwrap();
    let h = harness_with(vec![provider.clone()]).await;

    let (status, clusters) = h
        .call(
            Method::GET,
            "/api/v1/applications/shop/clusters",
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{clusters}");
    assert_eq!(clusters[0]["name"], "shop-prod-kids");
    assert_eq!(clusters[0]["serverGroups"].as_array().unwrap().len(), 2);
    let (_, groups) = h
        .call(
            Method::GET,
            "/api/v1/applications/shop/serverGroups",
            None,
            true,
        )
        .await;
    assert_eq!(groups[1]["name"], "shop-prod-kids-v001");
    let (_, instances) = h
        .call(
            Method::GET,
            "/api/v1/applications/shop/instances",
            None,
            true,
        )
        .await;
    assert_eq!(instances.as_array().unwrap().len(), 4);

    let sg = "/api/v1/serverGroups/local/shop-prod-kids-v001";
    let (status, v) = h
        .call(
            Method::POST,
            &format!("{sg}/resize"),
            Some(json!({"desired": 3})),
            true,
        )
        .await;
    // The resize ran as an orchestration, as the caller, and the answer came when it ended.
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "SUCCEEDED");
    assert_eq!(v["capacity"], json!({"min": 3, "max": 3, "desired": 3}));
    let (_, g) = h.call(Method::GET, sg, None, true).await;
    assert_eq!(g["capacity"]["desired"], 3);
    let (_, e) = h
        .call(
            Method::GET,
            &format!("/api/v1/executions/{}", v["id"].as_str().unwrap()),
            None,
            true,
        )
        .await;
    assert_eq!(e["type"], "ORCHESTRATION");
    assert_eq!(e["application"], "shop");
    assert_eq!(e["pipelineConfigId"], "");
    assert_eq!(e["name"], "Resize shop-prod-kids-v001 to 3");
    assert_eq!(e["trigger"]["type"], "api");
    assert_eq!(e["trigger"]["user"], "admin");
    assert_eq!(e["stages"][0]["type"], "resizeServerGroup");

    // Rollback: v000 is enabled (and resized to v001's capacity) before v001 is disabled.
    provider
        .disable("local", "shop-prod-kids-v000")
        .await
        .unwrap();
    fake.clear_events();
    let (status, v) = h
        .call(Method::POST, &format!("{sg}/rollback"), None, true)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["enabled"], "shop-prod-kids-v000");
    assert_eq!(v["disabled"], "shop-prod-kids-v001");
    assert_eq!(v["status"], "SUCCEEDED");
    assert!(v["id"].is_string(), "{v}");
    let events = fake.events();
    let enable = events
        .iter()
        .position(|e| e == "enable shop-prod-kids-v000")
        .unwrap();
    let disable = events
        .iter()
        .position(|e| e == "disable shop-prod-kids-v001")
        .unwrap();
    assert!(enable < disable, "{events:?}");
    assert!(
        events.contains(&"resize shop-prod-kids-v000 3".to_string()),
        "{events:?}"
    );
    // Nothing older than v000: a rollback of it is refused before anything starts.
    let (status, v) = h
        .call(
            Method::POST,
            "/api/v1/serverGroups/local/shop-prod-kids-v000/rollback",
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing to roll back to"),
        "{v}"
    );

    let (status, v) = h.call(Method::DELETE, sg, None, true).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "SUCCEEDED");
    let (status, _) = h.call(Method::GET, sg, None, true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, v) = h
        .call(Method::GET, "/api/v1/serverGroups/nowhere/x", None, true)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no provider serves account")
    );

    // Load balancers and firewalls arrive as documents.
    let batch = json!({"documents": [
        {"kind": "Application", "name": "shop"},
        {"kind": "Firewall", "name": "office", "application": "shop", "allow": ["127.0.0.0/8"]},
        {"kind": "LoadBalancer", "name": "shop", "application": "shop", "listeners": [{"port": 18081}],
         "routes": [{"pathPrefix": "/kids", "cluster": "shop-prod-kids"}], "defaultCluster": "shop-prod-home", "firewalls": ["office"]},
        {"kind": "LoadBalancer", "name": "Bad", "application": "shop", "listeners": [], "routes": [{"pathPrefix": "kids", "cluster": "X"}]}
    ]});
    let (status, v) = h
        .call(Method::POST, "/api/v1/apply", Some(batch.clone()), true)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let paths: Vec<&str> = v["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    for want in [
        "documents[3].name",
        "documents[3].listeners",
        "documents[3].routes[0].pathPrefix",
        "documents[3].routes[0].cluster",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
    let mut good = batch.clone();
    good["documents"].as_array_mut().unwrap().pop();
    let (status, v) = h
        .call(Method::POST, "/api/v1/apply", Some(good), true)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, lbs) = h
        .call(
            Method::GET,
            "/api/v1/applications/shop/loadBalancers",
            None,
            true,
        )
        .await;
    assert_eq!(lbs[0]["routes"][0]["pathPrefix"], "/kids");
    assert_eq!(lbs[0]["firewalls"][0], "office");
}

/// A fake provider with `shop-prod-kids-v000` (1.0.0, disabled) and `-v001` (1.1.0, enabled),
/// two instances each.
async fn two_server_groups() -> Arc<ferry_provider::fake::FakeProvider> {
    let fake = Arc::new(ferry_provider::fake::FakeProvider::new());
    let mut first = spec("1.0.0");
    first.enabled = false;
    fake.create_server_group(first).await.unwrap();
    fake.create_server_group(spec("1.1.0")).await.unwrap();
    fake.clear_events();
    fake
}

const V000: &str = "/api/v1/serverGroups/local/shop-prod-kids-v000";
const V001: &str = "/api/v1/serverGroups/local/shop-prod-kids-v001";

#[tokio::test]
async fn server_group_operations_are_orchestrations_with_the_old_status_codes() {
    use ferry_provider::fake::Op;
    let fake = two_server_groups().await;
    fake.set_weight("local", "shop-prod-kids-v000", 0)
        .await
        .unwrap();
    fake.clear_events();
    let h = harness_with(vec![fake.clone()]).await;

    // enable: a weight of 0 becomes 100, and the answer comes once it is up.
    let (status, v) = h
        .call(Method::POST, &format!("{V000}/enable"), None, true)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["status"], &v["account"], &v["serverGroup"]),
        (
            &json!("SUCCEEDED"),
            &json!("local"),
            &json!("shop-prod-kids-v000")
        )
    );
    assert_eq!(
        fake.events(),
        [
            "weight shop-prod-kids-v000 100",
            "enable shop-prod-kids-v000"
        ]
    );
    let enable_id = v["id"].as_str().unwrap().to_string();

    // disable
    let (status, v) = h
        .call(Method::POST, &format!("{V000}/disable"), None, true)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(fake.events().last().unwrap(), "disable shop-prod-kids-v000");

    // Both are executions of the application; an empty pipeline id lists only orchestrations.
    let (_, list) = h
        .call(
            Method::GET,
            "/api/v1/executions?application=shop",
            None,
            true,
        )
        .await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Disable shop-prod-kids-v000", "Enable shop-prod-kids-v000"]
    );
    let (_, only) = h
        .call(Method::GET, "/api/v1/executions?pipeline=", None, true)
        .await;
    assert_eq!(only.as_array().unwrap().len(), 2);
    assert_eq!(only[1]["id"], enable_id.as_str());
    assert_eq!(only[1]["triggerType"], "api");

    // Unknown server groups and accounts: 404 from every operation, and nothing starts.
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/serverGroups/local/shop-prod-kids-v009/resize",
            Some(json!({"desired": 1})),
        ),
        (
            Method::POST,
            "/api/v1/serverGroups/local/shop-prod-kids-v009/enable",
            None,
        ),
        (
            Method::POST,
            "/api/v1/serverGroups/local/shop-prod-kids-v009/disable",
            None,
        ),
        (
            Method::POST,
            "/api/v1/serverGroups/local/shop-prod-kids-v009/rollback",
            None,
        ),
        (
            Method::DELETE,
            "/api/v1/serverGroups/local/shop-prod-kids-v009",
            None,
        ),
        (
            Method::POST,
            "/api/v1/serverGroups/elsewhere/shop-prod-kids-v001/enable",
            None,
        ),
    ] {
        let (status, v) = h.call(method.clone(), path, body, true).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {v}");
    }
    // Bad capacity input: 400, and nothing starts.
    for body in [
        json!({}),
        json!({"desired": -1}),
        json!({"capacity": {"desired": 2}}),
        json!({"capacity": {"min": 3, "max": 2, "desired": 2}}),
        json!({"desired": 20000}),
    ] {
        let (status, v) = h
            .call(
                Method::POST,
                &format!("{V001}/resize"),
                Some(body.clone()),
                true,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["code"], "bad_request");
    }
    let (_, v) = h
        .call(
            Method::POST,
            &format!("{V001}/resize"),
            Some(json!({"desired": 20000})),
            true,
        )
        .await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("capacity.desired: must be between 0 and 10000, found 20000"),
        "{v}"
    );
    let (status, _) = h
        .call(
            Method::POST,
            &format!("{V001}/enable?wait=soon"),
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, list) = h.call(Method::GET, "/api/v1/executions", None, true).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // A failed stage: its error is the message (409), the body names the execution.
    fake.fail_next(
        Op::Disable,
        ferry_provider::ProviderError::Backend("disk on fire".into()),
    );
    let (status, v) = h
        .call(Method::POST, &format!("{V001}/disable"), None, true)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "operation_failed");
    assert_eq!(
        v["error"]["message"],
        "could not disable shop-prod-kids-v001: disk on fire"
    );
    let failed = v["error"]["executionId"].as_str().unwrap();
    let e = h.wait_status(failed, "TERMINAL").await;
    assert_eq!(e["type"], "ORCHESTRATION");

    // ?wait=false: 202 {id} at once; the execution routes follow it.
    let (status, v) = h
        .call(
            Method::POST,
            &format!("{V001}/resize?wait=false"),
            Some(json!({"capacity": {"min": 1, "max": 5, "desired": 4}})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    let e = h.wait_status(v["id"].as_str().unwrap(), "SUCCEEDED").await;
    assert_eq!(e["stages"][0]["context"]["op.capacity"]["desired"], 4);
    let (status, v) = h
        .call(Method::DELETE, &format!("{V000}?wait=false"), None, true)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    h.wait_status(v["id"].as_str().unwrap(), "SUCCEEDED").await;
    let (status, _) = h.call(Method::GET, V000, None, true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_operation_cut_short_by_a_shutdown_finishes_after_a_restart() {
    use ferry_provider::fake::Behavior;
    let fake = two_server_groups().await;
    // v000 will not come up until later: the rollback waits for it.
    fake.set_behavior("1.0.0", Behavior::never_healthy());
    let mut h = harness_with(vec![fake.clone()]).await;
    let app = h.app.clone();
    let request = tokio::spawn(async move {
        call_app(app, Method::POST, &format!("{V001}/rollback"), None, true).await
    });
    // Wait until the orchestration waits for v000 to be up.
    let mut id = String::new();
    for _ in 0..400 {
        let (_, list) = h
            .call(
                Method::GET,
                "/api/v1/executions?application=shop",
                None,
                true,
            )
            .await;
        if let Some(found) = list[0]["id"].as_str() {
            let (_, e) = h
                .call(
                    Method::GET,
                    &format!("/api/v1/executions/{found}"),
                    None,
                    true,
                )
                .await;
            if e["stages"][0]["context"]["op.phase"] == "wait" {
                id = found.to_string();
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(!id.is_empty(), "the rollback never waited for v000");
    // Ferry begins shutting down: the waiting request answers 503 with the execution.
    h.state.shutdown.cancel();
    let (status, v) = request.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["executionId"], id.as_str());
    // New operations are refused while shutting down.
    let (status, _) = h
        .call(Method::POST, &format!("{V000}/enable"), None, true)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    h.restart().await;
    fake.set_behavior("1.0.0", Behavior::healthy_after(std::time::Duration::ZERO));
    let e = h.wait_status(&id, "SUCCEEDED").await;
    assert_eq!(e["type"], "ORCHESTRATION");
    assert_eq!(
        e["stages"][0]["context"]["op.restore"],
        "shop-prod-kids-v000"
    );
    // v000 was enabled once, before the restart; v001 disabled only after v000 was up.
    assert_eq!(
        fake.events(),
        ["enable shop-prod-kids-v000", "disable shop-prod-kids-v001"]
    );
    assert_eq!(
        fake.serving("shop-prod-kids"),
        vec![("shop-prod-kids-v000".to_string(), 100)]
    );
}

#[test]
fn no_handler_changes_a_server_group_itself() {
    // ARCHITECTURE.md invariant 10: operations run as orchestrations of the stage types.
    for (file, text) in [
        ("infra.rs", include_str!("infra.rs")),
        ("routes.rs", include_str!("routes.rs")),
    ] {
        for call in [
            ".create_server_group(",
            ".resize(",
            ".enable(",
            ".disable(",
            ".set_weight(",
            ".destroy(",
        ] {
            assert!(
                !text.contains(call),
                "{file} calls {call}: server-group operations must run as orchestrations"
            );
        }
    }
}

/// Authenticates everyone as a non-admin reader.
struct Reader;

impl crate::auth::Authenticator for Reader {
    fn authenticate(&self, _: &http::HeaderMap) -> Result<crate::auth::Principal, ApiError> {
        Ok(crate::auth::Principal {
            name: "reader".into(),
            admin: false,
        })
    }
}

#[tokio::test]
async fn a_reader_may_look_at_server_groups_but_start_no_operation() {
    let fake = two_server_groups().await;
    let h = harness_as(vec![fake.clone()], Arc::new(Reader)).await;
    let (status, _) = h.call(Method::GET, V001, None, true).await;
    assert_eq!(status, StatusCode::OK);
    for (method, path, body) in [
        (
            Method::POST,
            format!("{V001}/resize"),
            Some(json!({"desired": 3})),
        ),
        (Method::POST, format!("{V000}/enable"), None),
        (Method::POST, format!("{V001}/disable"), None),
        (Method::POST, format!("{V001}/rollback?wait=false"), None),
        (Method::DELETE, V000.to_string(), None),
    ] {
        let (status, v) = h.call(method.clone(), &path, body, true).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "forbidden");
    }
    assert!(fake.events().is_empty(), "{:?}", fake.events());
    let (_, list) = h.call(Method::GET, "/api/v1/executions", None, true).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn canary_configs_are_validated_versioned_and_judged() {
    let h = harness().await;
    let config = json!({"kind": "CanaryConfig", "name": "shop-kids", "applications": ["shop"],
        "metrics": [
            {"name": "errors", "query": {"type": "ferry-lb", "metric": "error_rate"}, "groups": ["errors"],
             "analysisConfigurations": {"canary": {"direction": "increase"}}},
            {"name": "latency", "query": {"type": "ferry-lb", "metric": "latency_mean_ms"}, "groups": ["latency"]}
        ],
        "classifier": {"groupWeights": {"errors": 60, "latency": 40}}});

    // Every problem of a bad one, with its path; nothing stored.
    let mut bad = config.clone();
    bad["metrics"][0]["query"]["metric"] = json!("p99");
    bad["metrics"][1]["analysisConfigurations"] = json!({"canary": {"direction": "sideways"}});
    bad["classifier"]["groupWeights"] = json!({"errors": 80, "nope": 40});
    let (status, v) = h
        .call(
            Method::POST,
            "/api/v1/apply",
            Some(json!({"documents": [bad]})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let paths: Vec<&str> = v["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    for want in [
        "documents[0].metrics[0].query.metric",
        "documents[0].metrics[1].analysisConfigurations.canary.direction",
        "documents[0].classifier.groupWeights.nope",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
    let (status, _) = h
        .call(Method::GET, "/api/v1/canaryConfigs/shop-kids", None, true)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Applied twice with a change: two versions.
    for weight in [60, 70] {
        let mut c = config.clone();
        c["classifier"]["groupWeights"]["errors"] = json!(weight);
        c["classifier"]["groupWeights"]["latency"] = json!(100 - weight);
        let (status, v) = h
            .call(
                Method::POST,
                "/api/v1/apply",
                Some(json!({"documents": [c]})),
                true,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["applied"][0]["kind"], "CanaryConfig");
    }
    let (_, list) = h
        .call(Method::GET, "/api/v1/canaryConfigs", None, true)
        .await;
    assert_eq!(list[0]["name"], "shop-kids");
    assert_eq!(list[0]["version"], 2);
    assert_eq!(list[0]["metrics"], 2);
    let (_, v1) = h
        .call(
            Method::GET,
            "/api/v1/canaryConfigs/shop-kids?version=1",
            None,
            true,
        )
        .await;
    assert_eq!(v1["body"]["classifier"]["groupWeights"]["errors"], 60);
    let (_, history) = h
        .call(
            Method::GET,
            "/api/v1/canaryConfigs/shop-kids/history",
            None,
            true,
        )
        .await;
    assert_eq!(history.as_array().unwrap().len(), 2);

    // Judging recorded samples.
    let mut doc = config.clone();
    doc.as_object_mut().unwrap().remove("kind");
    let baseline: Vec<f64> = (0..20).map(|i| 0.01 + f64::from(i % 4) * 0.001).collect();
    let canary: Vec<f64> = (0..20).map(|i| 0.2 + f64::from(i % 4) * 0.001).collect();
    let body = json!({"config": doc,
        "baseline": {"errors": baseline, "latency": [5.0, 6.0, 5.5, 6.1]},
        "canary": {"errors": canary, "latency": [5.1, 6.0, 5.4, 6.2]}});
    let (status, v) = h
        .call(Method::POST, "/api/v1/canary/judge", Some(body), true)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["metrics"][0]["classification"], "High", "{v}");
    assert_eq!(v["metrics"][1]["classification"], "Pass", "{v}");
    assert_eq!(v["summary"]["score"], 40.0, "{v}");
    assert_eq!(v["summary"]["classification"], "Fail", "{v}");
    let (status, v) = h
        .call(
            Method::POST,
            "/api/v1/canary/judge",
            Some(json!({"config": doc, "baseline": {"errors": ["x"]}, "canary": {"other": []}})),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let text = v.to_string();
    assert!(
        text.contains("baseline.errors[0]") && text.contains("canary.other"),
        "{text}"
    );

    let (status, _) = h
        .call(
            Method::DELETE,
            "/api/v1/canaryConfigs/shop-kids",
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}
