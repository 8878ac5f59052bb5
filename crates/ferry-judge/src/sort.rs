//! Sorting samples fast: a bucket sort on order-preserving integer keys, several times quicker
//! than a comparison sort for the 10,000-sample windows the judge sees, which it sorts twice
//! per metric.

/// Below this length a comparison sort is faster.
const RADIX_MIN_LEN: usize = 512;

/// The order-preserving key of a float: `a < b` (in IEEE total order) iff `key(a) < key(b)`.
fn key(v: f64) -> u64 {
    let bits = v.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// The float of a key.
fn value(k: u64) -> f64 {
    if k >> 63 == 1 {
        f64::from_bits(k & !(1 << 63))
    } else {
        f64::from_bits(!k)
    }
}

/// Buckets larger than this are sorted on their own before the final insertion pass, which
/// keeps that pass linear-ish however skewed the data.
const SMALL_BUCKET: usize = 32;

/// Sorts in IEEE total order (`-0.0` before `0.0`, NaN last); for finite values without
/// negative zero that is the numeric order.
///
/// One bucketing pass on the high bits of order-preserving keys (as many buckets as values,
/// spread uniformly over the key range) leaves every value in its bucket's slot range; large
/// buckets are sorted on their own and one insertion pass orders the small ones. For
/// unimodal data that is about three linear passes instead of `n log n` comparisons. Skewed
/// data degrades gracefully towards a comparison sort.
pub fn sort_floats(values: &mut [f64]) {
    let n = values.len();
    if n < RADIX_MIN_LEN {
        values.sort_unstable_by(f64::total_cmp);
        return;
    }
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    let keys: Vec<u64> = values
        .iter()
        .map(|&v| {
            let k = key(v);
            lo = lo.min(k);
            hi = hi.max(k);
            k
        })
        .collect();
    let span = hi - lo;
    if span == 0 {
        return;
    }
    // Smallest shift with at most n buckets.
    let mut shift = 0u32;
    while (span >> shift) >= n as u64 {
        shift += 1;
    }
    let buckets = (span >> shift) as usize + 1;
    let bucket = |k: u64| ((k - lo) >> shift) as usize;
    // offsets[b] starts as the first slot of bucket b and ends as the first slot after it.
    let mut offsets = vec![0u32; buckets];
    let mut largest = 0;
    for &k in &keys {
        let count = &mut offsets[bucket(k)];
        *count += 1;
        largest = largest.max(*count);
    }
    let mut sum = 0;
    for o in &mut offsets {
        let count = *o;
        *o = sum;
        sum += count;
    }
    let mut sorted = vec![0u64; n];
    for &k in &keys {
        let slot = &mut offsets[bucket(k)];
        sorted[*slot as usize] = k;
        *slot += 1;
    }
    if largest as usize > SMALL_BUCKET {
        let mut start = 0;
        for &end in &offsets {
            let (a, b) = (start as usize, end as usize);
            if b - a > SMALL_BUCKET {
                sorted[a..b].sort_unstable();
            }
            start = end;
        }
    }
    // Insertion pass: values are already in their bucket ranges.
    for i in 1..n {
        let k = sorted[i];
        let mut j = i;
        while j > 0 && sorted[j - 1] > k {
            sorted[j] = sorted[j - 1];
            j -= 1;
        }
        sorted[j] = k;
    }
    for (v, &k) in values.iter_mut().zip(&sorted) {
        *v = value(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_preserve_order() {
        let v = [
            f64::NEG_INFINITY,
            -1e300,
            -1.0,
            -1e-300,
            -0.0,
            0.0,
            1e-300,
            1.0,
            f64::INFINITY,
        ];
        for w in v.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{w:?}");
            assert_eq!(value(key(w[0])).to_bits(), w[0].to_bits());
        }
    }

    #[test]
    fn radix_sort_matches_comparison_sort() {
        let mut state = 11u64;
        for n in [0usize, 1, 511, 512, 513, 5000] {
            let mut v: Vec<f64> = (0..n)
                .map(|i| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                    match i % 4 {
                        0 => u * 1e6 - 5e5,
                        1 => (u * 10.0).round(),
                        2 => -u * 1e-9,
                        _ => 100.0 + u,
                    }
                })
                .collect();
            let mut expected = v.clone();
            expected.sort_by(f64::total_cmp);
            sort_floats(&mut v);
            assert_eq!(v, expected, "n = {n}");
        }
    }
}
