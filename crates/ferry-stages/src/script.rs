//! `script`: runs a program as an argument vector (never through a shell) in a per-execution
//! working directory, and turns `key=value` lines of its standard output into stage outputs.
//!
//! # No shell
//! `command` is a list: the first item is the program (looked up on `PATH`), the others are its
//! arguments, handed to the program exactly as they are: no splitting, globbing, quoting or
//! variable expansion. A single string is refused rather than split. Expressions in the items
//! and in `env` values are evaluated by the engine when the stage starts, each item on its own
//! (users write `["deploy", "--tag", "${parameters.tag}"]`); the evaluated text becomes one
//! argument (or one variable value) and is never parsed again, so a value such as
//! `$(touch /tmp/x)` or `; rm -rf /` stays inert text. Someone who wants a shell names it
//! (`["sh", "-c", "..."]`) and owns the quoting; Ferry never adds one.
//!
//! # Environment and directory
//! Ferry's own environment (database URLs, credentials) is not inherited. The program sees
//! `PATH` (Ferry's), `HOME` (the execution directory) and the stage's `env`. It runs in
//! `<work_dir>/<execution id>/<workingDirectory>`; `workingDirectory` must be relative and may
//! not contain `..`, and a path that leads outside through a symbolic link (made by an earlier
//! stage) is refused before anything is created or run.
//!
//! # Process lifetime
//! The program gets its own process group, standard input from `/dev/null`, and its standard
//! output and error are read concurrently (the last [`TAIL_BYTES`] of each are kept). When it
//! exits, times out (`timeoutSeconds`) or the stage is canceled, the whole group gets SIGTERM
//! and, after [`KILL_GRACE`], SIGKILL, so background children do not outlive the stage. The same
//! happens when the step is dropped (the engine aborts a canceled step).
//!
//! # Durability
//! Scripts are not idempotent. The first step records `script.startedAt` and returns
//! `Running { poll_after: ZERO }`, so the marker is committed before the program starts; the
//! program then runs to completion inside the next step (its output can only be read by this
//! process). After a Ferry restart, a stage whose marker is present without `script.exitCode`
//! fails with [`INTERRUPTED`] unless it sets `rerunOnRestart: true`.

use async_trait::async_trait;
use ferry_core::fields::{Fields, kind};
use ferry_core::now_millis;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Map, Value, json};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::task::AbortOnDropHandle;

/// How much of the end of stdout and of stderr is kept in the context.
pub const TAIL_BYTES: usize = 64 * 1024;
/// Time between SIGTERM and SIGKILL for the process group.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Most `key=value` outputs taken from one run.
pub const MAX_PROPERTIES: usize = 1000;
/// Default `timeoutSeconds`.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 3600;
/// The failure after a restart interrupted a script (without `rerunOnRestart`).
pub const INTERRUPTED: &str = "the script was interrupted by a Ferry restart and was not re-run (scripts are not idempotent; restart the stage to run it again)";

/// Longest stdout line considered for `key=value` outputs.
const MAX_LINE: usize = TAIL_BYTES;
/// Lines of stderr quoted in a failure message.
const STDERR_LINES_IN_ERROR: usize = 20;
/// Where the stage state lives in the context.
const STATE_KEY: &str = "script";

/// The `script` stage.
pub struct Script {
    /// Root of the per-execution working directories.
    pub work_dir: PathBuf,
}

/// The `script` stage's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptConfig {
    /// `command`: the program, then its arguments.
    pub command: Vec<String>,
    /// `env`: extra environment variables.
    pub env: Vec<(String, String)>,
    /// `workingDirectory`, relative to the execution directory (checked: no `..`, not absolute).
    pub working_directory: Option<PathBuf>,
    /// `timeoutSeconds`, default one hour.
    pub timeout: Duration,
    /// `rerunOnRestart`: run the script again when a restart interrupted it.
    pub rerun_on_restart: bool,
}

#[async_trait]
impl TypedStage for Script {
    type Config = ScriptConfig;
    const TYPE: &'static str = "script";
    const TASK: &'static str = "runScriptTask";

