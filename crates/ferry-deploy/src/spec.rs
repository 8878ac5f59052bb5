//! Readers for the configuration fields server-group stages share: where (provider, account),
//! which server group (cluster + target, or a name), capacity, artifact and health check. Each
//! reader records a problem with its path for every wrong field and accepts expressions in
//! lenient (pre-run) mode.

use crate::providers::DEFAULT_ACCOUNT;
use crate::target::Target;
use ferry_core::fields::Fields;
use ferry_core::looks_like_expression;
use ferry_provider::{Artifact, ArtifactSource, Capacity, HealthCheck, Moniker};
use serde_json::Value;
use std::collections::BTreeMap;

/// Where a server group lives: provider kind (`None` = the default, `host`) and account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `provider` or `cloudProvider`.
    pub provider: Option<String>,
    /// `account` or `credentials`; default `local`.
    pub account: String,
}

/// Which server group a stage acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRef {
    /// Resolved at run time within the cluster.
    Dynamic(Target),
    /// An explicit server group name.
    Named(String),
}

/// A server group reference as written: location, cluster and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerGroupRef {
    /// Provider and account.
    pub location: Location,
    /// `application` or `moniker.app`, when given.
    pub application: Option<String>,
    /// The cluster (from the server group name when only that is given).
    pub cluster: String,
    /// Dynamic target or name.
    pub target: TargetRef,
}

