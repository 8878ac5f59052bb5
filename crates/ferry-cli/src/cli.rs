//! The command line, declared once with clap's derive: every command, flag, environment
//! variable and help text (each command's help ends with examples).

use crate::params::{Param, parse_param};
use crate::render::Output;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use std::path::PathBuf;

/// The default server URL.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8084";
/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8084";

const ROOT_EXAMPLES: &str = "\
Examples:
  ferry server                                   # API on http://127.0.0.1:8084
  ferry apply -f examples/core/                  # applications and pipelines
  ferry run shop release -p version=1.4.2 --wait # run and follow; exit 0 only on SUCCEEDED
  ferry get executions -a shop
  ferry demo                                     # everything above, in one process

The CLI on the server's machine finds the admin token in the data directory by itself.
Elsewhere set FERRY_SERVER and FERRY_TOKEN.";

/// Ferry: continuous delivery in one small binary.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, after_help = ROOT_EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// URL of the Ferry server to talk to.
    #[arg(long, global = true, env = "FERRY_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub server: String,

    /// API token. Default: the local admin token in the data directory (admin.token).
    #[arg(
        long,
        global = true,
        env = "FERRY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Data directory (database, admin token, script work directories).
    /// Default: $XDG_DATA_HOME/ferry, else ~/.local/share/ferry.
    #[arg(long, global = true, env = "FERRY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Write logs (stderr) as JSON lines instead of text. The level comes from RUST_LOG.
    #[arg(long, global = true)]
    pub log_json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Ferry server (API, engine, store).
    #[command(after_help = "\
Examples:
  ferry server
  ferry server --listen 0.0.0.0:8084 --data-dir /var/lib/ferry
  ferry server --database-url postgres://ferry@db:5432/ferry
  ferry server --allow-network 10.0.0.0/8 --allow-url-host config.example.com

Prints one line when ready: `ferry ready on http://ADDR (data: DIR, store: sqlite|postgres)`.
The admin token is created at first start in DIR/admin.token (readable only by its owner).
Stops on Ctrl-C or SIGTERM; running pipelines resume at the next start.")]
    Server(ServerArgs),

    /// Create or update applications and pipelines from YAML or JSON files (all or nothing).
    #[command(after_help = "\
Examples:
  ferry apply -f examples/core/          # every *.yaml, *.yml and *.json file in the directory
  ferry apply -f shop.yaml -f release.json
  cat pipeline.json | ferry apply -f -

A document says what it is with `kind: Application` or `kind: Pipeline`; a Spinnaker pipeline
JSON (with `stages`) is accepted as it is. If any document is invalid nothing is stored and
every problem is printed as FILE: documents[i].path: message.")]
    Apply(FilesArgs),

    /// Check documents offline (no server): prints every problem with its file and path.
    #[command(after_help = "\
Examples:
  ferry validate -f examples/core/
  ferry validate -f my-pipeline.json

Applications that pipelines name are assumed to exist. Exit code 1 if anything is invalid.")]
    Validate(FilesArgs),

    /// List applications, pipelines or executions.
    #[command(after_help = "\
Examples:
  ferry get applications
  ferry get pipelines -a shop -o yaml
  ferry get executions -a shop --status RUNNING,PAUSED --limit 20
  ferry get ex -o json

Resources: applications (app, apps), pipelines (pipeline, pl), executions (execution, ex),
and with -a APP: clusters, servergroups (sg), instances (in), loadbalancers (lb).
Times are UTC.")]
    Get(GetArgs),

    /// Run a pipeline; with --wait, follow it until it ends.
    #[command(after_help = "\
Examples:
  ferry run shop release
  ferry run shop release -p version=1.4.2 -p ferryUrl=http://127.0.0.1:8084 --wait
  ID=$(ferry run shop release)

