//! Brent's root finder exactly as R's `uniroot` runs it (the C routine `R_zeroin2`: Brent's
//! method with inverse quadratic interpolation, given the function values at both ends), so the
//! confidence-interval bounds and the location estimate land on the same floating-point numbers
//! R reports, not merely within the tolerance.

/// Why R's `uniroot` would stop with an error instead of returning a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnirootError {
    /// `lower < upper` does not hold.
    EmptyInterval,
    /// The function is NaN at an end of the interval.
    NotANumberAtEnd,
    /// The function has the same sign at both ends.
    NoSignChange,
}

/// Converts a function value the way R's `fcn2` does before handing it to `R_zeroin2`:
/// `-Inf` becomes `-DBL_MAX`, `+Inf` and NaN become `+DBL_MAX`.
fn finite_for_zeroin(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else if v == f64::NEG_INFINITY {
        -f64::MAX
    } else {
        f64::MAX
    }
}

/// R's `sign()`: -1, 0 or 1 (NaN stays NaN).
fn r_sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        v * 0.0
    }
}

/// R's `uniroot(f, lower, upper, f.lower, f.upper, tol = tol, maxiter = 1000)$root`, without
/// interval extension (R's default `extendInt = "no"`). Returns the root R returns, including
/// when `R_zeroin2` stops after `maxiter` iterations without converging (R only warns then).
pub fn uniroot(
    mut f: impl FnMut(f64) -> f64,
    lower: f64,
    upper: f64,
    f_lower: f64,
    f_upper: f64,
    tol: f64,
) -> Result<f64, UnirootError> {
    // `lower >= upper` is false for NaN bounds too; R rejects those the same way.
    if lower.is_nan() || upper.is_nan() || lower >= upper {
        return Err(UnirootError::EmptyInterval);
    }
    if f_lower.is_nan() || f_upper.is_nan() {
        return Err(UnirootError::NotANumberAtEnd);
    }
    if r_sign(f_lower) * r_sign(f_upper) > 0.0 {
        return Err(UnirootError::NoSignChange);
    }
    Ok(zeroin2(
        |x| finite_for_zeroin(f(x)),
        lower,
        upper,
        f_lower,
        f_upper,
        tol,
        1000,
    ))
}

/// `R_zeroin2`: a root of `f` in `[ax, bx]` given `fa = f(ax)` and `fb = f(bx)` of opposite
/// signs, to within `4·ε·|x| + tol`.
fn zeroin2(
    mut f: impl FnMut(f64) -> f64,
    ax: f64,
    bx: f64,
    fa: f64,
    fb: f64,
    tol: f64,
    max_iterations: u32,
) -> f64 {
    let (mut a, mut b) = (ax, bx);
    let (mut fa, mut fb) = (fa, fb);
    let mut c = a;
    let mut fc = fa;

    // A root at an end of the interval is returned at once.
    if fa == 0.0 {
        return a;
    }
    if fb == 0.0 {
        return b;
    }

    for _ in 0..=max_iterations {
        let prev_step = b - a;
        if fc.abs() < fb.abs() {
            // Make b the best approximation so far.
            a = b;
            b = c;
            c = a;
            fa = fb;
            fb = fc;
            fc = fa;
        }
        let tol_act = 2.0 * f64::EPSILON * b.abs() + tol / 2.0;
        let mut new_step = (c - b) / 2.0;

        if new_step.abs() <= tol_act || fb == 0.0 {
            return b;
        }

        // Try interpolation when the previous step was large enough and in the right direction.
        if prev_step.abs() >= tol_act && fa.abs() > fb.abs() {
            let cb = c - b;
            let (mut p, mut q);
            if a == c {
                // Only two distinct points: linear interpolation.
                let t1 = fb / fa;
                p = cb * t1;
                q = 1.0 - t1;
            } else {
                // Inverse quadratic interpolation.
                let qq = fa / fc;
                let t1 = fb / fc;
                let t2 = fb / fa;
                p = t2 * (cb * qq * (qq - t1) - (b - a) * (t1 - 1.0));
                q = (qq - 1.0) * (t1 - 1.0) * (t2 - 1.0);
            }
            if p > 0.0 {
                q = -q;
            } else {
                p = -p;
            }
            if p < (0.75 * cb * q - (tol_act * q).abs() / 2.0) && p < (prev_step * q / 2.0).abs() {
                new_step = p / q;
            }
        }

        if new_step.abs() < tol_act {
            new_step = if new_step > 0.0 { tol_act } else { -tol_act };
        }
        a = b;
        fa = fb;
        b += new_step;
        fb = f(b);
        if (fb > 0.0 && fc > 0.0) || (fb < 0.0 && fc < 0.0) {
            // Keep c on the other side of the root from b.
            c = a;
            fc = fa;
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_smooth_root_within_tolerance() {
        let f = |x: f64| x * x - 2.0;
        let root = uniroot(f, 0.0, 2.0, -2.0, 2.0, 1e-10).unwrap();
        assert!((root - std::f64::consts::SQRT_2).abs() < 1e-9);
    }

    /// R 4.2.2: `sprintf("%.17g", uniroot(function(x) x^3 - x - 1, c(1, 2), tol = 1e-4)$root)`.
    #[test]
    fn follows_r_iterates_exactly() {
        let f = |x: f64| x * x * x - x - 1.0;
        let root = uniroot(f, 1.0, 2.0, f(1.0), f(2.0), 1e-4).unwrap();
        assert_eq!(root, 1.324_717_825_128_768_3);
    }

    #[test]
    fn endpoint_roots_and_errors() {
        assert_eq!(uniroot(|x| x, 0.0, 1.0, 0.0, 1.0, 1e-4), Ok(0.0));
        assert_eq!(uniroot(|x| x - 1.0, 0.0, 1.0, -1.0, 0.0, 1e-4), Ok(1.0));
        assert_eq!(
            uniroot(|x| x + 1.0, 0.0, 1.0, 1.0, 2.0, 1e-4),
            Err(UnirootError::NoSignChange)
        );
        assert_eq!(
            uniroot(|x| x, 1.0, 1.0, 1.0, 1.0, 1e-4),
            Err(UnirootError::EmptyInterval)
        );
        assert_eq!(
            uniroot(|x| x, 0.0, 1.0, f64::NAN, 1.0, 1e-4),
            Err(UnirootError::NotANumberAtEnd)
        );
    }

    #[test]
    fn step_functions_converge_to_the_step() {
        let f = |x: f64| if x < 0.3 { 1.0 } else { -1.0 };
        let root = uniroot(f, 0.0, 1.0, 1.0, -1.0, 1e-4).unwrap();
        assert!((root - 0.3).abs() < 1e-4);
    }
}
