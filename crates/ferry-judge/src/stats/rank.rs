//! Rank sums of `x − d` against `y` in linear time: what R's `rank(c(x - d, y))` and
//! `table()` give `wilcox.test`, computed by merging the two sorted samples instead of
//! ranking `nx + ny` values (and never touching the `nx · ny` pairwise differences).
//!
//! The comparisons are the ones R makes: `x[i] - d` is computed in `f64` and compared with
//! `y[j]` for equality and order, so ties created by rounding count exactly as they do in R.

/// What `wilcox.test` needs from one ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankStats {
    /// Twice the Mann-Whitney `U` of `x − d`: `2·#{x' > y} + #{x' = y}`. `U` equals R's
    /// rank sum of the `x' = x − d` minus `nx(nx + 1)/2`.
    pub twice_u: u64,
    /// `Σ (t³ − t)` over groups of tied values in the combined sample (R's
    /// `sum(NTIES^3 - NTIES)`); zero when there are no ties.
    pub tie_term: u128,
}

impl RankStats {
    /// `U` as R computes it (an integer or a half-integer, exact in `f64`).
    pub fn u(&self) -> f64 {
        self.twice_u as f64 / 2.0
    }
}

/// Values of a sorted sample with their multiplicities.
#[derive(Debug, Clone)]
struct Runs {
    values: Vec<f64>,
    counts: Vec<u64>,
}

impl Runs {
    fn of(sorted: &[f64]) -> Runs {
        let mut values: Vec<f64> = Vec::new();
        let mut counts: Vec<u64> = Vec::new();
        for &v in sorted {
            match (values.last(), counts.last_mut()) {
                (Some(&last), Some(count)) if last == v => *count += 1,
                _ => {
                    values.push(v);
                    counts.push(1);
                }
            }
        }
        Runs { values, counts }
    }
}

/// Ranks `x − d` against `y` for any shift `d`. Both samples must be sorted ascending, finite,
/// and hold no negative zero (callers normalise `-0.0` to `0.0`).
#[derive(Debug, Clone)]
pub struct ShiftRanker<'a> {
    x: &'a [f64],
    y: &'a [f64],
    /// `y` followed by [`WINDOW`] copies of `+∞`, so a window read never leaves the slice.
    y_padded: Vec<f64>,
    /// Runs of equal values, built on first need (samples with ties of their own).
    runs: std::cell::OnceCell<(Runs, Runs)>,
    /// Neither sample has ties of its own, so the fast count applies.
    tie_free: bool,
    /// The smallest gap between neighbouring canary values (tie-free samples only): shifts
    /// small enough not to round two of them together need no check for it.
    min_gap: f64,
}

/// How many baseline values the fast count compares at once.
const WINDOW: usize = 4;

/// The counts of one pass of the fast path.
#[derive(Debug, Clone, Copy, Default)]
struct FastCounts {
    /// `Σ_i #{j: y[j] < x[i] − d}`.
    below: u64,
    /// `#{(i, j): x[i] − d = y[j]}`.
    equal: u64,
    /// Adjacent canary values that `− d` rounded onto the same number.
    merged: u64,
}

impl<'a> ShiftRanker<'a> {
    /// Prepares the two sorted samples.
    pub fn new(x: &'a [f64], y: &'a [f64]) -> Self {
        let no_ties = |v: &[f64]| v.windows(2).all(|w| w[0] != w[1]);
        let tie_free = no_ties(x) && no_ties(y);
        let mut y_padded = Vec::with_capacity(y.len() + WINDOW);
        y_padded.extend_from_slice(y);
        y_padded.extend([f64::INFINITY; WINDOW]);
        let min_gap = x
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(f64::INFINITY, f64::min);
        ShiftRanker {
            x,
            y,
            y_padded,
            runs: std::cell::OnceCell::new(),
            tie_free,
            min_gap,
        }
    }

    /// Rank statistics of `c(x - d, y)`.
    pub fn eval(&self, d: f64) -> RankStats {
        if self.tie_free {
            // x[i] − d carries a rounding error of at most ε/2·|x[i] − d|, so neighbours
            // further apart than ε·max|x − d| stay apart; 4ε leaves a margin.
            let (first, last) = (self.x.first(), self.x.last());
            let reach = first
                .into_iter()
                .chain(last)
                .map(|&v| (v - d).abs())
                .fold(0.0, f64::max);
            let c = if self.min_gap > 4.0 * f64::EPSILON * reach {
                self.count_fast::<false>(d)
            } else {
                self.count_fast::<true>(d)
            };
            if c.merged == 0 {
                // Without ties inside either sample, every tie is one canary value meeting one
                // baseline value: a group of two, adding 2³ − 2 = 6 to the tie term and ½ to U.
                return RankStats {
                    twice_u: 2 * c.below + c.equal,
                    tie_term: 6 * u128::from(c.equal),
                };
            }
        }
        self.merge_runs(d)
    }