Prints the execution id. With --wait, prints a line each time a stage changes status and the
outcome at the end; the exit code is 0 only when the execution SUCCEEDED.")]
    Run(RunArgs),

    /// Inspect or act on one execution.
    #[command(
        subcommand,
        after_help = "\
Examples:
  ferry execution get 01HXYZ...
  ferry execution cancel 01HXYZ... --reason \"wrong version\"
  ferry execution pause 01HXYZ...
  ferry execution resume 01HXYZ...
  ferry execution restart-stage 01HXYZ... 3"
    )]
    Execution(ExecutionCommand),

    /// Continue or stop a manual judgment stage.
    #[command(after_help = "\
Examples:
  ferry judge 01HXYZ... 4 --continue
  ferry judge 01HXYZ... \"Approve release\" --continue --input ship
  ferry judge 01HXYZ... 4 --stop

STAGE is the stage's refId, id or name.")]
    Judge(JudgeArgs),

    /// Print the captured output of a server group's instances.
    #[command(after_help = "\
Examples:
  ferry logs shop-prod-kids-v003
  ferry logs shop-prod-kids-v003 --follow --instance shop-prod-kids-v003-0
  ferry logs shop-prod-kids-v003 --account local --tail 50")]
    Logs(LogsArgs),

    /// Resize a server group (waits until it is up at the new size).
    #[command(after_help = "\
Examples:
  ferry scale shop-prod-kids-v003 --desired 5
  ferry scale shop-prod-kids-v003 --desired 5 --no-wait

Runs as an orchestration: an execution that survives a restart of Ferry. Its id is printed;
`ferry execution get ID` shows it.")]
    Scale(ScaleArgs),

    /// Send traffic to a server group (waits until it is up).
    #[command(after_help = "\
Examples:
  ferry enable shop-prod-kids-v002

Runs as an orchestration (an execution; its id is printed).")]
    Enable(OperationArgs),

    /// Take a server group out of traffic (returns once its in-flight requests have drained).
    #[command(after_help = "\
Examples:
  ferry disable shop-prod-kids-v003

Runs as an orchestration (an execution; its id is printed).")]
    Disable(OperationArgs),

    /// Roll a cluster back: enable the server group before this one, then disable this one.
    #[command(after_help = "\
Examples:
  ferry rollback shop-prod-kids-v003
  ferry rollback shop-prod-kids-v003 --no-wait

The previous server group is resized to this one's capacity if it was scaled down, and must
be healthy before this one is disabled; if it never becomes healthy, nothing is disabled.
Runs as an orchestration (an execution; its id is printed), so a restart of Ferry does not
lose it.")]
    Rollback(OperationArgs),

    /// Destroy a server group: stop every instance and forget it.
    #[command(after_help = "\
Examples:
  ferry destroy shop-prod-kids-v001

Runs as an orchestration (an execution; its id is printed).")]
    Destroy(OperationArgs),

    /// Start Ferry in this process, run the example pipeline, and keep serving.
    #[command(after_help = "\
Examples:
  ferry demo                       # judge the manual judgment automatically, then keep serving
  ferry demo --wait-for-judgment   # print the `ferry judge` command and wait for you
  ferry demo --exit                # exit with the pipeline's result instead of serving on

Data goes to <data dir>/demo unless --data-dir is given, so the demo never touches the data of
a real `ferry server`. The examples (application `shop`, pipeline `release`) are built in.")]
    Demo(DemoArgs),

    /// Canary analysis: judge recorded samples offline, or report a canary stage's results.
    #[command(
        subcommand,
        after_help = "Examples:\n  ferry canary judge --config canary.yaml --baseline b.json --canary c.json\n  ferry canary report 01HXYZ..."
    )]
    Canary(CanaryCommand),

    /// Progressive rollouts: status, promote, abort, retry and undo of a `rollout` stage.
    #[command(
        subcommand,
        after_help = "Examples:\n  ferry rollout get 01HXYZ...\n  ferry rollout promote 01HXYZ... --full\n  ferry rollout abort 01HXYZ... --reason \"errors\""
    )]
    Rollout(RolloutCommand),
}

