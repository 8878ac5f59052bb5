//! One task per instance: starts (or adopts) its process, checks its readiness, restarts it with
//! backoff when it exits, detects crash loops, reads its logs, and on request either stops it
//! (destroy, resize down) or lets go of it (Ferry shutting down; the process keeps serving).
//!
//! # States
//! ```text
//! Starting ──healthy_threshold passes──► Up ──unhealthy_threshold failures──► Unhealthy
//!    │  └──unhealthy_threshold failures──► Unhealthy ──healthy_threshold passes──► Up
//!    └─ process exits (any state) ──► Restarting ──backoff──► Starting
//!       … the Nth restart within the window ──► CrashLooping (until it passes its check)
//! Stop requested (any state) ──► Stopped
//! ```
//! Backoff doubles from `restart_backoff_initial` to `restart_backoff_max`; it starts over after
//! a run that lasted `crash_loop_window`. While crash-looping, restarts continue with the longest
//! backoff. An unhealthy instance is not restarted (readiness, not liveness): it only loses
//! traffic.
//!
//! Every change of the process (started, exited, stopped) is written to the instance's
//! `instance.json`, so a restarted Ferry knows which pid to adopt.

use crate::Supervision;
use crate::health;
use crate::logs::{self, LogRing, TailSpec};
use crate::persist::{self, INSTANCE_FILE, InstanceRecord};
use crate::process::{self, LaunchSpec, Proc};
use ferry_provider::{HealthCheck, InstanceState, LogLine};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first readiness check comes this soon after a start (or the interval, if shorter).
const FIRST_CHECK: Duration = Duration::from_millis(200);

/// What the supervisor is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Keep the instance running.
    Run,
    /// Stop supervising and leave the process running (Ferry is shutting down).
    Detach,
    /// Stop the process group and end.
    Stop,
}

/// How the supervisor begins.
#[derive(Debug, Clone)]
pub(crate) enum Start {
    /// A new instance: start its process.
    Fresh,
    /// A process recorded by an earlier Ferry that still runs: adopt it.
    Adopt { pid: i32, start_time: u64 },
    /// A recorded process that is gone: start it again, counting a restart.
    Restart { reason: String },
}

/// What everyone may read about an instance.
#[derive(Debug, Clone)]
pub(crate) struct InstanceStatus {
    pub state: InstanceState,
    /// Passing its readiness check (and so eligible for traffic).
    pub up: bool,
    pub restarts: u32,
    pub started_at: Option<i64>,
    pub last_exit: Option<String>,
    pub pid: Option<i32>,
}

/// Shared between the supervisor and the provider.
#[derive(Debug)]
pub(crate) struct InstanceShared {
    pub status: Mutex<InstanceStatus>,
    pub ring: Arc<Mutex<LogRing>>,
}

/// What a supervisor needs to know about its instance.
#[derive(Debug, Clone)]
pub(crate) struct InstanceSpec {
    pub id: String,
    pub port: u16,
    pub launch: LaunchSpec,
    pub health: HealthCheck,
}

/// Provider-wide things a supervisor uses.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorCtx {
    pub settings: Supervision,
    /// Notified whenever an instance starts or stops being up (the load balancer is rebuilt).
    pub traffic: Arc<Notify>,
    /// The server group's log followers.
    pub followers: broadcast::Sender<LogLine>,
    /// Log bytes retained per instance.
    pub retention: u64,
}

/// A running supervisor.
#[derive(Debug)]
pub(crate) struct Supervisor {
    pub shared: Arc<InstanceShared>,
    control: watch::Sender<Control>,
    task: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts supervising. `record` is the instance's last record (restarts carry over).
    pub fn start(
        spec: InstanceSpec,
        record: InstanceRecord,
        start: Start,
        ctx: SupervisorCtx,
    ) -> Supervisor {
        let shared = Arc::new(InstanceShared {
            status: Mutex::new(InstanceStatus {
                state: InstanceState::Starting,
                up: false,
                restarts: record.restarts,
                started_at: record.started_at,
                last_exit: record.last_exit.clone(),
                pid: record.pid,
            }),
            ring: Arc::new(Mutex::new(LogRing::default())),
        });
        let (control, control_rx) = watch::channel(Control::Run);
        let task = tokio::spawn(run(spec, shared.clone(), control_rx, ctx, start, record));
        Supervisor {
            shared,
            control,
            task: Some(task),
        }
    }

