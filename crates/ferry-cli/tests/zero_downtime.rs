//! End-to-end: the real server wiring (engine, host provider, built-in load balancer) deploys
//! the example `shop-service` while a load generator sends continuous requests through the load
//! balancer. Red/black, rolling red/black, rollback and resize must each complete with zero
//! failed requests, and a deploy that never becomes healthy must fail and leave the running
//! version serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{Ferry, Load, free_port, shop_binary, start_load};

fn deploy_pipeline(name: &str, strategy: &str, shop: &Path, extra: Value) -> Value {
    let mut cluster = json!({
        "account": "local", "application": "shop", "stack": "prod", "freeFormDetails": "kids",
        "capacity": {"min": 3, "max": 3, "desired": 3},
        "strategy": strategy, "loadBalancers": ["shop"], "maxRemainingAsgs": 3,
        "artifact": {
            "name": "shop-kids", "version": "${parameters.version}",
            "source": {"type": "command", "command": [shop.display().to_string()]},
            "env": {"SECTION": "kids", "VERSION": "${parameters.version}", "HEALTH_FAIL": "${parameters.healthFail}"}
        },
        "healthCheck": {"path": "/health", "intervalMs": 200, "timeoutMs": 1000, "healthyThreshold": 1, "unhealthyThreshold": 2},
        "deployTimeoutSec": 15
    });
    for (k, v) in extra.as_object().unwrap() {
        cluster[k] = v.clone();
    }
    json!({"kind": "Pipeline", "application": "shop", "name": name, "limitConcurrent": true,
        "parameterConfig": [{"name": "version", "required": true}, {"name": "healthFail", "default": "0"}],
        "stages": [{"refId": "1", "type": "deploy", "name": "Deploy", "clusters": [cluster]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploys_rollbacks_and_resizes_drop_no_request() {
    let shop = shop_binary();
    // Bindings drop in reverse: the server first, then the instance cleanup, then the directory.
    let Ferry {
        _dir,
        _cleanup,
        api,
        server,
    } = Ferry::start().await;
    let lb_port = free_port();
    let docs = json!({"documents": [
        {"kind": "Application", "name": "shop"},
        {"kind": "LoadBalancer", "name": "shop", "application": "shop", "listeners": [{"port": lb_port, "address": "127.0.0.1"}],
         "routes": [{"pathPrefix": "/kids", "cluster": "shop-prod-kids"}]},
        deploy_pipeline("redblack", "redblack", &shop, json!({})),
        deploy_pipeline("rolling", "rollingredblack", &shop, json!({"targetPercentages": [34, 67, 100]})),
    ]});
    let (status, v) = api
        .call(reqwest::Method::POST, "/api/v1/apply", Some(docs))
        .await;
    assert_eq!(status, 200, "{v}");

    // v1: the first version, before any traffic.
    let e = api.run("redblack", json!({"version": "1.0.0"})).await;
    assert_eq!(e["status"], "SUCCEEDED", "{e}");

    let load = Arc::new(Load::default());
    let url = format!("http://127.0.0.1:{lb_port}/kids");
    let workers = start_load(url, load.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        load.ok.load(Ordering::Relaxed) > 0,
        "the load balancer does not answer"
    );

    // 1. red/black to v2.
    let e = api.run("redblack", json!({"version": "2.0.0"})).await;
    assert_eq!(e["status"], "SUCCEEDED", "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*load.last_version.lock().unwrap(), "2.0.0");

    // 2. rolling red/black to v3.
    let e = api.run("rolling", json!({"version": "3.0.0"})).await;
    assert_eq!(e["status"], "SUCCEEDED", "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*load.last_version.lock().unwrap(), "3.0.0");

    // 3. rollback v3 → v2.
    let (status, v) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/serverGroups/local/shop-prod-kids-v002/rollback",
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["enabled"], "shop-prod-kids-v001", "{v}");
    // It ran as an orchestration: an execution of the application.
    let e = api.wait(v["id"].as_str().unwrap()).await;
    assert_eq!(
        (&e["type"], &e["status"]),
        (&json!("ORCHESTRATION"), &json!("SUCCEEDED"))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*load.last_version.lock().unwrap(), "2.0.0");

    // 4. resize v1 (now serving) up and down.
    for desired in [5, 2] {
        let (status, v) = api
            .call(
                reqwest::Method::POST,
                "/api/v1/serverGroups/local/shop-prod-kids-v001/resize",
                Some(json!({"desired": desired})),
            )
            .await;
        // The answer comes once the resize orchestration ended (up at the new size).
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["status"], "SUCCEEDED", "{v}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, g) = api
                .call(
                    reqwest::Method::GET,
                    "/api/v1/serverGroups/local/shop-prod-kids-v001",
                    None,
                )
                .await;
            let up = g["instances"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["state"] == "UP")
                .count();
            if up == desired && g["instances"].as_array().unwrap().len() == desired {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "resize to {desired} did not settle: {g}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // 5. a version that never becomes healthy: the deploy fails, v2 keeps serving.
    let e = api
        .run("redblack", json!({"version": "9.9.9", "healthFail": "1"}))
        .await;
    assert_eq!(e["status"], "TERMINAL", "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*load.last_version.lock().unwrap(), "2.0.0");

    load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let ok = load.ok.load(Ordering::Relaxed);
    let failed = load.failed.load(Ordering::Relaxed);
    println!("zero-downtime: {ok} requests succeeded, {failed} failed");
    assert!(ok > 500, "too little load to prove anything: {ok}");
    assert_eq!(
        failed,
        0,
        "failed requests: {:?}",
        load.first_failures.lock().unwrap()
    );

    // Destroy everything: no instance may be left running.
    api.destroy_all_server_groups().await;
    server.stop().await.unwrap();
}
