//! `ferry-lb-bench`: Ferry's load balancer against HAProxy and nginx, same backends, same `wrk`
//! load, in one run; prints a Markdown table with the ratios against HAProxy.
//!
//! Needs the Debian packages `haproxy`, `nginx` and `wrk` (it installs nothing). Every process it
//! starts is stopped on exit, including on Ctrl-C. See `bench/lb/README.md`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use ferry_lb::{BackendConfig, GroupConfig, Lb, LbConfig, LbSettings, ListenerConfig, PoolConfig};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// The fixed answer of every backend: 100 bytes.
const BODY: &[u8; 100] = b"Welcome to shoppingapp -- benchmark backend answering with a fixed body of exactly 100 bytes.......\n";

struct Options {
    backends: usize,
    duration: u64,
    connections: u32,
    wrk_threads: u32,
    warmup: u64,
    rounds: usize,
    /// Run only this proxy (for profiling); the table then has no HAProxy reference.
    only: Option<String>,
    /// Ferry's worker threads (default: one per core).
    ferry_threads: Option<usize>,
    /// Bind every proxy's threads or processes to one CPU each: Ferry's `pin_workers`,
    /// HAProxy's `cpu-map`, nginx's `worker_cpu_affinity auto`.
    pin: bool,
}

impl Options {
    fn parse() -> anyhow::Result<Options> {
        let mut options = Options {
            backends: 4,
            duration: 3,
            connections: 64,
            wrk_threads: 2,
            warmup: 2,
            rounds: 11,
            only: None,
            ferry_threads: None,
            pin: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                println!(
                    "usage: ferry-lb-bench [--backends N=4] [--duration SECS=3] [--connections C=64] \
                     [--wrk-threads T=2] [--warmup SECS=2] [--rounds R=11] [--only ferry|haproxy|nginx] [--ferry-threads N=cores] \
                     [--pin]"
                );
                std::process::exit(0);
            }
            if flag == "--pin" {
                options.pin = true;
                continue;
            }
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            if flag == "--only" {
                options.only = Some(value.to_lowercase());
                continue;
            }
            let number: u64 = value
                .parse()
                .with_context(|| format!("{flag}: {value:?} is not a number"))?;
            match flag.as_str() {
                "--backends" => options.backends = usize::try_from(number)?.max(1),
                "--duration" => options.duration = number.max(1),
                "--connections" => options.connections = u32::try_from(number)?.max(1),
                "--wrk-threads" => options.wrk_threads = u32::try_from(number)?.max(1),
                "--warmup" => options.warmup = number,
                "--rounds" => options.rounds = usize::try_from(number)?.max(1),
                "--ferry-threads" => options.ferry_threads = Some(usize::try_from(number)?.max(1)),
                other => bail!("unknown option {other} (try --help)"),
            }
        }
        Ok(options)
    }
}

/// A started proxy process: SIGTERM on drop, SIGKILL if it lingers.
struct ProcessGuard {
    name: &'static str,
    child: Child,
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `program` on PATH (plus the sbin directories a non-root PATH may lack).
fn find_program(program: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "`{program}` not found: install the Debian package `{package}` \
         (apt-get install -y haproxy nginx wrk); this benchmark installs nothing itself"
    )
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The hidden flag that makes this binary the backends' process.
const SERVE_BACKENDS: &str = "--serve-backends";

/// Starts the backends in a process of their own (this binary again, with [`SERVE_BACKENDS`]),
/// so every proxy faces the same backends and none shares a process with them: in the same
/// process as Ferry they would share its threads' scheduling and its allocator, which HAProxy
/// and nginx do not. The process ends when the returned child is dropped.
fn start_backends(count: usize) -> anyhow::Result<(Vec<SocketAddr>, Child)> {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe()?)
        .args([SERVE_BACKENDS, &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the backends' process")?;
    let stdout = child
        .stdout
        .take()
        .context("the backends' process has no stdout")?;
    let mut addrs = Vec::with_capacity(count);
    for line in std::io::BufReader::new(stdout).lines().take(count) {
        addrs.push(line?.trim().parse::<SocketAddr>()?);
    }
    if addrs.len() != count {
        let _ = child.kill();
        bail!(
            "the backends' process printed {} of {count} addresses",
            addrs.len()
        );
    }
    Ok((addrs, child))
}

/// The backends' process: binds `count` listeners, prints their addresses, and serves on a
/// 2-thread runtime until its stdin closes (the benchmark ended or died).
fn serve_backends(count: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("backend")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut out = String::new();
        for _ in 0..count {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            out.push_str(&format!("{}\n", listener.local_addr()?));
            tokio::spawn(serve_backend(listener));
        }
        print!("{out}");
        std::io::Write::flush(&mut std::io::stdout())?;
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        while tokio::io::AsyncReadExt::read(&mut stdin, &mut sink).await? > 0 {}
        anyhow::Ok(())
    })
}

