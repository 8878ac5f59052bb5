//! Oracle tests: a few hundred deterministic cases run through R's `wilcox.test` (one `Rscript`
//! process) and scipy's `mannwhitneyu` (one `python3` process), compared with
//! [`wilcox_test`]. A missing oracle fails the test with the install line; nothing is skipped.
//!
//! Tolerances:
//! * p-values: `1e-9` relative, with an absolute floor of `1e-300` (R flushes p to 0 beyond
//!   |z| ≈ 37.5 while scipy's `erfc` still returns denormals).
//! * estimate and interval bounds: `1e-4` relative plus `1e-6 ×` the span of the pairwise
//!   differences as an absolute floor. R's own `uniroot` tolerance is `1e-4` *absolute*, so a
//!   bound near zero has no meaningful relative error; the span is the data's natural unit.
//!   Because the port replays R's Brent iterations, the observed differences are far smaller.
//! * `W` exactly; the achieved confidence level to `1e-12`.

use super::{StatsError, WilcoxResult, wilcox_test};
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// One test case: canary `x`, baseline `y`, confidence level and a label for failures.
struct Case {
    label: String,
    conf: f64,
    x: Vec<f64>,
    y: Vec<f64>,
}

/// SplitMix64: a tiny deterministic generator, enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    fn int(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.next_u64() % (hi_inclusive - lo + 1)
    }
    fn normals(&mut self, n: usize, mean: f64, sd: f64) -> Vec<f64> {
        (0..n).map(|_| mean + sd * self.normal()).collect()
    }
    fn ints(&mut self, n: usize, lo: u64, hi: u64) -> Vec<f64> {
        (0..n).map(|_| self.int(lo, hi) as f64).collect()
    }
    fn lognormals(&mut self, n: usize, mu: f64, sigma: f64) -> Vec<f64> {
        (0..n).map(|_| (mu + sigma * self.normal()).exp()).collect()
    }
}