/// Which rollout: an execution and, when it has several rollout stages, which one.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// Execution id.
    pub execution: String,
    /// The rollout stage's refId, id or name (needed only when there are several).
    #[arg(long)]
    pub stage: Option<String>,
}

/// `ferry rollout …`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Status (Progressing, Paused, Healthy, Degraded), step, weights and analysis.
    #[command(
        after_help = "Examples:\n  ferry rollout get 01HXYZ...\n  ferry rollout get 01HXYZ... -o json"
    )]
    Get {
        #[command(flatten)]
        args: RolloutArgs,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Go on to the next step (from a pause or an inconclusive analysis); --full skips every
    /// remaining step and analysis.
    #[command(
        after_help = "Examples:\n  ferry rollout promote 01HXYZ...\n  ferry rollout promote 01HXYZ... --full"
    )]
    Promote {
        #[command(flatten)]
        args: RolloutArgs,
        /// Skip every remaining step.
        #[arg(long)]
        full: bool,
    },
    /// Give the stable version its traffic back and remove the new one (status Degraded).
    #[command(
        after_help = "Examples:\n  ferry rollout abort 01HXYZ... --reason \"errors in the logs\""
    )]
    Abort {
        #[command(flatten)]
        args: RolloutArgs,
        /// Why, recorded with the rollout.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Start an aborted rollout again (restarts the stage).
    #[command(after_help = "Examples:\n  ferry rollout retry 01HXYZ...")]
    Retry {
        #[command(flatten)]
        args: RolloutArgs,
    },
    /// Roll the cluster back from the rollout's server group to the previous one.
    #[command(after_help = "Examples:\n  ferry rollout undo 01HXYZ...")]
    Undo {
        #[command(flatten)]
        args: RolloutArgs,
    },
}

/// `ferry canary …`.
#[derive(Debug, Subcommand)]
pub enum CanaryCommand {
    /// Judge recorded samples with a canary config, on this machine (no server needed).
    #[command(after_help = "\
Examples:
  ferry canary judge --config canary.yaml --baseline baseline.json --canary canary.json
  ferry canary judge --config canary.yaml --baseline b.json --canary c.json -o table

The sample files are JSON (or YAML) objects: metric name → array of numbers (null = NaN), one
file per side. The result has every metric's classification, p-value, Hodges-Lehmann estimate,
98 % confidence interval and effect size, the group scores and the summary score. Use it to
tune a canary config against recorded data before trusting it in a pipeline.")]
    Judge(CanaryJudgeArgs),
    /// Show what the kayentaCanary stages of an execution judged, interval by interval.
    #[command(
        after_help = "Examples:\n  ferry canary report 01HXYZ...\n  ferry canary report 01HXYZ... -o json"
    )]
    Report {
        /// Execution id.
        execution: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// `ferry canary judge`.
#[derive(Debug, Args)]
pub struct CanaryJudgeArgs {
    /// The canary config (Kayenta's document shape; YAML or JSON; `kind` optional).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The baseline's samples: metric name → array of numbers.
    #[arg(long, value_name = "FILE")]
    pub baseline: PathBuf,
    /// The canary's samples: metric name → array of numbers.
    #[arg(long, value_name = "FILE")]
    pub canary: PathBuf,
    /// Score at or above which the result is Pass.
    #[arg(long, default_value_t = 75.0)]
    pub pass: f64,
    /// Score at or above which the result is Marginal (below: Fail).
    #[arg(long, default_value_t = 50.0)]
    pub marginal: f64,
    /// Output format: the full result as JSON (the default) or YAML, or a table.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Json)]
    pub output: Output,
}

/// `ferry server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on; port 0 picks a free port (the ready line tells which).
    #[arg(long, env = "FERRY_LISTEN", default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: String,

    /// Use this database instead of SQLite in the data directory (postgres://… or sqlite://path).
    #[arg(
        long,
        env = "FERRY_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// Let webhooks (and #fromUrl) reach this private network, e.g. 10.0.0.0/8. Repeatable.
    /// Without it only public internet addresses are reachable.
    #[arg(long = "allow-network", value_name = "CIDR")]
    pub allow_networks: Vec<IpNet>,

    /// Let #fromUrl fetch from this host (exact name or *.example.com). Repeatable.
    /// Without it #fromUrl is refused.
    #[arg(long = "allow-url-host", value_name = "HOST")]
    pub allow_url_hosts: Vec<String>,

    /// Largest request body accepted, in bytes (larger gets 413).
    #[arg(long, default_value_t = crate::server::DEFAULT_MAX_BODY_BYTES, value_name = "N")]
    pub max_body_bytes: usize,

    /// A Prometheus server canary configs may query (`query.type: prometheus`), e.g.
    /// http://127.0.0.1:9090. Without it only the load balancer's own metrics (`ferry-lb`) are
    /// available to canary analysis.
    #[arg(long, env = "FERRY_PROMETHEUS_URL", value_name = "URL")]
    pub prometheus_url: Option<String>,

    /// Address the built-in load balancer's listeners bind when a LoadBalancer document gives
    /// none (its listeners may set their own `address`). 0.0.0.0 serves every interface.
    #[arg(
        long,
        env = "FERRY_LB_ADDRESS",
        default_value = "127.0.0.1",
        value_name = "IP"
    )]
    pub lb_address: std::net::IpAddr,
    /// Load balancer worker threads, each serving its share of client connections start to
    /// finish [default: one per CPU].
    #[arg(long, env = "FERRY_LB_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub lb_workers: Option<u16>,
    /// Bind load balancer worker N to the N-th CPU. Steadier tail latency on a machine or CPU set
    /// given to Ferry; leave off where Ferry shares the CPUs with busy instances.
    #[arg(long, env = "FERRY_LB_PIN_WORKERS")]
    pub lb_pin_workers: bool,
}

