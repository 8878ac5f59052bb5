//! Kayenta's NetflixACAJudge: classify every metric of a canary config from its baseline and
//! canary samples, score the groups, and turn the weighted score into Pass, Marginal or Fail.
//!
//! # Per metric (experiment = canary, control = baseline)
//!
//! 1. **Missing values.** NaN (and ±∞, which no metric store means as a measurement) are dropped
//!    with `nanStrategy: remove` and become 0 with `replace`.
//! 2. **Outliers.** With `outliers.strategy: remove`, each side separately drops values outside
//!    `[min(P1, Q1 − f·IQR), max(P99, Q3 + f·IQR)]`. Percentiles are R's default (type 7):
//!    linear interpolation between order statistics at `h = (n − 1)·p`.
//! 3. **No data.** An empty side gives `NodataFailMetric` with `mustHaveData` on a non-critical
//!    metric, else `Nodata`; with `replace` it gives `Pass`. A metric absent from the data map
//!    has two empty sides. Identical sorted samples pass; so does a single distinct value
//!    across both sides.
//! 4. **Test.** [`crate::stats::wilcox_test`] at 98 % confidence. When both sides are constant
//!    (with different values) R cannot rank them, so, as Kayenta does, noise is added first:
//!    each value moves by `u · h`, `u` uniform in `[-1, 1)` from a SplitMix64 generator with a
//!    fixed seed (so judgments are reproducible), `h = 1e-9 · max(|a|, |b|)` capped at
//!    `|a − b| / 4` so the two constants never swap order.
//! 5. **Tolerance band** `±0.25 · |estimate|`.
//! 6. **Effect size.** `meanRatio` = mean(canary) / mean(baseline), NaN when either mean is 0;
//!    `cles` = `W / (n_canary · n_baseline)`, the probability that a canary sample exceeds a
//!    baseline sample with ties counting half. A NaN effect size passes its gate.
//! 7. **Classification.** High: direction `increase`/`either`, interval lower bound above
//!    `+band`, effect ≥ `allowedIncrease`. Low: direction `decrease`/`either`, upper bound below
//!    `−band`, effect ≤ `allowedDecrease`. Otherwise Pass.
//! 8. **Critical.** A critical metric fails the whole analysis when it is High with effect ≥
//!    `criticalIncrease`, Low with effect ≤ `criticalDecrease`, `Nodata` or `Error`.
//!
//! # Decisions where Kayenta's documents are silent
//!
//! * **Query errors.** A metric whose query failed upstream ([`MetricData::Error`]) is
//!   classified `Error`. On a critical metric it fails the analysis; otherwise it counts like
//!   `NodataFailMetric` (in the group's denominator, never as a pass): a broken query must not
//!   quietly improve the score. It does not count towards the "50 % no data" rule, which is
//!   about `Nodata` only.
//! * **Muted metrics** are judged and reported but change nothing: not the group scores, not
//!   the no-data share, and a muted critical metric does not fail the analysis.
//! * **Statistics errors** (values so close that noise cannot separate them, overflow) give
//!   `Error` with the reason, treated as above.
//! * **Scoring.** Group score = Pass / (Pass + High + Low + NodataFailMetric + Error) × 100 over
//!   the group's unmuted metrics; a group with none of those (only Nodata or muted metrics)
//!   scores 100. Groups without an explicit weight share `100 − Σ explicit` equally (never
//!   below 0). When every group has an explicit weight and they sum to less than 100, the
//!   summary can only reach that sum, as in Kayenta. The summary is rounded to 2 decimals and
//!   is 0 when a critical metric fails or when at least half of the unmuted metrics are
//!   `Nodata`.
//! * **Work** is spread over the available cores (scoped threads) when there are many samples;
//!   results do not depend on it.

use crate::config::{
    CanaryConfig, Direction, EffectSizeMeasure, MetricConfig, NanStrategy, OutlierStrategy,
};
use crate::stats;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Kayenta's confidence level for the interval of the location shift.
pub const CONFIDENCE_LEVEL: f64 = 0.98;
/// Half-width of the tolerance band, as a fraction of |estimate|.
pub const TOLERANCE: f64 = 0.25;
/// Relative amplitude of the noise added when both sides are constant.
pub const NOISE_RELATIVE: f64 = 1e-9;
/// Below this many samples in total, metrics are judged on the calling thread.
const PARALLEL_MIN_SAMPLES: usize = 50_000;

/// The samples of one metric over the analysis window. NaN is allowed (missing points).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricSamples {
    /// Control: the baseline deployment.
    pub baseline: Vec<f64>,
    /// Experiment: the canary deployment.
    pub canary: Vec<f64>,
}