    fn config(f: &mut Fields<'_>) -> Option<ScriptConfig> {
        let before = f.problems.len();
        let mut deferred = false;
        let command = read_command(f, &mut deferred);
        let env = read_env(f, &mut deferred);
        let working_directory = read_working_directory(f, &mut deferred);
        let timeout = match f.opt_u64("timeoutSeconds") {
            Some(0) => {
                f.problem("timeoutSeconds", "must be at least 1");
                None
            }
            Some(s) => Some(Duration::from_secs(s)),
            None => {
                deferred |= f.is_lenient() && f.get("timeoutSeconds").is_some();
                Some(Duration::from_secs(DEFAULT_TIMEOUT_SECONDS))
            }
        };
        let rerun_on_restart = f.bool_or("rerunOnRestart", false);
        if deferred || f.problems.len() > before {
            return None;
        }
        Some(ScriptConfig {
            command: command?,
            env,
            working_directory,
            timeout: timeout?,
            rerun_on_restart,
        })
    }

    async fn step(&self, c: &ScriptConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let mut state = ctx
            .context
            .get(STATE_KEY)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(code) = state.get("exitCode").and_then(Value::as_i64) {
            // Already finished (a step result that was re-delivered): report it again.
            return Ok(outcome(code, &state));
        }
        if !state.contains_key("startedAt") {
            state.insert("startedAt".into(), json!(now_millis()));
            ctx.context.insert(STATE_KEY.into(), Value::Object(state));
            return Ok(Step::Running {
                poll_after: Duration::ZERO,
            });
        }
        if ctx.recovered {
            if !c.rerun_on_restart {
                return Ok(Step::Failed {
                    error: INTERRUPTED.into(),
                });
            }
            let reruns = state.get("reruns").and_then(Value::as_u64).unwrap_or(0) + 1;
            state.insert("reruns".into(), json!(reruns));
            state.insert("startedAt".into(), json!(now_millis()));
        }
        let step = self.run(c, ctx, &mut state).await;
        ctx.context.insert(STATE_KEY.into(), Value::Object(state));
        step
    }
}

impl Script {
    /// Prepares the directory, runs the program to completion and records the result.
    async fn run(
        &self,
        c: &ScriptConfig,
        ctx: &mut StageCtx,
        state: &mut Map<String, Value>,
    ) -> Result<Step, StageError> {
        let home = self.work_dir.join(directory_name(&ctx.execution.id));
        let relative = c.working_directory.clone().unwrap_or_default();
        let dirs = tokio::task::spawn_blocking(move || {
            prepare_directory(&home, &relative).map(|d| (home, d))
        })
        .await
        .map_err(|e| StageError::Fatal(format!("could not prepare the working directory: {e}")))?;
        let (home, dir) = match dirs {
            Ok(d) => d,
            Err(error) => return Ok(Step::Failed { error }),
        };
        let program = c.command[0].clone();
        let finished = match run_process(c, &dir, &home, &ctx.cancel).await {
            Ok(f) => f,
            Err(RunError::Spawn(e)) => {
                return Ok(Step::Failed {
                    error: format!("could not start `{program}`: {e}"),
                });
            }
            Err(RunError::Canceled) => {
                return Err(StageError::Fatal("the script was canceled".into()));
            }
        };
        state.insert("stdout".into(), Value::String(finished.stdout.tail_text()));
        state.insert("stderr".into(), Value::String(finished.stderr.tail_text()));
        if finished.stdout.total > TAIL_BYTES as u64 {
            state.insert("stdoutBytes".into(), json!(finished.stdout.total));
        }
        if finished.stderr.total > TAIL_BYTES as u64 {
            state.insert("stderrBytes".into(), json!(finished.stderr.total));
        }
        if finished.timed_out {
            state.insert("timedOut".into(), Value::Bool(true));
            return Ok(Step::Failed {
                error: format!(
                    "the script timed out after {} s and was killed{}",
                    c.timeout.as_secs(),
                    stderr_excerpt(&state_text(state, "stderr"))
                ),
            });
        }
        let (code, signal) = finished.exit;
        state.insert("exitCode".into(), json!(code));
        if let Some(sig) = signal {
            state.insert("signal".into(), json!(sig));
        }
        if code == 0 {
            for (k, v) in finished.stdout.properties {
                ctx.outputs.insert(k, Value::String(v));
            }
        }
        Ok(outcome(i64::from(code), state))
    }
}

