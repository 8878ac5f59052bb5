//! The client commands: `apply`, `validate`, `get`, `run`, `execution …` and `judge`. Each is a
//! small function over the [`ApiClient`]; what they print is built by [`crate::render`] and
//! [`crate::follow`].

use crate::cli::{ExecutionCommand, FilesArgs, GetArgs, JudgeArgs, Resource, RunArgs};
use crate::client::ApiClient;
use crate::error::{ApiProblem, CliError};
use crate::files::{self, Batch, SourceText};
use crate::follow::{self, ExecutionView, Follower, Sink, StageView};
use crate::render::{self, Output};
use crate::{params, say};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Reads and parses `-f` inputs off the async runtime.
async fn read_batch(files: Vec<PathBuf>) -> Result<Batch, CliError> {
    let sources: Vec<SourceText> = tokio::task::spawn_blocking(move || files::read_inputs(&files))
        .await
        .map_err(|e| CliError::Failed(format!("reading the files failed: {e}")))??;
    files::parse_sources(&sources)
}

/// Sends a batch to `POST /api/v1/apply`; a 422 comes back with every problem located in its
/// file. Returns one line per stored document.
pub async fn apply_batch(client: &ApiClient, batch: &Batch) -> Result<Vec<String>, CliError> {
    let body = json!({"documents": batch.documents});
    let answer = match client.post(&["api", "v1", "apply"], &body).await {
        Ok(v) => v,
        Err(CliError::Api {
            status: 422,
            message,
            problems,
            ..
        }) => {
            return Err(CliError::Invalid {
                summary: message,
                lines: batch.locate_all(&problems),
            });
        }
        Err(e) => return Err(e),
    };
    let applied = answer
        .get("applied")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(applied.iter().map(applied_line).collect())
}

/// `application/shop applied`, `pipeline/shop/release applied (version 3)`.
fn applied_line(d: &Value) -> String {
    let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("?");
    match s("kind") {
        "Application" => format!("application/{} applied", s("name")),
        "Pipeline" => {
            let version = d
                .get("version")
                .and_then(Value::as_i64)
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default();
            format!(
                "pipeline/{}/{} applied{version}",
                s("application"),
                s("name")
            )
        }
        other => format!("{}/{} applied", other.to_ascii_lowercase(), s("name")),
    }
}

/// `ferry apply`.
pub async fn apply(client: &ApiClient, args: &FilesArgs) -> Result<(), CliError> {
    let batch = read_batch(args.files.clone()).await?;
    for line in apply_batch(client, &batch).await? {
        say(&line);
    }
    Ok(())
}

/// A registry of the core and server-group stage types for offline validation (nothing is run, so webhooks get
/// a deny-all policy and scripts a throwaway work directory).
fn offline_registry() -> Result<ferry_engine::Registry, CliError> {
    let http = ferry_http::GuardedClient::new(ferry_http::UrlPolicy::deny_all())
        .map_err(|e| CliError::Failed(format!("cannot set up validation: {e}")))?;
    let mut registry = ferry_stages::core_registry(&ferry_stages::StageServices {
        http,
        notifier: std::sync::Arc::new(ferry_stages::LogNotifier),
        work_dir: std::env::temp_dir(),
    });
    ferry_deploy::register(&mut registry, ferry_deploy::Providers::new());
    ferry_canary::register_for_validation(&mut registry);
    ferry_rollout::register_for_validation(&mut registry);
    Ok(registry)
}

/// Validates a batch offline; applications named by pipelines count as known.
pub fn validate_batch(batch: &Batch) -> Result<usize, CliError> {
    let registry = offline_registry()?;
    match ferry_server::documents::validate_batch(
        &batch.documents,
        &registry,
        &ferry_canary::Sources::offline(),
        &|_| true,
    ) {
        Ok(docs) => Ok(docs.len()),
        Err(problems) => {
            let problems: Vec<ApiProblem> = problems
                .0
                .into_iter()
                .map(|p| ApiProblem {
                    path: p.path,
                    message: p.message,
                })
                .collect();
            Err(CliError::Invalid {
                summary: format!("{} problem(s) found", problems.len()),
                lines: batch.locate_all(&problems),
            })
        }
    }
}

/// `ferry validate` (offline).
pub async fn validate(args: &FilesArgs) -> Result<(), CliError> {
    let batch = read_batch(args.files.clone()).await?;
    let n = tokio::task::spawn_blocking(move || validate_batch(&batch))
        .await
        .map_err(|e| CliError::Failed(format!("validation failed: {e}")))??;
    say(&format!(
        "{n} document{} valid",
        if n == 1 { "" } else { "s" }
    ));
    Ok(())
}

