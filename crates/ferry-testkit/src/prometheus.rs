//! Test helper: a real Prometheus server (the Debian `prometheus` package), either loaded with
//! backfilled series or scraping a target, in a temporary directory, killed on drop.
//!
//! Tests that use it fail, with the install command in the message, when `prometheus` or
//! `promtool` is not installed; they never skip.
//!
//! Backfilling goes through `promtool tsdb create-blocks-from openmetrics`. What Prometheus
//! 2.42's promtool needs, and what this helper therefore does:
//! - the file must end with `# EOF`, or promtool refuses it;
//! - timestamps are in seconds;
//! - a series' samples must be in time order: an out-of-order sample is dropped *silently*,
//!   so samples are sorted here and duplicate timestamps are refused;
//! - values are written the OpenMetrics way (`NaN`, `+Inf`, `-Inf`, shortest round-trip
//!   decimals, which Prometheus answers with unchanged), label values escaped (`\\`, `\"`,
//!   `\n`);
//! - no `# TYPE` lines: the series are untyped, which PromQL does not mind.
//!
//! Blocks that cross a 2-hour boundary come out as several blocks; since Prometheus 2.39
//! overlapping blocks are always merged (the old `--storage.tsdb.allow-overlapping-blocks`
//! flag is a hidden no-op), so no flag is needed. The series should lie in the past and within
//! the 30-day retention this helper starts Prometheus with.
//!
//! Scraping: Prometheus 2.42 hands new targets to its scrape manager on a 5-second tick, so
//! the first scrape of a [`TestPrometheus::scraping`]
//! server comes about 5 s after it is ready; tests should poll for the data, not sleep.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

/// One backfilled series: metric name, labels, and `(unix seconds, value)` samples.
pub type Series<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [(u64, f64)]);

/// How long Prometheus may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Prometheus; killed (and waited for) on drop.
pub struct TestPrometheus {
    /// The server process; `None` once stopped.
    child: Option<Child>,
    /// Where it listens (loopback, a free port).
    addr: SocketAddr,
    /// Its log (stdout and stderr).
    log: PathBuf,
    /// Config, TSDB and log; removed on drop, after the process is gone.
    dir: TempDir,
}

