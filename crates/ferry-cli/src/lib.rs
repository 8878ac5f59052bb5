//! The `ferry` command as a library; `main.rs` only maps its result to an exit code.
//!
//! - [`cli`] declares the command line (clap derive).
//! - [`server`] wires the server: store, URL policies, stage registry, engine, token, API.
//!   `ferry server` and `ferry demo` both use it, so the demo runs exactly what a server runs.
//! - [`commands`] are the client commands over [`client::ApiClient`]; [`follow`] follows a run
//!   (server-sent events parsed by [`sse`], polling as a fallback); [`render`] prints tables,
//!   JSON and YAML; [`files`] reads `-f` inputs and maps problems back to their files.
//! - [`demo`] starts the server in-process and runs the built-in example.
//!
//! Errors are one typed enum, [`error::CliError`], whose variants carry their exit code
//! (0 ok, 1 failure, 2 usage, 3 cannot connect).

pub mod canary;
pub mod cli;
pub mod client;
pub mod commands;
pub mod demo;
pub mod error;
pub mod files;
pub mod follow;
pub mod params;
pub mod render;
pub mod rollout;
pub mod server;
pub mod sse;

use crate::cli::{CanaryCommand, Cli, Command};
use crate::client::{ApiClient, resolve_token};
use crate::error::CliError;
use clap::{CommandFactory, FromArgMatches};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes a line to standard output; a closed pipe (`ferry get … | head`) is not an error.
pub fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// The default data directory: `$XDG_DATA_HOME/ferry`, else `$HOME/.local/share/ferry`, else
/// `./ferry-data` when neither is set.
pub fn default_data_dir() -> PathBuf {
    data_dir_from(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

fn data_dir_from(xdg: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> PathBuf {
    if let Some(x) = xdg.filter(|x| Path::new(x).is_absolute()) {
        return PathBuf::from(x).join("ferry");
    }
    if let Some(h) = home.filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/share/ferry");
    }
    PathBuf::from("ferry-data")
}

/// What every command needs from the global flags.
#[derive(Debug, Clone)]
pub struct Globals {
    /// `--server`.
    pub server: String,
    /// `--token` (never printed).
    pub token: Option<String>,
    /// The data directory: `--data-dir`/`FERRY_DATA_DIR`, or the default.
    pub data_dir: PathBuf,
    /// True when `--data-dir` was written on the command line (not from the environment).
    pub data_dir_on_command_line: bool,
}

impl Globals {
    /// A client for `--server` with the resolved token.
    pub fn client(&self) -> Result<ApiClient, CliError> {
        let (token, source) = resolve_token(self.token.as_deref(), &self.data_dir);
        ApiClient::new(&self.server, token, source)
    }

    /// `ferry` plus the flags another `ferry` command, typed in the same environment, needs to
    /// reach `server` with the token of `data_dir` (for printed hints).
    pub fn command_prefix(&self, server: &str, data_dir: &Path) -> String {
        let ambient_server =
            std::env::var("FERRY_SERVER").unwrap_or_else(|_| cli::DEFAULT_SERVER.into());
        let ambient_dir =
            std::env::var_os("FERRY_DATA_DIR").map_or_else(default_data_dir, PathBuf::from);
        let mut s = String::from("ferry");
        if server.trim_end_matches('/') != ambient_server.trim_end_matches('/') {
            s.push_str(&format!(" --server {}", commands::shell_word(server)));
        }
        if self.token.is_none() && data_dir != ambient_dir {
            s.push_str(&format!(
                " --data-dir {}",
                commands::shell_word(&data_dir.display().to_string())
            ));
        }
        s
    }
}

/// Sets up logging to stderr: `RUST_LOG` if set, else `default_level`; JSON lines with
/// `json`.
pub fn init_logging(json: bool, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Parses the command line (exiting with code 2 and clap's message on a usage error, 0 on
/// `--help`) and runs the command.
pub fn main() -> Result<(), CliError> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let data_dir_on_command_line = matches!(
        matches.value_source("data_dir"),
        Some(clap::parser::ValueSource::CommandLine)
    ) || matches.subcommand().is_some_and(|(_, m)| {
        matches!(
            m.value_source("data_dir"),
            Some(clap::parser::ValueSource::CommandLine)
        )
    });
    let globals = Globals {
        server: cli.server.clone(),
        token: cli.token.clone(),
        data_dir: cli.data_dir.clone().unwrap_or_else(default_data_dir),
        data_dir_on_command_line,
    };
    let (level, multi_thread) = match cli.command {
        Command::Server(_) => ("info", true),
        Command::Demo(_) => ("warn", true),
        _ => ("warn", false),
    };
    init_logging(cli.log_json, level);
    let runtime = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(dispatch(cli.command, globals));
    // Do not wait forever for blocking work (a script still running) at exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Runs one command.
pub async fn dispatch(command: Command, globals: Globals) -> Result<(), CliError> {
    match command {
        Command::Server(a) => {
            let options = server::ServerOptions {
                listen: a.listen,
                data_dir: globals.data_dir.clone(),
                database_url: a.database_url,
                allow_networks: a.allow_networks,
                allow_url_hosts: a.allow_url_hosts,
                max_body_bytes: a.max_body_bytes,
                prometheus_url: a.prometheus_url,
                lb_address: a.lb_address,
                lb_workers: a.lb_workers.map(usize::from),
                lb_pin_workers: a.lb_pin_workers,
            };
            server::run(&options)
                .await
                .map_err(|e| CliError::Server(e.to_string()))
        }
        Command::Apply(a) => commands::apply(&globals.client()?, &a).await,
        Command::Validate(a) => commands::validate(&a).await,
        Command::Get(a) => commands::get(&globals.client()?, &a).await,
        Command::Run(a) => {
            let prefix = globals.command_prefix(&globals.server, &globals.data_dir);
            commands::run(&globals.client()?, &a, prefix).await
        }
        Command::Execution(c) => commands::execution(&globals.client()?, &c).await,
        Command::Judge(a) => commands::judge(&globals.client()?, &a).await,
        Command::Logs(a) => commands::logs(&globals.client()?, &a).await,
        Command::Scale(a) => {
            let body = serde_json::json!({"desired": a.desired});
            commands::server_group_action(&globals.client()?, "resize", &a.operation, body).await
        }
        Command::Enable(a) => {
            commands::server_group_action(&globals.client()?, "enable", &a, serde_json::json!({}))
                .await
        }
        Command::Disable(a) => {
            commands::server_group_action(&globals.client()?, "disable", &a, serde_json::json!({}))
                .await
        }
        Command::Rollback(a) => {
            commands::server_group_action(&globals.client()?, "rollback", &a, serde_json::json!({}))
                .await
        }
        Command::Destroy(a) => {
            commands::server_group_action(&globals.client()?, "destroy", &a, serde_json::json!({}))
                .await
        }
        Command::Demo(a) => demo::run(&a, &globals).await,
        Command::Canary(c) => {
            let client = match &c {
                CanaryCommand::Judge(_) => None,
                CanaryCommand::Report { .. } => Some(globals.client()?),
            };
            canary::run(client, &c).await
        }
        Command::Rollout(c) => rollout::run(&globals.client()?, &c).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_defaults() {
        assert_eq!(
            data_dir_from(Some("/x".into()), Some("/h".into())),
            PathBuf::from("/x/ferry")
        );
        assert_eq!(
            data_dir_from(Some("rel".into()), Some("/h".into())),
            PathBuf::from("/h/.local/share/ferry")
        );
        assert_eq!(
            data_dir_from(None, Some("/h".into())),
            PathBuf::from("/h/.local/share/ferry")
        );
        assert_eq!(data_dir_from(None, None), PathBuf::from("ferry-data"));
    }

    #[test]
    fn hint_prefixes_name_only_what_differs() {
        let g = Globals {
            server: cli::DEFAULT_SERVER.into(),
            token: None,
            data_dir: default_data_dir(),
            data_dir_on_command_line: false,
        };
        if std::env::var_os("FERRY_SERVER").is_none()
            && std::env::var_os("FERRY_DATA_DIR").is_none()
        {
            assert_eq!(
                g.command_prefix(cli::DEFAULT_SERVER, &default_data_dir()),
                "ferry"
            );
        }
        assert_eq!(
            g.command_prefix("http://127.0.0.1:9000", Path::new("/tmp/d d")),
            "ferry --server http://127.0.0.1:9000 --data-dir '/tmp/d d'"
        );
    }
}
