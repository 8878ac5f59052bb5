//! `ferry-judge-bench`: times the judge on 100 metrics × 10,000 samples per side and, on the
//! same data in the same run, scipy's `mannwhitneyu` (p-value only) for comparison.
//!
//! The goal is a whole judgment (cleaning, summaries, the test, interval and estimate for all
//! 100 metrics) in at most 100 ms. Needs `python3` with numpy and scipy for the comparison;
//! without them it stops with the install line (it installs nothing itself).

use ferry_judge::config::OutlierStrategy;
use ferry_judge::config::{CanaryConfig, parse_canary_config};
use ferry_judge::judge::{
    JudgeResult, MetricClassification, MetricData, MetricSamples, Thresholds, judge_with_threads,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;
use std::process::Command;
use std::time::Instant;

const METRICS: usize = 100;
const SAMPLES: usize = 10_000;
const RUNS: usize = 5;
const GOAL_MS: f64 = 100.0;

/// SplitMix64 for reproducible data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next();
        let u2 = self.next();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn config() -> Result<CanaryConfig, Box<dyn Error>> {
    let groups = ["latency", "errors", "saturation", "traffic"];
    let metrics: Vec<_> = (0..METRICS)
        .map(|i| {
            let direction = ["either", "increase", "decrease"][i % 3];
            let outliers = if i % 4 == 0 { "remove" } else { "keep" };
            json!({
                "name": format!("metric-{i:03}"),
                "query": {"type": "prometheus", "metricName": format!("m{i}")},
                "groups": [groups[i % groups.len()]],
                "analysisConfigurations": {"canary": {
                    "direction": direction,
                    "outliers": {"strategy": outliers},
                }},
            })
        })
        .collect();
    let doc = json!({
        "name": "bench",
        "metrics": metrics,
        "classifier": {"groupWeights": {"latency": 40, "errors": 30}},
    });
    Ok(parse_canary_config(&doc)?)
}

/// Latency-like data: lognormal around 100 ms; every 5th metric's canary is 5 % slower.
fn data() -> Vec<(String, MetricSamples)> {
    let mut rng = Rng(0xBE7C_4000);
    (0..METRICS)
        .map(|i| {
            let shift = if i % 5 == 0 { 1.05 } else { 1.0 };
            let mut side = |factor: f64| -> Vec<f64> {
                (0..SAMPLES)
                    .map(|_| factor * 100.0 * (0.3 * rng.normal()).exp())
                    .collect()
            };
            let baseline = side(1.0);
            let canary = side(shift);
            (format!("metric-{i:03}"), MetricSamples { baseline, canary })
        })
        .collect()
}

const PY: &str = r#"
import sys, time
import numpy as np
from scipy.stats import mannwhitneyu
v = np.fromfile(sys.argv[1], dtype="<f8")
m, n, runs = int(v[0]), int(v[1]), int(v[2])
pairs = []
k = 3
for _ in range(m):
    b = v[k:k + n]; k += n
    c = v[k:k + n]; k += n
    pairs.append((c, b))
times = []
for _ in range(runs):
    t = time.perf_counter()
    ps = [mannwhitneyu(c, b, use_continuity=True, alternative="two-sided", method="asymptotic").pvalue for c, b in pairs]
    times.append(time.perf_counter() - t)
times.sort()
print(times[0], times[len(times) // 2])
for p in ps:
    print(repr(float(p)))
"#;

/// Best and median seconds of scipy over the same pairs, and its p-values.
fn scipy(pairs: &[(String, MetricSamples)]) -> Result<(f64, f64, Vec<f64>), Box<dyn Error>> {
    let path = std::env::temp_dir().join(format!("ferry-judge-bench-{}.bin", std::process::id()));
    let mut values = vec![METRICS as f64, SAMPLES as f64, RUNS as f64];
    for (_, s) in pairs {
        values.extend(&s.baseline);
        values.extend(&s.canary);
    }
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::File::create(&path)?.write_all(&bytes)?;
    let output = Command::new("python3").args(["-c", PY]).arg(&path).output();
    let _ = std::fs::remove_file(&path);
    let output = output.map_err(|e| format!("cannot run python3: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "python3 failed (pip install numpy scipy?): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    let text = String::from_utf8(output.stdout)?;
    let mut lines = text.lines();
    let first: Vec<f64> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let (Some(&best), Some(&median)) = (first.first(), first.get(1)) else {
        return Err(format!("unexpected python output: {text}").into());
    };
    let ps = lines.map(str::parse).collect::<Result<Vec<f64>, _>>()?;
    Ok((best, median, ps))
}

/// Best and median milliseconds of [`RUNS`] judgments, and the last result.
fn time_judge(
    config: &CanaryConfig,
    data: &BTreeMap<String, MetricData>,
    threads: usize,
) -> Option<(f64, f64, JudgeResult)> {
    let mut times = Vec::with_capacity(RUNS);
    let mut result = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = judge_with_threads(config, data, Thresholds::default(), threads);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        result = Some(r);
    }
    times.sort_by(f64::total_cmp);
    Some((*times.first()?, *times.get(RUNS / 2)?, result?))
}

/// The 1-minute load average, to judge how busy the machine was (Linux only).
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_string)
}

fn main() -> Result<(), Box<dyn Error>> {
    let config = config()?;
    let pairs = data();
    let map: BTreeMap<String, MetricData> = pairs
        .iter()
        .map(|(k, s)| (k.clone(), MetricData::Samples(s.clone())))
        .collect();

    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let Some((best, median, result)) = time_judge(&config, &map, threads) else {
        return Err("no judgment ran".into());
    };
    let Some((single_best, single_median, _)) = time_judge(&config, &map, 1) else {
        return Err("no judgment ran".into());
    };

    println!(
        "ferry-judge-bench: {METRICS} metrics × {SAMPLES} samples per side, {RUNS} runs, \
         {threads} core(s), load average {}",
        load_average().unwrap_or_else(|| "unknown".into())
    );
    let deviating = result
        .metrics
        .iter()
        .filter(|m| {
            matches!(
                m.classification,
                MetricClassification::High | MetricClassification::Low
            )
        })
        .count();
    println!(
        "judgment: score {} ({:?}), {deviating} of {METRICS} metrics High or Low",
        result.summary.score, result.summary.classification,
    );
    println!();
    println!("{:<44} {:>10} {:>10}", "", "best ms", "median ms");
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        format!("Ferry judge, {threads} thread(s) (CI + estimate)"),
        best,
        median
    );
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        "Ferry judge, 1 thread", single_best, single_median
    );
    // The comparison is part of what this benchmark reports: without scipy it stops, saying
    // how to install it, rather than print a table missing its reference.
    let (s_best, s_median, ps) = scipy(&pairs).map_err(|e| {
        format!("the scipy comparison could not run ({e}); install it: pip install numpy scipy")
    })?;
    let (s_best, s_median) = (s_best * 1e3, s_median * 1e3);
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        "scipy mannwhitneyu (p-value only)", s_best, s_median
    );
    println!(
        "{:<44} {:>10.2} {:>10.2}",
        "ratio scipy / Ferry",
        s_best / best,
        s_median / median
    );
    // scipy sees the raw samples; compare where the judge kept them all too.
    let (mut compared, mut max_rel) = (0, 0.0f64);
    for ((m, cfg), p) in result.metrics.iter().zip(&config.metrics).zip(&ps) {
        if let (Some(q), OutlierStrategy::Keep) = (m.p_value, cfg.outliers.strategy) {
            compared += 1;
            if q != *p {
                max_rel = max_rel.max((q - p).abs() / q.abs().max(p.abs()));
            }
        }
    }
    println!(
        "p-values vs scipy ({compared} metrics without outlier removal): \
         max relative difference {max_rel:.2e}"
    );
    let verdict = if median <= GOAL_MS { "met" } else { "NOT met" };
    println!("goal: ≤ {GOAL_MS} ms per judgment — {verdict} (median {median:.1} ms)");
    Ok(())
}