    /// Asks the supervisor to stop (or detach) and returns the task to await, once. A stop
    /// already asked for is not turned into a detach.
    pub fn request(&mut self, what: Control) -> Option<JoinHandle<()>> {
        self.control.send_if_modified(|current| {
            if *current == Control::Stop || *current == what {
                false
            } else {
                *current = what;
                true
            }
        });
        self.task.take()
    }
}

/// Ends a supervisor task, logging a panic.
pub(crate) async fn join(task: JoinHandle<()>) {
    if let Err(e) = task.await
        && e.is_panic()
    {
        tracing::error!("an instance supervisor panicked: {e}");
    }
}

enum Phase {
    Launch { restart: bool },
    Running { proc: Box<Proc>, since: Instant },
    Backoff(Duration),
}

enum Event {
    Exited(String),
    Control(Control),
}

struct Runner {
    spec: InstanceSpec,
    shared: Arc<InstanceShared>,
    ctx: SupervisorCtx,
    record: InstanceRecord,
    backoff_step: u32,
    restart_times: VecDeque<Instant>,
    crash_looping: bool,
}

async fn run(
    spec: InstanceSpec,
    shared: Arc<InstanceShared>,
    mut control: watch::Receiver<Control>,
    ctx: SupervisorCtx,
    start: Start,
    record: InstanceRecord,
) {
    let tail_cancel = CancellationToken::new();
    // Taken before the process starts (two `stat`s), so none of its output is mistaken for old.
    let fresh_from = matches!(start, Start::Fresh).then(|| logs::lengths(&spec.launch.dir));
    let tail = tokio::spawn(logs::run_tail(
        TailSpec {
            instance: spec.id.clone(),
            dir: spec.launch.dir.clone(),
            retention: ctx.retention,
            poll: ctx.settings.log_poll,
            fresh_from,
        },
        shared.ring.clone(),
        ctx.followers.clone(),
        tail_cancel.clone(),
    ));
    let mut runner = Runner {
        spec,
        shared,
        ctx,
        record,
        backoff_step: 0,
        restart_times: VecDeque::new(),
        crash_looping: false,
    };
    runner.run(&mut control, start).await;
    tail_cancel.cancel();
    let _ = tail.await;
}

impl Runner {
    async fn run(&mut self, control: &mut watch::Receiver<Control>, start: Start) {
        let mut phase = match start {
            Start::Fresh => Phase::Launch { restart: false },
            Start::Adopt { pid, start_time } => {
                self.update(|s| {
                    s.state = InstanceState::Starting;
                    s.pid = Some(pid);
                });
                logs::note(
                    &self.spec.launch.dir,
                    &format!("adopted the running process {pid} after a Ferry restart"),
                )
                .await;
                Phase::Running {
                    proc: Box::new(Proc::Adopted { pid, start_time }),
                    since: Instant::now(),
                }
            }
            Start::Restart { reason } => {
                self.record.last_exit = Some(reason.clone());
                self.update(|s| s.last_exit = Some(reason.clone()));
                logs::note(
                    &self.spec.launch.dir,
                    &format!("{reason}; starting it again"),
                )
                .await;
                Phase::Launch { restart: true }
            }
        };
        loop {
            phase = match phase {
                Phase::Launch { restart } => self.launch(restart).await,
                Phase::Running { mut proc, since } => {
                    match self.watch(&mut proc, control).await {
                        Event::Exited(how) => {
                            self.went_down();
                            let delay = self.next_backoff(since.elapsed());
                            logs::note(
                                &self.spec.launch.dir,
                                &format!("the process {how}; restarting in {delay:?}"),
                            )
                            .await;
                            self.crashed(how, delay).await
                        }
                        Event::Control(Control::Detach) | Event::Control(Control::Run) => {
                            self.persist().await;
                            // Dropping the handle leaves the process running (no kill on drop);
                            // the runtime reaps it if it exits while Ferry still runs.
                            drop(proc);
                            return;
                        }
                        Event::Control(Control::Stop) => {
                            self.went_down();
                            self.update(|s| s.state = InstanceState::Stopped);
                            let how = (*proc).terminate(self.ctx.settings.stop_grace).await;
                            self.stopped(how).await;
                            return;
                        }
                    }
                }
                Phase::Backoff(delay) => {
                    let wake = Instant::now() + delay;
                    let wanted = loop {
                        tokio::select! {
                            () = tokio::time::sleep_until(wake) => break Control::Run,
                            changed = control.changed() => {
                                let wanted = if changed.is_err() { Control::Detach } else { *control.borrow_and_update() };
                                if wanted != Control::Run {
                                    break wanted;
                                }
                            }
                        }
                    };
                    match wanted {
                        Control::Run => Phase::Launch { restart: true },
                        Control::Detach => {
                            self.persist().await;
                            return;
                        }
                        Control::Stop => {
                            self.update(|s| s.state = InstanceState::Stopped);
                            self.stopped(None).await;
                            return;
                        }
                    }
                }
            };
        }
    }

