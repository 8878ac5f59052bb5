//! The `kayentaCanary` stage: judges a canary against its baseline interval by interval.
//!
//! Configuration, as Spinnaker writes it (the fields may sit under `canaryConfig` or at the top
//! level of the stage):
//! - `canaryConfigId` (or `canaryConfigName`): the name of a stored `CanaryConfig`;
//! - `scopes[{scopeName, controlScope, controlLocation, experimentScope, experimentLocation,
//!   step}]`: what to compare; `step` is seconds per sample (default 60);
//! - `scoreThresholds{pass, marginal}` (defaults 75 and 50);
//! - `lifetimeDuration` (ISO-8601, `PT30M`; required);
//! - `beginCanaryAnalysisAfterMins` (warm-up, default 0), `canaryAnalysisIntervalMins` (default:
//!   the lifetime, so one judgment), `lookbackMins` (default 0: every window starts where the
//!   analysis began), `baselineAnalysisOffsetInMins` (default 0). Minutes may be fractional.
//!
//! The stage waits out the warm-up, then for each of ⌊lifetime / interval⌋ intervals waits one
//! interval and judges the window. An interval scoring at or below `marginal` ends the stage
//! TERMINAL at once; otherwise the last interval's score must reach `pass`.
//!
//! Durability: the canary config's version is pinned in the context on the first step, and
//! every interval's result is committed with the step that judged it, so a restart resumes at
//! the next interval and judges the same config. The window of interval k is computed from the
//! stage's start time, not from when the step happened to run.
//!
//! Outputs: `canaryConfigName`, `canaryConfigVersion`, `canaryScores` (one per interval so far),
//! `overallScore`, `overallResult` (`success` / `failure`), `intervals` (every interval's full
//! judge result with its window), and `canaryScoreMessage` on failure.

use crate::{CanaryServices, compare};
use async_trait::async_trait;
use ferry_core::fields::Fields;
use ferry_core::now_millis;
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use ferry_judge::config::CanaryConfig;
use ferry_judge::judge::{JudgeResult, Thresholds};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The `kayentaCanary` stage.
pub struct KayentaCanary {
    /// Store and metric sources.
    pub services: CanaryServices,
}

/// One scope: which baseline and canary to compare for the metrics that name it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// `scopeName`, default `default`.
    pub name: String,
    /// `controlScope`: the baseline (a server group name).
    pub control: String,
    /// `controlLocation`.
    pub control_location: String,
    /// `experimentScope`: the canary.
    pub experiment: String,
    /// `experimentLocation`.
    pub experiment_location: String,
    /// `step`, seconds per sample.
    pub step: u64,
}

/// `kayentaCanary`'s configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryStageConfig {
    /// The stored canary config's name.
    pub config_name: String,
    /// The scopes.
    pub scopes: Vec<Scope>,
    /// Pass and marginal.
    pub thresholds: Thresholds,
    /// Total analysis time after the warm-up, ms.
    pub lifetime_ms: i64,
    /// Warm-up before the first interval, ms.
    pub warmup_ms: i64,
    /// Interval length, ms.
    pub interval_ms: i64,
    /// Window length, ms; 0 = from the end of the warm-up.
    pub lookback_ms: i64,
    /// How far back the baseline's window is shifted, ms.
    pub baseline_offset_ms: i64,
}

impl CanaryStageConfig {
    /// How many intervals are judged.
    pub fn intervals(&self) -> i64 {
        (self.lifetime_ms / self.interval_ms).max(1)
    }

    /// When interval `k` (from 1) is judged, relative to the stage start, ms.
    pub fn due_ms(&self, k: i64) -> i64 {
        self.warmup_ms + k * self.interval_ms
    }

    /// The window `[start, end)` of interval `k`, relative to the stage start, ms.
    pub fn window_ms(&self, k: i64) -> (i64, i64) {
        let end = self.due_ms(k);
        let start = if self.lookback_ms > 0 {
            (end - self.lookback_ms).max(0)
        } else {
            self.warmup_ms
        };
        (start, end)
    }
}