/// `ferry get`.
pub async fn get(client: &ApiClient, args: &GetArgs) -> Result<(), CliError> {
    let app = args.application.clone().unwrap_or_default();
    let (list, name_keys): (Value, &[&str]) = match args.resource {
        Resource::Applications => (
            client.get(&["api", "v1", "applications"], &[]).await?,
            &["name"],
        ),
        Resource::Pipelines => (
            client
                .get(&["api", "v1", "pipelines"], &[("application", app.clone())])
                .await?,
            &["name", "id"],
        ),
        Resource::Executions => {
            let query = [
                ("application", app.clone()),
                ("status", args.status.clone().unwrap_or_default()),
                (
                    "limit",
                    args.limit.map(|l| l.to_string()).unwrap_or_default(),
                ),
            ];
            (
                client.get(&["api", "v1", "executions"], &query).await?,
                &["id"],
            )
        }
        Resource::Canaryconfigs => (
            client.get(&["api", "v1", "canaryConfigs"], &[]).await?,
            &["name"],
        ),
        Resource::Clusters
        | Resource::Servergroups
        | Resource::Instances
        | Resource::Loadbalancers => {
            if app.is_empty() {
                return Err(CliError::Usage(format!(
                    "ferry get {} needs -a APP",
                    resource_word(args.resource)
                )));
            }
            let path = match args.resource {
                Resource::Clusters => "clusters",
                Resource::Servergroups => "serverGroups",
                Resource::Instances => "instances",
                _ => "loadBalancers",
            };
            (
                client
                    .get(&["api", "v1", "applications", &app, path], &[])
                    .await?,
                &["name"],
            )
        }
    };
    let mut items = list.as_array().cloned().unwrap_or_default();
    if args.resource == Resource::Applications && !app.is_empty() {
        items.retain(|a| a.get("name").and_then(Value::as_str) == Some(app.as_str()));
    }
    if let Some(name) = &args.name {
        items.retain(|i| {
            name_keys
                .iter()
                .any(|k| i.get(*k).and_then(Value::as_str) == Some(name.as_str()))
        });
        if items.is_empty() {
            return Err(CliError::Failed(format!(
                "no {} named \"{name}\"",
                resource_word(args.resource)
            )));
        }
    }
    let text = match args.output {
        Output::Table => match args.resource {
            Resource::Applications => render::applications_table(&items),
            Resource::Pipelines => render::pipelines_table(&items),
            Resource::Executions => render::executions_table(&items, render::now_millis()),
            Resource::Clusters => render::clusters_table(&items),
            Resource::Servergroups => render::server_groups_table(&items),
            Resource::Instances => render::instances_table(&items),
            Resource::Loadbalancers => render::load_balancers_table(&items),
            Resource::Canaryconfigs => render::canary_configs_table(&items),
        },
        other => render::structured(other, &Value::Array(items))?,
    };
    say(text.trim_end_matches('\n'));
    Ok(())
}

fn resource_word(r: Resource) -> &'static str {
    match r {
        Resource::Applications => "application",
        Resource::Pipelines => "pipeline",
        Resource::Executions => "execution",
        Resource::Clusters => "cluster",
        Resource::Servergroups => "server group",
        Resource::Instances => "instance",
        Resource::Loadbalancers => "load balancer",
        Resource::Canaryconfigs => "canary config",
    }
}

/// Starts a server-group operation (`POST …/{action}` or `DELETE …` under
/// `/api/v1/serverGroups/{account}/{name}`) with `?wait=false`: the server runs it as an
/// orchestration and answers `202 {id}` at once. Returns the execution id.
pub async fn start_operation(
    client: &ApiClient,
    account: &str,
    server_group: &str,
    action: &str,
    body: &Value,
) -> Result<String, CliError> {
    let mut path = vec!["api", "v1", "serverGroups", account, server_group];
    let (method, body) = if action == "destroy" {
        (reqwest::Method::DELETE, None)
    } else {
        path.push(action);
        (reqwest::Method::POST, Some(body))
    };
    let started = client
        .send(method, &path, &[("wait", "false".to_string())], body)
        .await?;
    started
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| CliError::Failed(format!("the server started no orchestration: {started}")))
}