/// What the metric-source layer delivered for one metric.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricData {
    /// The samples of both sides.
    Samples(MetricSamples),
    /// The query failed; the message says why.
    Error(String),
}

impl From<MetricSamples> for MetricData {
    fn from(s: MetricSamples) -> Self {
        MetricData::Samples(s)
    }
}

/// Score thresholds of the canary stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// A score at or above this passes (default 75).
    pub pass: f64,
    /// A score at or above this (and below `pass`) is marginal (default 50).
    pub marginal: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            pass: 75.0,
            marginal: 50.0,
        }
    }
}

/// The outcome of one judgment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeResult {
    /// Score and verdict.
    pub summary: Summary,
    /// Group scores, in order of first use by a metric.
    pub groups: Vec<GroupResult>,
    /// Every metric, in config order.
    pub metrics: Vec<MetricResult>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// 0–100, two decimals.
    pub score: f64,
    /// Pass, Marginal or Fail against the thresholds.
    pub classification: SummaryClassification,
    /// Why, in a sentence.
    pub reason: String,
}

/// The verdict of a judgment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SummaryClassification {
    /// Score ≥ pass threshold.
    Pass,
    /// marginal ≤ score < pass.
    Marginal,
    /// Score < marginal threshold.
    Fail,
}

/// One group's score.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResult {
    /// Group name.
    pub name: String,
    /// 0–100.
    pub score: f64,
    /// The group's weight in percent (explicit or its share of the rest).
    pub weight: f64,
}

/// How one metric was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MetricClassification {
    /// No significant deviation (or nothing to compare).
    Pass,
    /// The canary is significantly higher.
    High,
    /// The canary is significantly lower.
    Low,
    /// No data; left out of the score.
    Nodata,
    /// No data on a `mustHaveData` metric; counts as a failure.
    NodataFailMetric,
    /// The query or the statistics failed.
    Error,
}

/// Everything reported for one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    /// Metric name.
    pub name: String,
    /// Groups it scores in.
    pub groups: Vec<String>,
    /// The classification.
    pub classification: MetricClassification,
    /// Why, in a sentence.
    pub classification_reason: String,
    /// Configured as critical.
    pub critical: bool,
    /// Configured as muted.
    pub muted: bool,
    /// This metric fails the whole analysis (critical, unmuted and failed).
    pub critical_failure: bool,
    /// Two-sided p-value of the rank-sum test.
    pub p_value: Option<f64>,
    /// Location shift canary − baseline (Hodges-Lehmann).
    pub estimate: Option<f64>,
    /// 98 % interval for the shift.
    pub confidence_interval: Option<ConfidenceInterval>,
    /// Half-width of the tolerance band around 0.
    pub tolerance_band: Option<f64>,
    /// The configured effect size measure and its value (NaN serialises as null).
    pub effect_size: Option<EffectSizeValue>,
    /// mean(canary) / mean(baseline), whatever the measure (NaN serialises as null).
    pub deviation: Option<f64>,
    /// Baseline samples after NaN and outlier handling.
    pub baseline: SampleSummary,
    /// Canary samples after NaN and outlier handling.
    pub canary: SampleSummary,
}

/// A confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfidenceInterval {
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
}

/// An effect size value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectSizeValue {
    /// Which measure.
    pub measure: EffectSizeMeasure,
    /// Its value; NaN when undefined.
    pub value: f64,
}

/// Descriptive statistics of one side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleSummary {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min: Option<f64>,
    /// Largest sample.
    pub max: Option<f64>,
    /// Arithmetic mean.
    pub mean: Option<f64>,
    /// Sample standard deviation (n − 1 denominator); absent below 2 samples.
    pub stdev: Option<f64>,
}

/// Judges every metric of `config` on `data` and scores the result. A metric missing from
/// `data` has no data on either side. Uses up to one thread per available core when there are
/// many samples; see [`judge_with_threads`].
pub fn judge(
    config: &CanaryConfig,
    data: &BTreeMap<String, MetricData>,
    thresholds: Thresholds,
) -> JudgeResult {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    judge_with_threads(config, data, thresholds, cores)
}

/// [`judge`] with at most `max_threads` threads (0 and 1 both mean the calling thread only).
/// The result does not depend on the number of threads.
pub fn judge_with_threads(
    config: &CanaryConfig,
    data: &BTreeMap<String, MetricData>,
    thresholds: Thresholds,
    max_threads: usize,
) -> JudgeResult {
    let metrics = judge_metrics(&config.metrics, data, max_threads);
    score(config, metrics, thresholds)
}