/// The deterministic case list (about 330 cases).
fn cases() -> Vec<Case> {
    let mut rng = Rng(0x5EED_CA4A_7E57);
    let mut out = Vec::new();
    let mut push = |label: String, conf: f64, x: Vec<f64>, y: Vec<f64>| {
        out.push(Case { label, conf, x, y });
    };
    // Tiny samples, every size pair 1..=5, with and without a shift.
    for nx in 1..=5 {
        for ny in 1..=5 {
            for shift in [0.0, 1.5] {
                let x = rng.normals(nx, shift, 1.0);
                let y = rng.normals(ny, 0.0, 1.0);
                push(format!("tiny {nx}x{ny} shift {shift}"), 0.98, x, y);
            }
        }
    }
    // Tiny samples with ties (small integers).
    for nx in 2..=6 {
        for ny in 2..=6 {
            let x = rng.ints(nx, 0, 3);
            let y = rng.ints(ny, 0, 3);
            push(format!("tiny ties {nx}x{ny}"), 0.98, x, y);
        }
    }
    // The exact range, continuous.
    for k in 0..30 {
        let nx = rng.int(6, 49) as usize;
        let ny = rng.int(6, 49) as usize;
        let shift = [0.0, 0.3, 1.0, 3.0][k % 4];
        let x = rng.normals(nx, shift, 1.0);
        let y = rng.normals(ny, 0.0, 1.0);
        push(format!("exact {nx}x{ny} shift {shift}"), 0.98, x, y);
    }
    // Exact-range sizes with ties: R falls back to the normal approximation.
    for _ in 0..15 {
        let nx = rng.int(6, 49) as usize;
        let ny = rng.int(6, 49) as usize;
        let x = rng.ints(nx, 0, 20);
        let y = rng.ints(ny, 2, 22);
        push(format!("exact-size ties {nx}x{ny}"), 0.98, x, y);
    }
    // Large samples, normal approximation, various shifts.
    for k in 0..40 {
        let nx = rng.int(50, 2000) as usize;
        let ny = rng.int(50, 2000) as usize;
        let shift = [0.0, 0.05, 0.2, 1.0, 5.0][k % 5];
        let sd = [1.0, 0.01, 250.0, 3.0][k % 4];
        let x = rng.normals(nx, 100.0 + shift * sd, sd);
        let y = rng.normals(ny, 100.0, sd);
        push(format!("large {nx}x{ny} shift {shift} sd {sd}"), 0.98, x, y);
    }
    // Heavy ties.
    for _ in 0..20 {
        let nx = rng.int(50, 1500) as usize;
        let ny = rng.int(50, 1500) as usize;
        let hi = rng.int(1, 5);
        let x = rng.ints(nx, 0, hi);
        let y = rng.ints(ny, 0, hi);
        push(format!("heavy ties {nx}x{ny} 0..={hi}"), 0.98, x, y);
    }
    // Moderate integers (latencies in ms).
    for _ in 0..15 {
        let nx = rng.int(20, 800) as usize;
        let ny = rng.int(20, 800) as usize;
        let x = rng.ints(nx, 40, 140);
        let y = rng.ints(ny, 30, 130);
        push(format!("integers {nx}x{ny}"), 0.98, x, y);
    }
    // One constant side.
    for k in 0..20 {
        let n_const = [1, 3, 10, 60, 400][k % 5];
        let n_var = [2, 8, 45, 70, 900][(k / 5) % 5];
        let c = [0.0, 1.0, 100.0, -2.5][k % 4];
        let var = rng.normals(n_var, c + 0.5, 2.0);
        let cons = vec![c; n_const];
        if k % 2 == 0 {
            push(
                format!("constant canary {n_const} vs {n_var}"),
                0.98,
                cons,
                var,
            );
        } else {
            push(
                format!("constant baseline {n_var} vs {n_const}"),
                0.98,
                var,
                cons,
            );
        }
    }
    // Mixed sizes around the exact limit.
    for k in 0..20 {
        let small = rng.int(1, 49) as usize;
        let large = rng.int(50, 600) as usize;
        let x = rng.normals(if k % 2 == 0 { small } else { large }, 0.4, 1.0);
        let y = rng.normals(if k % 2 == 0 { large } else { small }, 0.0, 1.0);
        push(format!("mixed {}x{}", x.len(), y.len()), 0.98, x, y);
    }
    // Scales: tiny rates, large counts, skewed latencies.
    for k in 0..20 {
        let nx = rng.int(10, 1200) as usize;
        let ny = rng.int(10, 1200) as usize;
        let (x, y) = match k % 4 {
            0 => (rng.normals(nx, 2e-3, 1e-3), rng.normals(ny, 1.8e-3, 1e-3)),
            1 => (rng.normals(nx, 1.2e6, 3e4), rng.normals(ny, 1.19e6, 3e4)),
            2 => (rng.lognormals(nx, 4.0, 0.8), rng.lognormals(ny, 3.9, 0.8)),
            _ => (rng.lognormals(nx, -6.0, 1.5), rng.lognormals(ny, -6.0, 1.5)),
        };
        push(format!("scale {k} {nx}x{ny}"), 0.98, x, y);
    }
    // Large magnitudes with small differences: x - d rounds, creating ties R also sees.
    for k in 0..6 {
        let n = [20, 80, 300][k % 3];
        let x: Vec<f64> = (0..n).map(|_| 1e8 + rng.int(0, 40) as f64 * 1e-7).collect();
        let y: Vec<f64> = (0..n).map(|_| 1e8 + rng.int(0, 40) as f64 * 1e-7).collect();
        push(format!("rounding {n}"), 0.98, x, y);
    }
    // Completely separated samples (interval ends at the range of differences).
    for k in 0..10 {
        let n = [3, 12, 49, 50, 200][k % 5];
        let x = rng.normals(n, 50.0, 1.0);
        let y = rng.normals(n + k, 0.0, 1.0);
        if k % 2 == 0 {
            push(format!("separated {n}"), 0.98, x, y);
        } else {
            push(format!("separated reversed {n}"), 0.98, y, x);
        }
    }
    // Values recorded to one decimal (moderate ties), mid-sized.
    for k in 0..20 {
        let nx = rng.int(30, 400) as usize;
        let ny = rng.int(30, 400) as usize;
        let round = |v: Vec<f64>| -> Vec<f64> {
            v.into_iter().map(|a| (a * 10.0).round() / 10.0).collect()
        };
        let x = round(rng.normals(nx, 5.0 + 0.1 * k as f64, 1.0));
        let y = round(rng.normals(ny, 5.0, 1.0));
        push(format!("one decimal {nx}x{ny}"), 0.98, x, y);
    }
    // Exponential (skewed) samples.
    for k in 0..15 {
        let nx = rng.int(5, 2000) as usize;
        let ny = rng.int(5, 2000) as usize;
        let rate_x = [1.0, 0.8, 1.3][k % 3];
        let x: Vec<f64> = (0..nx)
            .map(|_| -(1.0 - rng.uniform()).ln() / rate_x)
            .collect();
        let y: Vec<f64> = (0..ny).map(|_| -(1.0 - rng.uniform()).ln()).collect();
        push(format!("exponential {nx}x{ny} rate {rate_x}"), 0.98, x, y);
    }
    // Other confidence levels.
    for (k, conf) in [0.5, 0.8, 0.9, 0.95, 0.99, 0.999].into_iter().enumerate() {
        let n = [5, 30, 120][k % 3];
        let x = rng.normals(n, 0.5, 1.0);
        let y = rng.normals(n + 2, 0.0, 1.0);
        push(format!("conf {conf} {n}"), conf, x, y);
        let x = rng.ints(n * 3, 0, 9);
        let y = rng.ints(n * 3, 1, 10);
        push(format!("conf {conf} ties {}", n * 3), conf, x, y);
    }
    // Cases R refuses: all tied, each side constant.
    push("all tied small".into(), 0.98, vec![2.0; 3], vec![2.0; 4]);
    push("all tied large".into(), 0.98, vec![7.0; 60], vec![7.0; 80]);
    push(
        "both constant small".into(),
        0.98,
        vec![5.0; 3],
        vec![3.0; 2],
    );
    push(
        "both constant large".into(),
        0.98,
        vec![0.1; 70],
        vec![0.3; 55],
    );
    push("single pair".into(), 0.98, vec![5.0], vec![3.0]);
    push("single tie".into(), 0.98, vec![4.0], vec![4.0]);
    out
}

