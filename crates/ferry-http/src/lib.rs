//! The SSRF guard: the one HTTP client every server-side fetch of a user-given URL goes through.
//!
//! Webhook stages, `#fromUrl` in expressions, notifications, canary metric sources, Git and
//! Helm repositories: whenever Ferry fetches a URL that a pipeline author (or anything they
//! control) chose, it does so through [`GuardedClient`] under a [`UrlPolicy`]. Nothing else in
//! Ferry builds an HTTP client for user-given URLs (NFLX-2020-003: SSRF through template
//! resolution happened because one path skipped the guard).
//!
//! # Threat model
//!
//! A pipeline author can make Ferry's server send requests. Without a guard they could reach
//! what only the server can reach:
//!
//! - **SSRF to internal addresses**: the cloud metadata service (`169.254.169.254`, which hands
//!   out credentials), admin endpoints on loopback, databases and services on private networks.
//! - **Odd host forms** that slip past string comparisons: `http://2130706433/`,
//!   `http://0x7f.1/`, `http://127.1/`, `http://[::ffff:127.0.0.1]/`, `LOCALHOST.`, IDN
//!   look-alikes, and host names with characters DNS does not allow. CVE-2026-25534 was an
//!   allow-list bypassed with an underscore in the host name.
//! - **DNS rebinding**: a name that resolves to a public address when checked and to an
//!   internal one when connected.
//! - **Redirects**: an allowed public URL that answers `302 Location: http://169.254.169.254/`.
//! - **Resource exhaustion**: endless or huge bodies, servers that never answer.
//! - **Credential leaks**: `user:pass@` in URLs and `Authorization` headers ending up in logs,
//!   error messages, or sent on to another host by a redirect.
//!
//! # Rules
//!
//! 1. The URL is parsed once, with the `url` crate (WHATWG rules, the same a browser uses),
//!    and the parsed form is what gets checked and fetched. The scheme must be in
//!    [`UrlPolicy::schemes`] (http and https by default; the client fetches nothing else).
//! 2. The host is normalised: lower-case, IDNA to punycode, trailing dot removed, IPv4 odd
//!    forms decoded, IPv4-mapped IPv6 turned into IPv4. A name that is not a valid DNS name
//!    (`_`, empty labels, leading `-`, over-long labels) is refused.
//! 3. If [`UrlPolicy::allowed_hosts`] is set, the normalised host must match an entry: an
//!    exact name, an IP, or a `*.example.com` pattern (sub-domains only, never the apex, and
//!    never `evilexample.com` or `example.com.evil.com`).
//! 4. Address rules: loopback, private (RFC 1918, fc00::/7), link-local (169.254/16 with the
//!    metadata service, fe80::/10), unspecified, multicast, broadcast, CGNAT (100.64/10),
//!    documentation/benchmarking/reserved ranges, and IPv6 forms embedding such an IPv4
//!    address are refused unless inside [`UrlPolicy::allowed_networks`]. IP literals are
//!    checked by [`UrlPolicy::check`]; `localhost` and `*.localhost` are treated as loopback
//!    without asking DNS.
//! 5. Host names are resolved by the client's own resolver, which drops every address the
//!    rules deny and fails with [`GuardError::AddressNotAllowed`] if none is left. The
//!    connection uses exactly the addresses that passed, which closes DNS rebinding. Proxies
//!    from the environment are ignored.
//! 6. Redirects are followed by hand, at most [`UrlPolicy::max_redirects`], every hop running
//!    rules 1–5 again; a refused hop is [`GuardError::RedirectNotAllowed`] and nothing is
//!    sent there. 303 (and 301/302 after a POST) becomes a body-less GET, 307/308 keep method
//!    and body. Leaving the origin drops credential-like headers (`Authorization`, `Cookie`,
//!    anything named like a token, key, secret, session or signature).
//! 7. The body is read as a stream and reading stops once it exceeds
//!    [`UrlPolicy::max_response_bytes`]; the whole exchange runs under [`UrlPolicy::timeout`].
//! 8. Credentials never appear in errors or `Debug` output: URLs are shown through
//!    [`redact_url`], header values are never shown, and [`GuardedResponse::final_url`] has
//!    its user-info removed. `Host`, `Content-Length`, `Transfer-Encoding` and other
//!    connection-level request headers cannot be set by callers.
//! 9. Every request carries `User-Agent: ferry/<version>` ([`USER_AGENT`]) unless it sets its own.
//!
//! TLS is rustls with the ring provider and the platform trust store, configured by the
//! client itself (no process-wide crypto provider needed).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_http::GuardError> {
//! use ferry_http::{GuardedClient, GuardedRequest, UrlPolicy};
//!
//! let client = GuardedClient::new(UrlPolicy {
//!     allowed_hosts: Some(vec!["*.example.com".into()]),
//!     ..UrlPolicy::public_internet()
//! })?;
//! let response = client.send(GuardedRequest::get("https://api.example.com/status")).await?;
//! let status = response.json()?;
//! # let _ = status;
//! # Ok(())
//! # }
//! ```

mod address;
mod client;
mod error;
mod policy;
mod redact;
mod resolve;

pub use client::{GuardedClient, GuardedRequest, GuardedResponse, USER_AGENT};
pub use error::GuardError;
pub use policy::{DEFAULT_MAX_REDIRECTS, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT, UrlPolicy};
pub use redact::redact_url;