/// `-f` for `apply` and `validate`.
#[derive(Debug, Args)]
pub struct FilesArgs {
    /// A YAML or JSON file, a directory of them, or - for standard input. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR"
    )]
    pub files: Vec<PathBuf>,
}

/// A server group by name.
#[derive(Debug, Args)]
pub struct ServerGroupArgs {
    /// Server group name, e.g. `shop-prod-kids-v003`.
    pub server_group: String,
    /// Account.
    #[arg(long, default_value = "local")]
    pub account: String,
}

/// A server-group operation (`enable`, `disable`, `rollback`, `destroy`).
#[derive(Debug, Args)]
pub struct OperationArgs {
    #[command(flatten)]
    pub target: ServerGroupArgs,
    /// Print the orchestration's execution id at once instead of waiting for it to end.
    #[arg(long)]
    pub no_wait: bool,
}

/// `ferry scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub operation: OperationArgs,
    /// Instances wanted (min = max = desired).
    #[arg(long)]
    pub desired: u32,
}

/// `ferry logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub target: ServerGroupArgs,
    /// Only this instance.
    #[arg(long)]
    pub instance: Option<String>,
    /// Lines to show.
    #[arg(long, default_value_t = 200)]
    pub tail: usize,
    /// Keep printing new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// What `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    /// Applications.
    #[value(alias = "application", alias = "apps", alias = "app")]
    Applications,
    /// Pipelines (latest versions).
    #[value(alias = "pipeline", alias = "pl")]
    Pipelines,
    /// Executions, newest first.
    #[value(alias = "execution", alias = "ex")]
    Executions,
    /// Clusters of an application (needs -a).
    #[value(alias = "cluster")]
    Clusters,
    /// Server groups of an application (needs -a).
    #[value(alias = "servergroup", alias = "sg")]
    Servergroups,
    /// Instances of an application (needs -a).
    #[value(alias = "instance", alias = "in")]
    Instances,
    /// Load balancers of an application (needs -a).
    #[value(alias = "loadbalancer", alias = "lb")]
    Loadbalancers,
    /// Canary configs (latest versions).
    #[value(alias = "canaryconfig", alias = "cc")]
    Canaryconfigs,
}