/// Writes the cases as little-endian f64: count, then per case conf, nx, ny, x..., y....
fn write_cases(path: &Path, cases: &[Case]) {
    let mut values: Vec<f64> = vec![cases.len() as f64];
    for c in cases {
        values.extend([c.conf, c.x.len() as f64, c.y.len() as f64]);
        values.extend(&c.x);
        values.extend(&c.y);
    }
    let mut bytes = Vec::with_capacity(values.len() * 8);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(&bytes).unwrap();
}

const R_SCRIPT: &str = r#"
f <- commandArgs(trailingOnly = TRUE)[1]
v <- readBin(f, "double", n = file.size(f) / 8, endian = "little")
k <- 2
n <- v[1]
out <- character(n)
for (i in seq_len(n)) {
  conf <- v[k]; nx <- v[k + 1]; ny <- v[k + 2]; k <- k + 3
  x <- v[k:(k + nx - 1)]; k <- k + nx
  y <- v[k:(k + ny - 1)]; k <- k + ny
  out[i] <- tryCatch({
    r <- suppressWarnings(wilcox.test(x, y, conf.int = TRUE, conf.level = conf))
    sprintf("%d OK %.17g %.17g %.17g %.17g %.17g %.17g %s", i - 1, r$statistic, r$p.value,
            r$estimate, r$conf.int[1], r$conf.int[2], attr(r$conf.int, "conf.level"),
            grepl("exact", r$method))
  }, error = function(e) sprintf("%d ERR %s", i - 1, gsub("\n", " ", conditionMessage(e))))
}
writeLines(out)
"#;

