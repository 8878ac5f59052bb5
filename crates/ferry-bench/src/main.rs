//! `ferry-bench`: measures, in one run, what the core issue's performance goals are about, and
//! prints the figures as a Markdown table (copy them into BENCHMARKS.md with the date).
//!
//! 1. The raw durable commit rate of the store: one-row transactions back to back — the
//!    physical limit for an engine that commits every transition.
//! 2. The engine driving many short pipelines (`wait 0` stages in a chain): transitions per
//!    second, and the stage-to-stage latency from one stage's step finishing to the next stage's
//!    step starting (which includes the commit in between).
//! 3. Resident memory with many executions waiting at a manual judgment at once (in a child
//!    process of its own, so earlier phases do not inflate it).
//! 4. An idle `ferry server`: time from spawn to ready, and its resident memory.
//! 5. Deploy time on the host provider: a `deploy` stage of a 3-instance server group of the
//!    example `shop-service`, from stage start to serving (stage end: instances healthy, the
//!    server group enabled behind the load balancer; for red/black also the old one disabled
//!    and drained).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ferry_core::{Status, Store};
use ferry_engine::{Engine, EngineConfig, EngineHandle, Registry, RunRequest};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Benchmarks Ferry's store, engine and server; prints a Markdown table")]
struct Args {
    /// `postgres://…` to benchmark PostgreSQL instead of SQLite.
    #[arg(long)]
    database_url: Option<String>,
    /// Executions in the engine phase.
    #[arg(long, default_value_t = 2000)]
    executions: usize,
    /// Executions run one at a time for the latency figures.
    #[arg(long, default_value_t = 300)]
    latency_executions: usize,
    /// Stages per execution (a chain of `wait 0`).
    #[arg(long, default_value_t = 5)]
    stages: usize,
    /// Executions waiting at once in the memory phase.
    #[arg(long, default_value_t = 10_000)]
    waiting: usize,
    /// Seconds of raw commits.
    #[arg(long, default_value_t = 3)]
    commit_seconds: u64,
    /// The `ferry` binary for the idle-server phase (default: next to this one).
    #[arg(long)]
    ferry_bin: Option<PathBuf>,
    #[command(subcommand)]
    phase: Option<Phase>,
}

#[derive(Subcommand)]
enum Phase {
    /// Internal: the memory phase, run in a child process.
    Waiting {
        #[arg(long)]
        count: usize,
        #[arg(long)]
        database_url: Option<String>,
    },
}

fn registry(work: &Path) -> Result<Registry> {
    Ok(ferry_stages::core_registry(&ferry_stages::StageServices {
        http: ferry_http::GuardedClient::new(ferry_http::UrlPolicy::deny_all())?,
        notifier: Arc::new(ferry_stages::LogNotifier),
        work_dir: work.to_path_buf(),
    }))
}

async fn open_store(database_url: Option<&str>, dir: &Path) -> Result<Arc<dyn Store>> {
    let cfg = ferry_store::StoreConfig::from_url_or_dir(database_url, dir)?;
    Ok(ferry_store::open(&cfg).await?)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1e6
}

async fn save(engine: &EngineHandle, doc: serde_json::Value) -> Result<ferry_core::PipelineRecord> {
    let p = ferry_engine::validate_pipeline(&doc, engine.registry())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(engine.store().save_pipeline(&p, "bench").await?)
}

async fn raw_commits(store: &Arc<dyn Store>, seconds: u64) -> Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        store.probe_write().await?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

struct EngineRun {
    transitions_per_sec: f64,
    executions_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    samples: usize,
}