/// The step for a recorded exit code.
fn outcome(code: i64, state: &Map<String, Value>) -> Step {
    if code == 0 {
        return Step::Succeeded;
    }
    let how = match state.get("signal").and_then(Value::as_i64) {
        Some(sig) => format!("was killed by signal {sig}"),
        None => format!("exited with code {code}"),
    };
    Step::Failed {
        error: format!(
            "the script {how}{}",
            stderr_excerpt(&state_text(state, "stderr"))
        ),
    }
}

fn state_text(state: &Map<String, Value>, key: &str) -> String {
    state
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The last lines of stderr, for a failure message.
fn stderr_excerpt(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let from = lines.len().saturating_sub(STDERR_LINES_IN_ERROR);
    format!("; last lines of stderr:\n{}", lines[from..].join("\n"))
}

/// A directory name for an execution id (ids are UUIDs; anything else is made safe).
fn directory_name(id: &str) -> String {
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() { "_".into() } else { name }
}

/// Creates the execution directory and the working directory under it, one component at a
/// time, refusing any component that leads outside (a symbolic link to elsewhere). Returns the
/// working directory's real path.
fn prepare_directory(home: &Path, relative: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(home)
        .map_err(|e| format!("could not create the execution directory: {e}"))?;
    let root = home
        .canonicalize()
        .map_err(|e| format!("could not resolve the execution directory: {e}"))?;
    let mut dir = root.clone();
    for component in relative.components() {
        let name = match component {
            Component::CurDir => continue,
            Component::Normal(name) => name,
            _ => return Err("workingDirectory must be a relative path without `..`".into()),
        };
        let next = dir.join(name);
        match std::fs::symlink_metadata(&next) {
            Ok(_) => {
                let real = next
                    .canonicalize()
                    .map_err(|e| format!("workingDirectory could not be resolved: {e}"))?;
                if !real.starts_with(&root) {
                    return Err(format!(
                        "workingDirectory \"{}\" leads outside the execution's directory (through a symbolic link); refusing to run there",
                        relative.display()
                    ));
                }
                if !real.is_dir() {
                    return Err(format!(
                        "workingDirectory \"{}\" is not a directory",
                        relative.display()
                    ));
                }
                dir = real;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&next)
                    .map_err(|e| format!("could not create the working directory: {e}"))?;
                dir = next;
            }
            Err(e) => return Err(format!("workingDirectory could not be checked: {e}")),
        }
    }
    Ok(dir)
}

/// Why a run produced no result.
#[derive(Debug)]
enum RunError {
    /// The program could not be started.
    Spawn(String),
    /// The stage was canceled; the process group was told to stop.
    Canceled,
}

/// What a run produced.
struct Finished {
    /// Exit code (128 + signal when killed) and the signal, if any.
    exit: (i32, Option<i32>),
    timed_out: bool,
    stdout: Captured,
    stderr: Captured,
}

/// Runs the program; see the module docs for the process rules.
async fn run_process(
    c: &ScriptConfig,
    dir: &Path,
    home: &Path,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Finished, RunError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut command = tokio::process::Command::new(&c.command[0]);
    command
        .args(&c.command[1..])
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| RunError::Spawn(e.to_string()))?;
    // From here on, dropping `group` (a canceled, aborted step) stops every process of the run.
    let mut group = ProcessGroup(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );
    let stdout = AbortOnDropHandle::new(tokio::spawn(capture(child.stdout.take(), true)));
    let stderr = AbortOnDropHandle::new(tokio::spawn(capture(child.stderr.take(), false)));

    let mut timed_out = false;
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        _ = cancel.cancelled() => {
            group.terminate();
            return Err(RunError::Canceled);
        }
        _ = tokio::time::sleep(c.timeout) => {
            timed_out = true;
            group.terminate();
            tokio::time::timeout(KILL_GRACE + Duration::from_secs(1), child.wait()).await.ok().and_then(Result::ok)
        }
    };
    // Whatever the program left running in its group goes too; the pipes then close.
    group.terminate();
    let drain = KILL_GRACE + Duration::from_secs(2);
    let stdout = tokio::time::timeout(drain, stdout)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let stderr = tokio::time::timeout(drain, stderr)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Ok(Finished {
        exit: exit_of(status),
        timed_out,
        stdout,
        stderr,
    })
}