/// Follows an orchestration until it ends (through the execution's event stream, so a long
/// wait or a restart of the server does not break it). Returns the final execution, or the
/// failed stage's error.
pub async fn finish_operation(client: &ApiClient, id: &str) -> Result<Value, CliError> {
    let mut follower = Follower::new(client, id);
    loop {
        let raw = follower.next().await?;
        let view = ExecutionView::from_json(&raw)?;
        if !view.is_complete() {
            continue;
        }
        if view.status == "SUCCEEDED" {
            return Ok(raw);
        }
        let why = view
            .stages
            .iter()
            .find_map(StageView::error)
            .or(view.cancellation_reason.clone())
            .unwrap_or_else(|| format!("it ended {}", view.status));
        return Err(CliError::Failed(format!("{why} (execution {id})")));
    }
}

/// `ferry scale|enable|disable|rollback|destroy`: each runs as an orchestration on the server.
/// The execution id is printed first; unless `--no-wait`, the command then follows it to its
/// end.
pub async fn server_group_action(
    client: &ApiClient,
    action: &str,
    args: &crate::cli::OperationArgs,
    body: Value,
) -> Result<(), CliError> {
    let target = &args.target;
    let sg = &target.server_group;
    let id = start_operation(client, &target.account, sg, action, &body).await?;
    if args.no_wait {
        say(&format!(
            "servergroup/{sg} {action} started: execution {id} (`ferry execution get {id}` shows it)"
        ));
        return Ok(());
    }
    say(&format!(
        "servergroup/{sg} {action} started: execution {id}"
    ));
    let last = finish_operation(client, &id).await?;
    let done = match action {
        "resize" => "resized",
        "enable" => "enabled",
        "disable" => "disabled (drained)",
        "rollback" => "rolled back",
        _ => "destroyed",
    };
    match last
        .pointer("/stages/0/context/op.restore")
        .and_then(Value::as_str)
    {
        Some(prev) => say(&format!("servergroup/{sg} {done}: {prev} enabled")),
        None => say(&format!("servergroup/{sg} {done}")),
    }
    Ok(())
}