/// Ends the backends' process when the benchmark ends, however it ends.
struct BackendsGuard(Child);

impl Drop for BackendsGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve_backend(listener: tokio::net::TcpListener) {
    let http = hyper::server::conn::http1::Builder::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            service_fn(|_request| async {
                let mut response = hyper::Response::new(Full::new(Bytes::from_static(BODY)));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain"),
                );
                Ok::<_, std::convert::Infallible>(response)
            }),
        );
        tokio::spawn(connection);
    }
}

fn haproxy_config(
    listen: SocketAddr,
    backends: &[SocketAddr],
    threads: usize,
    pin: bool,
) -> String {
    let cpu_map = if pin {
        format!(
            "    cpu-map auto:1/1-{threads} 0-{}\n",
            threads.saturating_sub(1)
        )
    } else {
        String::new()
    };
    let mut config = format!(
        "global\n    nbthread {threads}\n{cpu_map}    maxconn 4096\n\n\
         defaults\n    mode http\n    option http-keep-alive\n    option forwardfor\n    http-reuse always\n    \
         timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    timeout http-keep-alive 30s\n\n\
         frontend ferry_bench\n    bind {listen}\n    default_backend servers\n\n\
         backend servers\n    balance roundrobin\n"
    );
    for (i, addr) in backends.iter().enumerate() {
        let _ = writeln!(config, "    server b{i} {addr}");
    }
    config
}

fn nginx_config(listen: SocketAddr, backends: &[SocketAddr], dir: &Path, pin: bool) -> String {
    let dir = dir.display();
    let affinity = if pin {
        "worker_cpu_affinity auto;\n"
    } else {
        ""
    };
    let servers: String = backends
        .iter()
        .map(|a| format!("        server {a};\n"))
        .collect();
    format!(
        "worker_processes auto;\n{affinity}pid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
         events {{\n    worker_connections 4096;\n}}\n\
         http {{\n    access_log off;\n    client_body_temp_path {dir}/client_body;\n    proxy_temp_path {dir}/proxy;\n    \
         fastcgi_temp_path {dir}/fastcgi;\n    uwsgi_temp_path {dir}/uwsgi;\n    scgi_temp_path {dir}/scgi;\n    \
         keepalive_requests 1000000;\n\
         upstream servers {{\n{servers}        keepalive 256;\n        keepalive_requests 1000000;\n    }}\n\
         server {{\n        listen {listen};\n        location / {{\n            proxy_pass http://servers;\n            \
         proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            proxy_set_header Host $host;\n            \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n            proxy_set_header X-Forwarded-Proto $scheme;\n            \
         proxy_set_header X-Forwarded-Host $host;\n        }}\n    }}\n}}\n"
    )
}

fn ferry_config(backends: &[SocketAddr]) -> LbConfig {
    LbConfig {
        listeners: vec![ListenerConfig {
            name: "bench".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            routes: vec![],
            default_pool: Some("servers".into()),
            allow: vec![],
            deny: vec![],
        }],
        pools: vec![PoolConfig {
            name: "servers".into(),
            health_check: None,
            groups: vec![GroupConfig {
                name: "servers-v000".into(),
                weight: 1,
                enabled: true,
                backends: backends
                    .iter()
                    .enumerate()
                    .map(|(i, addr)| BackendConfig {
                        id: format!("b{i}"),
                        addr: *addr,
                    })
                    .collect(),
            }],
        }],
    }
}

