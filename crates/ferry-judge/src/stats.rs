//! The two-sample Wilcoxon rank-sum (Mann-Whitney U) test with the Hodges-Lehmann location
//! estimate and its confidence interval: a faithful port of R's
//! `wilcox.test(x, y, conf.int = TRUE, conf.level = ...)` (two-sided, `mu = 0`,
//! `correct = TRUE`, `exact = NULL`, `tol.root = 1e-4`), the numbers Kayenta's judge uses.
//!
//! # Which branch
//!
//! As in R: the *exact* branch when both samples have fewer than 50 observations and no value
//! occurs twice in the combined sample; otherwise the *normal approximation* with continuity
//! correction and the tie-corrected variance.
//!
//! * Exact: the p-value from the exact null distribution of `W` (module `exact`); the
//!   interval from the sorted pairwise differences `x[i] − y[j]` at the positions `qwilcox`
//!   gives, with R's "requested conf.level not achievable" rule (the achieved level is reported
//!   in [`WilcoxResult::conf_level`]); the estimate is the median of the differences.
//! * Normal: `z = (W − nx·ny/2 − sign·½) / σ` with `σ` corrected for ties. The interval bounds
//!   and the estimate are roots of R's `W(d)` (the standardised statistic of `x − d` against
//!   `y`), found with the same Brent iteration R's `uniroot` runs (module `zeroin`), so they
//!   are the numbers R prints, not just close to them. As in R's two-sample code, a bound
//!   whose equation has no sign change over the range of differences is that end of the
//!   range. Each evaluation of `W(d)` is a linear count over the two sorted samples (module
//!   `rank`), so a 10,000 × 10,000 test takes about a millisecond.

mod exact;
pub mod normal;
mod rank;
mod zeroin;

#[cfg(test)]
mod oracle_tests;
#[cfg(test)]
mod proptests;

use exact::WilcoxDistribution;
use rank::ShiftRanker;
use zeroin::{UnirootError, uniroot};

/// R's `tol.root` default for `wilcox.test`: the absolute tolerance of the interval bounds and
/// the estimate in the normal branch.
pub const ROOT_TOLERANCE: f64 = 1e-4;

/// Below this many observations in *both* samples (and without ties) R uses the exact test.
pub const EXACT_LIMIT: usize = 50;

/// Which sample a problem was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The canary (R's `x`, Kayenta's experiment).
    Canary,
    /// The baseline (R's `y`, Kayenta's control).
    Baseline,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Canary => "canary",
            Side::Baseline => "baseline",
        })
    }
}

/// Why the test cannot be computed. R stops with an error in each of these cases.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// A sample has no observations (R: "not enough (non-missing) 'x' observations").
    #[error("the {0} sample has no observations")]
    Empty(Side),
    /// A sample holds NaN or ±∞; callers decide what missing data means before testing.
    #[error("the {side} sample holds a non-finite value at index {index}")]
    NonFinite {
        /// The sample holding the value.
        side: Side,
        /// Position of the first non-finite value.
        index: usize,
    },
    /// The confidence level is not a number strictly between 0 and 1.
    #[error("the confidence level must be a number between 0 and 1, found {0}")]
    ConfLevel(f64),
    /// Every observation is tied, outright or once the canary is shifted by the location
    /// difference (each sample constant): there is no spread to rank, and R stops with
    /// "cannot compute confidence interval when all observations are tied".
    #[error("cannot compute confidence interval when all observations are tied")]
    AllTied,
    /// The range of pairwise differences is not finite in `f64` (values near `f64::MAX`).
    #[error("the difference between the samples overflows a 64-bit float")]
    Overflow,
    /// R's `uniroot` found the standardised statistic of the same sign at both ends of the
    /// range of differences. This cannot happen for finite samples; it is reported, not hidden.
    #[error("the location estimate is not bracketed by the range of differences")]
    RootNotBracketed,
}

/// What R's `wilcox.test(canary, baseline, conf.int = TRUE, conf.level = ...)` reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WilcoxResult {
    /// R's `W` statistic: the Mann-Whitney `U` of the canary, `#{x > y} + ½·#{x = y}`.
    pub w: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// R's "difference in location" (canary − baseline): the Hodges-Lehmann estimate.
    pub estimate: f64,
    /// Confidence interval for the location difference, `(lower, upper)`.
    pub conf_int: (f64, f64),
    /// The confidence level the interval has: the requested one, or in the exact branch the
    /// achieved level when R reports the requested one as not achievable (tiny samples).
    pub conf_level: f64,
    /// Whether the exact distribution was used (else the normal approximation).
    pub exact: bool,
}

