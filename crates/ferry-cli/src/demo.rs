//! `ferry demo`: the README's first command. Starts the server in this process (the same wiring
//! as `ferry server`: SQLite, the host provider and its load balancer, with loopback allowed for
//! webhooks so the example can smoke-test itself), applies the example shopping app
//! (`examples/shop/deploy/`, embedded in the binary), runs its `deliver` pipeline (build and
//! test, deploy to QA, smoke test, manual judgment, red/black to production behind the load
//! balancer) and follows it like `ferry run --wait`, judging automatically unless told to wait
//! for a person. Then it asks the shop through the load balancer, prints where the app and Ferry
//! are, and serves on until Ctrl-C (or, with `--exit`, destroys what it deployed and exits with
//! the pipeline's result).

use crate::cli::DemoArgs;
use crate::client::{ApiClient, TokenSource};
use crate::commands::{self, OnJudgment};
use crate::error::CliError;
use crate::files::{self, SourceText};
use crate::follow::Sink;
use crate::server::{self, RunningServer, ServerOptions};
use crate::{Globals, say};
use serde_json::{Map, Value};

/// The example documents, as shipped in `examples/shop/deploy/`.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "examples/shop/deploy/shop.yaml",
        include_str!("../../../examples/shop/deploy/shop.yaml"),
    ),
    (
        "examples/shop/deploy/deliver.json",
        include_str!("../../../examples/shop/deploy/deliver.json"),
    ),
];

/// The example application and pipeline.
pub const EXAMPLE_APPLICATION: &str = "shop";
/// The example pipeline.
pub const EXAMPLE_PIPELINE: &str = "deliver";
/// Where the example's production load balancer listens.
pub const SHOP_URL: &str = "http://127.0.0.1:8090";

/// The `shop-service` executable: built by the workspace next to `ferry`.
fn shop_binary() -> Result<std::path::PathBuf, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot find this executable: {e}")))?;
    let bin = exe.with_file_name("shop-service");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(CliError::Failed(format!(
            "the example service is missing at {}: build the whole workspace (`cargo build --release`), which builds it next to ferry",
            bin.display()
        )))
    }
}

/// The embedded examples as sources.
pub fn example_sources() -> Vec<SourceText> {
    EXAMPLES
        .iter()
        .map(|(name, text)| SourceText {
            name: name.to_string(),
            text: text.to_string(),
        })
        .collect()
}

/// `ferry demo`.
pub async fn run(args: &DemoArgs, globals: &Globals) -> Result<(), CliError> {
    let data_dir = if globals.data_dir_on_command_line {
        globals.data_dir.clone()
    } else {
        globals.data_dir.join("demo")
    };
    let options = ServerOptions {
        listen: args.listen.clone(),
        data_dir,
        database_url: None,
        // The example's webhook calls this Ferry on loopback.
        allow_networks: ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect(),
        allow_url_hosts: Vec::new(),
        max_body_bytes: server::DEFAULT_MAX_BODY_BYTES,
        prometheus_url: None,
        lb_address: std::net::IpAddr::from([127, 0, 0, 1]),
        lb_workers: None,
        lb_pin_workers: false,
    };
    let server = server::start(&options)
        .await
        .map_err(|e| CliError::Server(e.to_string()))?;
    say(&server.ready_line());

    let outcome = tokio::select! {
        r = drive(&server, args, globals) => Some(r),
        () = server::shutdown_signal() => None,
    };
    let Some(outcome) = outcome else {
        say(
            "interrupted; stopping Ferry (the run resumes at the next start on the same data directory)",
        );
        server
            .stop()
            .await
            .map_err(|e| CliError::Server(e.to_string()))?;
        return Ok(());
    };
    let keep_serving = !args.exit && !matches!(outcome, Err(ref e) if !e.already_reported());
    if keep_serving {
        let mut server = server;
        tokio::select! {
            () = server::shutdown_signal() => {
                say("stopping Ferry");
                server.stop().await.map_err(|e| CliError::Server(e.to_string()))?;
            }
            e = server.wait_for_failure() => return Err(CliError::Server(e.to_string())),
        }
        // Ctrl-C after the demo is a normal end, whatever the pipeline did.
        return Ok(());
    }
    server
        .stop()
        .await
        .map_err(|e| CliError::Server(e.to_string()))?;
    outcome
}