fn exit_of(status: Option<std::process::ExitStatus>) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            (None, None) => (-1, None),
        },
        None => (-1, None),
    }
}

/// A process group that is terminated when this value is dropped or told to.
struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    /// SIGTERM to the whole group now, SIGKILL after [`KILL_GRACE`] to whatever is left.
    /// Only the first call acts.
    fn terminate(&mut self) {
        let Some(pgid) = self.0.take() else { return };
        if killpg(pgid, Signal::SIGTERM).is_err() {
            return; // nothing left in the group
        }
        // A plain thread: this also runs from `Drop`, where nothing can be awaited.
        let spawned = std::thread::Builder::new()
            .name("ferry-script-kill".into())
            .spawn(move || {
                let deadline = std::time::Instant::now() + KILL_GRACE;
                while std::time::Instant::now() < deadline {
                    if killpg(pgid, None).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = killpg(pgid, Signal::SIGKILL);
            });
        if spawned.is_err() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// What was read from one stream.
#[derive(Default)]
struct Captured {
    /// The last [`TAIL_BYTES`] bytes.
    tail: Vec<u8>,
    /// Bytes read in all.
    total: u64,
    /// `key=value` lines, in order (stdout only).
    properties: Vec<(String, String)>,
}

impl Captured {
    fn tail_text(&self) -> String {
        String::from_utf8_lossy(&self.tail).into_owned()
    }

    fn line(&mut self, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            return;
        };
        if let Some((k, v)) = parse_property(text) {
            if let Some(existing) = self.properties.iter_mut().find(|(ek, _)| ek == k) {
                existing.1 = v.to_string();
            } else if self.properties.len() < MAX_PROPERTIES {
                self.properties.push((k.to_string(), v.to_string()));
            }
        }
    }
}

/// Reads a stream to its end, keeping its tail and (for stdout) its `key=value` lines.
async fn capture<R: AsyncRead + Unpin>(stream: Option<R>, properties: bool) -> Captured {
    let mut out = Captured::default();
    let Some(mut stream) = stream else { return out };
    let mut buf = vec![0u8; 16 * 1024];
    let mut line = Vec::new();
    let mut line_too_long = false;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        out.total += n as u64;
        out.tail.extend_from_slice(chunk);
        if out.tail.len() > 2 * TAIL_BYTES {
            let cut = out.tail.len() - TAIL_BYTES;
            out.tail.drain(..cut);
        }
        if properties {
            for &b in chunk {
                if b == b'\n' {
                    if !line_too_long {
                        out.line(&line);
                    }
                    line.clear();
                    line_too_long = false;
                } else if line.len() < MAX_LINE {
                    line.push(b);
                } else {
                    line_too_long = true;
                }
            }
        }
    }
    if properties && !line.is_empty() && !line_too_long {
        out.line(&line);
    }
    if out.tail.len() > TAIL_BYTES {
        let cut = out.tail.len() - TAIL_BYTES;
        out.tail.drain(..cut);
    }
    out
}

/// A `key=value` output line: the key matches `[A-Za-z_][A-Za-z0-9_.-]*`, the value is the rest
/// of the line (a trailing `\r` removed).
pub fn parse_property(line: &str) -> Option<(&str, &str)> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (key, value) = line.split_once('=')?;
    let mut chars = key.chars();
    let first = chars.next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return None;
    }
    Some((key, value))
}

// ----- configuration readers -----

