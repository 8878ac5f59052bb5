//! How the CLI shows things: aligned tables, JSON, YAML, times and durations.
//!
//! Tables are built from the API's JSON, reading fields leniently (a missing field shows as
//! `-`), so a newer server with more fields never breaks an older CLI. Times are shown in UTC.

use crate::error::CliError;
use serde_json::Value;

/// `-o`: how to print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns with a header (the default).
    #[default]
    Table,
    /// Pretty-printed JSON, exactly what the API returned.
    Json,
    /// YAML, exactly what the API returned.
    Yaml,
}

/// Prints `value` as JSON or YAML (for `table`, callers render their own table).
pub fn structured(output: Output, value: &Value) -> Result<String, CliError> {
    match output {
        Output::Yaml => serde_saphyr::to_string(value)
            .map_err(|e| CliError::Failed(format!("cannot render YAML: {e}"))),
        Output::Json | Output::Table => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| CliError::Failed(format!("cannot render JSON: {e}"))),
    }
}

/// Renders rows under a header, each column as wide as its widest cell, separated by three
/// spaces; the last column is not padded. Widths count characters, not bytes.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            if i + 1 == widths.len().min(row.len()) {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A string field, or `-`.
pub fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => "-".into(),
    }
}

/// An epoch-millis field.
pub fn millis(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// Table of applications: NAME, EMAIL, OWNERS.
pub fn applications_table(apps: &[Value]) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            let owners: Vec<&str> = a
                .get("owners")
                .and_then(Value::as_array)
                .map(|o| o.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            vec![
                text(a, "name"),
                text(a, "email"),
                if owners.is_empty() {
                    "-".into()
                } else {
                    owners.join(",")
                },
            ]
        })
        .collect();
    table(&["NAME", "EMAIL", "OWNERS"], &rows)
}

/// Table of pipelines: APPLICATION, NAME, ID, VERSION, UPDATED.
pub fn pipelines_table(pipelines: &[Value]) -> String {
    let rows: Vec<Vec<String>> = pipelines
        .iter()
        .map(|p| {
            vec![
                text(p, "application"),
                text(p, "name"),
                text(p, "id"),
                text(p, "version"),
                millis(p, "updatedAt").map_or_else(|| "-".into(), datetime),
            ]
        })
        .collect();
    table(&["APPLICATION", "NAME", "ID", "VERSION", "UPDATED"], &rows)
}

/// Table of executions: ID, APPLICATION, PIPELINE, STATUS, STARTED, DURATION.
pub fn executions_table(executions: &[Value], now: i64) -> String {
    let rows: Vec<Vec<String>> = executions
        .iter()
        .map(|e| {
            vec![
                text(e, "id"),
                text(e, "application"),
                text(e, "name"),
                text(e, "status"),
                millis(e, "startTime").map_or_else(|| "-".into(), datetime),
                span(millis(e, "startTime"), millis(e, "endTime"), now),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "APPLICATION",
            "PIPELINE",
            "STATUS",
            "STARTED",
            "DURATION",
        ],
        &rows,
    )
}

/// `get clusters`.
pub fn clusters_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|c| {
            let groups = c
                .get("serverGroups")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let summary = groups
                .iter()
                .map(|g| {
                    let state = if g.get("enabled").and_then(Value::as_bool) == Some(true) {
                        "on"
                    } else {
                        "off"
                    };
                    format!(
                        "{}({state},{}/{})",
                        text(g, "name"),
                        text(g, "healthy"),
                        text(g, "desired")
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                text(c, "name"),
                text(c, "account"),
                text(c, "provider"),
                summary,
            ]
        })
        .collect();
    table(
        &[
            "CLUSTER",
            "ACCOUNT",
            "PROVIDER",
            "SERVER GROUPS (state,healthy/desired)",
        ],
        &rows,
    )
}

/// `get servergroups`.
pub fn server_groups_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|g| {
            let instances = g
                .get("instances")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let up = instances
                .iter()
                .filter(|i| text(i, "state") == "UP")
                .count();
            let desired = g
                .get("capacity")
                .map(|c| text(c, "desired"))
                .unwrap_or_default();
            let version = g
                .get("artifact")
                .map(|a| text(a, "version"))
                .unwrap_or_default();
            let enabled = if g.get("enabled").and_then(Value::as_bool) == Some(true) {
                "yes"
            } else {
                "no"
            };
            vec![
                text(g, "name"),
                text(g, "account"),
                enabled.into(),
                text(g, "weight"),
                format!("{up}/{desired}"),
                version,
                text(g, "deployedBy"),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ACCOUNT",
            "ENABLED",
            "WEIGHT",
            "HEALTHY",
            "VERSION",
            "DEPLOYED BY",
        ],
        &rows,
    )
}

