//! Instance processes as Linux shows them: identity from `/proc/<pid>/stat` (state, process group,
//! start time), liveness that a recycled pid cannot fool, spawning with the house rules (argument
//! vector, own process group, stdin null, output straight into log files) and stopping a whole
//! process group (SIGTERM, grace, SIGKILL).
//!
//! Reads of `/proc/<pid>/stat` are served from kernel memory and take microseconds, so they are
//! done inline; the scan of every process (to find what is left of a group) runs on the blocking
//! pool.

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// File an instance's standard output goes to, in its directory.
pub(crate) const STDOUT_LOG: &str = "stdout.log";
/// File an instance's standard error goes to, in its directory.
pub(crate) const STDERR_LOG: &str = "stderr.log";

/// How long to wait for a group to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Time between looks while waiting for a process or a group to go.
const POLL: Duration = Duration::from_millis(25);

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub state: char,
    /// Field 5: process group id.
    pub pgrp: i32,
    /// Field 22: start time in clock ticks after boot. With the pid it names one process for the
    /// life of the machine: a recycled pid has a later start time.
    pub start_time: u64,
}

impl ProcStat {
    /// A zombie or dead process is gone for our purposes (only its exit status is left).
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `fields[0]` is field 3.
    let state = fields.first()?.chars().next()?;
    let pgrp = fields.get(5 - 3)?.parse().ok()?;
    let start_time = fields.get(22 - 3)?.parse().ok()?;
    Some(ProcStat {
        state,
        pgrp,
        start_time,
    })
}

/// `/proc/<pid>/stat` of a process, if it exists.
pub(crate) fn read_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| parse_stat(&t))
}

/// Whether the process Ferry recorded (pid and start time) is still running: the pid exists, is
/// not a zombie, and started at the recorded time (so a recycled pid is not mistaken for it).
pub(crate) fn is_alive(pid: i32, start_time: u64) -> bool {
    read_stat(pid).is_some_and(|s| s.is_running() && s.start_time == start_time)
}

/// Processes of group `pgid` that still run (zombies excluded), found by scanning `/proc`.
/// Blocking: call from the blocking pool.
pub(crate) fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| read_stat(*pid).is_some_and(|s| s.pgrp == pgid && s.is_running()))
        .collect()
}

/// Whether anything of group `pgid` still runs.
async fn group_has_members(pgid: i32) -> bool {
    if pgid <= 0 {
        return false;
    }
    // Cheap first: no process at all in the group.
    if killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH) {
        return false;
    }
    // Something is there; zombies (not yet reaped by their parent) do not count.
    tokio::task::spawn_blocking(move || !group_members(pgid).is_empty())
        .await
        .unwrap_or(true)
}

/// Sends `signal` to group `pgid`; false if the group has no process.
fn signal_group(pgid: i32, signal: Signal) -> bool {
    pgid > 0 && killpg(Pid::from_raw(pgid), signal).is_ok()
}

/// How an exit status reads in `Instance::last_exit`.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {} ({sig})", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        (None, None) => "exited (status unknown)".into(),
    }
}

/// What a spawned instance runs with.
#[derive(Debug, Clone)]
pub(crate) struct LaunchSpec {
    /// Program to execute (absolute, or a bare name looked up on `PATH`).
    pub program: PathBuf,
    /// How the user wrote the program, for messages.
    pub program_display: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment: the artifact's variables plus `PORT`, `FERRY_*`, `PATH` and `HOME`.
    pub env: BTreeMap<String, String>,
    /// The instance's directory: working directory and home of its log files.
    pub dir: PathBuf,
}

/// A running instance process.
#[derive(Debug)]
pub(crate) enum Proc {
    /// Spawned by this Ferry: exit is observed (and the child reaped) through the handle.
    Child {
        child: tokio::process::Child,
        pid: i32,
        start_time: Option<u64>,
    },
    /// Found running at start (spawned by an earlier Ferry): not our child, so its exit is
    /// observed by polling `/proc` and its exit status is unknown.
    Adopted { pid: i32, start_time: u64 },
}

