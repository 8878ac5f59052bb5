//! Realistic expressions as Spinnaker users write them in pipelines, evaluated against a stage
//! context shaped like the one the engine builds.

use serde_json::{Value, json};

use crate::tests_language::{Fails, FakeHost, Is, check_table, run};
use crate::{EvalContext, evaluate_tree};

/// A root like the engine's: execution, trigger, parameters, scmInfo, deployedServerGroups and
/// the current stage's context keys at the top level.
fn pipeline_root() -> Value {
    json!({
        "execution": {
            "id": "01HXYZ", "name": "Deploy", "application": "checkout", "status": "RUNNING",
            "stages": [
                {"id": "s1", "refId": "1", "name": "Bake", "type": "bake", "status": "SUCCEEDED",
                 "context": {"amiName": "checkout-1.4.2", "region": "us-east-1"}, "outputs": {}},
                {"id": "s2", "refId": "2", "name": "Deploy to QA", "type": "deploy", "status": "SUCCEEDED",
                 "context": {"deploy.server.groups": {"us-east-1": ["checkout-qa-v012"]}, "account": "qa"}},
                {"id": "s3", "refId": "3", "name": "Approve", "type": "manualJudgment", "status": "SUCCEEDED",
                 "context": {"judgmentInput": "yes"}},
                {"id": "s4", "refId": "4", "name": "Deploy to Prod", "type": "deploy", "status": "RUNNING",
                 "context": {"account": "prod"}}
            ]
        },
        "trigger": {
            "type": "docker", "user": "ci-bot", "tag": "1.4.2", "repository": "acme/checkout",
            "parameters": {"env": "prod", "replicas": "3", "canary": "false", "regions": "us-east-1,eu-west-1"},
            "buildInfo": {"number": 118, "url": "https://ci.example/job/checkout/118"},
            "artifacts": [
                {"type": "docker/image", "name": "acme/checkout", "reference": "acme/checkout:1.4.2"},
                {"type": "kubernetes/configMap", "name": "checkout-config", "reference": "checkout-config-v3"}
            ]
        },
        "parameters": {"env": "prod", "replicas": "3", "canary": "false", "tag": "", "regions": "us-east-1,eu-west-1"},
        "scmInfo": {"sha1": "9f2c1e7", "branch": "main"},
        "deployedServerGroups": [{"account": "qa", "region": "us-east-1", "serverGroup": "checkout-qa-v012"}],
        "account": "prod",
        "cloudProvider": "kubernetes",
        "manifests": [{"kind": "Deployment", "metadata": {"name": "checkout", "labels": {"app": "checkout"}}}]
    })
}