/// Waits until `addr` answers an HTTP GET with 200 (the proxy is up and reaches a backend).
async fn wait_ready(
    name: &str,
    addr: SocketAddr,
    guard: Option<&mut ProcessGuard>,
    log: Option<&Path>,
) -> anyhow::Result<()> {
    let log_text = || {
        log.and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut guard = guard;
    loop {
        if let Some(g) = guard.as_mut()
            && let Ok(Some(status)) = g.child.try_wait()
        {
            bail!(
                "{name} exited during start-up with {status}:\n{}",
                log_text()
            );
        }
        if probe(addr).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not answer on {addr} within 10 s\n{}",
                log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn probe(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

#[derive(Debug, Clone)]
struct WrkResult {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    requests: u64,
    /// CPU time the proxy itself used per request, in microseconds.
    cpu_us_per_request: f64,
}

fn parse_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(number / 1000.0),
        "ms" => Some(number),
        "s" => Some(number * 1000.0),
        "m" => Some(number * 60_000.0),
        _ => None,
    }
}

fn parse_wrk(output: &str) -> anyhow::Result<WrkResult> {
    let mut result = WrkResult {
        requests_per_sec: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
        requests: 0,
        cpu_us_per_request: f64::NAN,
    };
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => result.requests_per_sec = value.parse()?,
            ["50%", value] => result.p50_ms = parse_duration_ms(value).context("p50")?,
            ["99%", value] => result.p99_ms = parse_duration_ms(value).context("p99")?,
            [count, "requests", "in", ..] => result.requests = count.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", count] => {
                result.errors += count.parse::<u64>()?
            }
            ["Socket", "errors:", rest @ ..] => {
                for number in rest
                    .iter()
                    .map(|w| w.trim_end_matches(','))
                    .filter_map(|w| w.parse::<u64>().ok())
                {
                    result.errors += number;
                }
            }
            _ => {}
        }
    }
    if result.requests_per_sec.is_nan() || result.p99_ms.is_nan() {
        bail!("could not parse wrk output:\n{output}");
    }
    Ok(result)
}

async fn run_wrk(
    wrk: &Path,
    addr: SocketAddr,
    options: &Options,
    seconds: u64,
    cpu_of: CpuOf,
) -> anyhow::Result<WrkResult> {
    let cpu_before = cpu_seconds(cpu_of);
    let output = tokio::process::Command::new(wrk)
        .args([
            format!("-t{}", options.wrk_threads),
            format!("-c{}", options.connections),
            format!("-d{seconds}s"),
            "--latency".into(),
            format!("http://{addr}/"),
        ])
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut result = parse_wrk(&text)?;
    let cpu = cpu_seconds(cpu_of) - cpu_before;
    if result.requests > 0 {
        result.cpu_us_per_request = cpu * 1e6 / result.requests as f64;
    }
    Ok(result)
}

/// Which processes or threads make up a proxy, for CPU accounting.
#[derive(Clone, Copy)]
enum CpuOf {
    /// Ferry: this process's threads named `ferry-lb-*`.
    FerryThreads,
    /// A process and all its threads.
    Process(u32),
    /// A process and its direct children (nginx master and workers).
    ProcessTree(u32),
}

/// utime + stime (in clock ticks) from a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> Option<(u64, u32)> {
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ticks, ppid))
}

/// CPU seconds used so far by `of` (Linux `/proc`, 100 ticks per second).
fn cpu_seconds(of: CpuOf) -> f64 {
    let read = |path: String| std::fs::read_to_string(path).ok();
    let ticks: u64 = match of {
        CpuOf::FerryThreads => std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|task| {
                read(format!("{}/comm", task.path().display()))
                    .is_some_and(|c| c.starts_with("ferry-lb-"))
            })
            .filter_map(|task| stat_ticks(&read(format!("{}/stat", task.path().display()))?))
            .map(|(ticks, _)| ticks)
            .sum(),
        CpuOf::Process(pid) => read(format!("/proc/{pid}/stat"))
            .and_then(|s| stat_ticks(&s))
            .map_or(0, |t| t.0),
        CpuOf::ProcessTree(pid) => std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let own_pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let (ticks, ppid) = stat_ticks(&read(format!("/proc/{own_pid}/stat"))?)?;
                (own_pid == pid || ppid == pid).then_some(ticks)
            })
            .sum(),
    };
    ticks as f64 / 100.0
}

fn version(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("?")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "?".into())
}