/// Parses an ISO-8601 duration (`PT1H30M`, `PT45S`, `P1DT2H`, `PT0.5M`) into milliseconds.
pub fn parse_iso_duration(text: &str) -> Option<i64> {
    let rest = text.trim().strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut total = 0.0f64;
    let mut any = false;
    let mut read = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let (_, ms) = units.iter().find(|(u, _)| *u == c)?;
            let n: f64 = number.parse().ok()?;
            total += n * ms;
            any = true;
            number.clear();
        }
        number.is_empty().then_some(())
    };
    read(days, &[('W', 604_800_000.0), ('D', 86_400_000.0)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        read(t, &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)])?;
    }
    (any && total.is_finite()).then_some(total.round() as i64)
}

/// An optional number of minutes (Spinnaker writes strings, sometimes empty) as ms.
fn minutes(f: &mut Fields<'_>, key: &str) -> Option<i64> {
    if f.get(key)
        .and_then(Value::as_str)
        .is_some_and(|s| s.trim().is_empty())
    {
        return None;
    }
    let m = f.opt_f64(key)?;
    if m < 0.0 {
        f.problem(key, "must not be negative");
        return None;
    }
    Some((m * 60_000.0).round() as i64)
}

fn read_scopes(f: &mut Fields<'_>, scopes: &mut Vec<Scope>) {
    let Some(items) = f.opt_array("scopes") else {
        if f.get("scopes").is_none() && !f.is_deferred("scopes") {
            f.problem(
                "scopes",
                "is required: [{scopeName, controlScope, experimentScope, step}]",
            );
        }
        return;
    };
    if items.is_empty() {
        f.problem("scopes", "needs at least one scope");
    }
    let lenient = f.is_lenient();
    let base = f.path_of("scopes");
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{base}[{i}]");
        let mut s = if lenient {
            Fields::lenient(item, &path, &mut *f.problems)
        } else {
            Fields::new(item, &path, &mut *f.problems)
        };
        let name = s.opt_str("scopeName").unwrap_or_else(|| "default".into());
        if names.contains(&name) {
            s.problem("scopeName", format!("scope \"{name}\" is given twice"));
        }
        names.push(name.clone());
        let control = s.required_str("controlScope");
        let experiment = s.required_str("experimentScope");
        let step = s.opt_u64("step").unwrap_or(60);
        if step == 0 {
            s.problem("step", "must be at least 1 (seconds per sample)");
        }
        if let (Some(control), Some(experiment)) = (control, experiment) {
            scopes.push(Scope {
                name,
                control,
                control_location: s.opt_str("controlLocation").unwrap_or_default(),
                experiment,
                experiment_location: s.opt_str("experimentLocation").unwrap_or_default(),
                step: step.max(1),
            });
        }
    }
}

