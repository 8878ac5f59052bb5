//! Property tests of [`wilcox_test`]: probabilities stay probabilities, the estimate sits
//! inside its interval and at the median of the pairwise differences (within R's root
//! tolerance), and swapping the samples mirrors everything.

use super::{ROOT_TOLERANCE, StatsError, wilcox_test};
use proptest::prelude::*;

/// Twice R's root tolerance: a root is within `tol/2 + 4ε|x|` of a sign change on either
/// side of the bracket, and two roots are compared.
const SLACK: f64 = 2.0 * ROOT_TOLERANCE;

fn sample() -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        prop::collection::vec((-20i32..20).prop_map(f64::from), 1..70),
        prop::collection::vec(-100.0f64..100.0, 1..70),
    ]
}

/// The one or two middle pairwise differences x[i] − y[j], sorted.
fn middle_differences(x: &[f64], y: &[f64]) -> (f64, f64) {
    let mut d: Vec<f64> = x
        .iter()
        .flat_map(|a| y.iter().map(move |b| a - b))
        .collect();
    d.sort_by(f64::total_cmp);
    let n = d.len();
    if n % 2 == 1 {
        (d[n / 2], d[n / 2])
    } else {
        (d[n / 2 - 1], d[n / 2])
    }
}

fn is_constant(v: &[f64]) -> bool {
    v.iter().all(|&a| a == v[0])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn results_are_coherent(x in sample(), y in sample()) {
        let r = match wilcox_test(&x, &y, 0.98) {
            Err(StatsError::AllTied) => {
                prop_assert!(is_constant(&x) && is_constant(&y));
                return Ok(());
            }
            other => other.unwrap(),
        };
        prop_assert!((0.0..=1.0).contains(&r.p_value), "p = {}", r.p_value);
        if !r.exact {
            prop_assert_eq!(r.conf_level, 0.98);
        }
        let (lo, hi) = r.conf_int;
        prop_assert!(lo <= r.estimate + SLACK && r.estimate <= hi + SLACK, "{r:?}");
        let (m1, m2) = middle_differences(&x, &y);
        if r.exact {
            prop_assert_eq!(r.estimate, (m1 + m2) / 2.0);
        } else {
            prop_assert!(m1 - SLACK <= r.estimate && r.estimate <= m2 + SLACK, "{r:?} vs {m1}..{m2}");
        }
    }

    #[test]
    fn swapping_the_samples_mirrors_the_result(x in sample(), y in sample()) {
        let (Ok(a), Ok(b)) = (wilcox_test(&x, &y, 0.98), wilcox_test(&y, &x, 0.98)) else {
            prop_assert!(is_constant(&x) && is_constant(&y));
            return Ok(());
        };
        // R sums the exact distribution from opposite tails for the two orders, so the
        // p-values agree to rounding, not to the bit.
        prop_assert!((a.p_value - b.p_value).abs() <= 1e-14 * a.p_value.max(b.p_value));
        prop_assert_eq!(a.w, (x.len() * y.len()) as f64 - b.w);
        prop_assert_eq!(a.exact, b.exact);
        if a.exact {
            prop_assert_eq!(a.estimate, -b.estimate);
            prop_assert_eq!(a.conf_int, (-b.conf_int.1, -b.conf_int.0));
        } else {
            // Each estimate lies within the plateau of the median differences; so does its
            // mirror image.
            let (m1, m2) = middle_differences(&x, &y);
            prop_assert!(m1 - SLACK <= -b.estimate && -b.estimate <= m2 + SLACK);
        }
    }
}
