//! The DNS resolver of the guarded client: resolves, then drops every address the rules deny.
//!
//! reqwest connects to exactly the addresses this resolver returns, so the addresses that
//! were checked are the addresses that are used: a DNS answer that changes between a check
//! and the connection (DNS rebinding) cannot smuggle in a forbidden address.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::address::is_permitted;
use crate::error::GuardError;

/// The future a [`Lookup`] returns.
pub(crate) type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Turns a host name into addresses. The system resolver in production; tests inject
/// fixed answers to simulate hostile DNS without touching the network.
pub(crate) trait Lookup: Send + Sync {
    fn lookup(&self, host: String) -> LookupFuture;
}

/// The operating system's resolver, through `tokio::net::lookup_host`.
pub(crate) struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> LookupFuture {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A `reqwest` resolver that keeps only addresses the policy permits.
pub(crate) struct GuardedResolver {
    allowed_networks: Arc<[IpNet]>,
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    pub(crate) fn new(allowed_networks: &[IpNet], lookup: Arc<dyn Lookup>) -> Self {
        Self {
            allowed_networks: allowed_networks.into(),
            lookup,
        }
    }

    /// Resolves `host` and filters the answer; the error is what the caller will see.
    pub(crate) async fn resolve_checked(&self, host: String) -> Result<Vec<IpAddr>, GuardError> {
        let answer = self
            .lookup
            .lookup(host.clone())
            .await
            .map_err(|e| GuardError::Dns {
                host: host.clone(),
                reason: e.to_string(),
            })?;
        filter_addresses(&host, answer, &self.allowed_networks)
    }
}

/// Keeps the permitted addresses of a DNS answer, in order. If none is left, the answer is
/// refused: [`GuardError::AddressNotAllowed`] naming the first denied address, or
/// [`GuardError::Dns`] if the answer was empty.
pub(crate) fn filter_addresses(
    host: &str,
    answer: Vec<IpAddr>,
    allowed_networks: &[IpNet],
) -> Result<Vec<IpAddr>, GuardError> {
    let first_denied = answer
        .iter()
        .copied()
        .find(|ip| !is_permitted(*ip, allowed_networks));
    let kept: Vec<IpAddr> = answer
        .into_iter()
        .filter(|ip| is_permitted(*ip, allowed_networks))
        .collect();
    match (kept.is_empty(), first_denied) {
        (false, denied) => {
            if let Some(ip) = denied {
                tracing::warn!(host, %ip, "dropped a forbidden address from a DNS answer");
            }
            Ok(kept)
        }
        (true, Some(ip)) => Err(GuardError::AddressNotAllowed {
            host: host.to_owned(),
            ip,
        }),
        (true, None) => Err(GuardError::Dns {
            host: host.to_owned(),
            reason: "no addresses found".to_owned(),
        }),
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let this = GuardedResolver {
            allowed_networks: Arc::clone(&self.allowed_networks),
            lookup: Arc::clone(&self.lookup),
        };
        Box::pin(async move {
            match this.resolve_checked(host).await {
                // Port 0: reqwest substitutes the URL's port or the scheme's default.
                Ok(ips) => {
                    let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(addrs)
                }
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Fixed DNS answers, for simulating hostile DNS.
    pub(crate) struct FakeLookup(pub HashMap<String, Vec<IpAddr>>);

    impl FakeLookup {
        pub(crate) fn new(entries: &[(&str, &[&str])]) -> Arc<Self> {
            Arc::new(Self(
                entries
                    .iter()
                    .map(|(host, ips)| {
                        (
                            host.to_string(),
                            ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                        )
                    })
                    .collect(),
            ))
        }
    }

    impl Lookup for FakeLookup {
        fn lookup(&self, host: String) -> LookupFuture {
            let answer = self.0.get(&host).cloned();
            Box::pin(async move {
                answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
            })
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn filter_drops_denied_addresses_and_keeps_order() {
        let got = filter_addresses(
            "mixed.test",
            ips(&[
                "10.0.0.1",
                "93.184.216.34",
                "169.254.169.254",
                "2606:4700::1111",
                "::1",
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(got, ips(&["93.184.216.34", "2606:4700::1111"]));
    }

    #[test]
    fn filter_refuses_when_nothing_is_left() {
        let err = filter_addresses("rebind.test", ips(&["169.254.169.254", "127.0.0.1"]), &[])
            .unwrap_err();
        assert_eq!(
            err,
            GuardError::AddressNotAllowed {
                host: "rebind.test".into(),
                ip: "169.254.169.254".parse().unwrap()
            }
        );
        let err = filter_addresses("empty.test", vec![], &[]).unwrap_err();
        assert!(matches!(err, GuardError::Dns { .. }));
    }

    #[test]
    fn filter_honours_allowed_networks() {
        let nets: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let got = filter_addresses("localhost", ips(&["::1", "127.0.0.1"]), &nets).unwrap();
        assert_eq!(got, ips(&["127.0.0.1"]));
    }

    /// The real system resolver: `localhost` resolves (from /etc/hosts, no network) to
    /// loopback only, so the DNS-level rule refuses it when loopback is not allowed.
    #[tokio::test]
    async fn system_resolver_refuses_localhost() {
        let resolver = GuardedResolver::new(&[], Arc::new(SystemLookup));
        let err = resolver
            .resolve_checked("localhost".into())
            .await
            .unwrap_err();
        match err {
            GuardError::AddressNotAllowed { host, ip } => {
                assert_eq!(host, "localhost");
                assert!(ip.to_canonical().is_loopback(), "{ip}");
            }
            other => panic!("expected AddressNotAllowed, got {other:?}"),
        }

        let nets: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let resolver = GuardedResolver::new(&nets, Arc::new(SystemLookup));
        let ok = resolver.resolve_checked("localhost".into()).await.unwrap();
        assert!(
            ok.iter()
                .all(|ip| ip.to_canonical().is_loopback() && ip.is_ipv4()),
            "{ok:?}"
        );
    }

    /// Through reqwest's `Resolve` trait, the refusal is a boxed `GuardError`.
    #[tokio::test]
    async fn resolve_trait_returns_boxed_guard_error() {
        let resolver = GuardedResolver::new(&[], FakeLookup::new(&[("evil.test", &["10.1.1.1"])]));
        let name: Name = "evil.test".parse().unwrap();
        let Err(err) = resolver.resolve(name).await else {
            panic!("expected a refusal");
        };
        let guard = err.downcast_ref::<GuardError>().unwrap();
        assert!(matches!(guard, GuardError::AddressNotAllowed { .. }));
    }
}