const PY_SCRIPT: &str = r#"
import sys, warnings
warnings.filterwarnings("ignore")
try:
    import numpy as np
    from scipy.stats import mannwhitneyu
except ImportError as e:
    print("IMPORT-ERROR", e)
    sys.exit(3)
v = np.fromfile(sys.argv[1], dtype="<f8")
n = int(v[0]); k = 1
for i in range(n):
    conf, nx, ny = v[k], int(v[k + 1]), int(v[k + 2]); k += 3
    x = v[k:k + nx]; k += nx
    y = v[k:k + ny]; k += ny
    exact = nx < 50 and ny < 50 and len(np.unique(np.concatenate([x, y]))) == nx + ny
    method = "exact" if exact else "asymptotic"
    try:
        r = mannwhitneyu(x, y, use_continuity=True, alternative="two-sided", method=method)
        print(i, "OK", repr(float(r.statistic)), repr(float(r.pvalue)), method)
    except Exception as e:
        print(i, "ERR", str(e).replace("\n", " "))
"#;

/// Runs an oracle program; a missing program fails with how to install it.
fn run_oracle(program: &str, args: &[&str], install: &str) -> String {
    let output = match Command::new(program).args(args).output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run `{program}` ({e}); the oracle is required: {install}"),
    };
    assert!(
        output.status.success(),
        "`{program}` failed ({}): {}\n{}\nthe oracle is required: {install}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout),
    );
    String::from_utf8(output.stdout).unwrap()
}

fn rscript() -> String {
    std::env::var("FERRY_RSCRIPT").unwrap_or_else(|_| {
        if Path::new("/usr/bin/Rscript").exists() {
            "/usr/bin/Rscript".into()
        } else {
            "Rscript".into()
        }
    })
}

fn parse(s: &str) -> f64 {
    match s {
        "NaN" | "nan" | "NA" => f64::NAN,
        "Inf" | "inf" => f64::INFINITY,
        "-Inf" | "-inf" => f64::NEG_INFINITY,
        _ => s
            .parse()
            .unwrap_or_else(|e| panic!("bad number {s:?}: {e}")),
    }
}

/// Relative error with an absolute floor: 0 when within `floor`.
fn rel_err(ours: f64, theirs: f64, floor: f64) -> f64 {
    if ours == theirs || (ours - theirs).abs() <= floor {
        return 0.0;
    }
    (ours - theirs).abs() / ours.abs().max(theirs.abs())
}

fn ours_for(cases: &[Case]) -> Vec<Result<WilcoxResult, StatsError>> {
    cases
        .iter()
        .map(|c| wilcox_test(&c.x, &c.y, c.conf))
        .collect()
}

