//! Kayenta's canary configuration document, read into validated types.
//!
//! [`parse_canary_config`] reads the whole document and reports every problem with its JSON
//! path (`metrics[2].analysisConfigurations.canary.direction: must be one of increase,
//! decrease, either`), never just the first. Unknown fields are ignored, as Kayenta's own
//! documents carry many (`configVersion`, `templates`, timestamps…).
//!
//! Defaults (Kayenta's): `direction` either, `nanStrategy` remove, `critical`, `mustHaveData`
//! and `muted` false, `effectSize.measure` meanRatio with every threshold 1.0 (0.5 for cles),
//! `outliers.strategy` keep with `outlierFactor` 3.0, `scopeName` "default". The judge name
//! may be `NetflixACAJudge-v1.0` or the bare `NetflixACAJudge`; both mean this judge and are
//! normalised to the former.
//!
//! Rules beyond the shape: the config name is a DNS-label-like name (1–63 ASCII letters,
//! digits, `-`, `_` or `.`, starting and ending with a letter or digit); at least one metric;
//! unique metric names; every metric in at least one group; `query` is an object with a
//! non-empty string `type` (kept as JSON for the metric-source layer); `classifier.groupWeights`
//! names only groups some metric uses, with finite weights ≥ 0 summing to at most 100;
//! `outlierFactor` > 0; meanRatio thresholds > 0 and cles thresholds within [0, 1].

use ferry_core::fields::{Fields, kind};
use ferry_core::problem::Problem;
use ferry_core::{Problems, problem::join_path};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The judge this crate implements, as Kayenta names it.
pub const JUDGE_NAME: &str = "NetflixACAJudge-v1.0";
/// The unversioned alias Kayenta also accepts.
pub const JUDGE_ALIAS: &str = "NetflixACAJudge";

/// A validated canary configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryConfig {
    /// The configuration's name.
    pub name: String,
    /// Free text for people.
    pub description: Option<String>,
    /// Applications the config belongs to (may be empty).
    pub applications: Vec<String>,
    /// The judge, normalised to [`JUDGE_NAME`].
    pub judge: String,
    /// The metrics, in document order.
    pub metrics: Vec<MetricConfig>,
    /// Explicit group weights (percent). Groups without one share what is left of 100.
    pub group_weights: BTreeMap<String, f64>,
}

/// One metric and how the judge treats it (Kayenta's `analysisConfigurations.canary`).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricConfig {
    /// Unique name within the config.
    pub name: String,
    /// The metric-source query, `{"type": ..., ...}`; only `type` is checked here.
    pub query: Value,
    /// Groups the metric scores in (at least one).
    pub groups: Vec<String>,
    /// Which scope of the canary stage supplies this metric's data.
    pub scope_name: String,
    /// Which deviations count as failures.
    pub direction: Direction,
    /// What to do with missing (NaN) samples.
    pub nan_strategy: NanStrategy,
    /// A failure of this metric fails the whole analysis.
    pub critical: bool,
    /// No data counts as a failure (`NodataFailMetric`) instead of being left out.
    pub must_have_data: bool,
    /// The metric is judged and reported but does not count.
    pub muted: bool,
    /// Effect-size gate.
    pub effect_size: EffectSize,
    /// Outlier handling.
    pub outliers: Outliers,
}

/// Which deviation of the canary fails a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Only a significant increase (High).
    Increase,
    /// Only a significant decrease (Low).
    Decrease,
    /// Either (the default).
    Either,
}

/// What to do with NaN samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NanStrategy {
    /// Drop them (the default).
    Remove,
    /// Turn them into 0.
    Replace,
}

/// How the size of a deviation is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EffectSizeMeasure {
    /// mean(canary) / mean(baseline) (the default).
    MeanRatio,
    /// Common-language effect size: the probability that a canary sample exceeds a baseline
    /// sample (ties count half).
    Cles,
}

/// The effect-size gate of a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EffectSize {
    /// The measure.
    pub measure: EffectSizeMeasure,
    /// High needs an effect of at least this much.
    pub allowed_increase: f64,
    /// Low needs an effect of at most this much.
    pub allowed_decrease: f64,
    /// A critical High fails the analysis at an effect of at least this much.
    pub critical_increase: f64,
    /// A critical Low fails the analysis at an effect of at most this much.
    pub critical_decrease: f64,
}