    /// The fast path for samples without ties of their own.
    ///
    /// For each canary value `t = x[i] − d` (in order) the baseline pointer advances by the
    /// number of values below `t` in a window of [`WINDOW`] baseline values, repeating only
    /// when the whole window is below. That keeps data-dependent branches out of the common
    /// case. The canary is cut into four lanes, each with its own pointer (started by binary
    /// search), processed in lockstep so their memory loads overlap.
    ///
    /// With `CHECK_MERGES`, also counts neighbouring canary values that the shift rounds
    /// onto one number (the caller then falls back to the general merge).
    fn count_fast<const CHECK_MERGES: bool>(&self, d: f64) -> FastCounts {
        let (all_x, y, yp) = (self.x, self.y, &self.y_padded[..]);
        let mut counts = FastCounts::default();
        // Canary values below every baseline value count nothing and tie with nothing; those
        // above every baseline value count `ny` each. Only the overlap needs the merge (the
        // interval ends `mumin` and `mumax` cost two binary searches). With `CHECK_MERGES` all
        // neighbours must be compared, so nothing is skipped.
        let (lo, hi) = match (y.first(), y.last()) {
            (Some(&y_min), Some(&y_max)) if !CHECK_MERGES => (
                all_x.partition_point(|&v| v - d < y_min),
                all_x.partition_point(|&v| v - d <= y_max),
            ),
            _ => (0, all_x.len()),
        };
        counts.below = (all_x.len() - hi) as u64 * y.len() as u64;
        let x = &all_x[lo..hi];
        let q = x.len() / 4;
        let (a, rest) = x.split_at(q);
        let (b, rest) = rest.split_at(q);
        let (c, tail) = rest.split_at(q);
        let start = |lane: &[f64]| -> usize {
            lane.first().map_or(y.len(), |&first| {
                let t = first - d;
                y.partition_point(|&v| v < t)
            })
        };
        let mut j = [start(a), start(b), start(c), start(tail)];
        let mut previous = [f64::NAN; 4];

        // Advances one lane past the baseline values below `t`; returns whether `t` is tied
        // with the baseline value it stops at.
        #[inline(always)]
        fn advance(yp: &[f64], j: &mut usize, t: f64) -> bool {
            loop {
                let below = match yp.get(*j..*j + WINDOW) {
                    Some(w) => w.iter().map(|&v| usize::from(v < t)).sum::<usize>(),
                    None => 0,
                };
                *j += below;
                if below < WINDOW {
                    break;
                }
            }
            yp.get(*j) == Some(&t)
        }
        let mut step = |lane: usize, xv: f64, counts: &mut FastCounts| {
            let t = xv - d;
            counts.equal += u64::from(advance(yp, &mut j[lane], t));
            counts.below += j[lane] as u64;
            if CHECK_MERGES {
                counts.merged += u64::from(t == previous[lane]);
                previous[lane] = t;
            }
        };
        for (((&xa, &xb), &xc), &xd) in a.iter().zip(b).zip(c).zip(tail) {
            step(0, xa, &mut counts);
            step(1, xb, &mut counts);
            step(2, xc, &mut counts);
            step(3, xd, &mut counts);
        }
        for &xv in tail.get(q..).unwrap_or_default() {
            step(3, xv, &mut counts);
        }
        // Merges across lane boundaries.
        for lane in [b, c, tail].into_iter().filter(|_| CHECK_MERGES) {
            if let Some(&first) = lane.first() {
                let at = x.len() - lane.len();
                if at > 0 && x[at - 1] - d == first - d {
                    counts.merged += 1;
                }
            }
        }
        counts
    }