    /// Starts the process.
    async fn launch(&mut self, restart: bool) -> Phase {
        if restart {
            self.count_restart();
        }
        match process::spawn(&self.spec.launch) {
            Ok(proc) => {
                let now = ferry_core::now_millis();
                let state = if self.crash_looping {
                    InstanceState::CrashLooping
                } else {
                    InstanceState::Starting
                };
                self.record.pid = Some(proc.pid());
                self.record.start_time = proc.start_time();
                self.record.started_at = Some(now);
                self.update(|s| {
                    s.state = state;
                    s.pid = Some(proc.pid());
                    s.started_at = Some(now);
                });
                self.persist().await;
                Phase::Running {
                    proc: Box::new(proc),
                    since: Instant::now(),
                }
            }
            Err(why) => {
                let delay = self.next_backoff(Duration::ZERO);
                logs::note(
                    &self.spec.launch.dir,
                    &format!("{why}; trying again in {delay:?}"),
                )
                .await;
                self.crashed(why, delay).await
            }
        }
    }

    /// Runs readiness checks until the process exits or a control request comes.
    async fn watch(&mut self, proc: &mut Proc, control: &mut watch::Receiver<Control>) -> Event {
        let interval = Duration::from_millis(self.spec.health.interval_ms.max(1));
        let timeout = Duration::from_millis(self.spec.health.timeout_ms.max(1));
        let mut next_check = Instant::now() + interval.min(FIRST_CHECK);
        let (mut passes, mut failures) = (0u32, 0u32);
        let poll = self.ctx.settings.liveness_poll;
        let port = self.spec.port;
        let path = self.spec.health.path.clone();
        loop {
            tokio::select! {
                how = proc.wait(poll) => return Event::Exited(how),
                changed = control.changed() => {
                    let wanted = if changed.is_err() { Control::Detach } else { *control.borrow_and_update() };
                    if wanted != Control::Run {
                        return Event::Control(wanted);
                    }
                }
                passed = async {
                    tokio::time::sleep_until(next_check).await;
                    health::probe(port, &path, timeout).await
                } => {
                    next_check += interval;
                    let now = Instant::now();
                    if next_check < now {
                        next_check = now + interval;
                    }
                    self.checked(passed, &mut passes, &mut failures);
                }
            }
        }
    }

    /// Applies one readiness check result.
    fn checked(&mut self, passed: bool, passes: &mut u32, failures: &mut u32) {
        let health = &self.spec.health;
        let mut changed = false;
        let mut status = self.shared.status.lock();
        if passed {
            *passes = passes.saturating_add(1);
            *failures = 0;
            if !status.up && *passes >= health.healthy_threshold {
                status.up = true;
                status.state = InstanceState::Up;
                self.crash_looping = false;
                changed = true;
            }
        } else {
            *failures = failures.saturating_add(1);
            *passes = 0;
            if *failures >= health.unhealthy_threshold {
                if status.up {
                    status.up = false;
                    status.state = InstanceState::Unhealthy;
                    changed = true;
                } else if status.state == InstanceState::Starting {
                    status.state = InstanceState::Unhealthy;
                }
            }
        }
        drop(status);
        if changed {
            self.ctx.traffic.notify_one();
        }
    }

