//! The standard normal distribution function and its quantile, computed the way R's nmath
//! library does (`pnorm_both`: W. J. Cody's 1993 rational approximations; `qnorm`: Wichura's
//! algorithm AS 241), so that p-values and the `z` quantiles used for confidence intervals are
//! bit-for-bit the numbers R works with.

// The coefficients are written with the digits the algorithms publish; the compiler rounds
// them to the nearest f64 exactly as a C compiler does for nmath.
#![allow(clippy::excessive_precision)]

/// 1/sqrt(2π).
const ONE_OVER_SQRT_2PI: f64 = 0.398_942_280_401_432_677_939_946_059_934;
/// sqrt(32): the upper end of Cody's middle range.
const SQRT_32: f64 = 5.656_854_249_492_380_195_206_754_896_838;

// Cody's coefficients for |x| <= qnorm(3/4).
const A: [f64; 5] = [
    2.235_252_035_460_683_928_7,
    161.028_231_068_555_878_81,
    1_067.689_485_460_370_958_2,
    18_154.981_253_343_561_249,
    0.065_682_337_918_207_449_113,
];
const B: [f64; 4] = [
    47.202_581_904_688_241_87,
    976.098_551_737_776_693_22,
    10_260.932_208_618_978_205,
    45_507.789_335_026_729_956,
];
// Cody's coefficients for qnorm(3/4) < |x| <= sqrt(32).
const C: [f64; 9] = [
    0.398_941_512_088_134_667_64,
    8.883_149_794_388_375_941_2,
    93.506_656_132_177_855_979,
    597.270_276_394_800_262_26,
    2_494.537_585_290_372_671_1,
    6_848.190_450_536_282_332_6,
    11_602.651_437_647_350_124,
    9_842.714_838_383_978_021_8,
    1.076_557_677_372_019_231_7e-8,
];
const D: [f64; 8] = [
    22.266_688_044_328_115_691,
    235.387_901_782_624_998_61,
    1_519.377_599_407_554_805,
    6_485.558_298_266_760_755,
    18_615.571_640_885_098_091,
    34_900.952_721_145_977_266,
    38_912.003_286_093_271_411,
    19_685.429_676_859_990_727,
];
// Cody's coefficients for the far tails.
const P: [f64; 6] = [
    0.215_898_534_057_956_99,
    0.127_401_161_160_247_363_9,
    0.022_235_277_870_649_807,
    0.001_421_619_193_227_893_466,
    2.911_287_495_116_879_2e-5,
    0.023_073_441_764_940_173_03,
];
const Q: [f64; 5] = [
    1.284_260_096_144_911_21,
    0.468_238_212_480_865_118,
    0.065_988_137_868_928_551_5,
    0.003_782_396_332_027_582_44,
    7.297_515_550_839_662_05e-5,
];

/// Which tails [`pnorm_both`] must compute; mirrors nmath's `i_tail` argument, which decides
/// where the far tails are flushed to 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tails {
    Lower,
    Upper,
}