/// `ferry get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// applications, pipelines or executions.
    pub resource: Resource,

    /// Only this one (application name, pipeline name or id, execution id).
    pub name: Option<String>,

    /// Only this application's.
    #[arg(short = 'a', long = "application", value_name = "APP")]
    pub application: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Executions only: these statuses, comma-separated (RUNNING, SUCCEEDED, TERMINAL, …).
    #[arg(long, value_name = "S")]
    pub status: Option<String>,

    /// Executions only: at most this many (server default 100).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// `ferry run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Application.
    pub application: String,

    /// Pipeline name.
    pub pipeline: String,

    /// A parameter, key=value. Repeatable.
    #[arg(short = 'p', long = "parameter", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub parameters: Vec<Param>,

    /// Follow the execution until it ends; exit 0 only if it SUCCEEDED.
    #[arg(long)]
    pub wait: bool,

    /// Output format (with --wait, json and yaml print the final execution; progress goes to stderr).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `ferry execution …`.
#[derive(Debug, Subcommand)]
pub enum ExecutionCommand {
    /// Show an execution and its stages.
    #[command(
        after_help = "Examples:\n  ferry execution get 01HXYZ...\n  ferry execution get 01HXYZ... -o json"
    )]
    Get {
        /// Execution id.
        id: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Cancel a running execution (running stages are told to stop).
    #[command(
        after_help = "Examples:\n  ferry execution cancel 01HXYZ... --reason \"wrong version\""
    )]
    Cancel {
        /// Execution id.
        id: String,
        /// Why, recorded on the execution.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Pause a running execution.
    #[command(after_help = "Examples:\n  ferry execution pause 01HXYZ...")]
    Pause {
        /// Execution id.
        id: String,
    },
    /// Resume a paused execution.
    #[command(after_help = "Examples:\n  ferry execution resume 01HXYZ...")]
    Resume {
        /// Execution id.
        id: String,
    },
    /// Restart a stage and everything downstream of it.
    #[command(
        after_help = "Examples:\n  ferry execution restart-stage 01HXYZ... 3\n  ferry execution restart-stage 01HXYZ... Deploy"
    )]
    RestartStage {
        /// Execution id.
        id: String,
        /// The stage's refId, id or name.
        stage: String,
    },
}

/// `ferry judge`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("decision").required(true).args(["proceed", "stop"])))]
pub struct JudgeArgs {
    /// Execution id.
    pub execution: String,

    /// The manual judgment stage: refId, id or name.
    pub stage: String,

    /// Let the pipeline continue.
    #[arg(long = "continue")]
    pub proceed: bool,

    /// Stop the pipeline.
    #[arg(long)]
    pub stop: bool,

    /// The chosen judgment input (one of the stage's judgmentInputs).
    #[arg(long, value_name = "VALUE")]
    pub input: Option<String>,
}