/// The median of each column over the rounds (errors and requests are summed).
fn median(results: Vec<WrkResult>) -> Option<WrkResult> {
    let mid = |f: fn(&WrkResult) -> f64| {
        let mut values: Vec<f64> = results.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    };
    Some(WrkResult {
        requests_per_sec: mid(|r| r.requests_per_sec)?,
        p50_ms: mid(|r| r.p50_ms)?,
        p99_ms: mid(|r| r.p99_ms)?,
        errors: results.iter().map(|r| r.errors).sum(),
        requests: results.iter().map(|r| r.requests).sum(),
        cpu_us_per_request: mid(|r| r.cpu_us_per_request)?,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(SERVE_BACKENDS) {
        let count = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(4);
        return serve_backends(count);
    }
    let options = Options::parse()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-control")
        .enable_all()
        .build()?;
    let programs = [
        find_program("haproxy", "haproxy")?,
        find_program("nginx", "nginx")?,
        find_program("wrk", "wrk")?,
    ];
    let (backends, child) = start_backends(options.backends)?;
    let _backends = BackendsGuard(child);
    let ferry_threads = options.ferry_threads.unwrap_or(cores);
    // `_backends` ends the backends' process after the run, however it ends.
    runtime.block_on(async {
        tokio::select! {
            result = bench(&options, cores, ferry_threads, &programs, &backends) => result,
            _ = tokio::signal::ctrl_c() => bail!("interrupted; stopped every process started"),
        }
    })
}

async fn bench(
    options: &Options,
    cores: usize,
    ferry_threads: usize,
    programs: &[PathBuf; 3],
    backends: &[SocketAddr],
) -> anyhow::Result<()> {
    let [haproxy, nginx, wrk] = programs;
    let dir = tempfile::Builder::new()
        .prefix("ferry-lb-bench-")
        .tempdir()?;

    // Ferry, in this process.
    let lb = Lb::with_settings(LbSettings {
        worker_threads: ferry_threads,
        pin_workers: options.pin,
        ..LbSettings::default()
    });
    lb.apply(ferry_config(backends)).await?;
    let ferry_addr = lb
        .bound()
        .first()
        .map(|(_, a)| *a)
        .context("Ferry bound no listener")?;
    wait_ready("ferry", ferry_addr, None, None).await?;

    // HAProxy.
    let haproxy_addr = free_port()?;
    let haproxy_cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &haproxy_cfg,
        haproxy_config(haproxy_addr, backends, cores, options.pin),
    )?;
    let mut haproxy_guard = ProcessGuard {
        name: "haproxy",
        child: Command::new(haproxy)
            .arg("-f")
            .arg(&haproxy_cfg)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("haproxy.log"))?)
            .spawn()
            .context("starting haproxy")?,
    };
    wait_ready(
        "haproxy",
        haproxy_addr,
        Some(&mut haproxy_guard),
        Some(&dir.path().join("haproxy.log")),
    )
    .await?;

    // nginx.
    let nginx_addr = free_port()?;
    let nginx_conf = dir.path().join("nginx.conf");
    std::fs::write(
        &nginx_conf,
        nginx_config(nginx_addr, backends, dir.path(), options.pin),
    )?;
    let mut nginx_guard = ProcessGuard {
        name: "nginx",
        child: Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("nginx-error.log"))
            .arg("-c")
            .arg(&nginx_conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("nginx.log"))?)
            .spawn()
            .context("starting nginx")?,
    };
    wait_ready(
        "nginx",
        nginx_addr,
        Some(&mut nginx_guard),
        Some(&dir.path().join("nginx-error.log")),
    )
    .await?;

    let targets = [
        ("Ferry", ferry_addr, CpuOf::FerryThreads),
        (
            "HAProxy",
            haproxy_addr,
            CpuOf::Process(haproxy_guard.child.id()),
        ),
        (
            "nginx",
            nginx_addr,
            CpuOf::ProcessTree(nginx_guard.child.id()),
        ),
    ];
    let mut results: Vec<Vec<WrkResult>> = vec![Vec::new(); targets.len()];
    for round in 0..options.rounds {
        for (i, (name, addr, cpu_of)) in targets.iter().enumerate() {
            if options
                .only
                .as_ref()
                .is_some_and(|only| *only != name.to_lowercase())
            {
                continue;
            }
            // Once per proxy: later rounds find its backend connections open already.
            if options.warmup > 0 && round == 0 {
                run_wrk(wrk, *addr, options, options.warmup, *cpu_of).await?;
            }
            let result = run_wrk(wrk, *addr, options, options.duration, *cpu_of).await?;
            eprintln!(
                "round {}: {name}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} errors, {:.1} µs CPU/request",
                round + 1,
                result.requests_per_sec,
                result.p50_ms,
                result.p99_ms,
                result.errors,
                result.cpu_us_per_request
            );
            results[i].push(result);
        }
    }
    if options.only.is_some() {
        return Ok(());
    }
    let medians: Vec<WrkResult> = results.into_iter().filter_map(median).collect();
    let Some(reference) = medians.get(1).cloned() else {
        bail!("no HAProxy result")
    };

    println!(
        "\n### Load balancer: `wrk -t{} -c{} -d{}s --latency`, {} backends answering {} bytes, {} CPU cores{}\n",
        options.wrk_threads,
        options.connections,
        options.duration,
        options.backends,
        BODY.len(),
        cores,
        if options.rounds > 1 {
            format!(
                ", median of {} interleaved rounds (errors summed)",
                options.rounds
            )
        } else {
            String::new()
        }
    );
    println!(
        "| Proxy | Requests/s | p50 | p99 | Errors | Proxy CPU per request | Throughput vs HAProxy | p99 vs HAProxy |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for ((name, _, _), result) in targets.iter().zip(&medians) {
        println!(
            "| {name} | {:.0} | {:.3} ms | {:.3} ms | {} | {:.1} µs | {:.2}× | {:.2}× |",
            result.requests_per_sec,
            result.p50_ms,
            result.p99_ms,
            result.errors,
            result.cpu_us_per_request,
            result.requests_per_sec / reference.requests_per_sec,
            result.p99_ms / reference.p99_ms
        );
    }
    let ferry = &medians[0];
    let throughput = ferry.requests_per_sec / reference.requests_per_sec;
    let p99 = ferry.p99_ms / reference.p99_ms;
    println!(
        "\nGoals: Ferry throughput ≥ 1.0× HAProxy: {} ({throughput:.2}×); p99 ≤ 1.2× HAProxy: {} ({p99:.2}×).",
        if throughput >= 1.0 { "met" } else { "NOT met" },
        if p99 <= 1.2 { "met" } else { "NOT met" },
    );
    println!(
        "\nVersions: {}; {}; {}. Ferry: {} worker threads (one single-threaded tokio runtime each) in-process; HAProxy `nbthread {cores}`; \
         nginx `worker_processes auto`; backends: {} hyper servers in a process of their own (2-thread runtime).",
        version(haproxy, "-v"),
        version(nginx, "-v"),
        version(wrk, "-v"),
        ferry_threads,
        options.backends,
    );
    if cores <= 2 {
        println!(
            "\nNote: on a {cores}-core machine wrk, the backends and the proxy under test all share the same cores, \
             so every figure is CPU-bound by the whole set, not by the proxy alone; a proxy that spends less CPU \
             per request leaves more to wrk and the backends. Other work on the machine moves the absolute figures \
             between runs; rounds are interleaved so it hits the three proxies alike, and the CPU-per-request \
             column (from /proc, utime+stime of the proxy's own threads or processes) is the steadiest comparison."
        );
    }
    println!(
        "Total requests (measured runs): {}",
        medians.iter().map(|r| r.requests).sum::<u64>()
    );

    drop(nginx_guard);
    drop(haproxy_guard);
    lb.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   665.73us  300.00us   9.00ms   90.00%
    Req/Sec    48.00k     2.00k   52.00k    70.00%
  Latency Distribution
     50%  584.00us
     75%  700.00us
     90%    1.00ms
     99%    1.75ms
  961234 requests in 10.00s, 200.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  96123.40