/// Runs `visit` on every element of the array field `key` with a reader for that element, in
/// the same mode as `f`. Returns the number of elements, `None` when the field is absent or not
/// a list (or deferred).
pub fn each_element(
    f: &mut Fields<'_>,
    key: &str,
    mut visit: impl FnMut(&mut Fields<'_>, usize),
) -> Option<usize> {
    let items = f.opt_array(key)?;
    let lenient = f.is_lenient();
    let base = f.path_of(key);
    for (i, item) in items.iter().enumerate() {
        let path = format!("{base}[{i}]");
        let mut child = if lenient {
            Fields::lenient(item, &path, &mut *f.problems)
        } else {
            Fields::new(item, &path, &mut *f.problems)
        };
        visit(&mut child, i);
    }
    Some(items.len())
}

/// True when the field holds an expression string (in either mode; in strict mode that means
/// it was left unevaluated, and the typed readers will report it).
pub fn is_expression(f: &Fields<'_>, key: &str) -> bool {
    f.get(key)
        .and_then(Value::as_str)
        .is_some_and(looks_like_expression)
}

/// True when `value` is an expression: fine before a run (lenient mode, the value is only known
/// later), a problem at `key` after evaluation (it could not be evaluated).
pub fn unresolved(f: &mut Fields<'_>, key: &str, value: &str) -> bool {
    if !looks_like_expression(value) {
        return false;
    }
    if !f.is_lenient() {
        f.problem(
            key,
            format!("the expression `{value}` could not be evaluated"),
        );
    }
    true
}

/// True when the field holds an object. An expression string is fine before a run and a
/// problem after evaluation; any other value is a problem.
pub fn is_object(f: &mut Fields<'_>, key: &str) -> bool {
    if let Some(v) = f.get(key).and_then(Value::as_str).map(str::to_string)
        && unresolved(f, key, &v)
    {
        return false;
    }
    f.opt_object(key).is_some()
}

/// An optional non-empty string, trying each alias in turn.
pub fn opt_string(f: &mut Fields<'_>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| f.opt_str(k))
        .filter(|s| !s.trim().is_empty())
}

/// An optional integer within `lo..=hi`.
pub fn opt_u32_in(f: &mut Fields<'_>, key: &str, lo: u32, hi: u32) -> Option<u32> {
    let v = f.opt_u64(key)?;
    if v < u64::from(lo) || v > u64::from(hi) {
        f.problem(key, format!("must be between {lo} and {hi}, found {v}"));
        return None;
    }
    Some(v as u32)
}

/// A required integer within `lo..=hi`. Returns `None` (without a problem) when deferred.
pub fn req_u32_in(f: &mut Fields<'_>, key: &str, lo: u32, hi: u32) -> Option<u32> {
    if f.get(key).is_none() {
        f.problem(key, "is required");
        return None;
    }
    opt_u32_in(f, key, lo, hi)
}

/// `provider`/`cloudProvider` and `account`/`credentials`.
pub fn location(f: &mut Fields<'_>) -> Location {
    Location {
        provider: opt_string(f, &["provider", "cloudProvider"]),
        account: opt_string(f, &["account", "credentials"])
            .unwrap_or_else(|| DEFAULT_ACCOUNT.into()),
    }
}

/// `application`, else `moniker.app`.
pub fn application(f: &mut Fields<'_>) -> Option<String> {
    if let Some(a) = opt_string(f, &["application"]) {
        return Some(a);
    }
    let mut m = f.child("moniker")?;
    opt_string(&mut m, &["app"])
}

/// Checks a cluster name (unless it is an expression) and returns it.
pub fn cluster_name(f: &mut Fields<'_>, key: &str, value: String) -> Option<String> {
    if unresolved(f, key, &value) {
        return None;
    }
    match Moniker::parse(&value) {
        Ok(m) if m.sequence.is_none() => Some(value),
        Ok(_) => {
            f.problem(
                key,
                format!("\"{value}\" is a server group name, not a cluster name"),
            );
            None
        }
        Err(e) => {
            f.problem(key, e.to_string());
            None
        }
    }
}

/// `cluster` + `target`, or `serverGroupName` (alias `asgName`), plus the location. An explicit
/// name wins over a target, as in Spinnaker.
pub fn server_group_ref(f: &mut Fields<'_>) -> Option<ServerGroupRef> {
    let location = location(f);
    let application = application(f);
    let cluster = opt_string(f, &["cluster"]).and_then(|c| cluster_name(f, "cluster", c));
    let name = opt_string(f, &["serverGroupName", "asgName"]);
    let name_key = if f.get("serverGroupName").is_some() {
        "serverGroupName"
    } else {
        "asgName"
    };
    if let Some(name) = name {
        if unresolved(f, name_key, &name) {
            return None;
        }
        let parsed = match Moniker::parse(&name) {
            Ok(m) if m.sequence.is_some() => m,
            Ok(_) => {
                f.problem(
                    name_key,
                    format!("\"{name}\" is not a server group name (app-stack-detail-vNNN)"),
                );
                return None;
            }
            Err(e) => {
                f.problem(name_key, e.to_string());
                return None;
            }
        };
        let own_cluster = parsed.cluster_name();
        if let Some(c) = &cluster
            && !looks_like_expression(c)
            && *c != own_cluster
        {
            f.problem(
                name_key,
                format!("server group \"{name}\" is not in cluster \"{c}\""),
            );
            return None;
        }
        return Some(ServerGroupRef {
            location,
            application,
            cluster: own_cluster,
            target: TargetRef::Named(name),
        });
    }
    let target = match opt_string(f, &["target"]) {
        None => {
            f.problem(
                "target",
                format!(
                    "is required (one of {}), or give serverGroupName",
                    Target::names()
                ),
            );
            None
        }
        Some(t) if unresolved(f, "target", &t) => None,
        Some(t) => match Target::parse(&t) {
            Some(t) => Some(t),
            None => {
                f.problem(
                    "target",
                    format!("unknown target \"{t}\"; use one of {}", Target::names()),
                );
                None
            }
        },
    };
    if f.get("cluster").is_none() {
        f.problem("cluster", "is required with a target");
    }
    Some(ServerGroupRef {
        location,
        application,
        cluster: cluster?,
        target: TargetRef::Dynamic(target?),
    })
}

/// A cluster reference without a target (cluster-wide stages): location, application, cluster.
pub fn cluster_ref(f: &mut Fields<'_>) -> Option<(Location, Option<String>, String)> {
    let location = location(f);
    let application = application(f);
    let cluster = match opt_string(f, &["cluster"]) {
        None => {
            f.problem("cluster", "is required");
            None
        }
        Some(c) => cluster_name(f, "cluster", c),
    };
    Some((location, application, cluster?))
}

/// A capacity whose fields may each be missing (`resizeServerGroup`'s `capacity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartialCapacity {
    /// `min`.
    pub min: Option<u32>,
    /// `max`.
    pub max: Option<u32>,
    /// `desired`.
    pub desired: Option<u32>,
}

