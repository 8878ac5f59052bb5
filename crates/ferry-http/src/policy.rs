//! `UrlPolicy`: which URLs Ferry may fetch, and the syntactic check (no DNS) every URL passes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use url::{Host, Url};

use crate::address::is_permitted;
use crate::error::GuardError;

/// Default `max_redirects`.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;
/// Default `max_response_bytes` (10 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;
/// Default `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which URLs Ferry may fetch on a user's behalf.
#[derive(Clone, Debug)]
pub struct UrlPolicy {
    /// Host allow-list. `None` = any host (still subject to the address rules); `Some(vec![])` = nothing.
    /// Entries are exact host names or `*.example.com` suffix patterns; compared after normalisation
    /// (lower-case, trailing dot removed, IDNA/punycode via the `url` crate). IP-literal entries allowed.
    /// A suffix pattern matches any depth of sub-domain (`a.b.example.com`) but not the bare
    /// domain (`example.com`). An allow-listed host still has to pass the address rules.
    pub allowed_hosts: Option<Vec<String>>,
    /// Networks that are allowed even though they are private/loopback/link-local
    /// (e.g. "127.0.0.0/8" for tests, "10.0.0.0/8" for a corporate network).
    pub allowed_networks: Vec<IpNet>,
    /// Schemes; default ["http","https"]. [`crate::GuardedClient`] can only fetch http and https.
    pub schemes: Vec<String>,
    /// Max redirects followed (each hop re-checked); default 5. 0 = redirects are not followed
    /// and the 3xx response is returned as it is.
    pub max_redirects: usize,
    /// Max response body bytes read; default 10 MiB. Larger → error, reading stops.
    pub max_response_bytes: usize,
    /// Per-request timeout, covering connect, every redirect hop and reading the body; default 30 s.
    pub timeout: Duration,
}

impl Default for UrlPolicy {
    fn default() -> Self {
        Self::public_internet()
    }
}

impl UrlPolicy {
    /// A policy that allows nothing (empty host allow-list).
    #[must_use]
    pub fn deny_all() -> Self {
        Self {
            allowed_hosts: Some(Vec::new()),
            ..Self::public_internet()
        }
    }

