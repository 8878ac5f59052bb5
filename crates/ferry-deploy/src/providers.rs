//! [`Providers`]: the provider registry server-group stages look providers up in, by provider
//! kind (`host`, `kubernetes`) and account.

use ferry_provider::Provider;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The provider kind a stage uses when it names none.
pub const DEFAULT_PROVIDER: &str = "host";
/// The account a stage uses when it names none.
pub const DEFAULT_ACCOUNT: &str = "local";

/// Why a provider could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvidersError {
    /// No provider of that kind is configured.
    #[error("no \"{kind}\" provider is configured (configured: {known})")]
    UnknownProvider {
        /// The kind asked for.
        kind: String,
        /// The configured kinds, comma-separated.
        known: String,
    },
    /// The provider does not serve that account.
    #[error("the \"{kind}\" provider has no account \"{account}\" (accounts: {known})")]
    UnknownAccount {
        /// The provider kind.
        kind: String,
        /// The account asked for.
        account: String,
        /// Its accounts, comma-separated.
        known: String,
    },
}

/// Providers by kind, plus the settings server-group stages share.
#[derive(Clone)]
pub struct Providers {
    /// Configured providers by kind.
    by_kind: BTreeMap<String, Arc<dyn Provider>>,
    /// Kind used when a stage names none.
    default_kind: String,
    /// How often stages look at a server group while they wait for it.
    poll_interval: Duration,
}

impl Default for Providers {
    fn default() -> Self {
        Providers::new()
    }
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("kinds", &self.by_kind.keys().collect::<Vec<_>>())
            .field("default_kind", &self.default_kind)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl Providers {
    /// No providers; default kind `host`; stages poll every 250 ms while waiting.
    pub fn new() -> Providers {
        Providers {
            by_kind: BTreeMap::new(),
            default_kind: DEFAULT_PROVIDER.into(),
            poll_interval: Duration::from_millis(250),
        }
    }

    /// Adds `provider` under its own [`Provider::kind`] (replacing one of the same kind).
    pub fn with(mut self, provider: Arc<dyn Provider>) -> Providers {
        self.insert(provider);
        self
    }

    /// Adds `provider` under its own [`Provider::kind`] (replacing one of the same kind).
    pub fn insert(&mut self, provider: Arc<dyn Provider>) {
        self.by_kind.insert(provider.kind().to_string(), provider);
    }

    /// Uses `kind` when a stage names no provider.
    pub fn with_default_provider(mut self, kind: &str) -> Providers {
        self.default_kind = kind.to_string();
        self
    }

    /// Sets how often stages look at a server group while they wait for it.
    pub fn with_poll_interval(mut self, every: Duration) -> Providers {
        self.poll_interval = every;
        self
    }

    /// How often stages look at a server group while they wait for it.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The kind used when `provider` is `None` or empty.
    pub fn kind_or_default<'a>(&'a self, provider: Option<&'a str>) -> &'a str {
        provider
            .filter(|p| !p.is_empty())
            .unwrap_or(&self.default_kind)
    }

    /// Configured kinds, sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.by_kind.keys().cloned().collect()
    }

    /// The provider of `provider` kind (default `host`) serving `account`.
    pub fn get(
        &self,
        provider: Option<&str>,
        account: &str,
    ) -> Result<Arc<dyn Provider>, ProvidersError> {
        let kind = self.kind_or_default(provider);
        let Some(p) = self.by_kind.get(kind) else {
            return Err(ProvidersError::UnknownProvider {
                kind: kind.to_string(),
                known: self.kinds().join(", "),
            });
        };
        let accounts = p.accounts();
        if !accounts.iter().any(|a| a == account) {
            return Err(ProvidersError::UnknownAccount {
                kind: kind.to_string(),
                account: account.to_string(),
                known: accounts.join(", "),
            });
        }
        Ok(p.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_provider::fake::FakeProvider;

    #[test]
    fn lookup_by_kind_and_account() {
        let providers = Providers::new()
            .with(Arc::new(FakeProvider::new().with_kind("host")))
            .with(Arc::new(
                FakeProvider::new()
                    .with_kind("kubernetes")
                    .with_accounts(&["prod"]),
            ));
        assert_eq!(providers.get(None, "local").unwrap().kind(), "host");
        assert_eq!(providers.get(Some(""), "local").unwrap().kind(), "host");
        assert_eq!(
            providers.get(Some("kubernetes"), "prod").unwrap().kind(),
            "kubernetes"
        );
        assert_eq!(
            providers
                .get(Some("kubernetes"), "local")
                .err()
                .unwrap()
                .to_string(),
            "the \"kubernetes\" provider has no account \"local\" (accounts: prod)"
        );
        assert!(matches!(
            providers.get(Some("aws"), "local"),
            Err(ProvidersError::UnknownProvider { .. })
        ));
    }
}