impl PartialCapacity {
    /// Fills missing fields from `current`.
    pub fn over(&self, current: Capacity) -> Capacity {
        Capacity {
            min: self.min.unwrap_or(current.min),
            max: self.max.unwrap_or(current.max),
            desired: self.desired.unwrap_or(current.desired),
        }
    }
}

/// Upper bound for instance counts.
pub const MAX_INSTANCES: u32 = 10_000;

/// Checks min ≤ desired ≤ max for the fields present, recording problems under `f`.
fn check_relations(f: &mut Fields<'_>, c: &PartialCapacity) -> bool {
    let mut ok = true;
    if let (Some(min), Some(max)) = (c.min, c.max)
        && min > max
    {
        f.problem("min", format!("min {min} is greater than max {max}"));
        ok = false;
    }
    if let (Some(min), Some(d)) = (c.min, c.desired)
        && d < min
    {
        f.problem("desired", format!("desired {d} is below min {min}"));
        ok = false;
    }
    if let (Some(max), Some(d)) = (c.max, c.desired)
        && d > max
    {
        f.problem("desired", format!("desired {d} is above max {max}"));
        ok = false;
    }
    ok
}

/// A capacity object where some fields may be missing; at least one must be given.
pub fn partial_capacity(f: &mut Fields<'_>, key: &str) -> Option<PartialCapacity> {
    if !is_object(f, key) {
        return None;
    }
    let mut c = f.child(key)?;
    let p = PartialCapacity {
        min: opt_u32_in(&mut c, "min", 0, MAX_INSTANCES),
        max: opt_u32_in(&mut c, "max", 0, MAX_INSTANCES),
        desired: opt_u32_in(&mut c, "desired", 0, MAX_INSTANCES),
    };
    if ["min", "max", "desired"].iter().all(|k| c.get(k).is_none()) {
        c.problem("desired", "give at least one of min, max and desired");
        return None;
    }
    check_relations(&mut c, &p).then_some(p)
}

/// A full capacity object `{min, max, desired}` with min ≤ desired ≤ max.
pub fn capacity(f: &mut Fields<'_>, key: &str) -> Option<Capacity> {
    if f.get(key).is_none() {
        f.problem(key, "is required ({min, max, desired})");
        return None;
    }
    if !is_object(f, key) {
        return None;
    }
    let mut c = f.child(key)?;
    let p = PartialCapacity {
        min: req_u32_in(&mut c, "min", 0, MAX_INSTANCES),
        max: req_u32_in(&mut c, "max", 0, MAX_INSTANCES),
        desired: req_u32_in(&mut c, "desired", 0, MAX_INSTANCES),
    };
    if !check_relations(&mut c, &p) {
        return None;
    }
    Some(Capacity {
        min: p.min?,
        max: p.max?,
        desired: p.desired?,
    })
}

/// A required list of strings with at least one element.
fn command(f: &mut Fields<'_>, key: &str) -> Option<Vec<String>> {
    if is_expression(f, key) {
        return None;
    }
    if f.get(key).is_none() {
        f.problem(key, "is required (program and arguments)");
        return None;
    }
    let list = f.string_list(key);
    if list.is_empty() {
        f.problem(key, "must not be empty");
        return None;
    }
    Some(list)
}