    /// Any host on the public internet over http or https; no private, loopback,
    /// link-local or otherwise non-public address.
    #[must_use]
    pub fn public_internet() -> Self {
        Self {
            allowed_hosts: None,
            allowed_networks: Vec::new(),
            schemes: vec!["http".to_owned(), "https".to_owned()],
            max_redirects: DEFAULT_MAX_REDIRECTS,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Checks a URL without DNS: parse, scheme, host syntax, host allow-list, and the
    /// address rules for IP literals (in every form the `url` crate accepts, such as
    /// `http://2130706433/` or `http://0x7f.1/`) and for `localhost`/`*.localhost`.
    ///
    /// Host names that pass are checked again at connect time by [`crate::GuardedClient`]'s
    /// resolver, which drops every address the rules deny.
    ///
    /// # Errors
    ///
    /// [`GuardError::BadUrl`], [`GuardError::SchemeNotAllowed`], [`GuardError::InvalidHost`],
    /// [`GuardError::HostNotAllowed`] or [`GuardError::AddressNotAllowed`], in that order of checking.
    pub fn check(&self, url: &str) -> Result<Url, GuardError> {
        let parsed = Url::parse(url).map_err(|e| GuardError::BadUrl {
            reason: e.to_string(),
        })?;
        self.check_url(&parsed)?;
        Ok(parsed)
    }

    /// [`check`](Self::check) for an already parsed URL; returns the normalised host.
    pub(crate) fn check_url(&self, url: &Url) -> Result<NormalHost, GuardError> {
        let scheme = url.scheme();
        if !self
            .schemes
            .iter()
            .any(|s| s.trim().eq_ignore_ascii_case(scheme))
        {
            return Err(GuardError::SchemeNotAllowed {
                scheme: scheme.to_owned(),
                allowed: self.schemes.clone(),
            });
        }
        let host = normalise_url_host(url)?;

        if let Some(list) = &self.allowed_hosts {
            let listed = list
                .iter()
                .filter_map(|entry| AllowEntry::parse(entry).ok())
                .any(|entry| entry.matches(&host));
            if !listed {
                return Err(GuardError::HostNotAllowed {
                    host: host.to_string(),
                });
            }
        }

        match &host {
            NormalHost::Ip(ip) => {
                if !is_permitted(*ip, &self.allowed_networks) {
                    return Err(GuardError::AddressNotAllowed {
                        host: host.to_string(),
                        ip: *ip,
                    });
                }
            }
            NormalHost::Domain(name) => {
                // RFC 6761: `localhost` and its sub-domains always mean the loopback interface,
                // whatever DNS says; refuse them before any lookup.
                if name == "localhost" || name.ends_with(".localhost") {
                    let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
                    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
                    if !is_permitted(v4, &self.allowed_networks)
                        && !is_permitted(v6, &self.allowed_networks)
                    {
                        return Err(GuardError::AddressNotAllowed {
                            host: name.clone(),
                            ip: v4,
                        });
                    }
                }
            }
        }
        Ok(host)
    }

    /// Every problem with the policy itself: unparseable allow-list entries, no schemes,
    /// a zero timeout. Used by [`crate::GuardedClient::new`].
    ///
    /// # Errors
    ///
    /// [`GuardError::InvalidPolicy`] listing every problem, each with its field.
    pub fn validate(&self) -> Result<(), GuardError> {
        let mut problems = Vec::new();
        if let Some(list) = &self.allowed_hosts {
            for (i, entry) in list.iter().enumerate() {
                if let Err(reason) = AllowEntry::parse(entry) {
                    problems.push(format!("allowed_hosts[{i}] `{entry}`: {reason}"));
                }
            }
        }
        for (i, scheme) in self.schemes.iter().enumerate() {
            let valid = !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if !valid {
                problems.push(format!("schemes[{i}] `{scheme}`: not a URL scheme"));
            }
        }
        if self.timeout.is_zero() {
            problems.push("timeout: must be greater than zero".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(GuardError::InvalidPolicy { problems })
        }
    }
}

/// A URL host after normalisation: a lower-case DNS name without trailing dot, or an IP
/// address (IPv4-mapped IPv6 addresses in their IPv4 form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NormalHost {
    Domain(String),
    Ip(IpAddr),
}

impl std::fmt::Display for NormalHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Domain(d) => f.write_str(d),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Normalises the host of a parsed URL. For special schemes (http, https, …) the `url` crate
/// has already lower-cased it, applied IDNA and decoded the odd IPv4 forms; for other schemes
/// the host is opaque, so it is run through the same host parser here.
fn normalise_url_host(url: &Url) -> Result<NormalHost, GuardError> {
    let no_host = || GuardError::BadUrl {
        reason: "the URL has no host".to_owned(),
    };
    match url.host().ok_or_else(no_host)? {
        Host::Ipv4(ip) => Ok(NormalHost::Ip(IpAddr::V4(ip))),
        Host::Ipv6(ip) => Ok(NormalHost::Ip(IpAddr::V6(ip).to_canonical())),
        Host::Domain(d) => {
            if d.is_empty() {
                return Err(no_host());
            }
            normalise_host_str(d).map_err(|reason| GuardError::InvalidHost {
                host: d.to_ascii_lowercase(),
                reason,
            })
        }
    }
}

/// Normalises a host written as text (a URL host or an allow-list entry).
fn normalise_host_str(raw: &str) -> Result<NormalHost, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("empty host".to_owned());
    }
    let parsed = Host::parse(raw).map_err(|e| e.to_string())?;
    match parsed {
        Host::Ipv4(ip) => Ok(NormalHost::Ip(IpAddr::V4(ip))),
        Host::Ipv6(ip) => Ok(NormalHost::Ip(IpAddr::V6(ip).to_canonical())),
        Host::Domain(d) => {
            let lower = d.to_ascii_lowercase();
            let name = lower.strip_suffix('.').unwrap_or(&lower);
            validate_dns_name(name)?;
            Ok(NormalHost::Domain(name.to_owned()))
        }
    }
}

