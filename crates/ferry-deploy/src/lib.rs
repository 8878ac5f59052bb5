//! Ferry's server-group stage types, written once against `Arc<dyn ferry_provider::Provider>`
//! so that every provider (the embedded host provider, later Kubernetes) gets the same deploy
//! strategies and operations:
//!
//! | stage type | module |
//! |---|---|
//! | `deploy` (strategies none, `highlander`, `redblack`, `rollingredblack`) | [`deploy`] |
//! | `enableServerGroup`, `disableServerGroup`, `resizeServerGroup`, `destroyServerGroup` | [`ops`] |
//! | `rollbackServerGroup` | [`rollback`] |
//! | `scaleDownCluster`, `shrinkCluster` | [`cluster`] |
//! | `setTrafficWeights` | [`traffic`] |
//!
//! [`register`] adds them all to an engine `ferry_engine::Registry`; [`Providers`]
//! is where they find a provider by kind (default `host`) and account (default `local`).
//!
//! # Design
//! - **Targets resolve at run time, once.** `cluster` + `target` (see [`target`]) or an explicit
//!   `serverGroupName` is resolved on the stage's first step and recorded in its context before
//!   anything changes, so a restart acts on the same server group.
//! - **Commit before acting.** Every stage records its phase (`deploy.phase`, `op.phase`) and
//!   what it decided (the created server group, a computed capacity, a plan) and commits it with
//!   a `Running { poll_after: 0 }` step before the next side effect. Provider calls are
//!   idempotent, so repeating the phase after a crash is safe; the one call that is not, create,
//!   is guarded by adoption (see [`deploy`]).
//! - **The serving server group is never taken out first.** Deploys and rollbacks disable an old
//!   server group only after the new one is up; a failed deploy restores weights and removes the
//!   new server group, leaving the old one serving.
//! - **Validation is lenient and complete.** Each stage's configuration reader records every
//!   problem with its path and accepts `${…}` expressions before a run; the same reader runs
//!   strictly on the evaluated context at run time.
//!
//! This crate knows nothing of processes, ports, Kubernetes objects, SQL or HTTP.

pub mod cluster;
pub mod deploy;
pub mod health;
pub mod ops;
pub mod providers;
pub mod rollback;
pub mod spec;
pub mod state;
pub mod target;
pub mod traffic;

pub use providers::{DEFAULT_ACCOUNT, DEFAULT_PROVIDER, Providers, ProvidersError};
pub use target::{ResolveError, Target};

use ferry_engine::{Registry, Typed};

/// Every stage type this crate provides, by type key.
pub const STAGE_TYPES: [&str; 9] = [
    "deploy",
    "disableServerGroup",
    "enableServerGroup",
    "resizeServerGroup",
    "destroyServerGroup",
    "rollbackServerGroup",
    "scaleDownCluster",
    "shrinkCluster",
    "setTrafficWeights",
];

/// Adds every server-group stage type to `registry`, using `providers`.
pub fn register(registry: &mut Registry, providers: Providers) {
    registry
        .register(Typed(deploy::Deploy {
            providers: providers.clone(),
        }))
        .register(Typed(ops::EnableServerGroup {
            providers: providers.clone(),
        }))
        .register(Typed(ops::DisableServerGroup {
            providers: providers.clone(),
        }))
        .register(Typed(ops::ResizeServerGroup {
            providers: providers.clone(),
        }))
        .register(Typed(ops::DestroyServerGroup {
            providers: providers.clone(),
        }))
        .register(Typed(rollback::RollbackServerGroup {
            providers: providers.clone(),
        }))
        .register(Typed(cluster::ScaleDownCluster {
            providers: providers.clone(),
        }))
        .register(Typed(cluster::ShrinkCluster {
            providers: providers.clone(),
        }))
        .register(Typed(traffic::SetTrafficWeights { providers }));
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    #[test]
    fn register_adds_every_stage_type() {
        let mut registry = ferry_engine::Registry::new();
        super::register(&mut registry, super::Providers::new());
        let mut want = super::STAGE_TYPES.to_vec();
        want.sort_unstable();
        assert_eq!(registry.keys(), want);
    }
}