/// R's `wilcox.test(canary, baseline, conf.int = TRUE, conf.level = conf_level)`, two-sided.
/// Samples need not be sorted; they must be non-empty and finite.
pub fn wilcox_test(
    canary: &[f64],
    baseline: &[f64],
    conf_level: f64,
) -> Result<WilcoxResult, StatsError> {
    let x = sorted_sample(canary, Side::Canary)?;
    let y = sorted_sample(baseline, Side::Baseline)?;
    wilcox_test_sorted(&x, &y, conf_level)
}

/// Checks a sample and returns it sorted ascending with `-0.0` turned into `0.0` (they are the
/// same value to R's ranking).
pub(crate) fn sorted_sample(values: &[f64], side: Side) -> Result<Vec<f64>, StatsError> {
    if values.is_empty() {
        return Err(StatsError::Empty(side));
    }
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(StatsError::NonFinite { side, index });
    }
    let mut sorted: Vec<f64> = values.iter().map(|v| v + 0.0).collect();
    crate::sort::sort_floats(&mut sorted);
    Ok(sorted)
}

/// [`wilcox_test`] on samples already checked and sorted by [`sorted_sample`].
pub(crate) fn wilcox_test_sorted(
    x: &[f64],
    y: &[f64],
    conf_level: f64,
) -> Result<WilcoxResult, StatsError> {
    if !(conf_level.is_finite() && conf_level > 0.0 && conf_level < 1.0) {
        return Err(StatsError::ConfLevel(conf_level));
    }
    let (Some(&x_min), Some(&x_max)) = (x.first(), x.last()) else {
        return Err(StatsError::Empty(Side::Canary));
    };
    let (Some(&y_min), Some(&y_max)) = (y.first(), y.last()) else {
        return Err(StatsError::Empty(Side::Baseline));
    };
    if x_min == x_max && y_min == y_max && x_min == y_min {
        return Err(StatsError::AllTied);
    }

    let ranker = ShiftRanker::new(x, y);
    // R ranks c(x - mu, y) with mu = 0; x - 0 is x.
    let at_zero = ranker.eval(0.0);
    let w = at_zero.u();
    let ties = at_zero.tie_term > 0;
    let (nx, ny) = (x.len(), y.len());
    if nx < EXACT_LIMIT && ny < EXACT_LIMIT && !ties {
        Ok(exact_test(x, y, w, conf_level))
    } else {
        let ranges = Ranges {
            x_min,
            x_max,
            y_min,
            y_max,
        };
        normal_test(&ranker, nx, ny, ranges, at_zero, conf_level)
    }
}

/// The exact branch of `wilcox.test.default`.
fn exact_test(x: &[f64], y: &[f64], w: f64, conf_level: f64) -> WilcoxResult {
    let (nx, ny) = (x.len(), y.len());
    let dist = WilcoxDistribution::new(nx, ny);
    let mn = (nx * ny) as f64;
    let p = if w > mn / 2.0 {
        dist.cdf(w - 1.0, false)
    } else {
        dist.cdf(w, true)
    };
    let p_value = (2.0 * p).min(1.0);

    let alpha = 1.0 - conf_level;
    let mut diffs: Vec<f64> = Vec::with_capacity(nx * ny);
    for &xi in x {
        diffs.extend(y.iter().map(|&yj| xi - yj));
    }
    diffs.sort_unstable_by(f64::total_cmp);
    let mut qu = dist.quantile(alpha / 2.0);
    if qu == 0.0 {
        qu = 1.0;
    }
    let ql = mn - qu;
    let achieved_alpha = 2.0 * dist.cdf(qu.trunc() - 1.0, true);
    // R indexes diffs[qu] and diffs[ql + 1], 1-based; qu is in 1..=mn and ql + 1 in 1..=mn.
    let at = |one_based: f64| diffs.get((one_based as usize).saturating_sub(1)).copied();
    let lower = at(qu).unwrap_or(f64::NAN);
    let upper = at(ql + 1.0).unwrap_or(f64::NAN);
    let conf_level = if achieved_alpha - alpha > alpha / 2.0 {
        1.0 - achieved_alpha
    } else {
        conf_level
    };
    WilcoxResult {
        w,
        p_value,
        estimate: median_of_sorted(&diffs),
        conf_int: (lower, upper),
        conf_level,
        exact: true,
    }
}