impl EffectSize {
    /// Kayenta's defaults for a measure: 1.0 for meanRatio, 0.5 for cles, every threshold.
    pub fn defaults(measure: EffectSizeMeasure) -> EffectSize {
        let t = match measure {
            EffectSizeMeasure::MeanRatio => 1.0,
            EffectSizeMeasure::Cles => 0.5,
        };
        EffectSize {
            measure,
            allowed_increase: t,
            allowed_decrease: t,
            critical_increase: t,
            critical_decrease: t,
        }
    }
}

/// Whether outliers are dropped before judging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OutlierStrategy {
    /// Keep every sample (the default).
    Keep,
    /// Drop samples outside `[min(P1, Q1 − f·IQR), max(P99, Q3 + f·IQR)]`.
    Remove,
}

/// Outlier handling of a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outliers {
    /// Keep or remove.
    pub strategy: OutlierStrategy,
    /// The IQR multiple `f` (default 3.0).
    pub factor: f64,
}

impl Default for Outliers {
    fn default() -> Self {
        Outliers {
            strategy: OutlierStrategy::Keep,
            factor: 3.0,
        }
    }
}

impl Direction {
    /// The document spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Increase => "increase",
            Direction::Decrease => "decrease",
            Direction::Either => "either",
        }
    }
}

impl NanStrategy {
    /// The document spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NanStrategy::Remove => "remove",
            NanStrategy::Replace => "replace",
        }
    }
}

impl EffectSizeMeasure {
    /// The document spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EffectSizeMeasure::MeanRatio => "meanRatio",
            EffectSizeMeasure::Cles => "cles",
        }
    }
}

impl OutlierStrategy {
    /// The document spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OutlierStrategy::Keep => "keep",
            OutlierStrategy::Remove => "remove",
        }
    }
}

impl CanaryConfig {
    /// The normalised document: Kayenta's shape with every default spelled out.
    pub fn to_document(&self) -> Value {
        let metrics: Vec<Value> = self.metrics.iter().map(MetricConfig::to_document).collect();
        let mut doc = json!({
            "name": self.name,
            "applications": self.applications,
            "judge": { "name": self.judge },
            "metrics": metrics,
            "classifier": { "groupWeights": self.group_weights },
        });
        if let (Some(d), Some(obj)) = (&self.description, doc.as_object_mut()) {
            obj.insert("description".into(), Value::String(d.clone()));
        }
        doc
    }

    /// Every group used by a metric, in order of first use.
    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in self.metrics.iter().flat_map(|m| &m.groups) {
            if !out.contains(g) {
                out.push(g.clone());
            }
        }
        out
    }
}

impl MetricConfig {
    /// The normalised document of one metric.
    pub fn to_document(&self) -> Value {
        let e = &self.effect_size;
        json!({
            "name": self.name,
            "query": self.query,
            "groups": self.groups,
            "scopeName": self.scope_name,
            "analysisConfigurations": { "canary": {
                "direction": self.direction.as_str(),
                "nanStrategy": self.nan_strategy.as_str(),
                "critical": self.critical,
                "mustHaveData": self.must_have_data,
                "muted": self.muted,
                "effectSize": {
                    "measure": e.measure.as_str(),
                    "allowedIncrease": e.allowed_increase,
                    "allowedDecrease": e.allowed_decrease,
                    "criticalIncrease": e.critical_increase,
                    "criticalDecrease": e.critical_decrease,
                },
                "outliers": {
                    "strategy": self.outliers.strategy.as_str(),
                    "outlierFactor": self.outliers.factor,
                },
            }},
        })
    }
}

