//! Dynamic targets (`current_asg_dynamic`, `ancestor_asg_dynamic`, `oldest_asg_dynamic`,
//! `largest_asg_dynamic`) and their resolution against the server groups of one cluster, plus
//! the run-time lookup every server-group stage starts with.
//!
//! Resolution, over the cluster's server groups ordered oldest first:
//! - `current_asg_dynamic`: the newest **enabled** server group;
//! - `ancestor_asg_dynamic`: the newest server group older than the current one (enabled or not);
//! - `oldest_asg_dynamic`: the oldest server group;
//! - `largest_asg_dynamic`: the one with the most desired instances (the newer on a tie).

use crate::providers::{Providers, ProvidersError};
use crate::spec::{Location, ServerGroupRef, TargetRef};
use ferry_provider::{Provider, ProviderError, ServerGroup};
use std::sync::Arc;

/// A dynamic target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `current_asg_dynamic`.
    Current,
    /// `ancestor_asg_dynamic`.
    Ancestor,
    /// `oldest_asg_dynamic`.
    Oldest,
    /// `largest_asg_dynamic`.
    Largest,
}

const TARGETS: [(&str, Target); 4] = [
    ("current_asg_dynamic", Target::Current),
    ("ancestor_asg_dynamic", Target::Ancestor),
    ("oldest_asg_dynamic", Target::Oldest),
    ("largest_asg_dynamic", Target::Largest),
];

impl Target {
    /// Parses a target keyword.
    pub fn parse(s: &str) -> Option<Target> {
        TARGETS.iter().find(|(n, _)| *n == s).map(|(_, t)| *t)
    }

    /// The keyword.
    pub fn as_str(self) -> &'static str {
        TARGETS
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("current_asg_dynamic")
    }

    /// Every keyword, comma-separated (for messages).
    pub fn names() -> String {
        TARGETS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a target could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The cluster has no server groups.
    #[error("cluster {cluster} has no server groups")]
    EmptyCluster {
        /// The cluster.
        cluster: String,
    },
    /// No server group of the cluster is enabled, so there is no current one.
    #[error("cluster {cluster} has no enabled server group, so {target} resolves to nothing")]
    NoEnabled {
        /// The cluster.
        cluster: String,
        /// The target asked for.
        target: &'static str,
    },
    /// The current server group is the oldest.
    #[error("cluster {cluster} has no server group older than the current one, {current}")]
    NoAncestor {
        /// The cluster.
        cluster: String,
        /// The current server group.
        current: String,
    },
    /// An explicit server group does not exist.
    #[error("server group {name} does not exist in account {account}")]
    NotFound {
        /// Its name.
        name: String,
        /// The account.
        account: String,
    },
    /// The provider or account is not configured.
    #[error(transparent)]
    Providers(#[from] ProvidersError),
    /// The provider failed to answer.
    #[error("provider error: {0}")]
    Provider(#[from] ProviderError),
}

/// Resolves `target` among `groups` (one cluster, oldest first).
pub fn resolve<'a>(
    cluster: &str,
    groups: &'a [ServerGroup],
    target: Target,
) -> Result<&'a ServerGroup, ResolveError> {
    if groups.is_empty() {
        return Err(ResolveError::EmptyCluster {
            cluster: cluster.into(),
        });
    }
    let current = || {
        groups
            .iter()
            .rposition(|g| g.enabled)
            .ok_or(ResolveError::NoEnabled {
                cluster: cluster.into(),
                target: target.as_str(),
            })
    };
    match target {
        Target::Current => current().map(|i| &groups[i]),
        Target::Ancestor => {
            let i = current()?;
            if i == 0 {
                Err(ResolveError::NoAncestor {
                    cluster: cluster.into(),
                    current: groups[i].name.clone(),
                })
            } else {
                Ok(&groups[i - 1])
            }
        }
        Target::Oldest => Ok(&groups[0]),
        Target::Largest => groups
            .iter()
            .enumerate()
            .max_by_key(|(i, g)| (g.capacity.desired, *i))
            .map(|(_, g)| g)
            .ok_or(ResolveError::EmptyCluster {
                cluster: cluster.into(),
            }),
    }
}

/// The application a cluster belongs to: the one given, else the execution's when the cluster
/// is named after it (application names may contain `-`), else the cluster's first segment.
pub fn application_of(given: Option<&str>, cluster: &str, execution_app: &str) -> String {
    if let Some(a) = given.filter(|a| !a.is_empty()) {
        return a.to_string();
    }
    if cluster == execution_app || cluster.starts_with(&format!("{execution_app}-")) {
        return execution_app.to_string();
    }
    cluster.split('-').next().unwrap_or(cluster).to_string()
}

/// The server groups of `cluster` in `account`, oldest first.
pub async fn cluster_groups(
    provider: &dyn Provider,
    application: &str,
    account: &str,
    cluster: &str,
) -> Result<Vec<ServerGroup>, ProviderError> {
    let mut groups: Vec<ServerGroup> = provider
        .server_groups(application)
        .await?
        .into_iter()
        .filter(|g| g.account == account && g.cluster() == cluster)
        .collect();
    // Providers list oldest first already; a stable sort by creation keeps that order and
    // guards against a provider that lists clusters interleaved differently.
    groups.sort_by_key(|g| (g.created_at, g.sequence()));
    Ok(groups)
}