fn read_command(f: &mut Fields<'_>, deferred: &mut bool) -> Option<Vec<String>> {
    const KEY: &str = "command";
    match f.get(KEY) {
        None => {
            f.problem(KEY, "is required: a list whose first item is the program and the rest its arguments, e.g. [\"make\", \"test\"]");
            None
        }
        Some(Value::String(_)) if f.is_deferred(KEY) => {
            *deferred = true;
            None
        }
        Some(Value::String(_)) => {
            f.problem(
                KEY,
                "must be a list of arguments such as [\"make\", \"test\"], not a single string: Ferry never runs a shell and does not split a string into arguments",
            );
            None
        }
        Some(Value::Array(items)) if items.is_empty() => {
            f.problem(
                KEY,
                "must not be empty: the first item is the program to run",
            );
            None
        }
        Some(Value::Array(_)) => {
            let before = f.problems.len();
            let list = f.string_list(KEY);
            for (i, item) in list.iter().enumerate() {
                if item.contains('\0') {
                    f.problem(&format!("{KEY}[{i}]"), "must not contain a NUL character");
                }
            }
            if list.first().is_some_and(|p| p.trim().is_empty()) {
                f.problem(&format!("{KEY}[0]"), "the program must not be empty");
            }
            (f.problems.len() == before).then_some(list)
        }
        Some(other) => {
            let msg = format!("must be a list of strings, found {}", kind(other));
            f.problem(KEY, msg);
            None
        }
    }
}

fn read_env(f: &mut Fields<'_>, deferred: &mut bool) -> Vec<(String, String)> {
    const KEY: &str = "env";
    if f.is_deferred(KEY) {
        *deferred = true;
        return Vec::new();
    }
    let Some(map) = f.opt_object(KEY) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let path = format!("{KEY}.{name}");
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            f.problem(
                &path,
                "is not a valid environment variable name (empty, or holds `=` or NUL)",
            );
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            other => {
                f.problem(&path, format!("must be a string, found {}", kind(other)));
                continue;
            }
        };
        if text.contains('\0') {
            f.problem(&path, "must not contain a NUL character");
            continue;
        }
        out.push((name.clone(), text));
    }
    out
}

fn read_working_directory(f: &mut Fields<'_>, deferred: &mut bool) -> Option<PathBuf> {
    const KEY: &str = "workingDirectory";
    if f.is_deferred(KEY) {
        *deferred = true;
        return None;
    }
    let raw = f.opt_str(KEY)?;
    if raw.trim().is_empty() {
        return None;
    }
    match check_relative(&raw) {
        Ok(p) => Some(p),
        Err(e) => {
            f.problem(KEY, e);
            None
        }
    }
}

