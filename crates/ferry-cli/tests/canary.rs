//! End-to-end canary analysis with real traffic: the real server wiring (engine, host provider,
//! built-in load balancer, canary stage, judge) runs the example `canary` pipeline while a load
//! generator sends continuous requests through the load balancer. A version that fails 10 % of
//! requests and a version 200 ms slower must each be caught and removed automatically; a good
//! version must be promoted. Then the example `rollout` pipeline (Argo Rollouts' canary steps with
//! an analysis by the same judge) aborts a version with 10 % errors and promotes a good one.
//! The rollout commands are driven as `ferry rollout` sends them, and a blue/green rollout
//! shows the new version on the preview listener before promotion switches the active one.
//! Each case prints the share of requests the new version served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{Api, Ferry, Load, free_port, shop_binary, start_load};

/// Where the load balancer's listeners bind (`--lb-address`): not the default, to show the
/// flag reaches them.
const LB_IP: [u8; 4] = [127, 0, 0, 2];

fn example(name: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/shop/deploy")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    ferry_server::documents::parse_text(&text).unwrap()
}

/// What the load generator saw while one pipeline ran.
struct Seen {
    total: u64,
    new_version: u64,
    new_version_errors: u64,
}

async fn canary_case(api: &Api, load: &Load, params: Value, pipeline: &str) -> (Value, Seen) {
    let version = params["version"].as_str().unwrap().to_string();
    let before = load.by_version.lock().unwrap().clone();
    let e = api.run(pipeline, params).await;
    let after = load.by_version.lock().unwrap().clone();
    let count = |m: &std::collections::BTreeMap<String, (u64, u64)>| -> u64 {
        m.values().map(|(n, _)| n).sum()
    };
    let new = after.get(&version).copied().unwrap_or_default();
    let old = before.get(&version).copied().unwrap_or_default();
    let seen = Seen {
        total: count(&after) - count(&before),
        new_version: new.0 - old.0,
        new_version_errors: new.1 - old.1,
    };
    (e, seen)
}

fn stage<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {e}"))
}

/// The rollout stage waits for a person.
fn paused(e: &Value) -> bool {
    e["stages"][0]["outputs"]["rollout"]["status"] == "Paused"
}

