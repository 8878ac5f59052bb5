//! API tests through `tower::ServiceExt::oneshot`, against a real SQLite store and engine.

use super::*;
use crate::auth::{Action, AdminOnly, LocalAdmin};
use crate::routes::ROUTES;
use axum::body::Body;
use ferry_engine::{Engine, EngineConfig};
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::json;
use std::sync::Arc;
use tower::ServiceExt;

const TOKEN: &str = "test-token-0123456789abcdef0123456789abcdef";

struct Harness {
    app: Router,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(Vec::new()).await
}

async fn harness_with(providers: Vec<Arc<dyn ferry_provider::Provider>>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = ferry_store::open(&ferry_store::StoreConfig::Sqlite {
        path: dir.path().join("ferry.db"),
    })
    .await
    .unwrap();
    let registry = ferry_stages::core_registry(&ferry_stages::StageServices {
        http: ferry_http::GuardedClient::new(ferry_http::UrlPolicy::deny_all()).unwrap(),
        notifier: Arc::new(ferry_stages::LogNotifier),
        work_dir: dir.path().join("work"),
    });
    let (engine, _join) = Engine::start(store.clone(), registry, EngineConfig::default())
        .await
        .unwrap();
    let state = AppState {
        engine,
        store,
        auth: Arc::new(LocalAdmin::with_token(TOKEN)),
        authz: Arc::new(AdminOnly),
        metrics: Arc::new(metrics::Metrics::default()),
        max_body_bytes: 64 * 1024,
        providers,
        canary_sources: ferry_canary::Sources::offline(),
        shutdown: Default::default(),
    };
    Harness {
        app: app(state),
        _dir: dir,
    }
}

impl Harness {
    async fn call(
        &self,
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
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
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
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let (_, g) = h.call(Method::GET, sg, None, true).await;
    assert_eq!(g["capacity"]["desired"], 3);

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
    // Nothing older than v000: a rollback of it is refused.
    let (status, _) = h
        .call(
            Method::POST,
            "/api/v1/serverGroups/local/shop-prod-kids-v000/rollback",
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, _) = h.call(Method::DELETE, sg, None, true).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
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
