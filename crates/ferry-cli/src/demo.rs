//! `ferry demo`: the README's first command. Starts the server in this process (the same wiring
//! as `ferry server`, with loopback allowed for webhooks so the example can call Ferry itself),
//! applies the built-in examples (`examples/core/`, embedded in the binary), runs the example
//! pipeline and follows it like `ferry run --wait`, judging its manual judgment automatically
//! unless told to wait for a person, prints the outcome and where Ferry is, then serves on until
//! Ctrl-C (or exits with the pipeline's result with `--exit`).

use crate::cli::DemoArgs;
use crate::client::{ApiClient, TokenSource};
use crate::commands::{self, OnJudgment};
use crate::error::CliError;
use crate::files::{self, SourceText};
use crate::follow::Sink;
use crate::server::{self, RunningServer, ServerOptions};
use crate::{Globals, say};
use serde_json::{Map, Value};

/// The example documents, as shipped in `examples/core/`.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "examples/core/shop.yaml",
        include_str!("../../../examples/core/shop.yaml"),
    ),
    (
        "examples/core/release.yaml",
        include_str!("../../../examples/core/release.yaml"),
    ),
];

/// The example application and pipeline.
pub const EXAMPLE_APPLICATION: &str = "shop";
/// The example pipeline.
pub const EXAMPLE_PIPELINE: &str = "release";

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
    parameters.insert("ferryUrl".into(), Value::String(server.url()));
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
    say(&format!(
        "  {prefix} run {EXAMPLE_APPLICATION} {EXAMPLE_PIPELINE} -p ferryUrl={} --wait",
        server.url()
    ));
    if !args.exit {
        say("Press Ctrl-C to stop.");
    }
    commands::run_result(&last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_examples_are_valid() {
        let batch = files::parse_sources(&example_sources()).unwrap();
        assert_eq!(commands::validate_batch(&batch).unwrap(), 2);
    }
}