async fn server_groups(api: &Api) -> Vec<(String, bool)> {
    let (_, groups) = api
        .call(
            reqwest::Method::GET,
            "/api/v1/applications/shop/serverGroups",
            None,
        )
        .await;
    groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_string(),
                g["enabled"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_versions_are_caught_and_removed_and_a_good_one_is_promoted() {
    let shop = shop_binary();
    // Bindings drop in reverse: the server first, then the instance cleanup, then the directory.
    let Ferry {
        _dir,
        _cleanup,
        api,
        server,
    } = Ferry::start_with(|o| o.lb_address = LB_IP.into()).await;

    // The example's canary config and pipeline, as shipped; a load balancer on a free port.
    let (lb_port, preview_port) = (free_port(), free_port());
    let mut docs = vec![
        json!({"kind": "Application", "name": "shop"}),
        json!({"kind": "LoadBalancer", "name": "shop", "application": "shop",
               // No addresses: the listeners bind the server's --lb-address.
               "listeners": [{"port": lb_port}],
               "previewListeners": [{"port": preview_port}],
               "routes": [{"pathPrefix": "/kids", "cluster": "shop-prod-kids"}]}),
    ];
    docs.push(
        json!({"kind": "Pipeline", "application": "shop", "name": "release",
        "parameterConfig": [{"name": "version", "required": true}],
        "stages": [{"refId": "1", "type": "deploy", "name": "Deploy", "clusters": [{
            "account": "local", "application": "shop", "stack": "prod", "freeFormDetails": "kids",
            "capacity": {"min": 3, "max": 3, "desired": 3}, "strategy": "redblack",
            "loadBalancers": ["shop"],
            "artifact": {"name": "shop-kids", "version": "${parameters.version}",
                "source": {"type": "command", "command": [shop.display().to_string()]},
                "env": {"SECTION": "kids", "VERSION": "${parameters.version}"}},
            "healthCheck": {"path": "/health", "intervalMs": 200, "healthyThreshold": 1}}]}]}),
    );
    docs.extend(example("canary-config.yaml"));
    // The example rollout pipeline, with its steps' pause shortened, and the example analysis
    // template sped up (a judgment every 3 s over the last 3 s, 1-s samples).
    let mut rollout = example("rollout.json").remove(0);
    rollout["stages"][0]["strategy"]["canary"]["steps"][3] = json!({"pause": {"duration": "1s"}});
    rollout["stages"][0]["strategy"]["canary"]["scaleDownDelaySeconds"] = json!(0);
    let mut manual = rollout.clone();
    manual["name"] = json!("rollout-manual");
    manual["stages"][0]["strategy"]["canary"]["steps"] = json!([{"setWeight": 30}, {"pause": {}}]);
    let mut blue_green = rollout.clone();
    blue_green["name"] = json!("blue-green");
    blue_green["stages"][0]["strategy"] =
        json!({"blueGreen": {"autoPromotionEnabled": false, "scaleDownDelaySeconds": 0}});
    docs.push(rollout);
    docs.push(manual);
    docs.push(blue_green);
    let mut template = example("analysis-template.yaml").remove(0);
    template["metrics"][0]["initialDelay"] = json!("3s");
    template["metrics"][0]["interval"] = json!("3s");
    template["metrics"][0]["count"] = json!(2);
    template["metrics"][0]["provider"]["judge"]["step"] = json!(1);
    template["metrics"][0]["provider"]["judge"]["lookback"] = json!("3s");
    docs.push(template);
    docs.extend(example("canary.json"));
    let (status, v) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/apply",
            Some(json!({"documents": docs})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api
        .call(
            reqwest::Method::GET,
            "/api/v1/canaryConfigs/shop-kids",
            None,
        )
        .await;
    assert_eq!((status, &v["version"]), (200, &json!(1)), "{v}");

    // Production: 1.0.0 on three instances.
    let e = api.run("release", json!({"version": "1.0.0"})).await;
    assert_eq!(e["status"], "SUCCEEDED", "{e}");
    let fast = |version: &str, extra: Value| {
        let mut p = json!({
            "version": version, "baselineVersion": "1.0.0",
            "shopBinary": shop.display().to_string(),
            "lifetime": "PT8S", "warmupMins": "0.03", "intervalMins": "0.1", "stepSeconds": "1",
        });
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };

    let load = Arc::new(Load::default());
    let workers = start_load(format!("http://127.0.0.2:{lb_port}/kids"), load.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        load.ok.load(Ordering::Relaxed) > 0,
        "no traffic through the load balancer"
    );

    // 1. 10 % errors.
    let (e, seen) = canary_case(
        &api,
        &load,
        fast("2.0.0", json!({"failureRate": "0.1"})),
        "canary",
    )
    .await;
    assert_eq!(e["status"], "TERMINAL", "{e}");
    let analysis = stage(&e, "Canary analysis");
    assert_eq!(analysis["status"], "FAILED_CONTINUE", "{analysis}");
    let errors = &analysis["outputs"]["intervals"][0]["metrics"][0];
    assert_eq!(errors["name"], "error-rate");
    assert_eq!(errors["classification"], "High", "{errors}");
    assert_eq!(stage(&e, "Promote")["status"], "SKIPPED");
    // What `ferry canary report` prints for it.
    let report = ferry_cli::canary::report_text(&e).unwrap();
    assert!(report.contains("FAILED_CONTINUE"), "{report}");
    assert!(
        report.contains("error-rate") && report.contains("High"),
        "{report}"
    );
    assert!(report.contains("summary: Fail"), "{report}");
    assert!(
        stage(&e, "Canary verdict")["context"]["exception"]["details"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the canary failed its analysis"),
        "{e}"
    );
    println!(
        "canary, 10 % errors: the bad version served {} of {} requests ({:.2} %), {} of them errors",
        seen.new_version,
        seen.total,
        100.0 * seen.new_version as f64 / seen.total.max(1) as f64,
        seen.new_version_errors
    );
    assert!(seen.new_version > 0, "the canary got no traffic");
    assert!(
        (seen.new_version as f64) < 0.10 * seen.total as f64,
        "the canary served more than its share"
    );

    // 2. +200 ms.
    let (e, seen) = canary_case(
        &api,
        &load,
        fast("3.0.0", json!({"latencyMs": "200"})),
        "canary",
    )
    .await;
    assert_eq!(e["status"], "TERMINAL", "{e}");
    let analysis = stage(&e, "Canary analysis");
    let latency = &analysis["outputs"]["intervals"][0]["metrics"][1];
    assert_eq!(latency["name"], "latency");
    assert_eq!(latency["classification"], "High", "{latency}");
    assert_eq!(stage(&e, "Promote")["status"], "SKIPPED");
    println!(
        "canary, +200 ms: the slow version served {} of {} requests ({:.2} %)",
        seen.new_version,
        seen.total,
        100.0 * seen.new_version as f64 / seen.total.max(1) as f64
    );
    assert!(seen.new_version > 0, "the canary got no traffic");

    // After both failures only production (1.0.0) serves; canaries and baselines are gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*load.last_version.lock().unwrap(), "1.0.0");
    let enabled: Vec<String> = server_groups(&api)
        .await
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(enabled.len(), 1, "{enabled:?}");

    // 3. a good version is promoted.
    let (e, seen) = canary_case(&api, &load, fast("4.0.0", json!({})), "canary").await;
    assert_eq!(e["status"], "SUCCEEDED", "{e}");
    let analysis = stage(&e, "Canary analysis");
    assert_eq!(analysis["status"], "SUCCEEDED");
    assert!(analysis["outputs"]["overallScore"].as_f64().unwrap() >= 75.0);
    assert_eq!(stage(&e, "Promote")["status"], "SUCCEEDED");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*load.last_version.lock().unwrap(), "4.0.0");
    println!(
        "canary, good version: served {} of {} requests during the analysis and promotion",
        seen.new_version, seen.total
    );

    // 4. A progressive rollout (Argo Rollouts' canary steps) judged by the same canary config:
    // 20 % of traffic, analysis, then everything. A version with 10 % errors is aborted and the
    // stable version takes its traffic back; a good one is promoted.
    let (e, seen) = canary_case(
        &api,
        &load,
        json!({"version": "5.0.0", "shopBinary": shop.display().to_string(), "failureRate": "0.1"}),
        "rollout",
    )
    .await;
    assert_eq!(e["status"], "TERMINAL", "{e}");
    let rollout = &stage(&e, "Roll out")["outputs"]["rollout"];
    assert_eq!(rollout["status"], "Degraded", "{rollout}");
    assert_eq!(rollout["analysis"]["phase"], "Failed", "{rollout}");
    println!(
        "rollout, 10 % errors: the bad version served {} of {} requests ({:.2} %) before the abort",
        seen.new_version,
        seen.total,
        100.0 * seen.new_version as f64 / seen.total.max(1) as f64
    );
    assert!(seen.new_version > 0, "the canary got no traffic");
    assert!((seen.new_version as f64) < 0.30 * seen.total as f64);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*load.last_version.lock().unwrap(), "4.0.0");

    let (e, _) = canary_case(
        &api,
        &load,
        json!({"version": "6.0.0", "shopBinary": shop.display().to_string()}),
        "rollout",
    )
    .await;
    assert_eq!(e["status"], "SUCCEEDED", "{e}");
    assert_eq!(
        stage(&e, "Roll out")["outputs"]["rollout"]["status"],
        "Healthy"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*load.last_version.lock().unwrap(), "6.0.0");

    // 5. The rollout commands, as `ferry rollout` sends them: a rollout that pauses until
    // promoted, promoted from the CLI; then undone back to 6.0.0.
    let client = ferry_cli::client::ApiClient::new(
        &api.base,
        Some(api.token.clone()),
        ferry_cli::client::TokenSource::Given,
    )
    .unwrap();
    let id = api
        .start(
            "rollout-manual",
            json!({"version": "7.0.0", "shopBinary": shop.display().to_string()}),
        )
        .await;
    let e = api.until(&id, "paused", paused).await;
    let text = ferry_cli::rollout::status_text(&e["stages"][0]);
    assert!(
        text.contains("Paused") && text.contains("canary weight 30%"),
        "{text}"
    );
    let args = |id: &str| ferry_cli::cli::RolloutArgs {
        execution: id.to_string(),
        stage: None,
    };
    ferry_cli::rollout::run(
        &client,
        &ferry_cli::cli::RolloutCommand::Promote {
            args: args(&id),
            full: false,
        },
    )
    .await
    .unwrap();
    let e = api.wait(&id).await;
    assert_eq!(e["status"], "SUCCEEDED", "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*load.last_version.lock().unwrap(), "7.0.0");
    ferry_cli::rollout::run(
        &client,
        &ferry_cli::cli::RolloutCommand::Undo { args: args(&id) },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*load.last_version.lock().unwrap(), "6.0.0");

    // 6. Blue/green: the preview listener serves the new version while the active one keeps
    // the old; promotion switches the active listener at once.
    let id = api
        .start(
            "blue-green",
            json!({"version": "8.0.0", "shopBinary": shop.display().to_string()}),
        )
        .await;
    api.until(&id, "paused", paused).await;
    let version_at = |port: u16| {
        let http = api.http.clone();
        async move {
            let r = http
                .get(format!("http://127.0.0.2:{port}/kids"))
                .send()
                .await
                .unwrap();
            r.headers()["x-shop-version"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(version_at(preview_port).await, "8.0.0");
    assert_eq!(version_at(lb_port).await, "6.0.0");
    ferry_cli::rollout::run(
        &client,
        &ferry_cli::cli::RolloutCommand::Promote {
            args: args(&id),
            full: false,
        },
    )
    .await
    .unwrap();
    let e = api.wait(&id).await;
    assert_eq!(e["status"], "SUCCEEDED", "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*load.last_version.lock().unwrap(), "8.0.0");
    assert_eq!(version_at(preview_port).await, "8.0.0");

    load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    // The only failed requests are the ones the two 10 %-errors versions answered with 500.
    let failed = load.failed.load(Ordering::Relaxed);
    let by = load.by_version.lock().unwrap().clone();
    let injected: u64 = ["2.0.0", "5.0.0"]
        .iter()
        .map(|v| by.get(*v).map_or(0, |(_, errors)| *errors))
        .sum();
    assert_eq!(
        failed,
        injected,
        "{:?}",
        load.first_failures.lock().unwrap()
    );

    api.destroy_all_server_groups().await;
    server.stop().await.unwrap();
}