#[test]
fn spinnaker_expressions() {
    check_table(
        &pipeline_root(),
        &[
            (
                "${ #stage('Deploy to QA')['context']['deploy.server.groups']['us-east-1'][0] }",
                Is(json!("app-qa-v003")),
            ),
            ("${trigger.parameters.env == 'prod' ? 3 : 1}", Is(json!(3))),
            (
                "${ execution.stages.?[type == 'deploy'].![name] }",
                Is(json!(["Deploy to QA", "Deploy to Prod"])),
            ),
            ("${#judgment('Approve') == 'yes'}", Is(json!(true))),
            ("${parameters['tag'] ?: 'latest'}", Is(json!("latest"))),
            ("${ #toInt(parameters.replicas) + 1 }", Is(json!(4))),
            (
                "${#stage('Deploy to QA').status == 'SUCCEEDED'}",
                Is(json!(true)),
            ),
            (
                "${#stage('Deploy to QA')['status'].toString() != 'TERMINAL'}",
                Is(json!(true)),
            ),
            ("${trigger.parameters.canary == 'true'}", Is(json!(false))),
            ("${trigger.parameters.canary}", Is(json!("false"))),
            (
                "${parameters.canary ? 'canary' : 'stable'}",
                Is(json!("stable")),
            ),
            ("${trigger.tag}", Is(json!("1.4.2"))),
            ("${trigger.buildInfo.number}", Is(json!(118))),
            (
                "${trigger.artifacts.^[type == 'docker/image'].reference}",
                Is(json!("acme/checkout:1.4.2")),
            ),
            (
                "${trigger.artifacts.?[type.startsWith('kubernetes/')].![name]}",
                Is(json!(["checkout-config"])),
            ),
            (
                "${trigger.parameters.regions.split(',')}",
                Is(json!(["us-east-1", "eu-west-1"])),
            ),
            (
                "${parameters.regions.split(',').size() > 1}",
                Is(json!(true)),
            ),
            ("${scmInfo.sha1.substring(0, 7)}", Is(json!("9f2c1e7"))),
            (
                "${scmInfo.branch matches 'main|release/.*'}",
                Is(json!(true)),
            ),
            (
                "${deployedServerGroups[0].serverGroup}",
                Is(json!("checkout-qa-v012")),
            ),
            (
                "${#deployedServerGroups()[0].region}",
                Is(json!("us-east-1")),
            ),
            (
                "${execution.stages.^[name == 'Approve'].context.judgmentInput}",
                Is(json!("yes")),
            ),
            (
                "${execution.stages.?[status != 'SUCCEEDED'].size() == 0}",
                Is(json!(false)),
            ),
            (
                "${execution.stages.$[type == 'deploy'].context.account}",
                Is(json!("prod")),
            ),
            ("${account}", Is(json!("prod"))),
            ("${manifests[0].metadata.labels.app}", Is(json!("checkout"))),
            (
                "${#stageExists('Deploy to QA') ? #stage('Deploy to QA').context.account : 'none'}",
                Is(json!("qa")),
            ),
            (
                "${#toJson(trigger.parameters)}",
                Is(json!(
                    r#"{"env":"prod","replicas":"3","canary":"false","regions":"us-east-1,eu-west-1"}"#
                )),
            ),
            (
                "${#alphanumerical(trigger.repository + '-' + trigger.tag)}",
                Is(json!("acmecheckout142")),
            ),
            (
                "${#triggerResolvedArtifact('image').reference}",
                Is(json!("gcr.io/x/app:1.2")),
            ),
            (
                "${execution.application.toUpperCase()}-${parameters.env}",
                Is(json!("CHECKOUT-prod")),
            ),
            (
                "Deploying ${execution.application} ${trigger.tag} to ${parameters.env} (${#toInt(parameters.replicas) * 2} pods) by ${trigger.user}",
                Is(json!("Deploying checkout 1.4.2 to prod (6 pods) by ci-bot")),
            ),
            (
                "image: ${trigger.repository}:${trigger.tag}\nreplicas: ${parameters.replicas}",
                Is(json!("image: acme/checkout:1.4.2\nreplicas: 3")),
            ),
            (
                "echo '${\"${\"}HOME}' && echo ${parameters.env}",
                Is(json!("echo '${HOME}' && echo prod")),
            ),
            ("${\"${\"}", Is(json!("${"))),
            ("${trigger.parameters.missing}", Is(json!(null))),
            (
                "${trigger.parameters.missing.length()}",
                Fails("cannot call method 'length' on null"),
            ),
            (
                "${#stage('Deploy to Staging').status}",
                Fails("no stage named 'Deploy to Staging'"),
            ),
            (
                "${trigger.parameters.replicas > 2}",
                Fails("cannot compare the string '3' with the number 2"),
            ),
        ],
    );
}

#[test]
fn whole_stage_context_evaluation() {
    let root = pipeline_root();
    let ctx = EvalContext::new(&root, &FakeHost);
    let context = json!({
        "account": "${parameters.env == 'prod' ? 'prod-k8s' : 'staging-k8s'}",
        "manifests": [{
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "checkout", "annotations": {"commit": "${scmInfo.sha1}"}},
            "spec": {
                "replicas": "${#toInt(parameters.replicas)}",
                "template": {"spec": {"containers": [{
                    "image": "${trigger.artifacts.^[type == 'docker/image'].reference}",
                    "args": ["--region=${parameters.regions.split(',')[0]}", "--env", "${parameters.env}"],
                    "command": ["sh", "-c", "echo ${HOSTNAME}"]
                }]}}
            }
        }],
        "notifications": [{"message": "${#stage('Nope').status}"}]
    });
    let (out, errors) = evaluate_tree(&context, &ctx);
    assert_eq!(out["account"], json!("prod-k8s"));
    let m = &out["manifests"][0];
    assert_eq!(m["metadata"]["annotations"]["commit"], json!("9f2c1e7"));
    assert_eq!(m["spec"]["replicas"], json!(3));
    let c = &m["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], json!("acme/checkout:1.4.2"));
    assert_eq!(c["args"], json!(["--region=us-east-1", "--env", "prod"]));
    assert_eq!(c["command"][2], json!("echo ${HOSTNAME}"));
    let got: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        vec![
            "manifests[0].spec.template.spec.containers[0].command[2]",
            "notifications[0].message"
        ]
    );
    assert!(errors[0].message.contains("unknown name 'HOSTNAME'"));
    assert_eq!(errors[1].expression, "${#stage('Nope').status}");
    assert_eq!(
        run("${#stage('Nope')}", &root).unwrap_err(),
        errors[1].message.replace(".status", "")
    );
}