/// Checks that a working directory stays inside the execution directory (by its text; symbolic
/// links are checked when the directory is prepared).
pub fn check_relative(raw: &str) -> Result<PathBuf, String> {
    if raw.contains('\0') {
        return Err("must not contain a NUL character".into());
    }
    let path = Path::new(raw);
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "must not contain `..` (found \"{raw}\"): the working directory stays inside the execution's directory"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "must be relative to the execution's directory, not an absolute path (found \"{raw}\")"
                ));
            }
        }
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
// Tests may unwrap (house rule 2); the crate has no clippy.toml saying so yet.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil;
    use crate::testutil::finished;
    use ferry_core::{Execution, Status};
    use ferry_engine::conformance::{Case, run, wait_for};
    use ferry_engine::{Command, Engine, EngineConfig, EngineHandle, RunRequest};
    use std::sync::Arc;

    async fn engine(work: &Path) -> (EngineHandle, tempfile::TempDir) {
        let (store, guard) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(work));
        let (engine, _join) = Engine::start(store, registry, EngineConfig::default())
            .await
            .unwrap();
        (engine, guard)
    }

    async fn start_stages(engine: &EngineHandle, name: &str, stages: Vec<Value>) -> String {
        let doc = json!({"application": "scripts", "name": name, "stages": stages});
        testutil::run_doc(engine, doc, "tester").await
    }

    async fn start(engine: &EngineHandle, name: &str, stage: Value) -> String {
        let mut stage = stage;
        stage["refId"] = json!("1");
        stage["type"] = json!("script");
        start_stages(engine, name, vec![stage]).await
    }

    fn error_of(e: &Execution, i: usize) -> String {
        crate::testutil::error_at(e, i)
    }

    #[tokio::test]
    async fn script_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _g) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(dir.path()));
        run(
            registry,
            store,
            Case {
                succeeds: json!({"type": "script", "command": ["echo", "version=1.2.3"]}),
                // Long enough for the cancel and timeout checks; re-run (and finished) after the
                // simulated crash because it opts in to being run again.
                long_running: json!({"type": "script", "command": ["sleep", "3"], "rerunOnRestart": true}),
                completing_input: None,
                invalid: vec![
                    (json!({"type": "script"}), "stages[0].command"),
                    (json!({"type": "script", "command": "make test"}), "stages[0].command"),
                    (json!({"type": "script", "command": []}), "stages[0].command"),
                    (json!({"type": "script", "command": ["echo", {"a": 1}]}), "stages[0].command[1]"),
                    (json!({"type": "script", "command": ["ls"], "workingDirectory": "/etc"}), "stages[0].workingDirectory"),
                    (json!({"type": "script", "command": ["ls"], "workingDirectory": "build/../../etc"}), "stages[0].workingDirectory"),
                    (json!({"type": "script", "command": ["ls"], "env": {"A": ["x"]}}), "stages[0].env.A"),
                    (json!({"type": "script", "command": ["ls"], "env": {"A=B": "x"}}), "stages[0].env.A=B"),
                    (json!({"type": "script", "command": ["ls"], "timeoutSeconds": 0}), "stages[0].timeoutSeconds"),
                ],
            },
        )
        .await
        .unwrap();
    }

    #[test]
    fn a_single_string_is_refused_with_a_hint() {
        let value = json!({"command": "make test && deploy"});
        let mut problems = Vec::new();
        assert!(Script::config(&mut Fields::new(&value, "stages[0]", &mut problems)).is_none());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "stages[0].command");
        assert!(
            problems[0].message.contains("list of arguments")
                && problems[0].message.contains("never runs a shell")
        );
        // Expressions are accepted before evaluation, in the list and as the whole field.
        for v in [
            json!({"command": ["deploy", "${parameters.tag}"]}),
            json!({"command": "${parameters.cmd}"}),
        ] {
            let mut problems = Vec::new();
            let _ = Script::config(&mut Fields::lenient(&v, "stages[0]", &mut problems));
            assert!(problems.is_empty(), "{problems:?}");
        }
    }

    #[tokio::test]
    async fn key_value_lines_become_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        let id = start(
            &engine,
            "props",
            json!({"command": ["printf", "version=1.2.3\nnot a property\nimage.tag=abc=def\n9lives=no\nlast=no-newline"]}),
        )
        .await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e, 0));
        let outputs = &e.stages[0].outputs;
        assert_eq!(outputs["version"], json!("1.2.3"));
        assert_eq!(outputs["image.tag"], json!("abc=def"));
        assert_eq!(outputs["last"], json!("no-newline"));
        assert!(!outputs.contains_key("9lives"));
        assert_eq!(outputs.len(), 3, "{outputs:?}");
        let state = &e.stages[0].context["script"];
        assert_eq!(state["exitCode"], json!(0));
        assert!(
            state["stdout"]
                .as_str()
                .unwrap()
                .starts_with("version=1.2.3\nnot a property")
        );
        assert!(state["startedAt"].as_i64().is_some());
        engine.shutdown();
    }

    #[test]
    fn property_lines() {
        assert_eq!(parse_property("a=b"), Some(("a", "b")));
        assert_eq!(parse_property("_a.b-c=x=y\r"), Some(("_a.b-c", "x=y")));
        assert_eq!(parse_property("A="), Some(("A", "")));
        assert_eq!(parse_property("=x"), None);
        assert_eq!(parse_property("1a=x"), None);
        assert_eq!(parse_property("a b=x"), None);
        assert_eq!(parse_property("no equals"), None);
    }

    #[tokio::test]
    async fn a_non_zero_exit_fails_with_the_end_of_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        let id = start(
            &engine,
            "fails",
            json!({"command": ["sh", "-c", "echo partial=1; echo first problem >&2; echo disk is full >&2; exit 3"]}),
        )
        .await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Terminal);
        let error = error_of(&e, 0);
        assert!(error.contains("exited with code 3"), "{error}");
        assert!(error.contains("first problem\ndisk is full"), "{error}");
        assert_eq!(e.stages[0].context["script"]["exitCode"], json!(3));
        assert!(
            e.stages[0].outputs.is_empty(),
            "a failed script publishes no outputs"
        );
        engine.shutdown();
    }

    /// Live (not zombie) processes whose process group is `pgid`, from `/proc`.
    fn live_members(pgid: i32) -> Vec<i32> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.len() > 2
                && fields[2] == pgid.to_string()
                && fields[0] != "Z"
                && fields[0] != "X"
            {
                out.push(pid);
            }
        }
        out
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        let id = start(
            &engine,
            "cancel",
            json!({"command": ["sh", "-c", "echo $$ > pgid; sleep 60 & sleep 60"]}),
        )
        .await;
        let pgid_file = dir.path().join(directory_name(&id)).join("pgid");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let pgid = loop {
            if let Some(p) = std::fs::read_to_string(&pgid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                break p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the script never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Both sleeps (the background one and the foreground one) are in the group.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while live_members(pgid).len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "expected two processes in group {pgid}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        engine
            .command(
                &id,
                Command::Cancel {
                    user: "me".into(),
                    reason: None,
                },
            )
            .await
            .unwrap();
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Canceled);
        let deadline = std::time::Instant::now() + KILL_GRACE + Duration::from_secs(3);
        loop {
            let left = live_members(pgid);
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "processes {left:?} of group {pgid} survived the cancel"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(killpg(Pid::from_raw(pgid), None).is_err() || live_members(pgid).is_empty());
        engine.shutdown();
    }

    #[tokio::test]
    async fn shell_metacharacters_are_passed_literally() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        let marker = dir.path().join("pwned");
        let evil = format!(
            "$(touch {m}); rm -rf {m}.d `touch {m}` && touch {m} | touch {m} > {m}",
            m = marker.display()
        );
        // The value arrives through an expression, as a user's parameter would.
        let doc = json!({
            "application": "scripts", "name": "literal",
            "parameterConfig": [{"name": "tag", "default": evil}],
            "stages": [{"refId": "1", "type": "script", "command": ["printf", "%s", "${parameters.tag}"]}],
        });
        let p = ferry_engine::validate_pipeline(&doc, engine.registry()).unwrap();
        let record = engine.store().save_pipeline(&p, "tester").await.unwrap();
        let id = engine
            .run_pipeline(&record, RunRequest::default())
            .await
            .unwrap();
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e, 0));
        assert_eq!(e.stages[0].context["script"]["stdout"], json!(evil));
        assert!(!marker.exists(), "a shell ran the argument");
        engine.shutdown();
    }

    #[tokio::test]
    async fn env_reaches_the_process_and_ferrys_environment_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        let id = start(
            &engine,
            "env",
            json!({"command": ["env"], "env": {"GREETING": "hello world", "COUNT": 3}}),
        )
        .await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e, 0));
        let stdout = e.stages[0].context["script"]["stdout"]
            .as_str()
            .unwrap()
            .to_string();
        let mut names: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["COUNT", "GREETING", "HOME", "PATH"], "{stdout}");
        assert!(stdout.contains("GREETING=hello world\n"));
        assert!(stdout.contains("COUNT=3\n"));
        // `env` prints every variable as key=value, so they are outputs too.
        assert_eq!(e.stages[0].outputs["GREETING"], json!("hello world"));
        engine.shutdown();
    }

    #[tokio::test]
    async fn the_working_directory_stays_inside_the_execution_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        let id = start_stages(
            &engine,
            "dirs",
            vec![
                json!({"refId": "1", "type": "script", "command": ["pwd"], "workingDirectory": "build/out"}),
                // A symbolic link made by one stage cannot take the next one outside.
                json!({"refId": "2", "requisiteStageRefIds": ["1"], "type": "script", "command": ["ln", "-s", "/", "escape"]}),
                json!({"refId": "3", "requisiteStageRefIds": ["2"], "type": "script", "command": ["touch", "x"], "workingDirectory": "escape/tmp/ferry-escape"}),
            ],
        )
        .await;
        let e = finished(&engine, &id).await;
        let home = dir.path().join(directory_name(&id)).canonicalize().unwrap();
        assert_eq!(e.stages[0].status, Status::Succeeded, "{}", error_of(&e, 0));
        let pwd = e.stages[0].context["script"]["stdout"]
            .as_str()
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(PathBuf::from(pwd), home.join("build/out"));
        assert_eq!(e.stages[1].status, Status::Succeeded, "{}", error_of(&e, 1));
        assert_eq!(e.stages[2].status, Status::Terminal);
        assert!(
            error_of(&e, 2).contains("leads outside the execution's directory"),
            "{}",
            error_of(&e, 2)
        );
        assert!(
            !Path::new("/tmp/ferry-escape").exists(),
            "a directory was created outside"
        );
        assert!(check_relative("a/./b").is_ok());
        assert!(check_relative("/abs").is_err());
        assert!(check_relative("a/../b").is_err());
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_timeout_kills_the_script() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        let began = std::time::Instant::now();
        let id = start(
            &engine,
            "timeout",
            json!({"command": ["sh", "-c", "echo started >&2; sleep 60"], "timeoutSeconds": 1}),
        )
        .await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Terminal);
        let error = error_of(&e, 0);
        assert!(
            error.contains("timed out after 1 s") && error.contains("started"),
            "{error}"
        );
        assert!(began.elapsed() < Duration::from_secs(15));
        engine.shutdown();
    }

    /// Steps a script stage directly, as the engine would right after a restart.
    async fn recovered_step(
        engine: &EngineHandle,
        work: &Path,
        stage: Value,
    ) -> (Step, Map<String, Value>) {
        let doc = json!({"application": "scripts", "name": "scratch", "stages": [{"refId": "1", "type": "wait", "waitTime": 3600}]});
        let p = ferry_engine::validate_pipeline(&doc, engine.registry()).unwrap();
        let record = engine.store().save_pipeline(&p, "tester").await.unwrap();
        let id = engine
            .run_pipeline(&record, RunRequest::default())
            .await
            .unwrap();
        let execution = wait_for(engine, &id, Duration::from_secs(5), "running", |e| {
            e.stages[0].status == Status::Running
        })
        .await
        .unwrap();
        let mut context = stage.as_object().unwrap().clone();
        context.insert("script".into(), json!({"startedAt": 1}));
        let value = Value::Object(context.clone());
        let mut problems = Vec::new();
        let config = Script::config(&mut Fields::new(&value, "", &mut problems)).unwrap();
        let mut ctx = StageCtx {
            execution: Arc::new(execution),
            stage_index: 0,
            context,
            outputs: Map::new(),
            recovered: true,
            cancel: tokio_util::sync::CancellationToken::new(),
            engine: engine.clone(),
        };
        let script = Script {
            work_dir: work.to_path_buf(),
        };
        let step = script.step(&config, &mut ctx).await.unwrap();
        (step, ctx.context)
    }

    #[tokio::test]
    async fn an_interrupted_script_is_not_rerun_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        let (step, context) =
            recovered_step(&engine, dir.path(), json!({"command": ["touch", "ran"]})).await;
        assert_eq!(
            step,
            Step::Failed {
                error: INTERRUPTED.into()
            }
        );
        assert!(context["script"].get("exitCode").is_none());
        let ran = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|d| d.path().join("ran").exists());
        assert!(!ran, "the script was run again");

        let (step, context) = recovered_step(
            &engine,
            dir.path(),
            json!({"command": ["echo", "again=yes"], "rerunOnRestart": true}),
        )
        .await;
        assert_eq!(step, Step::Succeeded);
        assert_eq!(context["script"]["exitCode"], json!(0));
        assert_eq!(context["script"]["reruns"], json!(1));
        engine.shutdown();
    }
}