/// `ferry demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: String,

    /// Do not judge the manual judgment automatically: print the command and wait for it.
    #[arg(long)]
    pub wait_for_judgment: bool,

    /// Exit when the pipeline ends (code 0 only if it SUCCEEDED) instead of serving on.
    #[arg(long)]
    pub exit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ferry").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_group_operations_may_skip_the_wait() {
        let Ok(Cli {
            command: Command::Scale(a),
            ..
        }) = parse(&["scale", "shop-prod-v001", "--desired", "3", "--no-wait"])
        else {
            panic!("scale did not parse");
        };
        assert_eq!(
            (
                a.operation.target.server_group.as_str(),
                a.desired,
                a.operation.no_wait
            ),
            ("shop-prod-v001", 3, true)
        );
        let Ok(Cli {
            command: Command::Rollback(a),
            ..
        }) = parse(&["rollback", "shop-prod-v002", "--account", "qa"])
        else {
            panic!("rollback did not parse");
        };
        assert_eq!((a.target.account.as_str(), a.no_wait), ("qa", false));
        // Logs are not an operation.
        assert!(parse(&["logs", "shop-prod-v002", "--no-wait"]).is_err());
    }

    #[test]
    fn run_parameters() {
        let cli = parse(&[
            "run",
            "shop",
            "release",
            "-p",
            "a=1",
            "--parameter",
            "b=x=y",
            "--wait",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(r.parameters.len(), 2);
        assert_eq!(r.parameters[1].value, "x=y");
        assert!(r.wait);
        let err = parse(&["run", "shop", "release", "-p", "novalue"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("expected key=value"), "{err}");
    }

    #[test]
    fn get_aliases_and_flags() {
        for (word, want) in [
            ("apps", Resource::Applications),
            ("application", Resource::Applications),
            ("pl", Resource::Pipelines),
            ("pipeline", Resource::Pipelines),
            ("ex", Resource::Executions),
            ("executions", Resource::Executions),
        ] {
            let cli = parse(&["get", word]).unwrap();
            let Command::Get(g) = cli.command else {
                panic!("not get")
            };
            assert_eq!(g.resource, want, "{word}");
        }
        let cli = parse(&[
            "get", "ex", "-a", "shop", "-o", "yaml", "--status", "RUNNING", "--limit", "5",
        ])
        .unwrap();
        let Command::Get(g) = cli.command else {
            panic!("not get")
        };
        assert_eq!(
            (g.application.as_deref(), g.output, g.limit),
            (Some("shop"), Output::Yaml, Some(5))
        );
        assert!(parse(&["get", "widgets"]).is_err());
        assert!(parse(&["get", "ex", "-o", "xml"]).is_err());
    }

    #[test]
    fn judge_needs_exactly_one_decision() {
        assert!(parse(&["judge", "e", "4"]).is_err());
        assert!(parse(&["judge", "e", "4", "--continue", "--stop"]).is_err());
        let cli = parse(&["judge", "e", "4", "--continue", "--input", "ship"]).unwrap();
        let Command::Judge(j) = cli.command else {
            panic!("not judge")
        };
        assert!(j.proceed && !j.stop);
        assert_eq!(j.input.as_deref(), Some("ship"));
    }

    #[test]
    fn global_flags_go_anywhere_and_server_flags_parse() {
        let cli = parse(&[
            "server",
            "--data-dir",
            "/d",
            "--allow-network",
            "127.0.0.0/8",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(cli.data_dir.as_deref(), Some(std::path::Path::new("/d")));
        let Command::Server(s) = cli.command else {
            panic!("not server")
        };
        assert_eq!(
            s.allow_networks,
            vec!["127.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            s.lb_address,
            std::net::IpAddr::from([127, 0, 0, 1]),
            "default"
        );
        assert!(parse(&["server", "--allow-network", "not-a-cidr"]).is_err());
        let Command::Server(s) = parse(&["server", "--lb-address", "0.0.0.0"])
            .unwrap()
            .command
        else {
            panic!("not server")
        };
        assert_eq!(s.lb_address, std::net::IpAddr::from([0, 0, 0, 0]));
        assert!(parse(&["server", "--lb-address", "localhost"]).is_err());
        let Command::Server(s) = parse(&["server", "--lb-workers", "3", "--lb-pin-workers"])
            .unwrap()
            .command
        else {
            panic!("not server")
        };
        assert_eq!((s.lb_workers, s.lb_pin_workers), (Some(3), true));
        assert!(parse(&["server", "--lb-workers", "0"]).is_err());
        assert!(parse(&["apply"]).is_err(), "-f is required");
    }

    #[test]
    fn every_command_has_examples() {
        let mut cmd = Cli::command();
        for sub in cmd.get_subcommands_mut() {
            let help = sub.render_long_help().to_string();
            assert!(
                help.contains("Examples:"),
                "{} lacks examples",
                sub.get_name()
            );
            let parent = sub.get_name().to_string();
            for s in sub.get_subcommands_mut().filter(|s| s.get_name() != "help") {
                let h = s.render_long_help().to_string();
                assert!(
                    h.contains("Examples:"),
                    "{parent} {} lacks examples",
                    s.get_name()
                );
            }
        }
    }
}