/// `artifact`: `{name, version, source: {type: command|executable|tarball|image, ...}, env}`,
/// the serde shape of `ferry_provider::Artifact`.
pub fn artifact(f: &mut Fields<'_>, key: &str) -> Option<Artifact> {
    if f.get(key).is_none() {
        f.problem(key, "is required ({name, version, source})");
        return None;
    }
    if !is_object(f, key) {
        return None;
    }
    let mut a = f.child(key)?;
    let name = a.required_str("name");
    let version = a.required_str("version");
    let mut env = BTreeMap::new();
    if let Some(obj) = a.opt_object("env") {
        for (k, v) in obj {
            match v {
                Value::String(s) => {
                    env.insert(k.clone(), s.clone());
                }
                Value::Number(n) => {
                    env.insert(k.clone(), n.to_string());
                }
                Value::Bool(b) => {
                    env.insert(k.clone(), b.to_string());
                }
                _ => a.problem(&format!("env.{k}"), "must be a string"),
            }
        }
    }
    let source = match a.get("source") {
        None => {
            a.problem(
                "source",
                "is required ({type: command|executable|tarball|image, ...})",
            );
            None
        }
        Some(_) if !is_object(&mut a, "source") => None,
        Some(_) => {
            let mut s = a.child("source")?;
            let kind = s.required_str("type");
            match kind.as_deref() {
                None => None,
                Some(t) if unresolved(&mut s, "type", t) => None,
                Some("command") => {
                    command(&mut s, "command").map(|command| ArtifactSource::Command { command })
                }
                Some("executable") => {
                    let path = s.required_str("path");
                    let args = s.string_list("args");
                    path.map(|path| ArtifactSource::Executable { path, args })
                }
                Some("tarball") => {
                    let path = s.required_str("path");
                    let command = command(&mut s, "command");
                    Some(ArtifactSource::Tarball {
                        path: path?,
                        command: command?,
                    })
                }
                Some("image") => s
                    .required_str("image")
                    .map(|image| ArtifactSource::Image { image }),
                Some(other) => {
                    s.problem("type", format!("unknown source type \"{other}\"; use command, executable, tarball or image"));
                    None
                }
            }
        }
    };
    Some(Artifact {
        name: name?,
        version: version?,
        source: source?,
        env,
    })
}

/// `healthCheck`: `{path, intervalMs, timeoutMs, healthyThreshold, unhealthyThreshold}`, each
/// defaulting to `HealthCheck::default()`.
pub fn health_check(f: &mut Fields<'_>, key: &str) -> Option<HealthCheck> {
    let d = HealthCheck::default();
    if f.get(key).is_none() {
        return Some(d);
    }
    if !is_object(f, key) {
        return None;
    }
    let mut h = f.child(key)?;
    let path = h.opt_str("path");
    if let Some(p) = &path
        && !p.starts_with('/')
        && !looks_like_expression(p)
    {
        h.problem("path", format!("must start with '/', found \"{p}\""));
    }
    let ms = |h: &mut Fields<'_>, k: &str, default: u64| -> u64 {
        match h.opt_u64(k) {
            Some(0) => {
                h.problem(k, "must be at least 1");
                default
            }
            Some(v) => v,
            None => default,
        }
    };
    let interval_ms = ms(&mut h, "intervalMs", d.interval_ms);
    let timeout_ms = ms(&mut h, "timeoutMs", d.timeout_ms);
    let healthy_threshold =
        opt_u32_in(&mut h, "healthyThreshold", 1, 100).unwrap_or(d.healthy_threshold);
    let unhealthy_threshold =
        opt_u32_in(&mut h, "unhealthyThreshold", 1, 100).unwrap_or(d.unhealthy_threshold);
    Some(HealthCheck {
        path: path.unwrap_or(d.path),
        interval_ms,
        timeout_ms,
        healthy_threshold,
        unhealthy_threshold,
    })
}