Transfer/sec:     20.00MB
";

    #[test]
    fn parses_wrk_output() {
        let r = parse_wrk(SAMPLE).unwrap();
        assert_eq!(r.requests_per_sec, 96123.40);
        assert!((r.p50_ms - 0.584).abs() < 1e-9);
        assert!((r.p99_ms - 1.75).abs() < 1e-9);
        assert_eq!(r.errors, 7);
        assert_eq!(r.requests, 961234);
        let stat = "1234 (ferry-lb-0 (x)) S 1 1234 1234 0 -1 4194368 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(stat_ticks(stat), Some((300, 1)));
    }

    #[test]
    fn configs_name_every_backend() {
        let backends: Vec<SocketAddr> = vec![
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:9002".parse().unwrap(),
        ];
        let listen: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let h = haproxy_config(listen, &backends, 2, true);
        assert!(
            h.contains("server b1 127.0.0.1:9002")
                && h.contains("http-reuse always")
                && h.contains("nbthread 2")
                && h.contains("cpu-map auto:1/1-2 0-1")
        );
        assert!(!haproxy_config(listen, &backends, 2, false).contains("cpu-map"));
        let n = nginx_config(listen, &backends, Path::new("/tmp/x"), true);
        assert!(
            n.contains("server 127.0.0.1:9001;")
                && n.contains("keepalive 256;")
                && n.contains("proxy_set_header Connection \"\";")
                && n.contains("worker_cpu_affinity auto;")
        );
        assert_eq!(BODY.len(), 100);
    }
}