/// Classifies every metric, on several threads when there is enough work.
fn judge_metrics(
    metrics: &[MetricConfig],
    data: &BTreeMap<String, MetricData>,
    max_threads: usize,
) -> Vec<MetricResult> {
    let samples: usize = data
        .values()
        .map(|d| match d {
            MetricData::Samples(s) => s.baseline.len() + s.canary.len(),
            MetricData::Error(_) => 0,
        })
        .sum();
    let threads = max_threads.min(metrics.len());
    if threads <= 1 || samples < PARALLEL_MIN_SAMPLES {
        return metrics
            .iter()
            .map(|m| judge_metric(m, data.get(&m.name)))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let mut indexed: Vec<(usize, MetricResult)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(m) = metrics.get(i) else { break };
                        done.push((i, judge_metric(m, data.get(&m.name))));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| match w.join() {
                Ok(done) => done,
                // A panic in a worker is a bug; carry it to the caller unchanged.
                Err(payload) => std::panic::resume_unwind(payload),
            })
            .collect()
    });
    indexed.sort_by_key(|(i, _)| *i);
    indexed.into_iter().map(|(_, r)| r).collect()
}

/// The result of one metric before any statistics are known.
fn result_shell(metric: &MetricConfig, baseline: &[f64], canary: &[f64]) -> MetricResult {
    MetricResult {
        name: metric.name.clone(),
        groups: metric.groups.clone(),
        classification: MetricClassification::Pass,
        classification_reason: String::new(),
        critical: metric.critical,
        muted: metric.muted,
        critical_failure: false,
        p_value: None,
        estimate: None,
        confidence_interval: None,
        tolerance_band: None,
        effect_size: None,
        deviation: None,
        baseline: summarize(baseline),
        canary: summarize(canary),
    }
}

/// Steps 1–8 for one metric.
fn judge_metric(metric: &MetricConfig, data: Option<&MetricData>) -> MetricResult {
    let (raw_baseline, raw_canary): (&[f64], &[f64]) = match data {
        Some(MetricData::Error(message)) => {
            let mut r = result_shell(metric, &[], &[]);
            r.classification = MetricClassification::Error;
            r.classification_reason = format!("the metric query failed: {message}");
            r.critical_failure = metric.critical && !metric.muted;
            return r;
        }
        Some(MetricData::Samples(s)) => (&s.baseline, &s.canary),
        None => (&[], &[]),
    };
    let baseline = prepare(raw_baseline, metric);
    let canary = prepare(raw_canary, metric);
    let mut r = result_shell(metric, &baseline, &canary);
    let mean_ratio = match (r.canary.mean, r.baseline.mean) {
        (Some(c), Some(b)) if c != 0.0 && b != 0.0 => c / b,
        _ => f64::NAN,
    };

    // Step 3: no data, identical data, a single value.
    if baseline.is_empty() || canary.is_empty() {
        let which = match (baseline.is_empty(), canary.is_empty()) {
            (true, true) => "no baseline or canary data",
            (true, false) => "no baseline data",
            _ => "no canary data",
        };
        if metric.nan_strategy == NanStrategy::Replace {
            r.classification = MetricClassification::Pass;
            r.classification_reason = format!("{which}; nanStrategy replace counts that as a pass");
        } else if metric.must_have_data && !metric.critical {
            r.classification = MetricClassification::NodataFailMetric;
            r.classification_reason = format!("{which} and the metric must have data");
        } else {
            r.classification = MetricClassification::Nodata;
            r.classification_reason = which.to_string();
            r.critical_failure = metric.critical && !metric.muted;
        }
        return r;
    }
    r.deviation = Some(mean_ratio);
    let same_everywhere = baseline.first() == baseline.last()
        && canary.first() == canary.last()
        && baseline.first() == canary.first();
    if baseline == canary || same_everywhere {
        r.classification = MetricClassification::Pass;
        r.classification_reason = if baseline == canary {
            "baseline and canary data are identical".into()
        } else {
            "every baseline and canary sample has the same value".into()
        };
        r.effect_size = Some(EffectSizeValue {
            measure: metric.effect_size.measure,
            value: match metric.effect_size.measure {
                EffectSizeMeasure::MeanRatio => mean_ratio,
                EffectSizeMeasure::Cles => 0.5,
            },
        });
        return r;
    }

    // Step 4: the test, on noisy copies when both sides are constant.
    let test = if baseline.first() == baseline.last() && canary.first() == canary.last() {
        let (b, c) = with_noise(&baseline, &canary);
        stats::wilcox_test_sorted(&c, &b, CONFIDENCE_LEVEL)
    } else {
        stats::wilcox_test_sorted(&canary, &baseline, CONFIDENCE_LEVEL)
    };
    let test = match test {
        Ok(t) => t,
        Err(e) => {
            r.classification = MetricClassification::Error;
            r.classification_reason = format!("the rank-sum test failed: {e}");
            r.critical_failure = metric.critical && !metric.muted;
            return r;
        }
    };

    // Steps 5–7.
    let band = TOLERANCE * test.estimate.abs();
    let (lower, upper) = test.conf_int;
    let effect = match metric.effect_size.measure {
        EffectSizeMeasure::MeanRatio => mean_ratio,
        EffectSizeMeasure::Cles => test.w / (canary.len() as f64 * baseline.len() as f64),
    };
    r.p_value = Some(test.p_value);
    r.estimate = Some(test.estimate);
    r.confidence_interval = Some(ConfidenceInterval { lower, upper });
    r.tolerance_band = Some(band);
    r.effect_size = Some(EffectSizeValue {
        measure: metric.effect_size.measure,
        value: effect,
    });

    let e = &metric.effect_size;
    let measure = e.measure.as_str();
    let may_increase = matches!(metric.direction, Direction::Increase | Direction::Either);
    let may_decrease = matches!(metric.direction, Direction::Decrease | Direction::Either);
    let interval = format!("the 98% interval [{lower:.6}, {upper:.6}]");
    if may_increase && lower > band && (effect.is_nan() || effect >= e.allowed_increase) {
        r.classification = MetricClassification::High;
        r.classification_reason = format!(
            "canary is higher: {interval} lies above the tolerance band ±{band:.6} \
             ({measure} {effect:.4}, allowed increase {})",
            e.allowed_increase
        );
        r.critical_failure =
            metric.critical && !metric.muted && (effect.is_nan() || effect >= e.critical_increase);
    } else if may_decrease && upper < -band && (effect.is_nan() || effect <= e.allowed_decrease) {
        r.classification = MetricClassification::Low;
        r.classification_reason = format!(
            "canary is lower: {interval} lies below the tolerance band ±{band:.6} \
             ({measure} {effect:.4}, allowed decrease {})",
            e.allowed_decrease
        );
        r.critical_failure =
            metric.critical && !metric.muted && (effect.is_nan() || effect <= e.critical_decrease);
    } else {
        r.classification = MetricClassification::Pass;
        r.classification_reason = format!(
            "no deviation beyond the tolerance band ±{band:.6} in the allowed direction(s) \
             ({interval}, {measure} {effect:.4})"
        );
    }
    r
}