    /// The instance no longer serves: take it out of traffic.
    fn went_down(&self) {
        let was_up = {
            let mut status = self.shared.status.lock();
            std::mem::replace(&mut status.up, false)
        };
        if was_up {
            self.ctx.traffic.notify_one();
        }
    }

    /// Counts a restart and detects a crash loop.
    fn count_restart(&mut self) {
        let now = Instant::now();
        self.record.restarts = self.record.restarts.saturating_add(1);
        let restarts = self.record.restarts;
        self.update(|s| s.restarts = restarts);
        self.restart_times.push_back(now);
        let window = self.ctx.settings.crash_loop_window;
        while self
            .restart_times
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.restart_times.pop_front();
        }
        if self.restart_times.len() >= self.ctx.settings.crash_loop_restarts.max(1) as usize {
            if !self.crash_looping {
                tracing::warn!(instance = %self.spec.id, restarts, "instance is crash-looping");
            }
            self.crash_looping = true;
        }
    }

    /// The delay before the next start, given how long the last run lasted.
    fn next_backoff(&mut self, ran: Duration) -> Duration {
        let s = &self.ctx.settings;
        if ran >= s.crash_loop_window {
            self.backoff_step = 0;
        }
        let delay = if self.crash_looping {
            s.restart_backoff_max
        } else {
            backoff(
                s.restart_backoff_initial,
                s.restart_backoff_max,
                self.backoff_step,
            )
        };
        self.backoff_step = self.backoff_step.saturating_add(1);
        delay
    }

    /// Records an exit (or a failed start) and waits `delay` before the next start.
    async fn crashed(&mut self, how: String, delay: Duration) -> Phase {
        let state = if self.crash_looping {
            InstanceState::CrashLooping
        } else {
            InstanceState::Restarting
        };
        self.record.pid = None;
        self.record.start_time = None;
        self.record.last_exit = Some(how.clone());
        self.update(|s| {
            s.state = state;
            s.up = false;
            s.pid = None;
            s.last_exit = Some(how);
        });
        self.persist().await;
        Phase::Backoff(delay)
    }

    /// Records that the process was stopped on purpose.
    async fn stopped(&mut self, how: Option<String>) {
        let how = how.unwrap_or_else(|| "stopped".into());
        self.record.pid = None;
        self.record.start_time = None;
        self.record.last_exit = Some(how.clone());
        self.update(|s| {
            s.state = InstanceState::Stopped;
            s.up = false;
            s.pid = None;
            s.last_exit = Some(how);
        });
        self.persist().await;
    }

    fn update(&self, f: impl FnOnce(&mut InstanceStatus)) {
        f(&mut self.shared.status.lock());
    }

    /// Writes `instance.json`.
    async fn persist(&self) {
        let path = self.spec.launch.dir.join(INSTANCE_FILE);
        let record = self.record.clone();
        if let Err(e) = persist::run_blocking(move || persist::write_json(&path, &record)).await {
            tracing::error!(instance = %self.spec.id, "cannot record the instance: {e}");
        }
    }
}

/// `initial × 2^step`, at most `max`.
pub(crate) fn backoff(initial: Duration, max: Duration, step: u32) -> Duration {
    let factor = 1u32.checked_shl(step.min(31)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let s = Duration::from_secs;
        let delays: Vec<Duration> = (0..8).map(|n| backoff(s(1), s(30), n)).collect();
        assert_eq!(
            delays,
            vec![s(1), s(2), s(4), s(8), s(16), s(30), s(30), s(30)]
        );
        assert_eq!(backoff(s(1), s(30), 200), s(30));
    }
}