/// Both tails of the standard normal at `x`: `(P[X <= x], P[X > x])`, as nmath's
/// `pnorm_both` (non-log) computes them for the requested tail.
fn pnorm_both(x: f64, tails: Tails) -> (f64, f64) {
    let lower = tails == Tails::Lower;
    let upper = tails == Tails::Upper;
    let eps = f64::EPSILON * 0.5;
    let y = x.abs();

    // nmath's `do_del` + `swap_tail`: exp(-x²/2) split into an exactly representable part and
    // a remainder, times the rational factor, then the tails put on the right sides.
    let tails_from = |xv: f64, temp: f64| -> (f64, f64) {
        let xsq = (xv * 16.0).trunc() / 16.0;
        let del = (xv - xsq) * (xv + xsq);
        let cum = (-xsq * xsq * 0.5).exp() * (-del * 0.5).exp() * temp;
        let ccum = 1.0 - cum;
        if x > 0.0 { (ccum, cum) } else { (cum, ccum) }
    };

    if y <= 0.674_489_75 {
        let (xnum, xden) = if y > eps {
            let xsq = x * x;
            let mut xnum = A[4] * xsq;
            let mut xden = xsq;
            for i in 0..3 {
                xnum = (xnum + A[i]) * xsq;
                xden = (xden + B[i]) * xsq;
            }
            (xnum, xden)
        } else {
            (0.0, 0.0)
        };
        let temp = x * (xnum + A[3]) / (xden + B[3]);
        (0.5 + temp, 0.5 - temp)
    } else if y <= SQRT_32 {
        let mut xnum = C[8] * y;
        let mut xden = y;
        for i in 0..7 {
            xnum = (xnum + C[i]) * y;
            xden = (xden + D[i]) * y;
        }
        let temp = (xnum + C[7]) / (xden + D[7]);
        tails_from(y, temp)
    } else if (lower && -37.5193 < x && x < 8.2924) || (upper && -8.2924 < x && x < 37.5193) {
        let xsq = 1.0 / (x * x);
        let mut xnum = P[5] * xsq;
        let mut xden = xsq;
        for i in 0..4 {
            xnum = (xnum + P[i]) * xsq;
            xden = (xden + Q[i]) * xsq;
        }
        let temp = xsq * (xnum + P[4]) / (xden + Q[4]);
        let temp = (ONE_OVER_SQRT_2PI - temp) / y;
        tails_from(x, temp)
    } else if x > 0.0 {
        (1.0, 0.0)
    } else {
        (0.0, 1.0)
    }
}

/// R's `pnorm(x, lower.tail = lower_tail)` for the standard normal. NaN stays NaN.
pub fn pnorm(x: f64, lower_tail: bool) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x.is_infinite() {
        let at_upper_end = x > 0.0;
        return if at_upper_end == lower_tail { 1.0 } else { 0.0 };
    }
    if lower_tail {
        pnorm_both(x, Tails::Lower).0
    } else {
        pnorm_both(x, Tails::Upper).1
    }
}

