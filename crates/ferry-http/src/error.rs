//! The one error type of the guard, with messages a pipeline author can act on.
//!
//! No variant ever holds a URL's user-info, a query-string value or a header value:
//! URLs inside errors are always passed through [`crate::redact_url`] first, and
//! transport errors are rendered without their URL.

use std::net::IpAddr;
use std::time::Duration;

use crate::address::address_class;

/// Why a guarded fetch was refused or failed.
///
/// The "policy" variants ([`BadUrl`](Self::BadUrl) … [`ForbiddenHeader`](Self::ForbiddenHeader))
/// are refusals: retrying the same request cannot succeed. The "transport" variants
/// ([`Timeout`](Self::Timeout), [`Connect`](Self::Connect), [`Dns`](Self::Dns),
/// [`Http`](Self::Http)) may succeed on a retry; see [`GuardError::is_retryable`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The URL could not be parsed, or has no host. `reason` is the parser's message, never the URL.
    #[error("invalid URL: {reason}")]
    BadUrl {
        /// What is wrong with it.
        reason: String,
    },

    /// The URL's scheme is not in the policy's `schemes`.
    #[error("URL scheme `{scheme}` is not allowed (allowed: {})", allowed.join(", "))]
    SchemeNotAllowed {
        /// The scheme the URL used.
        scheme: String,
        /// The schemes the policy allows.
        allowed: Vec<String>,
    },

    /// The host is not a valid DNS name (for example it contains `_`), or is empty.
    /// Such names are refused outright: allow-list bypasses have used them (CVE-2026-25534).
    #[error("host `{host}` is not a valid DNS name: {reason}")]
    InvalidHost {
        /// The host, normalised.
        host: String,
        /// Which DNS rule it breaks.
        reason: String,
    },

    /// The host is not on the policy's host allow-list.
    #[error(
        "host `{host}` is not on the allow-list of hosts Ferry may fetch from; ask an operator to add it"
    )]
    HostNotAllowed {
        /// The host, normalised.
        host: String,
    },

    /// The host is, or only resolves to, an address that Ferry must not contact on a user's
    /// behalf (loopback, private, link-local/cloud metadata, …) and that is not inside the
    /// policy's `allowed_networks`.
    #[error(
        "host `{host}` is or resolves to {ip}, a {} address, which Ferry does not fetch from \
         unless an operator allows that network",
        address_class(*ip).unwrap_or("non-public")
    )]
    AddressNotAllowed {
        /// The host as written (normalised).
        host: String,
        /// The refused address (the first one, when DNS returned several).
        ip: IpAddr,
    },

    /// The server redirected more than `max` times.
    #[error("too many redirects: more than {max} (the policy's limit)")]
    TooManyRedirects {
        /// The policy's `max_redirects`.
        max: usize,
    },

    /// A redirect pointed somewhere the policy does not allow; `reason` says why
    /// (host off the allow-list, forbidden address, bad scheme, …). Nothing was sent there.
    #[error("redirect to {location} refused: {reason}")]
    RedirectNotAllowed {
        /// The redirect target, redacted.
        location: String,
        /// The rule it broke.
        reason: Box<GuardError>,
    },

    /// The response body is larger than the policy's `max_response_bytes`; reading stopped.
    #[error("response body is larger than the limit of {limit} bytes")]
    ResponseTooLarge {
        /// The policy's `max_response_bytes`.
        limit: usize,
    },

    /// The whole exchange (all redirects and the body) took longer than the policy's timeout.
    #[error("request timed out after {after:?}")]
    Timeout {
        /// The policy's `timeout`.
        after: Duration,
    },

    /// No connection could be made to the host (refused, unreachable, TLS handshake failed).
    #[error("could not connect to `{host}`: {reason}")]
    Connect {
        /// The host.
        host: String,
        /// The transport's message.
        reason: String,
    },

    /// The host name could not be resolved.
    #[error("could not resolve host `{host}`: {reason}")]
    Dns {
        /// The host.
        host: String,
        /// The resolver's message.
        reason: String,
    },

    /// A request header has an invalid name or value, or is one the guard sets itself
    /// (`Host`, `Content-Length`, `Transfer-Encoding`, `Connection`, …). The value is never shown.
    #[error("request header `{name}` refused: {reason}")]
    ForbiddenHeader {
        /// The header name as given.
        name: String,
        /// Why.
        reason: String,
    },

    /// The policy itself is invalid (reported by [`crate::GuardedClient::new`]); every problem is listed.
    #[error("invalid URL policy: {}", problems.join("; "))]
    InvalidPolicy {
        /// Every problem found, each naming the field.
        problems: Vec<String>,
    },

    /// The response body is not valid JSON.
    #[error("response body is not valid JSON: {reason}")]
    Json {
        /// The parser's message (position, not content).
        reason: String,
    },

    /// Any other HTTP-level failure (malformed response, connection reset mid-body, …).
    #[error("HTTP error: {0}")]
    Http(String),
}

impl GuardError {
    /// Whether the same request may succeed if tried again later. Policy refusals never do.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::Connect { .. } | Self::Dns { .. } | Self::Http(_)
        )
    }

    /// Whether this is a refusal by the policy (as opposed to a transport failure).
    /// A redirect refusal counts, whatever its inner reason.
    pub fn is_policy_refusal(&self) -> bool {
        matches!(
            self,
            Self::BadUrl { .. }
                | Self::SchemeNotAllowed { .. }
                | Self::InvalidHost { .. }
                | Self::HostNotAllowed { .. }
                | Self::AddressNotAllowed { .. }
                | Self::TooManyRedirects { .. }
                | Self::RedirectNotAllowed { .. }
                | Self::ResponseTooLarge { .. }
                | Self::ForbiddenHeader { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_problem() {
        let e = GuardError::AddressNotAllowed {
            host: "metadata".into(),
            ip: "169.254.169.254".parse().unwrap(),
        };
        let msg = e.to_string();
        assert!(msg.contains("169.254.169.254"), "{msg}");
        assert!(msg.contains("link-local"), "{msg}");

        let e = GuardError::SchemeNotAllowed {
            scheme: "file".into(),
            allowed: vec!["http".into(), "https".into()],
        };
        assert_eq!(
            e.to_string(),
            "URL scheme `file` is not allowed (allowed: http, https)"
        );

        let e = GuardError::RedirectNotAllowed {
            location: "http://10.0.0.1/".into(),
            reason: Box::new(GuardError::AddressNotAllowed {
                host: "10.0.0.1".into(),
                ip: "10.0.0.1".parse().unwrap(),
            }),
        };
        assert!(
            e.to_string()
                .starts_with("redirect to http://10.0.0.1/ refused: host `10.0.0.1`")
        );
        assert!(e.is_policy_refusal());
        assert!(!e.is_retryable());
        assert!(
            GuardError::Timeout {
                after: Duration::from_secs(1)
            }
            .is_retryable()
        );
    }
}
