//! Tests of the `deploy` stage against the fake provider, a real SQLite store and the real
//! engine: conformance, each strategy's call order and final serving set, failures, cancel,
//! resume after a restart, validation, and outputs read by downstream expressions.

use crate::testutil::{self, Env, assert_succeeded, deploy_stage, error_of};
use ferry_core::{Execution, Status};
use ferry_engine::Command;
use ferry_engine::conformance::{Case, run, wait_for};
use ferry_provider::fake::{Behavior, Op};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The events after setting the scene (events whose text starts with one of `kinds`).
fn events(env: &Env, kinds: &[&str]) -> Vec<String> {
    env.fake
        .events()
        .into_iter()
        .filter(|e| kinds.iter().any(|k| e.starts_with(k)))
        .collect()
}

fn serving(env: &Env) -> Vec<(String, u32)> {
    env.fake.serving("shop-prod")
}

fn sg(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

const ALL: &[&str] = &["create", "enable", "disable", "weight", "resize", "destroy"];

#[tokio::test]
async fn deploy_conforms() {
    let (fake, providers) = testutil::fake();
    fake.set_behavior("slow", Behavior::healthy_after(Duration::from_secs(3)));
    let (store, _g) = testutil::sqlite_store().await;
    let stage = |version: &str| {
        json!({"type": "deploy", "clusters": [{
            "stack": "prod",
            "capacity": {"min": 1, "max": 2, "desired": 1},
            "strategy": "redblack",
            "artifact": testutil::artifact_json(version),
        }]})
    };
    let cluster = |extra: Value| {
        let mut c = json!({
            "stack": "prod",
            "capacity": {"min": 1, "max": 2, "desired": 1},
            "artifact": testutil::artifact_json("1"),
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        json!({"type": "deploy", "clusters": [c]})
    };
    run(
        testutil::registry(&providers),
        store,
        Case {
            succeeds: stage("good"),
            long_running: stage("slow"),
            completing_input: None,
            invalid: vec![
                (json!({"type": "deploy"}), "stages[0].clusters"),
                (
                    json!({"type": "deploy", "clusters": []}),
                    "stages[0].clusters",
                ),
                (
                    cluster(json!({"capacity": {"min": 3, "max": 2, "desired": 2}})),
                    "stages[0].clusters[0].capacity.min",
                ),
                (
                    cluster(json!({"strategy": "bluegreen"})),
                    "stages[0].clusters[0].strategy",
                ),
                (
                    cluster(
                        json!({"strategy": "rollingredblack", "targetPercentages": [50, 25, 100]}),
                    ),
                    "stages[0].clusters[0].targetPercentages[1]",
                ),
                (
                    cluster(json!({"strategy": "rollingredblack", "targetPercentages": [25, 50]})),
                    "stages[0].clusters[0].targetPercentages",
                ),
                (
                    cluster(json!({"artifact": null})),
                    "stages[0].clusters[0].artifact",
                ),
                (
                    cluster(json!({"stack": "pr-od"})),
                    "stages[0].clusters[0].stack",
                ),
            ],
        },
    )
    .await
    .unwrap();
    // The canceled and the timed-out deploys removed the server group each created; the
    // three that succeeded (succeeds, its restart, the resumed one) remain.
    assert_eq!(
        fake.server_group_names().len(),
        3,
        "{:?}",
        fake.server_group_names()
    );
}

#[tokio::test]
async fn validation_reports_every_problem_with_its_path() {
    let env = Env::new().await;
    let doc = json!({"application": "shop", "name": "bad", "stages": [{
        "refId": "1", "type": "deploy",
        "clusters": [
            {
                "stack": "prod",
                "capacity": {"min": 2, "max": 1, "desired": 5},
                "strategy": "rollingredblack",
                "targetPercentages": [0, 50],
                "maxRemainingAsgs": 0,
                "artifact": {"name": "shop", "source": {"type": "zip"}},
                "healthCheck": {"path": "health", "intervalMs": 0},
                "deployTimeoutSec": 0
            },
            {
                "stack": "${parameters.stack}",
                "capacity": {"min": "${parameters.min}", "max": 3, "desired": 2},
                "strategy": "${parameters.strategy}",
                "artifact": {"name": "shop", "version": "${trigger.tag}", "source": {"type": "command", "command": ["shop"]}}
            }
        ]
    }]});
    let problems = ferry_engine::validate_pipeline(&doc, env.engine.registry()).unwrap_err();
    let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
    let c = "stages[0].clusters[0]";
    for want in [
        format!("{c}.capacity.min"),
        format!("{c}.capacity.desired"),
        format!("{c}.targetPercentages[0]"),
        format!("{c}.maxRemainingAsgs"),
        format!("{c}.artifact.version"),
        format!("{c}.artifact.source.type"),
        format!("{c}.healthCheck.path"),
        format!("{c}.healthCheck.intervalMs"),
        format!("{c}.deployTimeoutSec"),
    ] {
        assert!(
            paths.contains(&want.as_str()),
            "no problem at {want}: {paths:?}"
        );
    }
    // The second cluster only holds expressions where values are still unknown: no problem.
    assert!(
        !paths.iter().any(|p| p.starts_with("stages[0].clusters[1]")),
        "{paths:?}"
    );
}

#[tokio::test]
async fn no_strategy_adds_the_new_server_group_beside_the_old() {
    let env = Env::new().await;
    env.given("prod", "1", 2, true).await;
    let e = env
        .run_stage(deploy_stage("prod", "2", 2, "", json!({})))
        .await;
    assert_succeeded(&e);
    assert_eq!(
        events(&env, ALL),
        [
            "create shop-prod-v000",
            "create shop-prod-v001",
            "enable shop-prod-v001"
        ]
    );
    assert_eq!(
        serving(&env),
        sg(&[("shop-prod-v000", 100), ("shop-prod-v001", 100)])
    );
    assert_eq!(e.stages[0].context["deploy.phase"], json!("done"));
}

#[tokio::test]
async fn a_traffic_weight_puts_the_new_server_group_beside_the_old_with_a_small_share() {
    let env = Env::new().await;
    env.given("prod", "1", 2, true).await;
    let e = env
        .run_stage(deploy_stage(
            "prod",
            "2",
            1,
            "",
            json!({"trafficWeight": 5}),
        ))
        .await;
    assert_succeeded(&e);
    assert_eq!(
        serving(&env),
        sg(&[("shop-prod-v000", 100), ("shop-prod-v001", 5)])
    );
    // Out of range, or with rolling red/black (whose percentages set the weights).
    for (extra, strategy) in [
        (json!({"trafficWeight": 0}), ""),
        (json!({"trafficWeight": 101}), "redblack"),
        (
            json!({"trafficWeight": 5, "targetPercentages": [50, 100]}),
            "rollingredblack",
        ),
    ] {
        let doc = json!({"application": "shop", "name": "w", "stages": [
            {"refId": "1", "name": "Deploy", "type": "deploy",
             "clusters": deploy_stage("prod", "2", 1, strategy, extra)["clusters"].clone()}]});
        let err = ferry_engine::validate_pipeline(&doc, &testutil::registry(&env.providers))
            .unwrap_err()
            .to_string();
        assert!(err.contains("stages[0].clusters[0].trafficWeight"), "{err}");
    }
}

#[tokio::test]
async fn parallel_deploys_into_one_cluster_each_keep_their_own_server_group() {
    // A canary and its baseline: two stages of one execution, same cluster, at the same time.
    let env = Env::new().await;
    env.given("prod", "1", 2, true).await;
    env.fake
        .set_latency(ferry_provider::fake::Op::Create, Duration::from_millis(100));
    let mut a = deploy_stage("prod", "1", 1, "", json!({"trafficWeight": 5}));
    a["refId"] = json!("1");
    a["name"] = json!("Deploy baseline");
    let mut b = deploy_stage("prod", "2", 1, "", json!({"trafficWeight": 5}));
    b["refId"] = json!("2");
    b["name"] = json!("Deploy canary");
    let id = env.run(json!([a, b])).await;
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
    let baseline = e.stages[0].context["serverGroupName"].clone();
    let canary = e.stages[1].context["serverGroupName"].clone();
    assert_ne!(baseline, canary);
    assert_eq!(env.fake.server_group_names().len(), 3);
    for (stage, version) in [(&baseline, "1"), (&canary, "2")] {
        let g = env.group(stage.as_str().unwrap()).await.unwrap();
        assert_eq!(g.artifact.version, version);
    }
}

#[tokio::test]
async fn highlander_destroys_every_older_server_group() {
    let env = Env::new().await;
    env.given("prod", "1", 1, false).await;
    env.given("prod", "2", 1, true).await;
    env.fake.clear_events();
    let e = env
        .run_stage(deploy_stage("prod", "3", 2, "highlander", json!({})))
        .await;
    assert_succeeded(&e);
    assert_eq!(
        events(&env, ALL),
        [
            "create shop-prod-v002",
            "enable shop-prod-v002",
            "disable shop-prod-v001",
            "destroy shop-prod-v000",
            "destroy shop-prod-v001"
        ]
    );
    assert_eq!(serving(&env), sg(&[("shop-prod-v002", 100)]));
    assert_eq!(env.fake.server_group_names(), ["shop-prod-v002"]);
    assert!(
        env.fake.traffic_gaps().is_empty(),
        "{:?}",
        env.fake.traffic_gaps()
    );
}

#[tokio::test]
async fn redblack_disables_the_old_only_after_the_new_is_up_and_the_delay() {
    let env = Env::new().await;
    env.fake
        .set_behavior("2", Behavior::healthy_after(Duration::from_millis(400)));
    env.given("prod", "1", 2, true).await;
    env.fake.clear_events();
    let started = Instant::now();
    let id = env
        .run(json!([{"refId": "1", "name": "Deploy", "type": "deploy", "clusters": deploy_stage("prod", "2", 2, "redblack", json!({"delayBeforeDisableSec": 1}))["clusters"]}]))
        .await;
    // While the new server group is starting, the old one is untouched and serving.
    wait_for(
        &env.engine,
        &id,
        Duration::from_secs(5),
        "waiting for up",
        |e| e.stages[0].context.get("deploy.phase") == Some(&json!("waitingUp")),
    )
    .await
    .unwrap();
    assert_eq!(events(&env, ALL), ["create shop-prod-v001"]);
    assert_eq!(serving(&env), sg(&[("shop-prod-v000", 100)]));
    let e = env.done(&id).await;
    assert_succeeded(&e);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        events(&env, ALL),
        [
            "create shop-prod-v001",
            "enable shop-prod-v001",
            "disable shop-prod-v000"
        ]
    );
    assert_eq!(serving(&env), sg(&[("shop-prod-v001", 100)]));
    let old = env.group("shop-prod-v000").await.unwrap();
    assert_eq!((old.enabled, old.capacity.desired), (false, 2));
    assert!(
        env.fake.traffic_gaps().is_empty(),
        "{:?}",
        env.fake.traffic_gaps()
    );
}

#[tokio::test]
async fn redblack_trims_to_max_remaining_asgs_and_scales_down() {
    let env = Env::new().await;
    env.given("prod", "1", 2, false).await;
    env.given("prod", "2", 2, false).await;
    env.given("prod", "3", 2, true).await;
    env.fake.clear_events();
    let e = env
        .run_stage(deploy_stage(
            "prod",
            "4",
            2,
            "redblack",
            json!({"maxRemainingAsgs": 2, "scaleDown": true}),
        ))
        .await;
    assert_succeeded(&e);
    assert_eq!(
        events(&env, ALL),
        [
            "create shop-prod-v003",
            "enable shop-prod-v003",
            "disable shop-prod-v002",
            "destroy shop-prod-v000",
            "destroy shop-prod-v001",
            "resize shop-prod-v002 0"
        ]
    );
    assert_eq!(
        env.fake.server_group_names(),
        ["shop-prod-v002", "shop-prod-v003"]
    );
    assert_eq!(serving(&env), sg(&[("shop-prod-v003", 100)]));
}

#[tokio::test]
async fn rolling_red_black_shifts_weights_in_order() {
    let env = Env::new().await;
    env.given("prod", "1", 4, true).await;
    env.fake.clear_events();
    let e = env
        .run_stage(deploy_stage(
            "prod",
            "2",
            4,
            "rollingredblack",
            json!({"targetPercentages": [25, 50, 100]}),
        ))
        .await;
    assert_succeeded(&e);
    assert_eq!(
        events(&env, ALL),
        [
            "create shop-prod-v001",
            "resize shop-prod-v001 1",
            "weight shop-prod-v001 25",
            "weight shop-prod-v000 75",
            "resize shop-prod-v001 2",
            "weight shop-prod-v001 50",
            "weight shop-prod-v000 50",
            "resize shop-prod-v001 4",
            "weight shop-prod-v001 100",
            "weight shop-prod-v000 0",
            "disable shop-prod-v000"
        ]
    );
    let created = env.group("shop-prod-v001").await.unwrap();
    assert_eq!(
        (created.enabled, created.weight, created.capacity.desired),
        (true, 100, 4)
    );
    assert_eq!(serving(&env), sg(&[("shop-prod-v001", 100)]));
    assert!(
        env.fake.traffic_gaps().is_empty(),
        "{:?}",
        env.fake.traffic_gaps()
    );
}

async fn assert_failed_and_old_serving(env: &Env, e: &Execution) -> String {
    assert_eq!(e.status, Status::Terminal);
    assert_eq!(e.stages[0].status, Status::Terminal);
    let error = error_of(e);
    assert!(error.contains("shop-prod-v001"), "{error}");
    assert!(
        error.contains("shop-prod-v001 was disabled and destroyed"),
        "{error}"
    );
    assert!(error.contains("shop-prod-v000 keeps serving"), "{error}");
    assert!(env.group("shop-prod-v001").await.is_none());
    let old = env.group("shop-prod-v000").await.unwrap();
    assert!(old.enabled);
    assert_eq!(serving(env), sg(&[("shop-prod-v000", 100)]));
    assert!(
        !env.fake
            .events()
            .iter()
            .any(|e| e == "disable shop-prod-v000")
    );
    assert!(
        env.fake.traffic_gaps().is_empty(),
        "{:?}",
        env.fake.traffic_gaps()
    );
    error
}

#[tokio::test]
async fn a_deploy_that_never_becomes_healthy_fails_and_leaves_the_old_serving() {
    let env = Env::new().await;
    env.fake.set_behavior("bad", Behavior::never_healthy());
    env.given("prod", "1", 2, true).await;
    env.fake.clear_events();
    let e = env
        .run_stage(deploy_stage(
            "prod",
            "bad",
            2,
            "redblack",
            json!({"deployTimeoutSec": 1}),
        ))
        .await;
    let error = assert_failed_and_old_serving(&env, &e).await;
    assert!(
        error.contains("did not become up within 1 s: 0 of 2 instances healthy"),
        "{error}"
    );
    assert!(error.contains("shop-prod-v001-0 UNHEALTHY"), "{error}");
    assert_eq!(
        events(&env, ALL),
        [
            "create shop-prod-v001",
            "disable shop-prod-v001",
            "destroy shop-prod-v001"
        ]
    );
    assert_eq!(e.stages[0].context["deploy.phase"], json!("failed"));
    assert!(e.stages[0].outputs.get("deployedServerGroups").is_none());
}

#[tokio::test]
async fn a_crash_looping_deploy_fails_fast_with_the_last_exit() {
    let env = Env::new().await;
    env.fake
        .set_behavior("crash", Behavior::crash_loop("exited with status 3"));
    env.given("prod", "1", 2, true).await;
    env.fake.clear_events();
    let started = Instant::now();
    let e = env
        .run_stage(deploy_stage(
            "prod",
            "crash",
            2,
            "highlander",
            json!({"deployTimeoutSec": 120}),
        ))
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let error = assert_failed_and_old_serving(&env, &e).await;
    assert!(
        error.contains("server group shop-prod-v001 is crash-looping"),
        "{error}"
    );
    assert!(error.contains("last exit: exited with status 3"), "{error}");
}

#[tokio::test]
async fn a_failed_rolling_deploy_restores_the_old_weights() {
    let env = Env::new().await;
    env.fake
        .set_behavior("2", Behavior::healthy_after(Duration::from_millis(500)));
    env.given("prod", "1", 2, true).await;
    env.fake.clear_events();
    let id = env
        .run(json!([{"refId": "1", "name": "Deploy", "type": "deploy", "clusters": deploy_stage("prod", "2", 2, "rollingredblack", json!({"targetPercentages": [50, 100], "deployTimeoutSec": 1}))["clusters"]}]))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !env
        .fake
        .events()
        .iter()
        .any(|e| e == "weight shop-prod-v000 50")
    {
        assert!(Instant::now() < deadline, "{:?}", env.fake.events());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The new version goes bad before its second step is up.
    env.fake.set_behavior("2", Behavior::never_healthy());
    let e = env.done(&id).await;
    assert_failed_and_old_serving(&env, &e).await;
    assert_eq!(
        events(&env, ALL),
        [
            "create shop-prod-v001",
            "resize shop-prod-v001 1",
            "weight shop-prod-v001 50",
            "weight shop-prod-v000 50",
            "resize shop-prod-v001 2",
            "weight shop-prod-v000 100",
            "disable shop-prod-v001",
            "destroy shop-prod-v001"
        ]
    );
}

#[tokio::test]
async fn a_canceled_deploy_removes_the_new_server_group_and_never_touches_the_old() {
    let env = Env::new().await;
    env.fake
        .set_behavior("slow", Behavior::healthy_after(Duration::from_secs(30)));
    env.given("prod", "1", 2, true).await;
    env.fake.clear_events();
    let id = env
        .run(json!([{"refId": "1", "name": "Deploy", "type": "deploy", "clusters": deploy_stage("prod", "slow", 2, "redblack", json!({"deployTimeoutSec": 60}))["clusters"]}]))
        .await;
    wait_for(
        &env.engine,
        &id,
        Duration::from_secs(5),
        "waiting for up",
        |e| e.stages[0].context.get("deploy.phase") == Some(&json!("waitingUp")),
    )
    .await
    .unwrap();
    env.engine
        .command(
            &id,
            Command::Cancel {
                user: "u".into(),
                reason: None,
            },
        )
        .await
        .unwrap();
    let e = env.done(&id).await;
    assert_eq!(e.status, Status::Canceled);
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.group("shop-prod-v001").await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the new server group survived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        events(&env, ALL),
        [
            "create shop-prod-v001",
            "disable shop-prod-v001",
            "destroy shop-prod-v001"
        ]
    );
    assert_eq!(serving(&env), sg(&[("shop-prod-v000", 100)]));
}

#[tokio::test]
async fn resuming_after_a_restart_mid_deploy_does_not_create_a_second_server_group() {
    let env = Env::new().await;
    env.fake
        .set_behavior("2", Behavior::healthy_after(Duration::from_millis(1500)));
    env.given("prod", "1", 1, true).await;
    env.fake.clear_events();
    let id = env
        .run(json!([{"refId": "1", "name": "Deploy", "type": "deploy", "clusters": deploy_stage("prod", "2", 1, "redblack", json!({}))["clusters"]}]))
        .await;
    let e = wait_for(
        &env.engine,
        &id,
        Duration::from_secs(5),
        "waiting for up",
        |e| e.stages[0].context.get("deploy.phase") == Some(&json!("waitingUp")),
    )
    .await
    .unwrap();
    // The name was committed before the wait began.
    assert_eq!(
        e.stages[0].context["serverGroupName"],
        json!("shop-prod-v001")
    );
    env.engine.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = testutil::start(&env.store, &env.providers).await;
    let e = wait_for(&second, &id, Duration::from_secs(15), "completion", |e| {
        e.status.is_complete()
    })
    .await
    .unwrap();
    assert_succeeded(&e);
    assert_eq!(
        events(&env, ALL),
        [
            "create shop-prod-v001",
            "enable shop-prod-v001",
            "disable shop-prod-v000"
        ]
    );
    second.shutdown();
}

#[tokio::test]
async fn a_restart_during_the_create_call_adopts_the_created_server_group() {
    let env = Env::new().await;
    env.fake.set_latency(Op::Create, Duration::from_millis(800));
    env.given("prod", "1", 1, true).await;
    env.fake.clear_events();
    let id = env
        .run(json!([{"refId": "1", "name": "Deploy", "type": "deploy", "clusters": deploy_stage("prod", "2", 1, "highlander", json!({}))["clusters"]}]))
        .await;
    wait_for(&env.engine, &id, Duration::from_secs(5), "creating", |e| {
        e.stages[0].context.get("deploy.phase") == Some(&json!("creating"))
    })
    .await
    .unwrap();
    // Ferry "crashes" while the create call is in flight: the group exists, its name is not
    // committed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.engine.shutdown();
    let second = testutil::start(&env.store, &env.providers).await;
    let e = wait_for(&second, &id, Duration::from_secs(15), "completion", |e| {
        e.status.is_complete()
    })
    .await
    .unwrap();
    assert_succeeded(&e);
    assert_eq!(
        e.stages[0].context["deploy.adopted"],
        json!("shop-prod-v001")
    );
    assert_eq!(
        events(&env, &["create"]),
        ["create shop-prod-v001"],
        "a second server group was created"
    );
    assert_eq!(env.fake.server_group_names(), ["shop-prod-v001"]);
    second.shutdown();
}

#[tokio::test]
async fn deployed_server_groups_feed_downstream_expressions() {
    let env = Env::new().await;
    let mut deploy = deploy_stage("prod", "7.1", 1, "redblack", json!({}));
    deploy["refId"] = json!("1");
    let id = env
        .run(json!([
            deploy,
            {"refId": "2", "type": "echo", "name": "Use", "requisiteStageRefIds": ["1"], "values": {
                "byStage": "${#stage('Deploy')['outputs']['deployedServerGroups'][0]['serverGroup']}",
                "byHelper": "${#deployedServerGroups()[0].serverGroup}",
                "byRoot": "${deployedServerGroups[0].artifactVersion}",
                "account": "${#deployedServerGroups('Deploy')[0].account}"
            }}
        ]))
        .await;
    let e = env.done(&id).await;
    assert_succeeded(&e);
    // A later server-group stage names the deployed server group through an expression.
    let id = env
        .run(json!([
            {"refId": "1", "type": "deploy", "name": "Deploy", "clusters": deploy_stage("prod", "7.2", 1, "", json!({}))["clusters"]},
            {"refId": "2", "type": "resizeServerGroup", "requisiteStageRefIds": ["1"],
             "serverGroupName": "${#deployedServerGroups('Deploy')[0].serverGroup}",
             "capacity": {"desired": 2}}
        ]))
        .await;
    let later = env.done(&id).await;
    assert_succeeded(&later);
    assert_eq!(
        later.stages[1].context["op.serverGroup"],
        json!("shop-prod-v001")
    );
    assert_eq!(
        env.group("shop-prod-v001").await.unwrap().capacity.desired,
        2
    );
    let deployed = &e.stages[0];
    assert_eq!(
        deployed.context["deploy.server.groups"],
        json!({"local": ["shop-prod-v000"]})
    );
    assert_eq!(deployed.context["serverGroupName"], json!("shop-prod-v000"));
    assert_eq!(
        deployed.outputs["deployedServerGroups"],
        json!([{
            "account": "local", "serverGroup": "shop-prod-v000", "cluster": "shop-prod",
            "application": "shop", "provider": "host", "artifactName": "shop", "artifactVersion": "7.1"
        }])
    );
    let used = &e.stages[1].outputs;
    assert_eq!(used["byStage"], json!("shop-prod-v000"));
    assert_eq!(used["byHelper"], json!("shop-prod-v000"));
    assert_eq!(used["byRoot"], json!("7.1"));
    assert_eq!(used["account"], json!("local"));
}

#[tokio::test]
async fn clusters_deploy_one_after_the_other() {
    let env = Env::new().await;
    let mut stage = deploy_stage("prod", "2", 1, "highlander", json!({}));
    let mut qa = stage["clusters"][0].clone();
    qa["stack"] = json!("qa");
    qa["strategy"] = json!("");
    stage["clusters"].as_array_mut().unwrap().insert(0, qa);
    let e = env.run_stage(stage).await;
    assert_succeeded(&e);
    assert_eq!(
        events(&env, &["create"]),
        ["create shop-qa-v000", "create shop-prod-v000"]
    );
    let out = e.stages[0].outputs["deployedServerGroups"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(out.len(), 2);
    assert_eq!(
        e.stages[0].context["deploy.server.groups"],
        json!({"local": ["shop-qa-v000", "shop-prod-v000"]})
    );
}

#[tokio::test]
async fn an_unknown_account_or_missing_load_balancer_fails_clearly() {
    let env = Env::new().await;
    let e = env
        .run_stage(deploy_stage("prod", "1", 1, "", json!({"account": "prod"})))
        .await;
    assert_eq!(e.status, Status::Terminal);
    assert!(
        error_of(&e).contains("has no account \\\"prod\\\""),
        "{}",
        error_of(&e)
    );
    let e = env
        .run_stage(deploy_stage(
            "prod",
            "1",
            1,
            "",
            json!({"loadBalancers": ["shop-lb"]}),
        ))
        .await;
    assert_eq!(e.status, Status::Terminal);
    assert!(
        error_of(&e).contains("could not create a server group in cluster shop-prod"),
        "{}",
        error_of(&e)
    );
    assert!(env.fake.server_group_names().is_empty());
}