impl Proc {
    /// The pid, which is also the process group id (instances lead their own group).
    pub fn pid(&self) -> i32 {
        match self {
            Proc::Child { pid, .. } | Proc::Adopted { pid, .. } => *pid,
        }
    }

    /// The start time from `/proc`, when known.
    pub fn start_time(&self) -> Option<u64> {
        match self {
            Proc::Child { start_time, .. } => *start_time,
            Proc::Adopted { start_time, .. } => Some(*start_time),
        }
    }

    /// Waits for the process to exit and says how. Cancel-safe.
    pub async fn wait(&mut self, poll: Duration) -> String {
        match self {
            Proc::Child { child, .. } => match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("exit status could not be read: {e}"),
            },
            Proc::Adopted { pid, start_time } => {
                while is_alive(*pid, *start_time) {
                    tokio::time::sleep(poll).await;
                }
                "exited (exit status unknown: the process was adopted after a Ferry restart)".into()
            }
        }
    }

    /// Whether the group leader is gone (reaping it when it is our child).
    fn leader_gone(&mut self) -> bool {
        match self {
            Proc::Child { child, .. } => !matches!(child.try_wait(), Ok(None)),
            Proc::Adopted { pid, start_time } => !is_alive(*pid, *start_time),
        }
    }

    /// Waits until the leader and every other process of its group are gone, or `deadline`.
    async fn wait_group_gone(&mut self, deadline: Instant) -> bool {
        let pgid = self.pid();
        loop {
            if self.leader_gone() && !group_has_members(pgid).await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the whole process group: SIGTERM, up to `grace` for it to go, then SIGKILL, and
    /// waits until nothing of the group runs. Returns how the leader ended when known.
    pub async fn terminate(mut self, grace: Duration) -> Option<String> {
        let pgid = self.pid();
        signal_group(pgid, Signal::SIGTERM);
        if !self.wait_group_gone(Instant::now() + grace).await {
            tracing::info!(
                pgid,
                "process group still running after SIGTERM; sending SIGKILL"
            );
            signal_group(pgid, Signal::SIGKILL);
            if !self.wait_group_gone(Instant::now() + KILL_WAIT).await {
                tracing::warn!(pgid, "process group still running after SIGKILL");
            }
        }
        match &mut self {
            Proc::Child { child, .. } => match child.try_wait() {
                Ok(Some(status)) => Some(describe_exit(status)),
                _ => None,
            },
            Proc::Adopted { .. } => None,
        }
    }
}

/// Stops a process group recorded by an earlier Ferry (pid and start time) if it still runs.
pub(crate) async fn terminate_recorded(pid: i32, start_time: u64, grace: Duration) {
    if is_alive(pid, start_time) {
        Proc::Adopted { pid, start_time }.terminate(grace).await;
    }
}

/// Starts the instance: its own process group (so signals to Ferry's group do not reach it and
/// it can be stopped as a whole), standard input from `/dev/null`, standard output and error
/// appended directly to `stdout.log` and `stderr.log` in its directory (files, not pipes: they
/// keep working when Ferry restarts), not killed when the handle is dropped. Never a shell.
pub(crate) fn spawn(spec: &LaunchSpec) -> Result<Proc, String> {
    let open = |name: &str| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.dir.join(name))
            .map_err(|e| format!("cannot open {}: {e}", spec.dir.join(name).display()))
    };
    let stdout = open(STDOUT_LOG)?;
    let stderr = open(STDERR_LOG)?;
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.dir)
        .env_clear()
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(false)
        .process_group(0);
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.program_display))?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .unwrap_or(0);
    let start_time = read_stat(pid).map(|s| s.start_time);
    Ok(Proc::Child {
        child,
        pid,
        start_time,
    })
}

/// `PATH` for instances: Ferry's own, or a usual default.
pub(crate) fn default_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                state: 'S',
                pgrp: 4242,
                start_time: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let pid = std::process::id() as i32;
        let me = read_stat(pid).unwrap();
        assert!(is_alive(pid, me.start_time));
        assert!(!is_alive(pid, me.start_time + 1));
        assert!(!is_alive(i32::MAX, 0));
    }

    #[test]
    fn exits_are_described() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "killed by signal SIGKILL (9)"
        );
    }
}