/// A resolved server group with the provider it lives in.
pub struct Resolved {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// The server group as the provider reported it.
    pub group: ServerGroup,
    /// Every server group of its cluster, oldest first.
    pub cluster: Vec<ServerGroup>,
}

/// Looks a provider up for `location`.
pub fn provider_for(
    providers: &Providers,
    location: &Location,
) -> Result<Arc<dyn Provider>, ResolveError> {
    Ok(providers.get(location.provider.as_deref(), &location.account)?)
}

/// Resolves a stage's server group reference at run time.
pub async fn resolve_ref(
    providers: &Providers,
    r: &ServerGroupRef,
    execution_app: &str,
) -> Result<Resolved, ResolveError> {
    let provider = provider_for(providers, &r.location)?;
    let app = application_of(r.application.as_deref(), &r.cluster, execution_app);
    let groups = cluster_groups(provider.as_ref(), &app, &r.location.account, &r.cluster).await?;
    let group = match &r.target {
        TargetRef::Named(name) => groups
            .iter()
            .find(|g| &g.name == name)
            .cloned()
            .ok_or_else(|| ResolveError::NotFound {
                name: name.clone(),
                account: r.location.account.clone(),
            })?,
        TargetRef::Dynamic(t) => resolve(&r.cluster, &groups, *t)?.clone(),
    };
    Ok(Resolved {
        provider,
        group,
        cluster: groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_provider::{Artifact, ArtifactSource, Capacity, HealthCheck, Moniker};

    fn group(seq: u32, enabled: bool, desired: u32) -> ServerGroup {
        let m = Moniker::cluster("shop", Some("prod"), None).unwrap();
        ServerGroup {
            name: m.server_group_name(seq),
            account: "local".into(),
            provider: "fake".into(),
            moniker: m.with_sequence(seq),
            capacity: Capacity::fixed(desired),
            artifact: Artifact {
                name: "shop".into(),
                version: seq.to_string(),
                source: ArtifactSource::Command {
                    command: vec!["shop".into()],
                },
                env: Default::default(),
            },
            health_check: HealthCheck::default(),
            load_balancers: vec![],
            enabled,
            weight: 100,
            created_at: i64::from(seq),
            deployed_by: "t".into(),
            execution_id: None,
            instances: vec![],
        }
    }

    #[test]
    fn target_resolution_table() {
        // (cluster as (sequence, enabled, desired), target, expected server group or error)
        type Row = (
            &'static [(u32, bool, u32)],
            Target,
            Result<u32, &'static str>,
        );
        let table: &[Row] = &[
            (&[(0, false, 2), (1, true, 2)], Target::Current, Ok(1)),
            (&[(0, false, 2), (1, true, 2)], Target::Ancestor, Ok(0)),
            (&[(0, false, 2), (1, true, 2)], Target::Oldest, Ok(0)),
            // The newest is disabled (a failed or staged deploy): current is the newest enabled.
            (
                &[(0, true, 2), (1, true, 2), (2, false, 2)],
                Target::Current,
                Ok(1),
            ),
            (
                &[(0, true, 2), (1, true, 2), (2, false, 2)],
                Target::Ancestor,
                Ok(0),
            ),
            (
                &[(0, true, 2), (1, true, 2), (2, false, 2)],
                Target::Oldest,
                Ok(0),
            ),
            (
                &[(0, true, 3), (1, true, 2), (2, false, 3)],
                Target::Largest,
                Ok(2),
            ),
            (&[(4, true, 1)], Target::Current, Ok(4)),
            (&[(4, true, 1)], Target::Oldest, Ok(4)),
            (
                &[(4, true, 1)],
                Target::Ancestor,
                Err("no server group older than the current one, shop-prod-v004"),
            ),
            (
                &[(0, false, 1), (1, false, 1)],
                Target::Current,
                Err("has no enabled server group"),
            ),
            (
                &[(0, false, 1), (1, false, 1)],
                Target::Ancestor,
                Err("has no enabled server group"),
            ),
            (&[], Target::Oldest, Err("has no server groups")),
            (&[], Target::Current, Err("has no server groups")),
        ];
        for (groups, target, want) in table {
            let groups: Vec<ServerGroup> =
                groups.iter().map(|(s, e, d)| group(*s, *e, *d)).collect();
            let got = resolve("shop-prod", &groups, *target)
                .map(|g| g.sequence())
                .map_err(|e| e.to_string());
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{target:?} over {groups:?}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{target:?}: {g} lacks {w}"),
                _ => panic!("{target:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn keywords_round_trip() {
        for (name, t) in TARGETS {
            assert_eq!(Target::parse(name), Some(t));
            assert_eq!(t.as_str(), name);
        }
        assert_eq!(Target::parse("current_asg"), None);
    }

    #[test]
    fn application_of_a_cluster() {
        assert_eq!(application_of(None, "shop-prod", "shop"), "shop");
        assert_eq!(application_of(None, "my-shop-prod", "my-shop"), "my-shop");
        assert_eq!(application_of(None, "other-prod", "shop"), "other");
        assert_eq!(application_of(Some("x"), "other-prod", "shop"), "x");
    }
}