/// `ferry logs`.
pub async fn logs(client: &ApiClient, args: &crate::cli::LogsArgs) -> Result<(), CliError> {
    let path = [
        "api",
        "v1",
        "serverGroups",
        args.target.account.as_str(),
        args.target.server_group.as_str(),
        "logs",
    ];
    let mut query = vec![("tail", args.tail.to_string())];
    if let Some(i) = &args.instance {
        query.push(("instance", i.clone()));
    }
    let mut last_seen: Option<(i64, String)> = None;
    loop {
        let lines = client.get(&path, &query).await?;
        for l in lines.as_array().cloned().unwrap_or_default() {
            let time = l.get("time").and_then(Value::as_i64).unwrap_or(0);
            let key = (time, render::text(&l, "line"));
            if last_seen.as_ref().is_some_and(|seen| &key <= seen) {
                continue;
            }
            say(&format!(
                "{} {} {}",
                render::text(&l, "instance"),
                render::text(&l, "stream"),
                key.1
            ));
            last_seen = Some(key);
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// What to do when a manual judgment starts waiting while following a run.
#[derive(Debug, Clone)]
pub enum OnJudgment {
    /// Print the `ferry judge` command a person should type (with this command prefix, e.g.
    /// `ferry` or `ferry --server … --data-dir …`).
    Hint(String),
    /// Continue it right away, choosing the first judgment input if there are any.
    Continue,
}

/// Follows an execution to its end, printing stage changes and the outcome to `sink`.
/// Returns the final execution (as the API shows it).
pub async fn watch(
    client: &ApiClient,
    id: &str,
    sink: Sink,
    on_judgment: &OnJudgment,
) -> Result<Value, CliError> {
    let mut follower = Follower::new(client, id);
    let mut prev: Option<ExecutionView> = None;
    loop {
        let raw = follower.next().await?;
        let view = ExecutionView::from_json(&raw)?;
        for change in follow::changes(prev.as_ref(), &view, render::now_millis()) {
            sink.line(&change.line());
            if let Some(stage) = view.stages.iter().find(|s| s.ref_id == change.ref_id)
                && stage.awaits_judgment()
            {
                judgment_waits(client, &view, stage, sink, on_judgment).await?;
            }
        }
        if view.is_complete() {
            for line in follow::outcome_lines(&view, render::now_millis()) {
                sink.line(&line);
            }
            return Ok(raw);
        }
        prev = Some(view);
    }
}

async fn judgment_waits(
    client: &ApiClient,
    e: &ExecutionView,
    stage: &StageView,
    sink: Sink,
    on_judgment: &OnJudgment,
) -> Result<(), CliError> {
    let inputs = stage.judgment_inputs();
    match on_judgment {
        OnJudgment::Hint(prefix) => {
            let input = inputs
                .first()
                .map(|i| format!(" --input {}", shell_word(i)))
                .unwrap_or_default();
            let choices = if inputs.len() > 1 {
                format!("; inputs: {}", inputs.join(", "))
            } else {
                String::new()
            };
            sink.line(&format!(
                "           waiting for a judgment; to give it, run:\n             {prefix} judge {} {} --continue{input}\n           (or --stop to stop the pipeline{choices})",
                e.id, stage.ref_id
            ));
        }
        OnJudgment::Continue => {
            let input = inputs.first().cloned();
            post_judgment(client, &e.id, &stage.ref_id, "continue", input.as_deref()).await?;
            let chosen = input
                .map(|i| format!(" with input \"{i}\""))
                .unwrap_or_default();
            sink.line(&format!("           judged continue{chosen} (automatically; --wait-for-judgment to decide yourself)"));
        }
    }
    Ok(())
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/=@+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

async fn post_judgment(
    client: &ApiClient,
    id: &str,
    stage: &str,
    decision: &str,
    input: Option<&str>,
) -> Result<(), CliError> {
    let mut body = json!({"judgmentStatus": decision});
    if let Some(i) = input {
        body["judgmentInput"] = Value::String(i.to_string());
    }
    client
        .post(
            &["api", "v1", "executions", id, "stages", stage, "judgment"],
            &body,
        )
        .await?;
    Ok(())
}

/// Starts a run; returns the execution id.
pub async fn start_run(
    client: &ApiClient,
    app: &str,
    pipeline: &str,
    parameters: serde_json::Map<String, Value>,
) -> Result<String, CliError> {
    let answer = client
        .post(
            &[
                "api",
                "v1",
                "applications",
                app,
                "pipelines",
                pipeline,
                "run",
            ],
            &json!({"parameters": parameters}),
        )
        .await?;
    answer
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            CliError::Failed(format!(
                "the server did not return an execution id: {answer}"
            ))
        })
}

/// Turns a complete execution into the command's result: `Ok` only for SUCCEEDED.
pub fn run_result(execution: &Value) -> Result<(), CliError> {
    let status = execution
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("UNKNOWN");
    if status == "SUCCEEDED" {
        Ok(())
    } else {
        Err(CliError::RunFailed {
            id: execution
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
            status: status.to_string(),
        })
    }
}

/// `ferry run`.
pub async fn run(client: &ApiClient, args: &RunArgs, judge_prefix: String) -> Result<(), CliError> {
    let parameters = params::to_object(&args.parameters).map_err(CliError::Usage)?;
    let id = start_run(client, &args.application, &args.pipeline, parameters).await?;
    if !args.wait {
        match args.output {
            Output::Table => say(&id),
            other => say(render::structured(other, &json!({"id": id}))?.trim_end()),
        }
        return Ok(());
    }
    let sink = if args.output == Output::Table {
        Sink::Stdout
    } else {
        Sink::Stderr
    };
    sink.line(&id);
    let last = watch(client, &id, sink, &OnJudgment::Hint(judge_prefix)).await?;
    if args.output != Output::Table {
        say(render::structured(args.output, &last)?.trim_end());
    }
    run_result(&last)
}

/// Finds a stage of an execution by refId, id or name.
pub fn find_stage<'a>(
    execution: &'a ExecutionView,
    wanted: &str,
) -> Result<&'a StageView, CliError> {
    let stages = &execution.stages;
    let found = stages
        .iter()
        .find(|s| s.ref_id == wanted)
        .or_else(|| {
            stages
                .iter()
                .find(|s| format!("{}-{}", execution.id, s.ref_id) == wanted)
        })
        .or_else(|| stages.iter().find(|s| s.name == wanted))
        .or_else(|| {
            let mut ci = stages
                .iter()
                .filter(|s| s.name.eq_ignore_ascii_case(wanted));
            match (ci.next(), ci.next()) {
                (Some(s), None) => Some(s),
                _ => None,
            }
        });
    found.ok_or_else(|| {
        let list: Vec<String> = stages
            .iter()
            .map(|s| format!("{} \"{}\"", s.ref_id, s.name))
            .collect();
        CliError::Failed(format!(
            "no stage \"{wanted}\" in execution {}; its stages are: {}",
            execution.id,
            list.join(", ")
        ))
    })
}

async fn fetch_execution(client: &ApiClient, id: &str) -> Result<(Value, ExecutionView), CliError> {
    let raw = client.get(&["api", "v1", "executions", id], &[]).await?;
    let view = ExecutionView::from_json(&raw)?;
    Ok((raw, view))
}

