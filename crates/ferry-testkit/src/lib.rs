//! Helpers for Ferry's tests that need a real component, shared by every crate that needs it
//! (as a dev-dependency; never part of the `ferry` binary). A helper whose component is not
//! installed fails the test with the install command; it never skips.
//!
//! - [`prometheus`]: a real Prometheus server, backfilled with promtool or scraping a target.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod prometheus;