/// R's `median()` of a sorted, non-empty slice (NaN when empty).
fn median_of_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let half = n.div_ceil(2);
    if n % 2 == 1 {
        sorted[half - 1]
    } else {
        let (a, b) = (sorted[half - 1], sorted[half]);
        let mid = (a + b) / 2.0;
        if mid.is_finite() {
            mid
        } else {
            a / 2.0 + b / 2.0
        }
    }
}

/// R's `sign()`.
fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        v * 0.0
    }
}

/// The extremes of both samples.
#[derive(Debug, Clone, Copy)]
struct Ranges {
    x_min: f64,
    x_max: f64,
    y_min: f64,
    y_max: f64,
}

/// The normal-approximation branch of `wilcox.test.default` (two-sided, `correct = TRUE`).
fn normal_test(
    ranker: &ShiftRanker<'_>,
    nx: usize,
    ny: usize,
    ranges: Ranges,
    at_zero: rank::RankStats,
    conf_level: f64,
) -> Result<WilcoxResult, StatsError> {
    let Ranges {
        x_min,
        x_max,
        y_min,
        y_max,
    } = ranges;
    let (nxf, nyf) = (nx as f64, ny as f64);
    let sigma_for = |tie_term: u128| -> f64 {
        let tie_term = tie_term as f64;
        ((nxf * nyf / 12.0) * ((nxf + nyf + 1.0) - tie_term / ((nxf + nyf) * (nxf + nyf - 1.0))))
            .sqrt()
    };

    let w = at_zero.u();
    let z = w - nxf * nyf / 2.0;
    let sigma = sigma_for(at_zero.tie_term);
    let correction = sign(z) * 0.5;
    let z = (z - correction) / sigma;
    let p_value = 2.0 * normal::pnorm(z, true).min(normal::pnorm(z, false));

    // R's W(d): the standardised statistic of x - d against y.
    let standardise = |stats: rank::RankStats, correct: bool| -> f64 {
        let dz = stats.u() - nxf * nyf / 2.0;
        let correction = if correct { sign(dz) * 0.5 } else { 0.0 };
        (dz - correction) / sigma_for(stats.tie_term)
    };
    let standardised = |d: f64, correct: bool| standardise(ranker.eval(d), correct);

    let alpha = 1.0 - conf_level;
    let mumin = x_min - y_max;
    let mumax = x_max - y_min;
    if !(mumin.is_finite() && mumax.is_finite()) {
        return Err(StatsError::Overflow);
    }
    // R ranks at mumin and mumax again for the estimate; the ranking is the same, so keep it.
    let at_mumin = ranker.eval(mumin);
    let at_mumax = ranker.eval(mumax);
    let w_mumin = standardise(at_mumin, true);
    let w_mumax = standardise(at_mumax, true);
    if w_mumin.is_nan() || w_mumax.is_nan() {
        return Err(StatsError::AllTied);
    }
    let root = |zq: f64| -> Result<f64, StatsError> {
        let f_lower = w_mumin - zq;
        if f_lower <= 0.0 {
            return Ok(mumin);
        }
        let f_upper = w_mumax - zq;
        if f_upper >= 0.0 {
            return Ok(mumax);
        }
        uniroot(
            |d| standardised(d, true) - zq,
            mumin,
            mumax,
            f_lower,
            f_upper,
            ROOT_TOLERANCE,
        )
        .map_err(root_error)
    };
    let lower = root(normal::qnorm(alpha / 2.0, false))?;
    let upper = root(normal::qnorm(alpha / 2.0, true))?;

    // R sets correct <- FALSE before the estimate: the root of the uncorrected statistic.
    let estimate = uniroot(
        |d| standardised(d, false),
        mumin,
        mumax,
        standardise(at_mumin, false),
        standardise(at_mumax, false),
        ROOT_TOLERANCE,
    )
    .map_err(root_error)?;

    Ok(WilcoxResult {
        w,
        p_value,
        estimate,
        conf_int: (lower, upper),
        conf_level,
        exact: false,
    })
}

fn root_error(e: UnirootError) -> StatsError {
    match e {
        // An empty interval means both samples are constant: all tied after the shift.
        UnirootError::EmptyInterval | UnirootError::NotANumberAtEnd => StatsError::AllTied,
        UnirootError::NoSignChange => StatsError::RootNotBracketed,
    }
}