/// `ferry execution …`.
pub async fn execution(client: &ApiClient, cmd: &ExecutionCommand) -> Result<(), CliError> {
    match cmd {
        ExecutionCommand::Get { id, output } => {
            let (raw, _) = fetch_execution(client, id).await?;
            let text = match output {
                Output::Table => render::execution_detail(&raw, render::now_millis()),
                other => render::structured(*other, &raw)?,
            };
            say(text.trim_end());
        }
        ExecutionCommand::Cancel { id, reason } => {
            let body = match reason {
                Some(r) => json!({"reason": r}),
                None => json!({}),
            };
            client
                .post(&["api", "v1", "executions", id, "cancel"], &body)
                .await?;
            say(&format!("execution {id}: cancel requested"));
        }
        ExecutionCommand::Pause { id } => {
            client
                .post(&["api", "v1", "executions", id, "pause"], &json!({}))
                .await?;
            say(&format!("execution {id}: pause requested"));
        }
        ExecutionCommand::Resume { id } => {
            client
                .post(&["api", "v1", "executions", id, "resume"], &json!({}))
                .await?;
            say(&format!("execution {id}: resume requested"));
        }
        ExecutionCommand::RestartStage { id, stage } => {
            let (_, view) = fetch_execution(client, id).await?;
            let s = find_stage(&view, stage)?;
            client
                .post(
                    &[
                        "api",
                        "v1",
                        "executions",
                        id,
                        "stages",
                        &s.ref_id,
                        "restart",
                    ],
                    &json!({}),
                )
                .await?;
            say(&format!(
                "execution {id}: stage {} \"{}\" restart requested",
                s.ref_id, s.name
            ));
        }
    }
    Ok(())
}

/// `ferry judge`.
pub async fn judge(client: &ApiClient, args: &JudgeArgs) -> Result<(), CliError> {
    let (_, view) = fetch_execution(client, &args.execution).await?;
    let stage = find_stage(&view, &args.stage)?;
    let decision = if args.proceed { "continue" } else { "stop" };
    post_judgment(
        client,
        &view.id,
        &stage.ref_id,
        decision,
        args.input.as_deref(),
    )
    .await?;
    say(&format!(
        "execution {}: stage {} \"{}\" judged {decision}",
        view.id, stage.ref_id, stage.name
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_lines() {
        assert_eq!(
            applied_line(&json!({"kind": "Application", "name": "shop"})),
            "application/shop applied"
        );
        assert_eq!(
            applied_line(
                &json!({"kind": "Pipeline", "application": "shop", "name": "release", "id": "x", "version": 3})
            ),
            "pipeline/shop/release applied (version 3)"
        );
    }

    #[test]
    fn stages_are_found_by_ref_id_id_or_name() {
        let e = ExecutionView::from_json(&json!({"id": "e1", "stages": [
            {"refId": "1", "name": "Build"}, {"refId": "2", "name": "Approve release"}, {"refId": "3", "name": "1"}]}))
        .unwrap();
        assert_eq!(find_stage(&e, "2").unwrap().name, "Approve release");
        assert_eq!(
            find_stage(&e, "1").unwrap().name,
            "Build",
            "refId wins over a name"
        );
        assert_eq!(find_stage(&e, "e1-2").unwrap().ref_id, "2");
        assert_eq!(find_stage(&e, "Approve release").unwrap().ref_id, "2");
        assert_eq!(find_stage(&e, "approve RELEASE").unwrap().ref_id, "2");
        let err = find_stage(&e, "Deploy").unwrap_err().to_string();
        assert!(
            err.contains("its stages are: 1 \"Build\", 2 \"Approve release\""),
            "{err}"
        );
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("ship"), "ship");
        assert_eq!(shell_word("ship it"), "'ship it'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn only_succeeded_is_success() {
        assert!(run_result(&json!({"id": "e", "status": "SUCCEEDED"})).is_ok());
        for s in ["TERMINAL", "CANCELED", "STOPPED"] {
            let e = run_result(&json!({"id": "e", "status": s})).unwrap_err();
            assert_eq!(e.exit_code(), 1);
            assert!(e.already_reported());
        }
    }

    #[test]
    fn offline_validation_locates_problems() {
        let sources = vec![SourceText {
            name: "bad.yaml".into(),
            text: "kind: Pipeline\napplication: shop\nname: p\nstages:\n  - refId: '1'\n    type: nope\n".into(),
        }];
        let batch = files::parse_sources(&sources).unwrap();
        let err = validate_batch(&batch).unwrap_err().to_string();
        assert!(
            err.contains("bad.yaml: documents[0].stages[0].type: unknown stage type \"nope\""),
            "{err}"
        );
    }
}