fn read_config(f: &mut Fields<'_>) -> Option<CanaryStageConfig> {
    let before = f.problems.len();
    let config_name = match f.opt_str("canaryConfigId") {
        Some(n) => Some(n),
        None => f.opt_str("canaryConfigName"),
    };
    if config_name.is_none() && !f.is_deferred("canaryConfigId") {
        f.problem(
            "canaryConfigId",
            "is required: the name of a CanaryConfig applied with `ferry apply`",
        );
    }
    let mut scopes = Vec::new();
    read_scopes(f, &mut scopes);

    let mut thresholds = Thresholds {
        pass: 75.0,
        marginal: 50.0,
    };
    if let Some(mut t) = f.child("scoreThresholds") {
        if let Some(p) = t.opt_f64("pass") {
            thresholds.pass = p;
        }
        if let Some(m) = t.opt_f64("marginal") {
            thresholds.marginal = m;
        }
        for (key, v) in [("pass", thresholds.pass), ("marginal", thresholds.marginal)] {
            if !(0.0..=100.0).contains(&v) {
                t.problem(key, "must be between 0 and 100");
            }
        }
        if thresholds.marginal > thresholds.pass {
            t.problem("marginal", "must not be above pass");
        }
    }

    let lifetime_ms = match f.opt_str("lifetimeDuration") {
        Some(text) if f.is_lenient() && ferry_core::looks_like_expression(&text) => None,
        Some(text) => match parse_iso_duration(&text) {
            Some(ms) if ms > 0 => Some(ms),
            _ => {
                f.problem(
                    "lifetimeDuration",
                    format!("\"{text}\" is not a positive ISO-8601 duration such as PT30M"),
                );
                None
            }
        },
        None => match minutes(f, "lifetimeMins") {
            Some(ms) if ms > 0 => Some(ms),
            _ => {
                if !f.is_deferred("lifetimeDuration") {
                    f.problem(
                        "lifetimeDuration",
                        "is required: how long to analyse, such as PT30M",
                    );
                }
                None
            }
        },
    };
    let warmup_ms = minutes(f, "beginCanaryAnalysisAfterMins").unwrap_or(0);
    let interval_ms = minutes(f, "canaryAnalysisIntervalMins").filter(|ms| *ms > 0);
    let lookback_ms = minutes(f, "lookbackMins").unwrap_or(0);
    let baseline_offset_ms = minutes(f, "baselineAnalysisOffsetInMins").unwrap_or(0);
    if let (Some(lifetime), Some(interval)) = (lifetime_ms, interval_ms)
        && interval > lifetime
    {
        f.problem(
            "canaryAnalysisIntervalMins",
            "must not be longer than lifetimeDuration",
        );
    }
    if f.problems.len() > before {
        return None;
    }
    // Lenient mode: a field only known after evaluation leaves the config unknown, no problem.
    let lifetime_ms = lifetime_ms?;
    Some(CanaryStageConfig {
        config_name: config_name?,
        scopes,
        thresholds,
        lifetime_ms,
        warmup_ms,
        interval_ms: interval_ms.unwrap_or(lifetime_ms),
        lookback_ms,
        baseline_offset_ms,
    })
}

/// Spinnaker nests the analysis settings under `canaryConfig`; Ferry also reads them flat.
fn config_fields<'a, 'b>(f: &'b mut Fields<'a>) -> Option<Fields<'b>> {
    if f.get("canaryConfig").is_some_and(Value::is_object) {
        f.child("canaryConfig")
    } else {
        None
    }
}

fn fail(message: String, ctx: &mut StageCtx) -> Step {
    ctx.outputs
        .insert("overallResult".into(), Value::String("failure".into()));
    ctx.outputs
        .insert("canaryScoreMessage".into(), Value::String(message.clone()));
    Step::Failed { error: message }
}

impl KayentaCanary {
    /// Loads the canary config, pinning its version in the context on the first step.
    async fn canary_config(
        &self,
        name: &str,
        ctx: &mut StageCtx,
    ) -> Result<(CanaryConfig, i64), String> {
        let pinned = ctx
            .context
            .get("canaryConfigVersion")
            .and_then(Value::as_i64);
        let (config, version) = compare::load_config(&self.services, name, pinned).await?;
        ctx.context
            .insert("canaryConfigVersion".into(), json!(version));
        ctx.outputs.insert("canaryConfigName".into(), json!(name));
        ctx.outputs
            .insert("canaryConfigVersion".into(), json!(version));
        Ok((config, version))
    }