/// R's `qnorm(p, lower.tail = lower_tail)` for the standard normal (AS 241, as in R 4.2).
/// Returns NaN for `p` outside `[0, 1]` and ±∞ at the ends.
pub fn qnorm(p: f64, lower_tail: bool) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return if lower_tail {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    if p == 1.0 {
        return if lower_tail {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        };
    }
    // The lower-tail probability, and the complement, each without cancellation where possible.
    let p_lower = if lower_tail { p } else { 0.5 - p + 0.5 };
    let q = p_lower - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180_625 - q * q;
        let num = ((((((r * 2_509.080_928_730_122_672_7 + 33_430.575_583_588_128_105) * r
            + 67_265.770_927_008_700_853)
            * r
            + 45_921.953_931_549_871_457)
            * r
            + 13_731.693_765_509_461_125)
            * r
            + 1_971.590_950_306_551_442_7)
            * r
            + 133.141_667_891_784_377_45)
            * r
            + 3.387_132_872_796_366_608;
        let den = ((((((r * 5_226.495_278_852_545_925 + 28_729.085_735_721_942_674) * r
            + 39_307.895_800_092_710_61)
            * r
            + 21_213.794_301_586_595_867)
            * r
            + 5_394.196_021_424_751_107_7)
            * r
            + 687.187_007_492_057_908_3)
            * r
            + 42.313_330_701_600_911_252)
            * r
            + 1.0;
        return q * num / den;
    }
    // r = min(p, 1 - p), taken from whichever form of the input is exact.
    let r = if q < 0.0 {
        if lower_tail { p } else { 0.5 - p + 0.5 }
    } else if lower_tail {
        0.5 - p + 0.5
    } else {
        p
    };
    let mut r = (-r.ln()).sqrt();
    let mut val = if r <= 5.0 {
        r += -1.6;
        (((((((r * 7.745_450_142_783_414_076_4e-4 + 0.022_723_844_989_269_184_583_3) * r
            + 0.241_780_725_177_450_611_77)
            * r
            + 1.270_458_252_452_368_382_58)
            * r
            + 3.647_848_324_763_204_605_04)
            * r
            + 5.769_497_221_460_691_405_5)
            * r
            + 4.630_337_846_156_545_295_9)
            * r
            + 1.423_437_110_749_683_577_34)
            / (((((((r * 1.050_750_071_644_416_843_24e-9 + 5.475_938_084_995_344_946e-4) * r
                + 0.015_198_666_563_616_457_196_6)
                * r
                + 0.148_103_976_427_480_074_59)
                * r
                + 0.689_767_334_985_100_004_55)
                * r
                + 1.676_384_830_183_803_849_4)
                * r
                + 2.053_191_626_637_758_821_87)
                * r
                + 1.0)
    } else {
        r += -5.0;
        (((((((r * 2.010_334_399_292_288_132_65e-7 + 2.711_555_568_743_487_578_15e-5) * r
            + 0.001_242_660_947_388_078_438_6)
            * r
            + 0.026_532_189_526_576_123_093)
            * r
            + 0.296_560_571_828_504_891_23)
            * r
            + 1.784_826_539_917_291_335_8)
            * r
            + 5.463_784_911_164_114_369_9)
            * r
            + 6.657_904_643_501_103_777_2)
            / (((((((r * 2.044_263_103_389_939_785_64e-15 + 1.421_511_758_316_445_888_7e-7)
                * r
                + 1.846_318_317_510_054_681_8e-5)
                * r
                + 7.868_691_311_456_132_591e-4)
                * r
                + 0.014_875_361_290_850_614_852_5)
                * r
                + 0.136_929_880_922_735_805_31)
                * r
                + 0.599_832_206_555_887_937_69)
                * r
                + 1.0)
    };
    if q < 0.0 {
        val = -val;
    }
    val
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by R 4.2.2 with `sprintf("%.17g", ...)`; these must match to the bit.
    #[test]
    fn qnorm_matches_r_bit_for_bit() {
        assert_eq!(qnorm(0.01, true), -2.326_347_874_040_840_8);
        assert_eq!(qnorm(0.01, false), 2.326_347_874_040_840_8);
        assert_eq!(qnorm(1e-5, true), -4.264_890_793_922_825_6);
        assert_eq!(qnorm(0.3, true), -0.524_400_512_708_040_67);
        assert_eq!(qnorm(1e-300, true), -37.047_096_299_361_201);
        assert_eq!(qnorm(0.5, true), 0.0);
        assert!(qnorm(1.5, true).is_nan());
        assert_eq!(qnorm(0.0, true), f64::NEG_INFINITY);
    }

    /// `(z, pnorm(z), pnorm(z, lower.tail = FALSE))` printed by R 4.2.2 with `%.17g`.
    #[test]
    fn pnorm_matches_r_bit_for_bit() {
        let cases = [
            (-0.3, 0.382_088_577_811_047_33, 0.617_911_422_188_952_67),
            (-1.5, 0.066_807_201_268_858_071, 0.933_192_798_731_141_91),
            (-3.0, 0.001_349_898_031_630_094_6, 0.998_650_101_968_369_9),
            (-7.0, 1.279_812_543_885_835_2e-12, 0.999_999_999_998_720_13),
            (-10.0, 7.619_853_024_160_526_9e-24, 1.0),
            (-38.0, 0.0, 1.0),
            (-37.6, 0.0, 1.0),
        ];
        for (z, lower, upper) in cases {
            assert_eq!(pnorm(z, true), lower, "pnorm({z})");
            assert_eq!(pnorm(z, false), upper, "pnorm({z}, lower.tail = FALSE)");
        }
    }

    #[test]
    fn pnorm_tails_are_symmetric_and_complementary() {
        for &z in &[
            0.0, 0.1, 0.6744, 0.7, 1.96, 3.0, 5.0, 5.7, 8.0, 20.0, 37.0, 40.0,
        ] {
            assert_eq!(pnorm(z, true), pnorm(-z, false), "z = {z}");
            assert_eq!(pnorm(-z, true), pnorm(z, false), "z = {z}");
        }
        assert_eq!(pnorm(0.0, true), 0.5);
        assert_eq!(pnorm(40.0, false), 0.0);
        assert_eq!(pnorm(f64::INFINITY, true), 1.0);
        assert!(pnorm(f64::NAN, true).is_nan());
        assert!((pnorm(1.959_963_984_540_054, false) - 0.025).abs() < 1e-15);
    }
}