    /// The general merge over runs of equal values; handles ties within either sample,
    /// between the samples, and ties created when rounding `x − d` merges distinct x values.
    fn merge_runs(&self, d: f64) -> RankStats {
        let (x_runs, y_runs) = self
            .runs
            .get_or_init(|| (Runs::of(self.x), Runs::of(self.y)));
        let (xv, xc) = (&x_runs.values, &x_runs.counts);
        let (yv, yc) = (&y_runs.values, &y_runs.counts);
        let (mut i, mut j) = (0usize, 0usize);
        let mut y_below = 0u64;
        let mut twice_u = 0u64;
        let mut tie_term = 0u128;
        while i < xv.len() || j < yv.len() {
            let next_x = xv.get(i).map(|&v| v - d);
            let next_y = yv.get(j).copied();
            let value = match (next_x, next_y) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            let mut in_x = 0u64;
            while i < xv.len() && xv[i] - d == value {
                in_x += xc[i];
                i += 1;
            }
            let mut in_y = 0u64;
            if j < yv.len() && yv[j] == value {
                in_y = yc[j];
                j += 1;
            }
            twice_u += in_x * (2 * y_below + in_y);
            let t = u128::from(in_x + in_y);
            tie_term += t * t * t - t;
            y_below += in_y;
        }
        RankStats { twice_u, tie_term }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: average ranks of the combined sample, by brute force.
    fn brute(x: &[f64], y: &[f64], d: f64) -> RankStats {
        let mut all: Vec<(f64, bool)> = x.iter().map(|&v| (v - d, true)).collect();
        all.extend(y.iter().map(|&v| (v, false)));
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut twice_rank_sum = 0u64;
        let mut tie_term = 0u128;
        let mut k = 0;
        while k < all.len() {
            let mut e = k;
            while e < all.len() && all[e].0 == all[k].0 {
                e += 1;
            }
            let t = (e - k) as u64;
            // Ranks k+1..=e, average (k + 1 + e) / 2.
            let n_x = all[k..e].iter().filter(|p| p.1).count() as u64;
            twice_rank_sum += n_x * (k as u64 + 1 + e as u64);
            tie_term += u128::from(t * t * t - t);
            k = e;
        }
        let nx = x.len() as u64;
        RankStats {
            twice_u: twice_rank_sum - nx * (nx + 1),
            tie_term,
        }
    }

    #[test]
    fn matches_brute_force_with_and_without_ties() {
        let cases: Vec<(Vec<f64>, Vec<f64>)> = vec![
            (vec![1.0, 2.0, 3.0], vec![1.5, 2.5]),
            (vec![1.0, 1.0, 2.0], vec![1.0, 3.0, 3.0]),
            (vec![0.0, 0.5, 1.0], vec![0.5]),
            (vec![5.0], vec![5.0]),
            (vec![1.0, 2.0, 4.0, 8.0], vec![0.0, 3.0, 9.0]),
        ];
        for (x, y) in cases {
            let r = ShiftRanker::new(&x, &y);
            for d in [-10.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 10.0] {
                assert_eq!(r.eval(d), brute(&x, &y, d), "x={x:?} y={y:?} d={d}");
            }
        }
    }

    #[test]
    fn fast_count_agrees_with_the_general_merge() {
        // Deterministic pseudo-random samples of many sizes, some with cross ties.
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        for n in [1usize, 2, 3, 4, 5, 7, 8, 9, 33, 100] {
            for m in [1usize, 2, 5, 8, 13, 64] {
                let mut x: Vec<f64> = (0..n).map(|_| (next() * 1000.0).round() / 8.0).collect();
                let mut y: Vec<f64> = (0..m).map(|_| (next() * 1000.0).round() / 8.0).collect();
                for v in [&mut x, &mut y] {
                    v.sort_by(f64::total_cmp);
                    v.dedup();
                }
                let r = ShiftRanker::new(&x, &y);
                assert!(r.tie_free);
                for d in [-200.0, -3.5, -0.125, 0.0, 0.125, 1.0, 7.25, 60.0, 200.0] {
                    assert_eq!(r.eval(d), brute(&x, &y, d), "x={x:?} y={y:?} d={d}");
                    assert_eq!(r.eval(d), r.merge_runs(d));
                }
            }
        }
    }

    #[test]
    fn rounding_can_merge_distinct_values() {
        // 1e-20 and 2e-20 both become -1 after subtracting 1.
        let x = [1e-20, 2e-20];
        let y = [-1.0, 5.0];
        let r = ShiftRanker::new(&x, &y);
        assert_eq!(r.eval(1.0), brute(&x, &y, 1.0));
        assert_eq!(r.eval(1.0).tie_term, 24);
    }
}
