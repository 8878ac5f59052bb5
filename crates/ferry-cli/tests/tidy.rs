//! Tidy checks over the whole workspace, as ordinary tests: file headers, the architecture map,
//! where heavy dependencies live, and the security invariants that are about *where* code is
//! (one expression evaluator, one guarded HTTP client, no shell).

#![allow(clippy::unwrap_used)] // test helpers

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if name != "target" && name != "fuzz" {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

fn crates() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
        .collect();
    out.sort();
    out
}

fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root())
                .unwrap_or(&p)
                .to_string_lossy()
                .replace("/../..", "");
            let text = std::fs::read_to_string(&p).unwrap();
            (rel, text)
        })
        .collect()
}

/// The part of a file before its `#[cfg(test)]` module (tests may do what products may not).
fn product_code(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

fn is_test_file(path: &str) -> bool {
    path.contains("/tests/")
        || path.ends_with("/tests.rs")
        || path.contains("/tests_")
        || path.contains("testkit")
        || path.contains("testutil")
}

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, t)| !t.trim_start().starts_with("//!"))
        .map(|(p, _)| p)
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:#?}"
    );
}

#[test]
fn architecture_names_every_crate() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for (name, _) in crates() {
        assert!(
            arch.contains(&format!("`{name}`")),
            "ARCHITECTURE.md does not describe crate {name}"
        );
    }
}

#[test]
fn heavy_dependencies_live_in_one_crate() {
    // dependency -> the crates allowed to use it outside [dev-dependencies]
    let rules: &[(&str, &[&str])] = &[
        ("sqlx", &["ferry-store"]),
        ("axum", &["ferry-server"]),
        ("reqwest", &["ferry-http", "ferry-cli"]),
    ];
    for (name, dir) in crates() {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .map(|rest| rest.split("\n[").next().unwrap_or(""))
            .unwrap_or("");
        for (dep, allowed) in rules {
            let uses = deps.lines().any(|l| {
                l.trim_start().starts_with(&format!("{dep} "))
                    || l.trim_start().starts_with(&format!("{dep}."))
            });
            assert!(
                !uses || allowed.contains(&name.as_str()),
                "{name} depends on {dep}; only {allowed:?} may"
            );
        }
    }
}

/// CVE-2026-32613: one service evaluated expressions without the sandbox the others used.
/// Every place that evaluates an expression is listed here; a new one fails this test until it
/// is reviewed and added (and it must go through `ferry_engine::expr`).
#[test]
fn expressions_are_evaluated_in_the_listed_places_only() {
    let allowed = ["crates/ferry-engine/src/expr.rs"];
    let needles = [
        "evaluate_tree(",
        "EvalContext {",
        "EvalContext::new(",
        ".evaluate(&",
    ];
    let mut found = Vec::new();
    for (path, text) in sources() {
        if path.starts_with("crates/ferry-expr/") || is_test_file(&path) {
            continue;
        }
        let code = product_code(&text);
        if needles.iter().any(|n| code.contains(n)) && !allowed.contains(&path.as_str()) {
            found.push(path);
        }
    }
    assert!(
        found.is_empty(),
        "expressions evaluated outside ferry_engine::expr: {found:#?}"
    );
}

/// NFLX-2020-003 / CVE-2026-25534: every server-side fetch of a user-given URL goes through the
/// URL guard. The other HTTP clients never take a user-given URL: the CLI's client talks to its
/// own server (and the demo asks the example shop on a fixed local address); the load balancer
/// proxies only to instance addresses its provider registered.
#[test]
fn http_clients_are_built_in_the_listed_places_only() {
    let allowed = [
        "crates/ferry-cli/src/client.rs",
        "crates/ferry-cli/src/follow.rs",
        "crates/ferry-cli/src/demo.rs",
        "crates/ferry-lb/src/client.rs",
    ];
    let needles = [
        "reqwest::Client",
        "reqwest::ClientBuilder",
        "hyper_util::client",
        "hyper::client::conn",
    ];
    let mut found = Vec::new();
    for (path, text) in sources() {
        if path.starts_with("crates/ferry-http/") || is_test_file(&path) {
            continue;
        }
        let code = product_code(&text);
        if needles.iter().any(|n| code.contains(n)) && !allowed.contains(&path.as_str()) {
            found.push(path);
        }
    }
    assert!(
        found.is_empty(),
        "HTTP clients outside ferry-http: {found:#?}"
    );
}

/// CVE-2026-32604: a git reference was put into `sh -c`. Ferry never starts a shell.
#[test]
fn no_product_code_starts_a_shell() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        if is_test_file(&path) {
            continue;
        }
        let code: String = product_code(&text)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for shell in ["\"sh\"", "\"bash\"", "\"/bin/sh\"", "\"/bin/bash\""] {
            if code.contains(shell) {
                found.push(format!("{path}: {shell}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "shell invocations in product code: {found:#?}"
    );
}