#[test]
fn matches_r_wilcox_test() {
    let cases = cases();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cases.bin");
    let script = dir.path().join("oracle.R");
    write_cases(&data, &cases);
    std::fs::write(&script, R_SCRIPT).unwrap();
    let stdout = run_oracle(
        &rscript(),
        &[script.to_str().unwrap(), data.to_str().unwrap()],
        "install R (Debian: `apt-get install r-base-core`) so that /usr/bin/Rscript exists",
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cases.len(), "R printed {stdout}");

    let ours = ours_for(&cases);
    let (mut max_p, mut max_loc, mut max_loc_raw) = (0.0f64, 0.0f64, 0.0f64);
    let (mut compared, mut errors, mut exact) = (0, 0, 0);
    let mut failures = Vec::new();
    for ((case, line), ours) in cases.iter().zip(&lines).zip(&ours) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let label = &case.label;
        match (f.get(1).copied(), ours) {
            (Some("ERR"), Err(_)) => errors += 1,
            (Some("ERR"), Ok(r)) => {
                failures.push(format!("{label}: R fails ({line}), we gave {r:?}"))
            }
            (Some("OK"), Err(e)) => failures.push(format!("{label}: R gives {line}, we fail: {e}")),
            (Some("OK"), Ok(r)) => {
                compared += 1;
                let [w, p, est, lo, hi, level] =
                    [2, 3, 4, 5, 6, 7].map(|i| parse(f.get(i).copied().unwrap_or("NaN")));
                let r_exact = f.get(8) == Some(&"TRUE");
                exact += usize::from(r_exact);
                let span = case
                    .x
                    .iter()
                    .chain(&case.y)
                    .fold(0.0f64, |m, v| m.max(v.abs()))
                    * 2.0;
                let floor = 1e-6 * span;
                let e_p = rel_err(r.p_value, p, 1e-300);
                let e_loc = [
                    rel_err(r.estimate, est, floor),
                    rel_err(r.conf_int.0, lo, floor),
                    rel_err(r.conf_int.1, hi, floor),
                ]
                .into_iter()
                .fold(0.0, f64::max);
                max_p = max_p.max(e_p);
                max_loc = max_loc.max(e_loc);
                for (a, b) in [(r.estimate, est), (r.conf_int.0, lo), (r.conf_int.1, hi)] {
                    max_loc_raw = max_loc_raw.max(rel_err(a, b, 0.0));
                }
                if r.w != w || r.exact != r_exact || (r.conf_level - level).abs() > 1e-12 {
                    failures.push(format!("{label}: ours {r:?}, R {line}"));
                }
                if e_p > 1e-9 || e_loc > 1e-4 {
                    failures.push(format!(
                        "{label}: p err {e_p:e}, location err {e_loc:e}; ours {r:?}; R {line}"
                    ));
                }
            }
            _ => failures.push(format!("{label}: unreadable R output {line:?}")),
        }
    }
    println!(
        "R oracle: {} cases, {compared} compared ({exact} exact branch), {errors} refused by both; \
         max relative error p {max_p:e}, estimate/CI {max_loc:e} \
         ({max_loc_raw:e} without the absolute floor)",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared >= 290 && errors >= 4);
}

#[test]
fn matches_scipy_mannwhitneyu() {
    let cases = cases();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cases.bin");
    write_cases(&data, &cases);
    let stdout = run_oracle(
        "python3",
        &["-c", PY_SCRIPT, data.to_str().unwrap()],
        "install Python 3 and scipy (`pip install scipy`)",
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cases.len(), "python printed {stdout}");

    let ours = ours_for(&cases);
    let (mut max_p, mut compared) = (0.0f64, 0);
    let mut failures = Vec::new();
    for ((case, line), ours) in cases.iter().zip(&lines).zip(&ours) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Cases R (and we) refuse have no interval; scipy only computes p. Nothing to compare.
        let Ok(r) = ours else { continue };
        if f.get(1) != Some(&"OK") {
            failures.push(format!("{}: scipy failed: {line}", case.label));
            continue;
        }
        compared += 1;
        let u = parse(f.get(2).copied().unwrap_or("NaN"));
        let p = parse(f.get(3).copied().unwrap_or("NaN"));
        let scipy_exact = f.get(4) == Some(&"exact");
        let e = rel_err(r.p_value, p, 1e-300);
        max_p = max_p.max(e);
        if u != r.w || scipy_exact != r.exact || e > 1e-9 {
            failures.push(format!(
                "{}: p err {e:e}; ours {r:?}; scipy {line}",
                case.label
            ));
        }
    }
    println!(
        "scipy oracle: {} cases, {compared} compared; max relative error p {max_p:e}",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared >= 290);
}