/// Applies the examples, runs the pipeline, follows it and prints where Ferry is.
async fn drive(server: &RunningServer, args: &DemoArgs, globals: &Globals) -> Result<(), CliError> {
    let token = std::fs::read_to_string(&server.token_file).map_err(|source| CliError::Read {
        path: server.token_file.clone(),
        source,
    })?;
    let client = ApiClient::new(
        &server.url(),
        Some(token.trim().to_string()),
        TokenSource::File(server.token_file.clone()),
    )?;

    let batch = files::parse_sources(&example_sources())?;
    for line in commands::apply_batch(&client, &batch).await? {
        say(&line);
    }

    let mut parameters = Map::new();
    parameters.insert(
        "shopBinary".into(),
        Value::String(shop_binary()?.display().to_string()),
    );
    let id =
        commands::start_run(&client, EXAMPLE_APPLICATION, EXAMPLE_PIPELINE, parameters).await?;
    say(&format!(
        "running {EXAMPLE_APPLICATION}/{EXAMPLE_PIPELINE}: execution {id}"
    ));

    let prefix = globals.command_prefix(&server.url(), &server.data_dir);
    let on_judgment = if args.wait_for_judgment {
        OnJudgment::Hint(prefix.clone())
    } else {
        OnJudgment::Continue
    };
    let last = commands::watch(&client, &id, Sink::Stdout, &on_judgment).await?;

    say("");
    for section in ["home", "kids", "mens"] {
        let url = format!("{SHOP_URL}/{section}");
        match fetch(&url).await {
            Ok(body) => say(&format!("{url} answers: {}", body.trim())),
            Err(e) => say(&format!("{url} does not answer: {e}")),
        }
    }
    say(&format!(
        "The shop is at {SHOP_URL}/home, /kids and /mens (QA at http://127.0.0.1:8091)."
    ));
    say(&format!(
        "Ferry is at {} (data: {}).",
        server.url(),
        server.data_dir.display()
    ));
    say("Look around with:");
    say(&format!(
        "  {prefix} get executions -a {EXAMPLE_APPLICATION}"
    ));
    say(&format!("  {prefix} execution get {id}"));
    say(&format!("  {prefix} get clusters -a {EXAMPLE_APPLICATION}"));
    say(&format!(
        "  {prefix} get instances -a {EXAMPLE_APPLICATION}"
    ));
    say(&format!(
        "  {prefix} run {EXAMPLE_APPLICATION} {EXAMPLE_PIPELINE} -p shopBinary=PATH -p version=1.1.0 --wait"
    ));
    if args.exit {
        // Leave nothing running behind a demo that was asked to exit.
        let groups = client
            .get(
                &[
                    "api",
                    "v1",
                    "applications",
                    EXAMPLE_APPLICATION,
                    "serverGroups",
                ],
                &[],
            )
            .await?;
        for g in groups.as_array().cloned().unwrap_or_default() {
            let (Some(account), Some(name)) = (
                g.get("account").and_then(Value::as_str),
                g.get("name").and_then(Value::as_str),
            ) else {
                continue;
            };
            let id =
                commands::start_operation(&client, account, name, "destroy", &Value::Null).await?;
            commands::finish_operation(&client, &id).await?;
        }
    } else {
        say(
            "Press Ctrl-C to stop Ferry (the shop's instances keep running and are re-adopted at the next start; `ferry destroy` removes them).",
        );
    }
    commands::run_result(&last)
}

/// GETs a URL on this machine (the shop through the load balancer) and returns its body.
async fn fetch(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let res = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = res.status();
    let body = res.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_examples_are_valid() {
        let batch = files::parse_sources(&example_sources()).unwrap();
        assert_eq!(commands::validate_batch(&batch).unwrap(), 5);
    }

    /// Every document in `examples/shop/deploy/` (the canary and rollout pipelines, their
    /// canary config and analysis template too) validates offline.
    #[test]
    fn every_shop_example_is_valid() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop/deploy");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let sources: Vec<files::SourceText> = names
            .iter()
            .map(|p| files::SourceText {
                name: p.display().to_string(),
                text: std::fs::read_to_string(p).unwrap(),
            })
            .collect();
        let batch = files::parse_sources(&sources).unwrap();
        assert_eq!(
            commands::validate_batch(&batch).unwrap(),
            batch.documents.len()
        );
        assert!(batch.documents.len() >= 9, "{}", batch.documents.len());
    }
}