/// Reads and validates a canary configuration, reporting every problem with its path.
pub fn parse_canary_config(doc: &Value) -> Result<CanaryConfig, Problems> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut f = Fields::new(doc, "", &mut problems);

    let name = f.required_str("name").unwrap_or_default();
    if !name.is_empty() && !is_config_name(&name) {
        f.problem(
            "name",
            "must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        );
    }
    let description = f.opt_str("description");
    let applications = f.string_list("applications");
    let judge = match f.child("judge") {
        Some(mut j) => match j.opt_str("name") {
            None => JUDGE_NAME.to_string(),
            Some(n) if n == JUDGE_NAME || n == JUDGE_ALIAS => JUDGE_NAME.to_string(),
            Some(n) => {
                j.problem(
                    "name",
                    format!("unknown judge \"{n}\"; must be {JUDGE_NAME} (or {JUDGE_ALIAS})"),
                );
                JUDGE_NAME.to_string()
            }
        },
        None => JUDGE_NAME.to_string(),
    };
    // Type problems are recorded by the reader; the values are taken from `doc` itself so
    // that they do not keep `problems` borrowed.
    let metrics_given = f.get("metrics").is_some();
    let _ = f.opt_array("metrics");
    let _ = f.opt_object("classifier");
    let metric_docs = doc.get("metrics").and_then(Value::as_array);
    let classifier = doc.get("classifier").and_then(Value::as_object);

    if !metrics_given || metric_docs.is_some_and(Vec::is_empty) {
        problems.push(Problem::new("metrics", "at least one metric is required"));
    }
    let mut metrics = Vec::new();
    let mut first_index: BTreeMap<String, usize> = BTreeMap::new();
    for (i, m) in metric_docs.into_iter().flatten().enumerate() {
        let path = format!("metrics[{i}]");
        let Some(metric) = parse_metric(m, &path, &mut problems) else {
            continue;
        };
        if !metric.name.is_empty() {
            if let Some(&first) = first_index.get(&metric.name) {
                problems.push(Problem::new(
                    join_path(&path, "name"),
                    format!(
                        "duplicate metric name \"{}\" (first used at metrics[{first}])",
                        metric.name
                    ),
                ));
            } else {
                first_index.insert(metric.name.clone(), i);
            }
        }
        metrics.push(metric);
    }

    let group_weights = parse_group_weights(classifier, &metrics, &mut problems);

    Problems::into_result(
        problems,
        CanaryConfig {
            name,
            description,
            applications,
            judge,
            metrics,
            group_weights,
        },
    )
}

