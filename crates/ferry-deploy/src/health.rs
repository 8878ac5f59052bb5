//! Reading a server group's readiness while a stage waits for it, and describing it in the
//! error a user sees when it never becomes up.

use ferry_provider::{InstanceState, ServerGroup};

/// What a waiting stage makes of a server group's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// At least `desired` instances pass their health check.
    Up,
    /// An instance is crash-looping: waiting longer will not help.
    CrashLooping,
    /// Not up yet.
    Waiting,
}

/// The readiness of `group`.
pub fn readiness(group: &ServerGroup) -> Readiness {
    if group.is_up() {
        Readiness::Up
    } else if group
        .instances
        .iter()
        .any(|i| i.state == InstanceState::CrashLooping)
    {
        Readiness::CrashLooping
    } else {
        Readiness::Waiting
    }
}

fn state_name(s: InstanceState) -> &'static str {
    match s {
        InstanceState::Starting => "STARTING",
        InstanceState::Up => "UP",
        InstanceState::Unhealthy => "UNHEALTHY",
        InstanceState::Restarting => "RESTARTING",
        InstanceState::CrashLooping => "CRASH_LOOPING",
        InstanceState::Stopped => "STOPPED",
    }
}

/// `"0 of 2 instances healthy; shop-prod-v002-0 CRASH_LOOPING after 5 restarts, last exit:
/// exited with status 1; …"` (at most five instances are described).
pub fn describe(group: &ServerGroup) -> String {
    let mut out = format!(
        "{} of {} instances healthy",
        group.healthy(),
        group.capacity.desired
    );
    let not_up: Vec<_> = group
        .instances
        .iter()
        .filter(|i| i.state != InstanceState::Up)
        .collect();
    for i in not_up.iter().take(5) {
        out.push_str(&format!("; {} {}", i.id, state_name(i.state)));
        if i.restarts > 0 {
            out.push_str(&format!(" after {} restarts", i.restarts));
        }
        match &i.last_exit {
            Some(e) => out.push_str(&format!(", last exit: {e}")),
            None => out.push_str(", no exit recorded"),
        }
    }
    if not_up.len() > 5 {
        out.push_str(&format!("; and {} more", not_up.len() - 5));
    }
    out
}