async fn engine_phase(
    engine: &EngineHandle,
    executions: usize,
    stages: usize,
) -> Result<EngineRun> {
    let record = save(engine, chain_pipeline("chain", stages)).await?;
    let stats = engine.stats();
    stats.latencies.record(true);
    let _ = stats.latencies.take();
    let t0 = stats.transitions.load(Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..executions {
        engine.run_pipeline(&record, RunRequest::default()).await?;
    }
    // Completed executions leave the engine's memory.
    let deadline = Instant::now() + Duration::from_secs(600);
    while engine.stats().live_executions.load(Ordering::Relaxed) > 0 {
        if Instant::now() > deadline {
            bail!("engine phase did not finish in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    stats.latencies.record(false);
    let mut lat = stats.latencies.take();
    lat.sort_unstable();
    let transitions = stats.transitions.load(Ordering::Relaxed) - t0;
    let filter = ferry_core::ExecutionFilter {
        pipeline_config_id: Some(record.id.clone()),
        statuses: vec![Status::Succeeded],
        limit: executions,
        ..Default::default()
    };
    let succeeded = engine.store().list_executions(&filter).await?.len();
    if succeeded != executions {
        bail!("only {succeeded} of {executions} executions SUCCEEDED");
    }
    Ok(EngineRun {
        transitions_per_sec: transitions as f64 / elapsed,
        executions_per_sec: executions as f64 / elapsed,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        samples: lat.len(),
    })
}

/// Stage-to-stage latency with one execution at a time (no queueing behind other runs).
async fn latency_phase(
    engine: &EngineHandle,
    executions: usize,
    stages: usize,
) -> Result<(f64, f64, usize)> {
    let record = save(engine, chain_pipeline("latency", stages)).await?;
    let stats = engine.stats();
    let _ = stats.latencies.take();
    stats.latencies.record(true);
    let mut events = engine.subscribe();
    for _ in 0..executions {
        let id = engine.run_pipeline(&record, RunRequest::default()).await?;
        loop {
            let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .context("no event for 10 s")??;
            if e.execution_id == id && e.status.is_complete() {
                if e.status != Status::Succeeded {
                    bail!("execution {id} ended {}", e.status);
                }
                break;
            }
        }
    }
    stats.latencies.record(false);
    let mut lat = stats.latencies.take();
    lat.sort_unstable();
    Ok((percentile(&lat, 0.50), percentile(&lat, 0.99), lat.len()))
}

fn chain_pipeline(name: &str, stages: usize) -> serde_json::Value {
    let chain: Vec<serde_json::Value> = (0..stages)
        .map(|i| {
            let reqs: Vec<String> = if i == 0 { vec![] } else { vec![(i - 1).to_string()] };
            json!({"refId": i.to_string(), "type": "wait", "waitTime": 0, "requisiteStageRefIds": reqs})
        })
        .collect();
    json!({"application": "bench", "name": name, "stages": chain})
}

/// The memory phase, in its own process: `count` executions waiting at a manual judgment.
async fn waiting_phase(count: usize, database_url: Option<&str>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open_store(database_url, dir.path()).await?;
    let (engine, _join) =
        Engine::start(store, registry(dir.path())?, EngineConfig::default()).await?;
    let record = save(
        &engine,
        json!({"application": "bench", "name": "waiting", "stages": [
            {"refId": "1", "type": "manualJudgment", "instructions": "benchmark"}]}),
    )
    .await?;
    let before = rss_kib(std::process::id())?;
    let start = Instant::now();
    for _ in 0..count {
        engine.run_pipeline(&record, RunRequest::default()).await?;
    }
    // Let every first step run.
    while engine.stats().steps_in_flight.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = engine.stats().live_executions.load(Ordering::Relaxed);
    let after = rss_kib(std::process::id())?;
    println!(
        "{}",
        json!({"count": count, "live": live, "rss_before_kib": before, "rss_kib": after, "seconds": start.elapsed().as_secs_f64()})
    );
    engine.shutdown();
    Ok(())
}

/// Phase 5: deploy time of a 3-instance server group on the host provider.
async fn deploy_phase(shop: &Path) -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let host =
        ferry_host::HostProvider::start(ferry_host::HostConfig::new(dir.path().join("host")))
            .await?;
    let result = deploy_runs(&host, dir.path(), shop).await;
    for g in ferry_provider::Provider::server_groups(&host, "bench")
        .await
        .unwrap_or_default()
    {
        let _ = ferry_provider::Provider::destroy(&host, &g.account, &g.name).await;
    }
    host.shutdown().await;
    result
}

async fn deploy_runs(
    host: &ferry_host::HostProvider,
    dir: &Path,
    shop: &Path,
) -> Result<(f64, f64)> {
    use ferry_provider::Provider;
    let store = open_store(None, dir).await?;
    let mut registry = registry(dir)?;
    let provider: Arc<dyn Provider> = Arc::new(host.clone());
    ferry_deploy::register(&mut registry, ferry_deploy::Providers::new().with(provider));
    let (engine, _join) = Engine::start(store, registry, EngineConfig::default()).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    host.upsert_load_balancer(ferry_provider::LoadBalancerSpec {
        name: "bench".into(),
        application: "bench".into(),
        account: "local".into(),
        listeners: vec![ferry_provider::Listener {
            port,
            address: Some("127.0.0.1".into()),
        }],
        routes: vec![],
        default_cluster: Some("bench-prod".into()),
        firewalls: vec![],
        preview_listeners: vec![],
    })
    .await?;
    let doc = json!({"application": "bench", "name": "deploy", "parameterConfig": [{"name": "version", "required": true}],
        "stages": [{"refId": "1", "type": "deploy", "clusters": [{
            "account": "local", "application": "bench", "stack": "prod",
            "capacity": {"min": 3, "max": 3, "desired": 3}, "strategy": "redblack", "loadBalancers": ["bench"],
            "artifact": {"name": "shop", "version": "${parameters.version}",
                         "source": {"type": "command", "command": [shop.display().to_string()]},
                         "env": {"SECTION": "kids", "VERSION": "${parameters.version}"}},
            "healthCheck": {"path": "/health", "intervalMs": 100, "timeoutMs": 1000, "healthyThreshold": 1, "unhealthyThreshold": 2}}]}]});
    let record = save(&engine, doc).await?;
    let mut times = Vec::new();
    for version in ["1.0.0", "2.0.0"] {
        let mut parameters = serde_json::Map::new();
        parameters.insert("version".into(), json!(version));
        let id = engine
            .run_pipeline(
                &record,
                RunRequest {
                    parameters,
                    ..RunRequest::default()
                },
            )
            .await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let e = loop {
            match engine.get_execution(&id).await? {
                Some(e) if e.status.is_complete() => break e,
                _ if Instant::now() > deadline => bail!("deploy did not finish in 120 s"),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        if e.status != Status::Succeeded {
            bail!(
                "deploy of {version} ended {}: {:?}",
                e.status,
                e.stages[0].context.get("exception")
            );
        }
        let s = &e.stages[0];
        times.push((s.end_time.unwrap_or(0) - s.start_time.unwrap_or(0)) as f64);
        // It serves: ask the load balancer.
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
        use std::io::{Read, Write};
        write!(
            conn,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        conn.read_to_string(&mut buf)?;
        if !buf.starts_with("HTTP/1.1 200") || !buf.contains(&format!("x-shop-version: {version}"))
        {
            bail!("version {version} does not serve through the load balancer: {buf}");
        }
    }
    engine.shutdown();
    Ok((times[0], times[1]))
}

fn idle_server(ferry: &Path) -> Result<(f64, f64, u64)> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir()?;
    let start = Instant::now();
    let mut child = std::process::Command::new(ferry)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", ferry.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let ready_line = start.elapsed().as_secs_f64() * 1000.0;
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("no address in the ready line")?
        .to_string();
    // First successful /readyz.
    let readyz = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            use std::io::{Read, Write};
            let _ = write!(
                s,
                "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                break start.elapsed().as_secs_f64() * 1000.0;
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            bail!("server not ready within 10 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(child.id())?;
    let _ = child.kill();
    let _ = child.wait();
    Ok((ready_line, readyz, rss))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Phase::Waiting {
        count,
        database_url,
    }) = &args.phase
    {
        return waiting_phase(*count, database_url.as_deref()).await;
    }
    let dir = tempfile::tempdir()?;
    let store = open_store(args.database_url.as_deref(), dir.path()).await?;
    let backend = store.backend();
    eprintln!("phase 1: raw commits ({} s)", args.commit_seconds);
    let raw = raw_commits(&store, args.commit_seconds).await?;
    eprintln!(
        "phase 2: engine, {} executions x {} stages",
        args.executions, args.stages
    );
    let (engine, _join) = Engine::start(
        store.clone(),
        registry(dir.path())?,
        EngineConfig::default(),
    )
    .await?;
    let run = engine_phase(&engine, args.executions, args.stages).await?;
    eprintln!(
        "phase 2b: latency, {} executions one at a time",
        args.latency_executions
    );
    let (lat_p50, lat_p99, lat_n) =
        latency_phase(&engine, args.latency_executions, args.stages).await?;
    engine.shutdown();

    eprintln!(
        "phase 3: {} waiting executions (child process)",
        args.waiting
    );
    let me = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(&me);
    cmd.args(["waiting", "--count", &args.waiting.to_string()]);
    if let Some(u) = &args.database_url {
        cmd.args(["--database-url", u]);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "waiting phase failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let waiting: serde_json::Value = serde_json::from_slice(&out.stdout)?;

    eprintln!("phase 4: idle server");
    let ferry = args
        .ferry_bin
        .clone()
        .unwrap_or_else(|| me.with_file_name("ferry"));
    let (ready_line_ms, readyz_ms, idle_rss) = idle_server(&ferry)?;

    eprintln!("phase 5: deploy time on the host provider");
    let (first_deploy_ms, redblack_ms) = deploy_phase(&me.with_file_name("shop-service")).await?;

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let ratio = run.transitions_per_sec / raw * 100.0;
    let waiting_mb = waiting["rss_kib"].as_u64().unwrap_or(0) as f64 / 1024.0;
    println!("| measure | value | goal |");
    println!("|---|---|---|");
    println!("| store | {backend} | |");
    println!(
        "| machine | {} cores, {cpu} | |",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| raw durable commits/s | {raw:.0} | (physical limit) |");
    println!(
        "| engine transitions/s ({} executions x {} stages) | {:.0} | >= 50 % of raw |",
        args.executions, args.stages, run.transitions_per_sec
    );
    println!("| engine transitions as % of raw commits | {ratio:.0} % | >= 50 % |");
    println!(
        "| executions completed/s | {:.0} | |",
        run.executions_per_sec
    );
    println!(
        "| stage-to-stage transition p50, one run at a time ({lat_n} samples) | {lat_p50:.3} ms | <= 1 ms |"
    );
    println!("| stage-to-stage transition p99, one run at a time | {lat_p99:.3} ms | <= 10 ms |");
    println!(
        "| stage-to-stage transition p50 / p99 under the full load above ({} samples) | {:.3} / {:.3} ms | |",
        run.samples, run.p50_ms, run.p99_ms
    );
    println!(
        "| resident memory, {} executions waiting | {waiting_mb:.1} MB | <= 200 MB |",
        waiting["live"]
    );
    println!(
        "| idle server resident memory | {:.1} MB | <= 30 MB |",
        idle_rss as f64 / 1024.0
    );
    println!("| server start to ready line | {ready_line_ms:.0} ms | |");
    println!("| server start to first 200 from /readyz | {readyz_ms:.0} ms | <= 300 ms |");
    println!(
        "| deploy of a 3-instance server group, stage start to serving (first) | {first_deploy_ms:.0} ms | |"
    );
    println!(
        "| red/black of a 3-instance server group, stage start to serving and old drained | {redblack_ms:.0} ms | |"
    );
    Ok(())
}