impl TestPrometheus {
    /// Prometheus serving exactly `series` (backfilled with promtool), scraping nothing.
    pub fn with_series(series: &[Series<'_>]) -> TestPrometheus {
        let dir = temp_dir();
        let tsdb = dir.path().join("tsdb");
        fs::create_dir_all(&tsdb).expect("create the TSDB directory");
        let openmetrics = openmetrics(series);
        if !series.iter().all(|(_, _, samples)| samples.is_empty()) {
            let file = dir.path().join("series.om");
            fs::write(&file, openmetrics).expect("write the OpenMetrics file");
            let output = Command::new(binary("promtool"))
                .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
                .arg(&file)
                .arg(&tsdb)
                .output()
                .expect("run promtool");
            assert!(
                output.status.success(),
                "promtool tsdb create-blocks-from openmetrics failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Self::start(dir, "scrape_configs: []\n")
    }

    /// Prometheus scraping `target` (`host:port`, path `/metrics`) every `interval_s` seconds
    /// as job `ferry`, sending `Authorization: Bearer <token>` when `bearer_token` is given.
    pub fn scraping(target: &str, interval_s: u64, bearer_token: Option<&str>) -> TestPrometheus {
        let quoted = |s: &str| serde_json::to_string(s).expect("quote a YAML string");
        let mut config = format!(
            "global:\n  scrape_interval: {interval_s}s\n  scrape_timeout: {interval_s}s\n\
             scrape_configs:\n  - job_name: ferry\n    static_configs:\n      - targets: [{}]\n",
            quoted(target)
        );
        if let Some(token) = bearer_token {
            config.push_str(&format!(
                "    authorization:\n      type: Bearer\n      credentials: {}\n",
                quoted(token)
            ));
        }
        Self::start(temp_dir(), &config)
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// GET `path_and_query` on the server: status and body. Panics when it cannot connect.
    pub fn get(&self, path_and_query: &str) -> (u16, String) {
        http_get(self.addr, path_and_query)
            .unwrap_or_else(|e| panic!("GET {path_and_query} on Prometheus: {e}"))
    }

    /// The `/api/v1/query` answer for `promql`, evaluated now, as JSON.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        let mut url = url::Url::parse("http://x/api/v1/query").expect("static URL");
        url.query_pairs_mut().append_pair("query", promql);
        let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
        let (status, body) = self.get(&path);
        assert_eq!(status, 200, "query {promql}: {body}");
        serde_json::from_str(&body).expect("a JSON answer")
    }

    /// Kills the server and waits for it; its port is then closed.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Writes the config, starts Prometheus on a free port and waits until it is ready.
    /// Retries with another port if the chosen one was taken in the meantime.
    fn start(mut dir: TempDir, config: &str) -> TestPrometheus {
        let prometheus = binary("prometheus");
        let config_file = dir.path().join("prometheus.yml");
        fs::write(&config_file, config).expect("write the Prometheus config");
        let tsdb = dir.path().join("tsdb");
        let log = dir.path().join("prometheus.log");
        for _attempt in 0..5 {
            let addr = free_port();
            let out = File::create(&log).expect("create the Prometheus log");
            let err = out.try_clone().expect("clone the log handle");
            let child = Command::new(&prometheus)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!("--storage.tsdb.path={}", tsdb.display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.retention.time=30d")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", prometheus.display()));
            let mut server = TestPrometheus {
                child: Some(child),
                addr,
                log: log.clone(),
                dir,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(Exited::PortTaken) => {
                    server.stop();
                    dir = server.take_dir();
                }
                Err(Exited::Failed(why)) => panic!(
                    "Prometheus did not become ready: {why}; the end of its log:\n{}",
                    server.log_tail(30)
                ),
            }
        }
        panic!("Prometheus found no free port in 5 attempts")
    }

    /// Polls `/-/ready` until it answers 200, the process exits, or [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<(), Exited> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok((200, _)) = http_get(self.addr, "/-/ready") {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(if tail(&self.log, 50).contains("address already in use") {
                    Exited::PortTaken
                } else {
                    Exited::Failed(format!("it exited with {status}"))
                });
            }
            if Instant::now() > deadline {
                return Err(Exited::Failed(format!(
                    "/-/ready did not answer 200 within {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Moves the temporary directory out (for a retry), leaving an empty one behind.
    fn take_dir(&mut self) -> TempDir {
        std::mem::replace(&mut self.dir, temp_dir())
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why Prometheus did not become ready.
enum Exited {
    /// Another process took the port between choosing and binding it.
    PortTaken,
    /// Anything else.
    Failed(String),
}

/// The path of an installed Prometheus binary; panics (failing the test) when missing.
fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} not found: apt-get install prometheus"))
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("ferry-testprom-")
        .tempdir()
        .expect("create a temporary directory")
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address")
}

/// The series as an OpenMetrics file promtool accepts: samples sorted per series, `# EOF`.
fn openmetrics(series: &[Series<'_>]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = String::new();
    for (name, labels, samples) in series {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
            .collect();
        let series_name = if labels.is_empty() {
            (*name).to_owned()
        } else {
            format!("{name}{{{}}}", labels.join(","))
        };
        let mut sorted = samples.to_vec();
        sorted.sort_by_key(|(at, _)| *at);
        for pair in sorted.windows(2) {
            assert_ne!(
                pair[0].0, pair[1].0,
                "{series_name}: two samples at {} (promtool would drop one silently)",
                pair[0].0
            );
        }
        for (at, value) in sorted {
            assert!(
                at <= now,
                "{series_name}: sample at {at} is in the future; backfill past samples only"
            );
            out.push_str(&format!(
                "{series_name} {} {at}\n",
                openmetrics_value(value)
            ));
        }
    }
    out.push_str("# EOF\n");
    out
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn openmetrics_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{value}")
    }
}

/// A minimal HTTP/1.0 GET (no chunked bodies), so the helper needs no async runtime.
fn http_get(addr: SocketAddr, path_and_query: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head}"))?;
    Ok((status, body.to_owned()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A one-route HTTP server on a thread: `/metrics` answers `ferry_test_metric 42` when the
    /// request carries `Authorization: Bearer s3cret`, 401 otherwise.
    fn metrics_target() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut authorized = false;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    authorized |= line.split_once(':').is_some_and(|(name, value)| {
                        name.eq_ignore_ascii_case("authorization")
                            && value.trim() == "Bearer s3cret"
                    });
                    line.clear();
                }
                let response = if authorized {
                    let body = "ferry_test_metric 42\n";
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = stream.write_all(response.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn scraping_prometheus_sends_the_bearer_token() {
        let target = metrics_target().to_string();
        let prometheus = TestPrometheus::scraping(&target, 1, Some("s3cret"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = prometheus.query("ferry_test_metric{job=\"ferry\"}");
            if answer["data"]["result"][0]["value"][1] == "42" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no scrape within 20 s: {answer}; targets: {}; log:\n{}",
                prometheus.get("/api/v1/targets").1,
                prometheus.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn backfilled_prometheus_keeps_odd_labels_and_values() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let t = now - 120;
        let samples = [(t + 10, f64::NAN), (t, 1.5), (t + 20, f64::INFINITY)];
        let prometheus =
            TestPrometheus::with_series(&[("odd_metric", &[("g", "a\"b\\c\nd")], &samples)]);
        let answer = prometheus.query(&format!("odd_metric[1m] @ {}", t + 20));
        let result = &answer["data"]["result"][0];
        assert_eq!(result["metric"]["g"], "a\"b\\c\nd", "{answer}");
        let values: Vec<&str> = result["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[1].as_str().unwrap())
            .collect();
        assert_eq!(values, ["1.5", "NaN", "+Inf"], "{answer}");
    }
}