/// An optional number of seconds, at least `min`.
pub fn seconds(f: &mut Fields<'_>, key: &str, min: u64) -> Option<u64> {
    let v = f.opt_u64(key)?;
    if v < min {
        f.problem(key, format!("must be at least {min}"));
        return None;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::Problem;
    use serde_json::json;

    fn read<T>(
        v: Value,
        lenient: bool,
        r: impl FnOnce(&mut Fields<'_>) -> Option<T>,
    ) -> (Option<T>, Vec<String>) {
        let mut problems: Vec<Problem> = Vec::new();
        let out = {
            let mut f = if lenient {
                Fields::lenient(&v, "s", &mut problems)
            } else {
                Fields::new(&v, "s", &mut problems)
            };
            r(&mut f)
        };
        (out, problems.iter().map(|p| p.path.clone()).collect())
    }

    #[test]
    fn capacity_rules() {
        let (c, p) = read(
            json!({"capacity": {"min": 1, "max": 3, "desired": 2}}),
            false,
            |f| capacity(f, "capacity"),
        );
        assert_eq!(
            c,
            Some(Capacity {
                min: 1,
                max: 3,
                desired: 2
            })
        );
        assert!(p.is_empty());
        let (_, p) = read(
            json!({"capacity": {"min": 4, "max": 3, "desired": 5}}),
            false,
            |f| capacity(f, "capacity"),
        );
        assert_eq!(p, vec!["s.capacity.min", "s.capacity.desired"]);
        let (_, p) = read(json!({"capacity": {"min": 1}}), false, |f| {
            capacity(f, "capacity")
        });
        assert_eq!(p, vec!["s.capacity.max", "s.capacity.desired"]);
        let (c, p) = read(
            json!({"capacity": {"min": "${x}", "max": 3, "desired": 2}}),
            true,
            |f| capacity(f, "capacity"),
        );
        assert_eq!((c, p.len()), (None, 0));
        let (c, p) = read(json!({"capacity": "${parameters.capacity}"}), true, |f| {
            capacity(f, "capacity")
        });
        assert_eq!((c, p.len()), (None, 0));
        let (_, p) = read(json!({"capacity": "${parameters.capacity}"}), false, |f| {
            capacity(f, "capacity")
        });
        assert_eq!(p, vec!["s.capacity"]);
    }

    #[test]
    fn targets_and_names() {
        let (r, p) = read(
            json!({"cluster": "shop-prod", "target": "ancestor_asg_dynamic"}),
            false,
            server_group_ref,
        );
        assert!(p.is_empty());
        let r = r.unwrap();
        assert_eq!(r.target, TargetRef::Dynamic(Target::Ancestor));
        assert_eq!(r.location.account, "local");
        let (r, _) = read(
            json!({"serverGroupName": "shop-prod-v003", "credentials": "qa"}),
            false,
            server_group_ref,
        );
        let r = r.unwrap();
        assert_eq!(
            (r.cluster.as_str(), r.location.account.as_str()),
            ("shop-prod", "qa")
        );
        let (_, p) = read(
            json!({"cluster": "shop-prod", "target": "newest"}),
            false,
            server_group_ref,
        );
        assert_eq!(p, vec!["s.target"]);
        let (_, p) = read(
            json!({"target": "current_asg_dynamic"}),
            false,
            server_group_ref,
        );
        assert_eq!(p, vec!["s.cluster"]);
        let (_, p) = read(
            json!({"serverGroupName": "shop-prod", "cluster": "shop-prod"}),
            false,
            server_group_ref,
        );
        assert_eq!(p, vec!["s.serverGroupName"]);
        let (_, p) = read(
            json!({"serverGroupName": "shop-prod-v001", "cluster": "shop-qa"}),
            false,
            server_group_ref,
        );
        assert_eq!(p, vec!["s.serverGroupName"]);
        let (_, p) = read(
            json!({"cluster": "${parameters.c}", "target": "${parameters.t}"}),
            true,
            server_group_ref,
        );
        assert!(p.is_empty());
    }

    #[test]
    fn artifacts() {
        let v = json!({"artifact": {"name": "shop", "version": "1.2", "source": {"type": "command", "command": ["shop", "--x"]}, "env": {"A": 1}}});
        let (a, p) = read(v, false, |f| artifact(f, "artifact"));
        assert!(p.is_empty());
        let a = a.unwrap();
        assert_eq!(a.env.get("A").map(String::as_str), Some("1"));
        let v = json!({"artifact": {"version": "", "source": {"type": "zip"}}});
        let (_, p) = read(v, false, |f| artifact(f, "artifact"));
        assert_eq!(
            p,
            vec![
                "s.artifact.name",
                "s.artifact.version",
                "s.artifact.source.type"
            ]
        );
        let v = json!({"artifact": {"name": "x", "version": "1", "source": {"type": "tarball", "command": []}}});
        let (_, p) = read(v, false, |f| artifact(f, "artifact"));
        assert_eq!(
            p,
            vec!["s.artifact.source.path", "s.artifact.source.command"]
        );
    }
}