/// `classifier.groupWeights`: known groups, finite weights ≥ 0, Σ ≤ 100.
fn parse_group_weights(
    classifier: Option<&Map<String, Value>>,
    metrics: &[MetricConfig],
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, f64> {
    let mut weights = BTreeMap::new();
    let Some(classifier) = classifier else {
        return weights;
    };
    let Some(raw) = classifier.get("groupWeights").filter(|v| !v.is_null()) else {
        return weights;
    };
    let Some(raw) = raw.as_object() else {
        problems.push(Problem::new(
            "classifier.groupWeights",
            format!("must be an object, found {}", kind(raw)),
        ));
        return weights;
    };
    let used: Vec<&str> = metrics
        .iter()
        .flat_map(|m| m.groups.iter().map(String::as_str))
        .collect();
    let mut sum = 0.0;
    for (group, w) in raw {
        let path = format!("classifier.groupWeights.{group}");
        if !used.contains(&group.as_str()) {
            problems.push(Problem::new(
                &path,
                format!("group \"{group}\" is not used by any metric"),
            ));
        }
        match w.as_f64() {
            Some(w) if w.is_finite() && w >= 0.0 => {
                sum += w;
                weights.insert(group.clone(), w);
            }
            Some(w) => problems.push(Problem::new(
                &path,
                format!("must be a weight of at least 0, found {w}"),
            )),
            None => problems.push(Problem::new(
                &path,
                format!("must be a number, found {}", kind(w)),
            )),
        }
    }
    if sum > 100.0 + 1e-9 {
        problems.push(Problem::new(
            "classifier.groupWeights",
            format!("weights sum to {sum}; they must sum to at most 100"),
        ));
    }
    weights
}

/// One entry of `metrics`; `None` when it is not even an object.
fn parse_metric(doc: &Value, path: &str, problems: &mut Vec<Problem>) -> Option<MetricConfig> {
    if !doc.is_object() {
        problems.push(Problem::new(
            path,
            format!("must be an object, found {}", kind(doc)),
        ));
        return None;
    }
    let mut f = Fields::new(doc, path, problems);
    let name = f.required_str("name").unwrap_or_default();
    let query = match f.get("query") {
        None => {
            f.problem("query", "is required");
            Value::Null
        }
        Some(q) => {
            match q.as_object() {
                None => f.problem("query", format!("must be an object, found {}", kind(q))),
                Some(obj) => match obj.get("type") {
                    Some(Value::String(t)) if !t.trim().is_empty() => {}
                    Some(Value::String(_)) => f.problem("query.type", "must not be empty"),
                    None | Some(Value::Null) => f.problem("query.type", "is required"),
                    Some(other) => f.problem(
                        "query.type",
                        format!("must be a string, found {}", kind(other)),
                    ),
                },
            }
            q.clone()
        }
    };
    let groups = f.string_list("groups");
    if groups.is_empty() && f.get("groups").is_none_or(|g| g.is_array()) {
        f.problem("groups", "at least one group is required");
    }
    for (i, g) in groups.iter().enumerate() {
        if g.trim().is_empty() {
            f.problem(&format!("groups[{i}]"), "must not be empty");
        }
    }
    let scope_name = f.opt_str("scopeName").unwrap_or_else(|| "default".into());

    let mut metric = MetricConfig {
        name,
        query,
        groups,
        scope_name,
        direction: Direction::Either,
        nan_strategy: NanStrategy::Remove,
        critical: false,
        must_have_data: false,
        muted: false,
        effect_size: EffectSize::defaults(EffectSizeMeasure::MeanRatio),
        outliers: Outliers::default(),
    };
    let Some(mut analysis) = f.child("analysisConfigurations") else {
        return Some(metric);
    };
    let Some(mut canary) = analysis.child("canary") else {
        return Some(metric);
    };
    read_canary_analysis(&mut canary, &mut metric);
    Some(metric)
}

/// Reads one enum-valued field; a problem names every allowed spelling.
fn read_choice<T: Copy>(f: &mut Fields<'_>, key: &str, choices: &[(&str, T)], default: T) -> T {
    let Some(raw) = f.get(key) else {
        return default;
    };
    let names: Vec<&str> = choices.iter().map(|c| c.0).collect();
    match raw.as_str() {
        Some(s) => match choices.iter().find(|c| c.0 == s) {
            Some(c) => c.1,
            None => {
                f.problem(key, format!("must be one of {}", names.join(", ")));
                default
            }
        },
        None => {
            let msg = format!("must be one of {}, found {}", names.join(", "), kind(raw));
            f.problem(key, msg);
            default
        }
    }
}

/// `analysisConfigurations.canary`.
fn read_canary_analysis(f: &mut Fields<'_>, metric: &mut MetricConfig) {
    metric.direction = read_choice(
        f,
        "direction",
        &[
            ("increase", Direction::Increase),
            ("decrease", Direction::Decrease),
            ("either", Direction::Either),
        ],
        Direction::Either,
    );
    metric.nan_strategy = read_choice(
        f,
        "nanStrategy",
        &[
            ("remove", NanStrategy::Remove),
            ("replace", NanStrategy::Replace),
        ],
        NanStrategy::Remove,
    );
    metric.critical = f.bool_or("critical", false);
    metric.must_have_data = f.bool_or("mustHaveData", false);
    metric.muted = f.bool_or("muted", false);

    if let Some(mut e) = f.child("effectSize") {
        let measure = read_choice(
            &mut e,
            "measure",
            &[
                ("meanRatio", EffectSizeMeasure::MeanRatio),
                ("cles", EffectSizeMeasure::Cles),
            ],
            EffectSizeMeasure::MeanRatio,
        );
        let mut effect = EffectSize::defaults(measure);
        for (key, slot) in [
            ("allowedIncrease", &mut effect.allowed_increase),
            ("allowedDecrease", &mut effect.allowed_decrease),
            ("criticalIncrease", &mut effect.critical_increase),
            ("criticalDecrease", &mut effect.critical_decrease),
        ] {
            let Some(v) = e.opt_f64(key) else { continue };
            let ok = match measure {
                EffectSizeMeasure::MeanRatio => v.is_finite() && v > 0.0,
                EffectSizeMeasure::Cles => (0.0..=1.0).contains(&v),
            };
            if ok {
                *slot = v;
            } else {
                let rule = match measure {
                    EffectSizeMeasure::MeanRatio => "a mean ratio greater than 0",
                    EffectSizeMeasure::Cles => "a probability between 0 and 1 for cles",
                };
                e.problem(key, format!("must be {rule}, found {v}"));
            }
        }
        metric.effect_size = effect;
    }

    if let Some(mut o) = f.child("outliers") {
        let strategy = read_choice(
            &mut o,
            "strategy",
            &[
                ("keep", OutlierStrategy::Keep),
                ("remove", OutlierStrategy::Remove),
            ],
            OutlierStrategy::Keep,
        );
        let mut factor = 3.0;
        if let Some(v) = o.opt_f64("outlierFactor") {
            if v.is_finite() && v > 0.0 {
                factor = v;
            } else {
                o.problem(
                    "outlierFactor",
                    format!("must be greater than 0, found {v}"),
                );
            }
        }
        metric.outliers = Outliers { strategy, factor };
    }
}

/// A DNS-label-like name: 1–63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn is_config_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    !bytes.is_empty()
        && bytes.len() <= 63
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, group: &str) -> Value {
        json!({"name": name, "query": {"type": "prometheus", "metricName": "up"}, "groups": [group]})
    }

    #[test]
    fn minimal_config_gets_kayenta_defaults() {
        let doc = json!({"name": "checkout-canary", "metrics": [metric("cpu", "system")]});
        let c = parse_canary_config(&doc).unwrap();
        assert_eq!(c.judge, JUDGE_NAME);
        let m = &c.metrics[0];
        assert_eq!(m.direction, Direction::Either);
        assert_eq!(m.nan_strategy, NanStrategy::Remove);
        assert_eq!(m.scope_name, "default");
        assert!(!m.critical && !m.must_have_data && !m.muted);
        assert_eq!(
            m.effect_size,
            EffectSize::defaults(EffectSizeMeasure::MeanRatio)
        );
        assert_eq!(m.effect_size.allowed_increase, 1.0);
        assert_eq!(m.outliers.strategy, OutlierStrategy::Keep);
        assert_eq!(m.outliers.factor, 3.0);
        assert_eq!(m.query["metricName"], "up");
        assert!(c.group_weights.is_empty());
    }

    #[test]
    fn full_config_round_trips_through_the_normalised_document() {
        let doc = json!({
            "name": "web.canary_1",
            "description": "web tier",
            "applications": ["web"],
            "judge": {"name": "NetflixACAJudge", "judgeConfigurations": {}},
            "configVersion": 1,
            "metrics": [{
                "name": "latency",
                "query": {"type": "prometheus", "customInlineTemplate": "x"},
                "groups": ["perf", "user"],
                "scopeName": "web",
                "analysisConfigurations": {"canary": {
                    "direction": "increase", "nanStrategy": "replace", "critical": true,
                    "mustHaveData": true, "muted": false,
                    "effectSize": {"measure": "cles", "allowedIncrease": 0.6},
                    "outliers": {"strategy": "remove", "outlierFactor": 1.5}
                }}
            }, metric("errors", "user")],
            "classifier": {"groupWeights": {"perf": 60, "user": 40}}
        });
        let c = parse_canary_config(&doc).unwrap();
        let m = &c.metrics[0];
        assert_eq!(c.judge, JUDGE_NAME);
        assert_eq!(m.direction, Direction::Increase);
        assert_eq!(m.nan_strategy, NanStrategy::Replace);
        assert!(m.critical && m.must_have_data);
        assert_eq!(m.effect_size.measure, EffectSizeMeasure::Cles);
        assert_eq!(m.effect_size.allowed_increase, 0.6);
        assert_eq!(m.effect_size.allowed_decrease, 0.5);
        assert_eq!(m.outliers.factor, 1.5);
        assert_eq!(c.groups(), vec!["perf".to_string(), "user".to_string()]);
        let normalised = c.to_document();
        assert_eq!(
            normalised["metrics"][1]["analysisConfigurations"]["canary"]["effectSize"]["measure"],
            "meanRatio"
        );
        assert_eq!(parse_canary_config(&normalised).unwrap(), c);
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let doc = json!({
            "name": "-bad name-",
            "judge": {"name": "SomeOtherJudge"},
            "metrics": [
                metric("cpu", "system"),
                {"name": "cpu", "query": {"metricName": "x"}, "groups": []},
                {"name": "lat", "query": "up", "groups": ["perf"],
                 "analysisConfigurations": {"canary": {
                    "direction": "sideways", "nanStrategy": "ignore", "critical": "maybe",
                    "effectSize": {"measure": "median", "allowedIncrease": -1},
                    "outliers": {"strategy": "trim", "outlierFactor": 0}
                 }}},
                7
            ],
            "classifier": {"groupWeights": {"system": 80, "perf": 30, "ghost": 5, "neg": -1}}
        });
        let problems = parse_canary_config(&doc).unwrap_err();
        let got: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        let expected = [
            "name: must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            "judge.name: unknown judge \"SomeOtherJudge\"; must be NetflixACAJudge-v1.0 (or NetflixACAJudge)",
            "metrics[1].query.type: is required",
            "metrics[1].groups: at least one group is required",
            "metrics[1].name: duplicate metric name \"cpu\" (first used at metrics[0])",
            "metrics[2].query: must be an object, found a string",
            "metrics[2].analysisConfigurations.canary.direction: must be one of increase, decrease, either",
            "metrics[2].analysisConfigurations.canary.nanStrategy: must be one of remove, replace",
            "metrics[2].analysisConfigurations.canary.critical: must be a boolean, found a string",
            "metrics[2].analysisConfigurations.canary.effectSize.measure: must be one of meanRatio, cles",
            "metrics[2].analysisConfigurations.canary.effectSize.allowedIncrease: must be a mean ratio greater than 0, found -1",
            "metrics[2].analysisConfigurations.canary.outliers.strategy: must be one of keep, remove",
            "metrics[2].analysisConfigurations.canary.outliers.outlierFactor: must be greater than 0, found 0",
            "metrics[3]: must be an object, found a number",
            "classifier.groupWeights.ghost: group \"ghost\" is not used by any metric",
            "classifier.groupWeights.neg: group \"neg\" is not used by any metric",
            "classifier.groupWeights.neg: must be a weight of at least 0, found -1",
            "classifier.groupWeights: weights sum to 115; they must sum to at most 100",
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn missing_pieces_are_reported() {
        let problems = parse_canary_config(&json!({"metrics": []})).unwrap_err();
        let got: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "name: is required",
                "metrics: at least one metric is required"
            ]
        );
        let problems = parse_canary_config(&json!([1])).unwrap_err();
        assert_eq!(problems.0[0].to_string(), "must be an object, found a list");
        let problems =
            parse_canary_config(&json!({"name": "x", "metrics": [{"query": {"type": "p"}}]}))
                .unwrap_err();
        let got: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "metrics[0].name: is required",
                "metrics[0].groups: at least one group is required"
            ]
        );
    }

    #[test]
    fn cles_thresholds_are_probabilities() {
        let mut m = metric("cpu", "g");
        m["analysisConfigurations"] =
            json!({"canary": {"effectSize": {"measure": "cles", "criticalIncrease": 1.5}}});
        let problems = parse_canary_config(&json!({"name": "c", "metrics": [m]})).unwrap_err();
        assert_eq!(
            problems.0[0].to_string(),
            "metrics[0].analysisConfigurations.canary.effectSize.criticalIncrease: must be a probability between 0 and 1 for cles, found 1.5"
        );
    }

    #[test]
    fn config_names() {
        for ok in ["a", "web-canary", "web.canary_2", "A1"] {
            assert!(is_config_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "ä", &"x".repeat(64)] {
            assert!(!is_config_name(bad), "{bad}");
        }
    }
}