/// Steps 1 and 2: missing values, then outliers; returns the sample sorted, `-0.0` as `0.0`.
fn prepare(values: &[f64], metric: &MetricConfig) -> Vec<f64> {
    let mut v: Vec<f64> = match metric.nan_strategy {
        NanStrategy::Remove => values
            .iter()
            .filter(|v| v.is_finite())
            .map(|v| v + 0.0)
            .collect(),
        NanStrategy::Replace => values
            .iter()
            .map(|&v| if v.is_finite() { v + 0.0 } else { 0.0 })
            .collect(),
    };
    crate::sort::sort_floats(&mut v);
    if metric.outliers.strategy == OutlierStrategy::Remove && !v.is_empty() {
        let f = metric.outliers.factor;
        let (q1, q3) = (percentile(&v, 0.25), percentile(&v, 0.75));
        let iqr = q3 - q1;
        let low = percentile(&v, 0.01).min(q1 - f * iqr);
        let high = percentile(&v, 0.99).max(q3 + f * iqr);
        v.retain(|&x| x >= low && x <= high);
    }
    v
}

/// R's type-7 percentile of a sorted, non-empty sample: linear interpolation at
/// `h = (n − 1)·p` between the order statistics around it.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * p;
    let lo = h.floor();
    let i = lo as usize;
    let a = sorted[i.min(n - 1)];
    let b = sorted[(i + 1).min(n - 1)];
    a + (h - lo) * (b - a)
}

/// Count, min, max, mean and sample standard deviation of a sorted sample.
fn summarize(sorted: &[f64]) -> SampleSummary {
    let count = sorted.len();
    if count == 0 {
        return SampleSummary {
            count,
            min: None,
            max: None,
            mean: None,
            stdev: None,
        };
    }
    let n = count as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let stdev = (count > 1).then(|| {
        let ss: f64 = sorted.iter().map(|v| (v - mean) * (v - mean)).sum();
        (ss / (n - 1.0)).sqrt()
    });
    SampleSummary {
        count,
        min: sorted.first().copied(),
        max: sorted.last().copied(),
        mean: Some(mean),
        stdev,
    }
}