    /// Fetches every metric for both sides of interval `k` and judges it.
    async fn judge_interval(
        &self,
        c: &CanaryStageConfig,
        config: &CanaryConfig,
        started_ms: i64,
        k: i64,
    ) -> Result<(JudgeResult, Value), String> {
        let (from, to) = c.window_ms(k);
        let secs = |ms: i64| (ms.max(0) / 1000) as u64;
        let (canary_start, canary_end) = (secs(started_ms + from), secs(started_ms + to));
        let offset = c.baseline_offset_ms;
        let (base_start, base_end) = (
            secs(started_ms + from - offset),
            secs(started_ms + to - offset),
        );
        let data = compare::fetch_metrics(&self.services.sources, config, |metric| {
            let scope_name = metric.scope_name.as_str();
            let scope = c.scopes.iter().find(|s| s.name == scope_name).ok_or_else(|| {
                format!(
                    "metric \"{}\" uses scope \"{scope_name}\", which the stage does not define",
                    metric.name
                )
            })?;
            Ok(compare::Pair {
                baseline: compare::Side {
                    scope: scope.control.clone(),
                    location: scope.control_location.clone(),
                    start: base_start,
                    end: base_end,
                },
                canary: compare::Side {
                    scope: scope.experiment.clone(),
                    location: scope.experiment_location.clone(),
                    start: canary_start,
                    end: canary_end,
                },
                step: scope.step,
            })
        })
        .await?;
        let result = compare::judge(config.clone(), data, c.thresholds).await?;
        let window = json!({
            "interval": k,
            "canary": {"start": canary_start, "end": canary_end},
            "baseline": {"start": base_start, "end": base_end},
        });
        Ok((result, window))
    }
}

#[async_trait]
impl TypedStage for KayentaCanary {
    type Config = CanaryStageConfig;
    const TYPE: &'static str = "kayentaCanary";
    const TASK: &'static str = "runCanaryIntervalsTask";

    fn config(f: &mut Fields<'_>) -> Option<CanaryStageConfig> {
        match config_fields(f) {
            Some(mut nested) => read_config(&mut nested),
            None => read_config(f),
        }
    }

    async fn step(&self, c: &CanaryStageConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let started = ctx.started_at();
        let (config, _version) = match self.canary_config(&c.config_name, ctx).await {
            Ok(x) => x,
            Err(message) => return Ok(fail(message, ctx)),
        };
        let done = ctx
            .outputs
            .get("intervals")
            .and_then(Value::as_array)
            .map_or(0, Vec::len) as i64;
        let k = done + 1;
        let total = c.intervals();
        if k > total {
            return Ok(Step::Succeeded);
        }
        let due = started + c.due_ms(k);
        let now = now_millis();
        if now < due {
            return Ok(Step::Running {
                poll_after: Duration::from_millis((due - now) as u64),
            });
        }

        let (result, window) = match self.judge_interval(c, &config, started, k).await {
            Ok(x) => x,
            Err(message) => return Ok(fail(message, ctx)),
        };
        let score = result.summary.score;
        let mut record = match serde_json::to_value(&result) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        if let Value::Object(w) = window {
            record.extend(w);
        }
        let intervals = ctx
            .outputs
            .entry("intervals")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = intervals {
            list.push(Value::Object(record));
        }
        let scores = ctx
            .outputs
            .entry("canaryScores")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = scores {
            list.push(json!(score));
        }
        ctx.outputs.insert("overallScore".into(), json!(score));
        ctx.outputs
            .insert("lastUpdated".into(), json!(now_millis()));

        if score <= c.thresholds.marginal {
            let reason = result.summary.reason.clone();
            return Ok(fail(
                format!(
                    "canary interval {k} of {total} scored {score} (marginal {}){}",
                    c.thresholds.marginal,
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    }
                ),
                ctx,
            ));
        }
        if k < total {
            let next = started + c.due_ms(k + 1) - now_millis();
            return Ok(Step::Running {
                poll_after: Duration::from_millis(next.max(0) as u64),
            });
        }
        if score >= c.thresholds.pass {
            ctx.outputs
                .insert("overallResult".into(), Value::String("success".into()));
            Ok(Step::Succeeded)
        } else {
            Ok(fail(
                format!(
                    "final canary score {score} is below pass {}",
                    c.thresholds.pass
                ),
                ctx,
            ))
        }
    }
}

#[cfg(test)]
mod tests;