/// `get instances`.
pub fn instances_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|row| {
            let i = row.get("instance").cloned().unwrap_or(Value::Null);
            vec![
                text(&i, "id"),
                text(row, "serverGroup"),
                text(&i, "address"),
                text(&i, "state"),
                text(&i, "restarts"),
                text(&i, "lastExit"),
            ]
        })
        .collect();
    table(
        &[
            "INSTANCE",
            "SERVER GROUP",
            "ADDRESS",
            "STATE",
            "RESTARTS",
            "LAST EXIT",
        ],
        &rows,
    )
}

/// `ferry get canaryconfigs`.
pub fn canary_configs_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|c| {
            vec![
                text(c, "name"),
                text(c, "version"),
                text(c, "metrics"),
                text(c, "updatedBy"),
                millis(c, "updatedAt").map(datetime).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["NAME", "VERSION", "METRICS", "UPDATED BY", "UPDATED"],
        &rows,
    )
}

/// `get loadbalancers`.
pub fn load_balancers_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|lb| {
            let ports = lb
                .get("listeners")
                .and_then(Value::as_array)
                .map(|ls| {
                    ls.iter()
                        .map(|l| text(l, "port"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let routes = lb
                .get("routes")
                .and_then(Value::as_array)
                .map(|rs| {
                    rs.iter()
                        .map(|r| format!("{}→{}", text(r, "pathPrefix"), text(r, "cluster")))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            vec![
                text(lb, "name"),
                text(lb, "account"),
                ports,
                routes,
                text(lb, "defaultCluster"),
            ]
        })
        .collect();
    table(&["NAME", "ACCOUNT", "PORTS", "ROUTES", "DEFAULT"], &rows)
}

/// One execution: a summary line, the stage table (REF, NAME, TYPE, STATUS, DURATION), then
/// every stage error and message.
pub fn execution_detail(e: &Value, now: i64) -> String {
    let mut out = format!(
        "execution {}   {}/{}   {}   started {}   duration {}\n",
        text(e, "id"),
        text(e, "application"),
        text(e, "name"),
        text(e, "status"),
        millis(e, "startTime").map_or_else(|| "-".into(), datetime),
        span(millis(e, "startTime"), millis(e, "endTime"), now),
    );
    if let Some(reason) = e.get("cancellationReason").and_then(Value::as_str) {
        out.push_str(&format!("canceled: {reason}\n"));
    }
    let stages: &[Value] = e
        .get("stages")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let rows: Vec<Vec<String>> = stages
        .iter()
        .map(|s| {
            vec![
                text(s, "refId"),
                text(s, "name"),
                text(s, "type"),
                text(s, "status"),
                span(millis(s, "startTime"), millis(s, "endTime"), now),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["REF", "NAME", "TYPE", "STATUS", "DURATION"],
        &rows,
    ));
    let mut notes = Vec::new();
    for s in stages {
        let label = format!("stage {} \"{}\"", text(s, "refId"), text(s, "name"));
        if let Some(err) = stage_error(s) {
            notes.push(format!("{label}: error: {err}"));
        }
        for m in s
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(m) = m.as_str() {
                notes.push(format!("{label}: {m}"));
            }
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
    out
}

/// A stage's error: `context.exception.details.error`.
pub fn stage_error(stage: &Value) -> Option<String> {
    let details = stage.get("context")?.get("exception")?.get("details")?;
    match details.get("error") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) if !other.is_null() => Some(other.to_string()),
        _ => None,
    }
}

/// The duration between two optional instants; a running span counts up to `now`.
pub fn span(start: Option<i64>, end: Option<i64>, now: i64) -> String {
    match (start, end) {
        (Some(s), Some(e)) => duration(e - s),
        (Some(s), None) => duration(now - s),
        _ => "-".into(),
    }
}

/// `850ms`, `1.2s`, `3m04s`, `2h05m`, `3d04h`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        return format!("{}.{}s", ms / 1000, (ms % 1000) / 100);
    }
    let s = ms / 1000;
    if s < 3600 {
        return format!("{}m{:02}s", s / 60, s % 60);
    }
    if s < 86_400 {
        return format!("{}h{:02}m", s / 3600, (s % 3600) / 60);
    }
    format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
}

/// `HH:MM:SS` (UTC) of an epoch-millis instant.
pub fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let day = secs.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, (day % 3600) / 60, day % 60)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of an epoch-millis instant.
pub fn datetime(ms: i64) -> String {
    let days = ms.div_euclid(1000).div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {}", clock(ms))
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Now, epoch millis.
pub fn now_millis() -> i64 {
    ferry_core::now_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "EMAIL", "OWNERS"],
            &[
                vec!["shop".into(), "team@example.com".into(), "alice,bob".into()],
                vec!["payments-api".into(), "-".into(), "-".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME           EMAIL              OWNERS\n\
             shop           team@example.com   alice,bob\n\
             payments-api   -                  -\n"
        );
        assert_eq!(table(&["A", "B"], &[]), "A   B\n");
    }

    #[test]
    fn tables_count_characters_not_bytes() {
        let t = table(&["N", "X"], &[vec!["d\u{e9}j\u{e0}".into(), "1".into()]]);
        assert_eq!(t, "N      X\nd\u{e9}j\u{e0}   1\n");
    }

    #[test]
    fn resource_tables() {
        let apps = [
            json!({"name": "shop", "email": "t@x.io", "owners": ["a", "b"]}),
            json!({"name": "b"}),
        ];
        assert_eq!(
            applications_table(&apps),
            "NAME   EMAIL    OWNERS\nshop   t@x.io   a,b\nb      -        -\n"
        );
        let pls = [
            json!({"application": "shop", "name": "release", "id": "p1", "version": 3, "updatedAt": 0}),
        ];
        assert_eq!(
            pipelines_table(&pls),
            "APPLICATION   NAME      ID   VERSION   UPDATED\nshop          release   p1   3         1970-01-01 00:00:00\n"
        );
        let exs = [
            json!({"id": "e1", "application": "shop", "name": "release", "status": "RUNNING", "startTime": 1000}),
        ];
        let t = executions_table(&exs, 4500);
        assert!(
            t.starts_with(
                "ID   APPLICATION   PIPELINE   STATUS    STARTED               DURATION\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("e1   shop          release    RUNNING   1970-01-01 00:00:01   3.5s"),
            "{t}"
        );
    }

    #[test]
    fn execution_detail_shows_stages_and_errors() {
        let e = json!({"id": "e1", "application": "shop", "name": "release", "status": "TERMINAL",
            "startTime": 0, "endTime": 2000, "stages": [
                {"refId": "1", "name": "Check", "type": "checkPreconditions", "status": "TERMINAL",
                 "startTime": 0, "endTime": 10, "messages": ["a warning"],
                 "context": {"exception": {"details": {"error": "preconditions[0]: nope"}}}}]});
        let d = execution_detail(&e, 0);
        assert!(
            d.contains("REF   NAME    TYPE                 STATUS     DURATION"),
            "{d}"
        );
        assert!(
            d.contains("1     Check   checkPreconditions   TERMINAL   10ms"),
            "{d}"
        );
        assert!(
            d.contains("stage 1 \"Check\": error: preconditions[0]: nope"),
            "{d}"
        );
        assert!(d.contains("stage 1 \"Check\": a warning"), "{d}");
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(1250), "1.2s");
        assert_eq!(duration(184_000), "3m04s");
        assert_eq!(duration(7_500_000), "2h05m");
        assert_eq!(duration(-5), "0ms");
        assert_eq!(clock(45_296_000), "12:34:56");
        assert_eq!(datetime(0), "1970-01-01 00:00:00");
        // 2024-02-29 12:00:01 UTC (a leap day).
        assert_eq!(datetime(1_709_208_001_000), "2024-02-29 12:00:01");
        assert_eq!(span(Some(1), None, 2001), "2.0s");
        assert_eq!(span(None, None, 5), "-");
    }

    #[test]
    fn structured_output() {
        let v = json!({"a": [1, 2]});
        assert_eq!(
            structured(Output::Json, &v).unwrap(),
            "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n"
        );
        let y = structured(Output::Yaml, &v).unwrap();
        assert!(y.contains("a:"), "{y}");
    }
}