/// Copies of two constant samples (values `a` and `b`, `a ≠ b`) with deterministic noise of
/// amplitude `min(NOISE_RELATIVE · max(|a|, |b|), |a − b| / 4)`, sorted again.
fn with_noise(baseline: &[f64], canary: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let a = baseline.first().copied().unwrap_or(0.0);
    let b = canary.first().copied().unwrap_or(0.0);
    let h = (NOISE_RELATIVE * a.abs().max(b.abs())).min((a - b).abs() / 4.0);
    let mut rng = SplitMix64(0x4B41_5945_4E54_4131);
    let mut jitter = |values: &[f64]| -> Vec<f64> {
        let mut out: Vec<f64> = values.iter().map(|v| v + h * rng.symmetric()).collect();
        out.sort_unstable_by(f64::total_cmp);
        out
    };
    let noisy_baseline = jitter(baseline);
    let noisy_canary = jitter(canary);
    (noisy_baseline, noisy_canary)
}

/// SplitMix64, enough for reproducible jitter.
struct SplitMix64(u64);

impl SplitMix64 {
    /// Uniform in `[-1, 1)`.
    fn symmetric(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Group scores, weights and the summary.
fn score(config: &CanaryConfig, metrics: Vec<MetricResult>, thresholds: Thresholds) -> JudgeResult {
    let names = config.groups();
    let explicit: f64 = names
        .iter()
        .filter_map(|g| config.group_weights.get(g))
        .sum();
    let unweighted = names
        .iter()
        .filter(|g| !config.group_weights.contains_key(*g))
        .count();
    let share = if unweighted > 0 {
        (100.0 - explicit).max(0.0) / unweighted as f64
    } else {
        0.0
    };

    let mut groups = Vec::with_capacity(names.len());
    let mut raw_score = 0.0;
    for name in names {
        let (mut passed, mut counted) = (0usize, 0usize);
        for m in metrics
            .iter()
            .filter(|m| !m.muted && m.groups.contains(&name))
        {
            match m.classification {
                MetricClassification::Pass => {
                    passed += 1;
                    counted += 1;
                }
                MetricClassification::High
                | MetricClassification::Low
                | MetricClassification::NodataFailMetric
                | MetricClassification::Error => counted += 1,
                MetricClassification::Nodata => {}
            }
        }
        let score = if counted == 0 {
            100.0
        } else {
            passed as f64 / counted as f64 * 100.0
        };
        let weight = config.group_weights.get(&name).copied().unwrap_or(share);
        raw_score += score * weight / 100.0;
        groups.push(GroupResult {
            name,
            score,
            weight,
        });
    }

    let failed_critical: Vec<String> = metrics
        .iter()
        .filter(|m| m.critical_failure)
        .map(|m| format!("{} ({:?})", m.name, m.classification))
        .collect();
    let unmuted = metrics.iter().filter(|m| !m.muted).count();
    let nodata = metrics
        .iter()
        .filter(|m| !m.muted && m.classification == MetricClassification::Nodata)
        .count();
    let rounded = (raw_score * 100.0).round() / 100.0;
    let (score, mut reason) = if !failed_critical.is_empty() {
        (
            0.0,
            format!("critical metric failed: {}", failed_critical.join(", ")),
        )
    } else if unmuted > 0 && nodata * 2 >= unmuted {
        (
            0.0,
            format!("{nodata} of {unmuted} metrics have no data (50 % or more)"),
        )
    } else {
        (rounded, String::new())
    };
    let classification = if score >= thresholds.pass {
        SummaryClassification::Pass
    } else if score >= thresholds.marginal {
        SummaryClassification::Marginal
    } else {
        SummaryClassification::Fail
    };
    if reason.is_empty() {
        reason = match classification {
            SummaryClassification::Pass => {
                format!(
                    "score {score} is at least the pass threshold {}",
                    thresholds.pass
                )
            }
            SummaryClassification::Marginal => format!(
                "score {score} is below the pass threshold {} but at least the marginal threshold {}",
                thresholds.pass, thresholds.marginal
            ),
            SummaryClassification::Fail => format!(
                "score {score} is below the marginal threshold {}",
                thresholds.marginal
            ),
        };
    }
    JudgeResult {
        summary: Summary {
            score,
            classification,
            reason,
        },
        groups,
        metrics,
    }
}

#[cfg(test)]
mod tests;