/// A DNS host name (RFC 1123): 1–253 characters, labels of 1–63 of `a-z 0-9 -`,
/// not starting or ending with `-`. Punycode (`xn--`) labels pass; `_` does not.
fn validate_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty host".to_owned());
    }
    if name.len() > 253 {
        return Err("longer than 253 characters".to_owned());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (`..`)".to_owned());
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters".to_owned());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!(
                "character {c:?} is not allowed (only letters, digits and `-`)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with `-`".to_owned());
        }
    }
    Ok(())
}

/// One parsed allow-list entry.
#[derive(Debug, PartialEq, Eq)]
enum AllowEntry {
    /// Exactly this normalised host (name or IP).
    Exact(NormalHost),
    /// `*.suffix`: any name ending in `.suffix`, not `suffix` itself.
    Suffix(String),
}

impl AllowEntry {
    fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        if let Some(suffix) = entry.strip_prefix("*.") {
            return match normalise_host_str(suffix)? {
                NormalHost::Domain(d) => Ok(Self::Suffix(d)),
                NormalHost::Ip(_) => Err("a `*.` pattern needs a domain, not an IP".to_owned()),
            };
        }
        if entry.contains('*') {
            return Err("`*` is only allowed as a leading `*.` label".to_owned());
        }
        // Accept IPv6 literals with or without brackets.
        let bracketed;
        let host = if entry.contains(':') && !entry.starts_with('[') {
            bracketed = format!("[{entry}]");
            &bracketed
        } else {
            entry
        };
        normalise_host_str(host).map(Self::Exact)
    }

    fn matches(&self, host: &NormalHost) -> bool {
        match (self, host) {
            (Self::Exact(e), h) => e == h,
            (Self::Suffix(suffix), NormalHost::Domain(d)) => d
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (Self::Suffix(_), NormalHost::Ip(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kind of a `check` outcome, for tables.
    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    enum Kind {
        Ok,
        BadUrl,
        Scheme,
        InvalidHost,
        HostNotAllowed,
        Address,
    }

    fn kind(r: &Result<Url, GuardError>) -> Kind {
        match r {
            Ok(_) => Kind::Ok,
            Err(GuardError::BadUrl { .. }) => Kind::BadUrl,
            Err(GuardError::SchemeNotAllowed { .. }) => Kind::Scheme,
            Err(GuardError::InvalidHost { .. }) => Kind::InvalidHost,
            Err(GuardError::HostNotAllowed { .. }) => Kind::HostNotAllowed,
            Err(GuardError::AddressNotAllowed { .. }) => Kind::Address,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    fn public() -> UrlPolicy {
        UrlPolicy::public_internet()
    }

    fn allow(hosts: &[&str]) -> UrlPolicy {
        UrlPolicy {
            allowed_hosts: Some(hosts.iter().map(|h| h.to_string()).collect()),
            ..UrlPolicy::public_internet()
        }
    }

    fn with_networks(nets: &[&str]) -> UrlPolicy {
        UrlPolicy {
            allowed_networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
            ..UrlPolicy::public_internet()
        }
    }

    #[test]
    fn check_table() {
        use Kind::*;
        let loopback_ok = with_networks(&["127.0.0.0/8"]);
        let long_label = format!("http://{}.com/", "a".repeat(64));
        let cases: Vec<(&str, UrlPolicy, &str, Kind)> = vec![
            // Plain public URLs.
            ("public https", public(), "https://example.com/x?y=1", Ok),
            (
                "public http with port",
                public(),
                "http://example.com:8080/",
                Ok,
            ),
            ("public IP", public(), "http://8.8.8.8/", Ok),
            (
                "userinfo is allowed",
                public(),
                "https://user:pw@example.com/",
                Ok,
            ),
            ("upper-case scheme", public(), "HTTPS://EXAMPLE.COM/", Ok),
            ("IDN host", public(), "https://bücher.example/", Ok),
            // Syntax.
            ("not a URL", public(), "not a url", BadUrl),
            ("relative", public(), "/just/a/path", BadUrl),
            ("empty host", public(), "http://", BadUrl),
            ("empty host with port", public(), "http://:80/", BadUrl),
            // WHATWG parsing (as browsers do) reads this as host `path`; the same parse is
            // what gets fetched, so there is no checker/fetcher disagreement to exploit.
            ("triple slash", allow(&["path"]), "http:///path", Ok),
            ("bad port", public(), "http://example.com:99999/", BadUrl),
            ("bad IPv4 form", public(), "http://1.2.3.999/", BadUrl),
            // Schemes.
            ("file", public(), "file:///etc/passwd", Scheme),
            ("gopher", public(), "gopher://example.com:70/_x", Scheme),
            ("ftp", public(), "ftp://example.com/", Scheme),
            ("javascript", public(), "javascript:alert(1)", Scheme),
            ("data", public(), "data:text/plain,hi", Scheme),
            (
                "scheme not in list",
                UrlPolicy {
                    schemes: vec!["https".into()],
                    ..public()
                },
                "http://example.com/",
                Scheme,
            ),
            // Host syntax (CVE-2026-25534: underscores).
            (
                "underscore",
                public(),
                "http://evil_host.example.com/",
                InvalidHost,
            ),
            (
                "underscore vs allow-list",
                allow(&["*.example.com"]),
                "http://evil_host.example.com/",
                InvalidHost,
            ),
            (
                "leading hyphen",
                public(),
                "http://-evil.example.com/",
                InvalidHost,
            ),
            (
                "empty label",
                public(),
                "http://a..example.com/",
                InvalidHost,
            ),
            ("long label", public(), &long_label, InvalidHost),
            ("percent-encoded dot", public(), "http://example%2Ecom/", Ok),
            (
                "non-special scheme opaque host",
                UrlPolicy {
                    schemes: vec!["git".into()],
                    ..public()
                },
                "git://evil_host.example.com/r",
                InvalidHost,
            ),
            (
                "non-special scheme IP host",
                UrlPolicy {
                    schemes: vec!["git".into()],
                    ..public()
                },
                "git://127.0.0.1/r",
                Address,
            ),
            (
                "non-special scheme hex IP host",
                UrlPolicy {
                    schemes: vec!["git".into()],
                    ..public()
                },
                "git://0x7f.1/r",
                Address,
            ),
            // localhost names.
            ("localhost", public(), "http://localhost/", Address),
            ("LOCALHOST.", public(), "http://LOCALHOST./", Address),
            (
                "sub.localhost",
                public(),
                "http://api.localhost:8080/",
                Address,
            ),
            (
                "localhost allowed via network",
                loopback_ok.clone(),
                "http://localhost/",
                Ok,
            ),
            (
                "localhost on allow-list but not network",
                allow(&["localhost"]),
                "http://localhost/",
                Address,
            ),
            // IPv4 literal forms.
            ("127.0.0.1", public(), "http://127.0.0.1/", Address),
            ("127.1", public(), "http://127.1/", Address),
            ("decimal", public(), "http://2130706433/", Address),
            ("hex dotted", public(), "http://0x7f.1/", Address),
            ("hex whole", public(), "http://0x7f000001/", Address),
            ("octal", public(), "http://0177.0.0.1/", Address),
            ("trailing dot IP", public(), "http://127.0.0.1./", Address),
            ("0.0.0.0", public(), "http://0.0.0.0:8080/", Address),
            (
                "fullwidth digits and dots",
                public(),
                "http://１２７。０。０。１/",
                Address,
            ),
            (
                "fullwidth localhost",
                public(),
                "http://ｌｏｃａｌｈｏｓｔ/",
                Address,
            ),
            ("IPv6 zone id", public(), "http://[fe80::1%25eth0]/", BadUrl),
            ("0", public(), "http://0/", Address),
            (
                "metadata",
                public(),
                "http://169.254.169.254/latest/meta-data/",
                Address,
            ),
            ("metadata decimal", public(), "http://2852039166/", Address),
            ("private 10/8", public(), "http://10.0.0.1/", Address),
            ("private 192.168", public(), "http://192.168.1.1/", Address),
            ("private 172.16", public(), "http://172.16.5.4/", Address),
            ("CGNAT", public(), "http://100.64.0.1/", Address),
            ("broadcast", public(), "http://255.255.255.255/", Address),
            ("multicast", public(), "http://224.0.0.1/", Address),
            // IPv6 literal forms.
            ("IPv6 loopback", public(), "http://[::1]/", Address),
            ("IPv6 unspecified", public(), "http://[::]/", Address),
            (
                "IPv6 loopback long",
                public(),
                "http://[0:0:0:0:0:0:0:1]/",
                Address,
            ),
            (
                "IPv4-mapped loopback",
                public(),
                "http://[::ffff:127.0.0.1]/",
                Address,
            ),
            (
                "IPv4-mapped hex",
                public(),
                "http://[::ffff:7f00:1]/",
                Address,
            ),
            (
                "IPv4-mapped metadata",
                public(),
                "http://[::ffff:169.254.169.254]/",
                Address,
            ),
            (
                "IPv4-compatible",
                public(),
                "http://[::127.0.0.1]/",
                Address,
            ),
            (
                "NAT64 loopback",
                public(),
                "http://[64:ff9b::127.0.0.1]/",
                Address,
            ),
            ("link-local v6", public(), "http://[fe80::1]/", Address),
            ("ULA", public(), "http://[fd00::1]/", Address),
            ("public v6", public(), "http://[2606:4700::1111]/", Ok),
            // allowed_networks.
            (
                "loopback allowed",
                loopback_ok.clone(),
                "http://127.0.0.1:8080/",
                Ok,
            ),
            ("127.1 allowed", loopback_ok.clone(), "http://127.1/", Ok),
            (
                "mapped loopback allowed",
                loopback_ok.clone(),
                "http://[::ffff:127.0.0.1]/",
                Ok,
            ),
            (
                "v6 loopback not in v4 net",
                loopback_ok.clone(),
                "http://[::1]/",
                Address,
            ),
            (
                "metadata still denied",
                loopback_ok.clone(),
                "http://169.254.169.254/",
                Address,
            ),
            (
                "corporate network",
                with_networks(&["10.0.0.0/8"]),
                "http://10.20.30.40/",
                Ok,
            ),
            // Allow-list.
            (
                "deny_all",
                UrlPolicy::deny_all(),
                "https://example.com/",
                HostNotAllowed,
            ),
            (
                "exact",
                allow(&["api.example.com"]),
                "https://api.example.com/v1",
                Ok,
            ),
            (
                "exact is case-insensitive",
                allow(&["API.Example.COM."]),
                "https://api.EXAMPLE.com./v1",
                Ok,
            ),
            (
                "exact does not match sub-domain",
                allow(&["example.com"]),
                "https://a.example.com/",
                HostNotAllowed,
            ),
            (
                "suffix matches sub-domain",
                allow(&["*.example.com"]),
                "https://a.example.com/",
                Ok,
            ),
            (
                "suffix matches deep sub-domain",
                allow(&["*.example.com"]),
                "https://a.b.example.com/",
                Ok,
            ),
            (
                "suffix does not match apex",
                allow(&["*.example.com"]),
                "https://example.com/",
                HostNotAllowed,
            ),
            (
                "suffix vs example.com.evil.com",
                allow(&["*.example.com"]),
                "https://example.com.evil.com/",
                HostNotAllowed,
            ),
            (
                "suffix vs evilexample.com",
                allow(&["*.example.com"]),
                "https://evilexample.com/",
                HostNotAllowed,
            ),
            (
                "exact vs evilexample.com",
                allow(&["example.com"]),
                "https://evilexample.com/",
                HostNotAllowed,
            ),
            (
                "userinfo trick",
                allow(&["example.com"]),
                "https://example.com@evil.com/",
                HostNotAllowed,
            ),
            (
                "backslash trick",
                allow(&["example.com"]),
                "https://evil.com\\@example.com/",
                HostNotAllowed,
            ),
            (
                "IDN entry matches punycode",
                allow(&["bücher.example"]),
                "https://xn--bcher-kva.example/",
                Ok,
            ),
            (
                "punycode entry matches IDN",
                allow(&["xn--bcher-kva.example"]),
                "https://BÜCHER.example/",
                Ok,
            ),
            ("IP entry", allow(&["8.8.8.8"]), "http://8.8.8.8/", Ok),
            (
                "IP entry matches odd form",
                allow(&["8.8.8.8"]),
                "http://134744072/",
                Ok,
            ),
            (
                "IPv6 entry without brackets",
                allow(&["2606:4700::1111"]),
                "http://[2606:4700:0::1111]/",
                Ok,
            ),
            (
                "allow-listed IP still address-checked",
                allow(&["10.0.0.1"]),
                "http://10.0.0.1/",
                Address,
            ),
            (
                "allow-listed private IP with network",
                UrlPolicy {
                    allowed_networks: vec!["10.0.0.0/8".parse().unwrap()],
                    ..allow(&["10.0.0.1"])
                },
                "http://10.0.0.1/",
                Ok,
            ),
            (
                "invalid entry matches nothing",
                allow(&["evil_host.example.com"]),
                "http://evil_host.example.com/",
                InvalidHost,
            ),
            (
                "suffix entry does not match IP",
                allow(&["*.1"]),
                "http://127.0.0.1/",
                HostNotAllowed,
            ),
        ];
        let mut failures = Vec::new();
        for (name, policy, url, want) in &cases {
            let got = policy.check(url);
            if kind(&got) != *want {
                failures.push(format!("{name}: {url} → {got:?}, want {want:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn address_error_names_host_and_ip() {
        let err = public().check("http://0x7f.1/").unwrap_err();
        assert_eq!(
            err,
            GuardError::AddressNotAllowed {
                host: "127.0.0.1".into(),
                ip: "127.0.0.1".parse().unwrap()
            }
        );
        let err = public().check("http://LOCALHOST./").unwrap_err();
        assert!(matches!(&err, GuardError::AddressNotAllowed { host, .. } if host == "localhost"));
    }

    #[test]
    fn errors_never_contain_credentials() {
        for url in [
            "http://user:s3cret@127.0.0.1/",
            "gopher://user:s3cret@example.com/",
            "http://user:s3cret@evil_host.example.com/",
            "http://user:s3cret@example.com:99999/",
        ] {
            let err = public().check(url).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    #[test]
    fn validate_reports_every_problem() {
        let policy = UrlPolicy {
            allowed_hosts: Some(vec![
                "ok.example.com".into(),
                "bad_host".into(),
                "a.*.com".into(),
                "*.10.0.0.1".into(),
            ]),
            schemes: vec!["http".into(), "ht tp".into()],
            timeout: Duration::ZERO,
            ..public()
        };
        let Err(GuardError::InvalidPolicy { problems }) = policy.validate() else {
            panic!("expected InvalidPolicy");
        };
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].starts_with("allowed_hosts[1]"));
        assert!(problems[1].starts_with("allowed_hosts[2]"));
        assert!(problems[2].starts_with("allowed_hosts[3]"));
        assert!(problems[3].starts_with("schemes[1]"));
        assert!(problems[4].starts_with("timeout"));
        assert!(UrlPolicy::default().validate().is_ok());
        assert!(UrlPolicy::deny_all().validate().is_ok());
    }

    #[test]
    fn defaults() {
        let p = UrlPolicy::default();
        assert_eq!(p.allowed_hosts, None);
        assert!(p.allowed_networks.is_empty());
        assert_eq!(p.schemes, ["http", "https"]);
        assert_eq!(p.max_redirects, 5);
        assert_eq!(p.max_response_bytes, 10 * 1024 * 1024);
        assert_eq!(p.timeout, Duration::from_secs(30));
        assert_eq!(UrlPolicy::deny_all().allowed_hosts, Some(vec![]));
    }
}