// Expected values are written as R prints them (`%.17g`).
#[cfg(test)]
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    #[test]
    fn kayenta_reference_vector() {
        let r = wilcox_test(&[10.0, 20.0, 30.0, 40.0], &[1.0, 2.0, 3.0, 4.0], 0.98).unwrap();
        assert!(r.exact);
        assert_eq!(r.w, 16.0);
        assert_eq!(r.conf_int, (6.0, 39.0));
        assert_eq!(r.estimate, 22.5);
        // R: p = 0.028571428571428571, conf.level 0.98.
        assert!((r.p_value - 0.028_571_428_571_428_571).abs() < 1e-15);
        assert_eq!(r.conf_level, 0.98);
    }

    /// Values printed by R 4.2.2 (see the R oracle test for hundreds more).
    #[test]
    fn small_cases_match_r() {
        let r = wilcox_test(&[5.0], &[3.0], 0.98).unwrap();
        assert_eq!((r.w, r.p_value, r.estimate), (1.0, 1.0, 2.0));
        assert_eq!(r.conf_int, (2.0, 2.0));
        assert_eq!(r.conf_level, 0.0);

        let r = wilcox_test(&[1.0, 2.0], &[3.0], 0.98).unwrap();
        assert_eq!((r.w, r.estimate, r.conf_int), (0.0, -1.5, (-2.0, -1.0)));
        assert!((r.p_value - 0.666_666_666_666_666_63).abs() < 1e-15);
        assert!((r.conf_level - 0.333_333_333_333_333_37).abs() < 1e-15);

        let r = wilcox_test(&[1.0, 1.0, 2.0], &[1.0, 1.0, 1.0], 0.98).unwrap();
        assert!(!r.exact);
        assert_eq!(r.w, 6.0);
        assert!((r.p_value - 0.504_985_075_093_845_83).abs() < 1e-15);
        assert_eq!(r.estimate, 5.540_742_920_600_336e-5);
        assert_eq!(r.conf_int, (0.0, 1.0));

        let x: Vec<f64> = (1..=10).map(f64::from).collect();
        let y: Vec<f64> = (2..=11).map(f64::from).collect();
        let r = wilcox_test(&x, &y, 0.98).unwrap();
        assert_eq!(r.w, 40.5);
        assert!((r.p_value - 0.494_828_227_876_706_38).abs() < 1e-15);
        assert_eq!(r.estimate, -1.0);
        assert_eq!(
            r.conf_int,
            (-4.999_993_438_266_218_8, 2.999_993_438_266_218_8)
        );
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(
            wilcox_test(&[], &[1.0], 0.98),
            Err(StatsError::Empty(Side::Canary))
        );
        assert_eq!(
            wilcox_test(&[1.0], &[], 0.98),
            Err(StatsError::Empty(Side::Baseline))
        );
        assert_eq!(
            wilcox_test(&[1.0], &[2.0, f64::NAN], 0.98),
            Err(StatsError::NonFinite {
                side: Side::Baseline,
                index: 1
            })
        );
        assert_eq!(
            wilcox_test(&[1.0], &[2.0], 1.0),
            Err(StatsError::ConfLevel(1.0))
        );
        assert!(matches!(
            wilcox_test(&[1.0], &[2.0], f64::NAN),
            Err(StatsError::ConfLevel(_))
        ));
        assert_eq!(
            wilcox_test(&[5.0, 5.0], &[5.0], 0.98),
            Err(StatsError::AllTied)
        );
        // Each sample constant: R fails the same way (ties once shifted).
        assert_eq!(
            wilcox_test(&[5.0, 5.0, 5.0], &[3.0, 3.0], 0.98),
            Err(StatsError::AllTied)
        );
        assert_eq!(
            wilcox_test(&[0.1, 0.1, 0.1], &[0.3, 0.3], 0.98),
            Err(StatsError::AllTied)
        );
        assert_eq!(
            wilcox_test(&[f64::MAX, 0.0], &[-f64::MAX, 1.0, 1.0], 0.98),
            Err(StatsError::Overflow)
        );
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        let r = wilcox_test(&[-0.0, 1.0], &[0.0, 2.0], 0.98).unwrap();
        assert!(!r.exact, "-0 and 0 are a tie, so R leaves the exact branch");
    }
}
