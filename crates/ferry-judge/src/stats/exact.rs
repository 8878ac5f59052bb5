//! The exact null distribution of the Wilcoxon rank-sum statistic `W` (R's `dwilcox`,
//! `pwilcox` and `qwilcox`), used when both samples have fewer than 50 observations and there
//! are no ties. Counts are built by dynamic programming in `f64`, additions only, so no
//! cancellation creeps in; R also counts in `f64`.

/// The distribution of `W` for samples of sizes `m` and `n` under the null hypothesis.
#[derive(Debug, Clone)]
pub struct WilcoxDistribution {
    /// `m · n`, the largest value `W` takes.
    max_w: usize,
    /// `counts[k]`: how many of the `C(m + n, n)` orderings give `W = k`.
    counts: Vec<f64>,
    /// `C(m + n, n)`, the sum of `counts`.
    total: f64,
}

impl WilcoxDistribution {
    /// Counts for sample sizes `m` and `n` (both at least 1). Work is `O(m²·n²)`, about a
    /// million additions for `m = n = 49`.
    pub fn new(m: usize, n: usize) -> Self {
        // The distribution is symmetric in (m, n); keep the vector of layers short.
        let (small, large) = if m <= n { (m, n) } else { (n, m) };
        // layers[a] holds the counts for (a, b) with the current b, lengths a·b + 1.
        let mut layers: Vec<Vec<f64>> = (0..=small)
            .map(|a| {
                let mut v = Vec::with_capacity(a * large + 1);
                v.push(1.0);
                v
            })
            .collect();
        for b in 1..=large {
            for a in 1..=small {
                let (done, rest) = layers.split_at_mut(a);
                let (Some(fewer_x), Some(this)) = (done.last(), rest.first_mut()) else {
                    continue;
                };
                // Largest observation is a y: W unchanged, sizes (a, b − 1) — `this` as it is.
                this.resize(a * b + 1, 0.0);
                // Largest observation is an x: it beats all b y's, sizes (a − 1, b).
                for (t, &c) in this[b..].iter_mut().zip(fewer_x) {
                    *t += c;
                }
            }
        }
        let counts = layers.pop().unwrap_or_else(|| vec![1.0]);
        let total = counts.iter().sum();
        WilcoxDistribution {
            max_w: m * n,
            counts,
            total,
        }
    }

    /// The count for `W = k`, using the distribution's symmetry for the upper half exactly as
    /// R's `cwilcox` does.
    fn count(&self, k: usize) -> f64 {
        let k = if k > self.max_w / 2 {
            self.max_w - k
        } else {
            k
        };
        self.counts.get(k).copied().unwrap_or(0.0)
    }

    /// R's `pwilcox(q, m, n, lower.tail)`: `P[W <= q]`, or `P[W > q]` for the upper tail.
    pub fn cdf(&self, q: f64, lower_tail: bool) -> f64 {
        let (zero, one) = if lower_tail { (0.0, 1.0) } else { (1.0, 0.0) };
        let q = (q + 1e-7).floor();
        if q < 0.0 {
            return zero;
        }
        let max_w = self.max_w as f64;
        if q >= max_w {
            return one;
        }
        let mut p = 0.0;
        let mut lower_tail = lower_tail;
        if q <= max_w / 2.0 {
            // q is a small non-negative integer here.
            for i in 0..=(q as usize) {
                p += self.count(i) / self.total;
            }
        } else {
            let q = max_w - q;
            for i in 0..(q as usize) {
                p += self.count(i) / self.total;
            }
            lower_tail = !lower_tail;
        }
        if lower_tail { p } else { 0.5 - p + 0.5 }
    }

    /// R's `qwilcox(p, m, n)` (lower tail): the smallest `q` with `P[W <= q] >= p`, with R's
    /// `10·ε` fuzz. `p` must lie in `[0, 1]`.
    pub fn quantile(&self, p: f64) -> f64 {
        if p <= 0.0 {
            return 0.0;
        }
        if p >= 1.0 {
            return self.max_w as f64;
        }
        let mut cum = 0.0;
        let mut q = 0usize;
        if p <= 0.5 {
            let target = p - 10.0 * f64::EPSILON;
            loop {
                cum += self.count(q) / self.total;
                if cum >= target || q >= self.max_w {
                    return q as f64;
                }
                q += 1;
            }
        } else {
            let target = 1.0 - p + 10.0 * f64::EPSILON;
            loop {
                cum += self.count(q) / self.total;
                if cum > target || q >= self.max_w {
                    return (self.max_w - q) as f64;
                }
                q += 1;
            }
        }
    }
}

// Expected values are written as R prints them (`%.17g`).
#[cfg(test)]
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    #[test]
    fn small_distribution_by_hand() {
        // m = n = 2: orderings of xxyy give W = 0,1,2,2,3,4.
        let d = WilcoxDistribution::new(2, 2);
        assert_eq!(d.counts, vec![1.0, 1.0, 2.0, 1.0, 1.0]);
        assert_eq!(d.total, 6.0);
        assert!((d.cdf(1.0, true) - 2.0 / 6.0).abs() < 1e-15);
        assert!((d.cdf(1.0, false) - 4.0 / 6.0).abs() < 1e-15);
        assert_eq!(d.cdf(-1.0, true), 0.0);
        assert_eq!(d.cdf(4.0, true), 1.0);
    }

    #[test]
    fn totals_are_binomial_coefficients_and_symmetric() {
        let d = WilcoxDistribution::new(5, 3);
        assert_eq!(d.total, 56.0);
        let e = WilcoxDistribution::new(3, 5);
        assert_eq!(d.counts, e.counts);
        let big = WilcoxDistribution::new(49, 49);
        // C(98, 49) ≈ 2.5477e28.
        assert!((big.total / 2.547_761_225_898_085_7e28 - 1.0).abs() < 1e-12);
    }

    /// Values printed by R 4.2.2: `pwilcox(10, 6, 7)`, `qwilcox(0.01, 6, 7)`,
    /// `qwilcox(0.99, 6, 7)`, `qwilcox(0.01, 4, 4)`.
    #[test]
    fn matches_r() {
        let d = WilcoxDistribution::new(6, 7);
        assert!((d.cdf(10.0, true) - 0.068_764_568_764_568_768).abs() < 1e-15);
        assert_eq!(d.quantile(0.01), 5.0);
        assert_eq!(d.quantile(0.99), 37.0);
        assert_eq!(WilcoxDistribution::new(4, 4).quantile(0.01), 0.0);
    }
}
