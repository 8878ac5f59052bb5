//! Test helper: a real Prometheus (Debian's `prometheus` and `promtool` packages) serving
//! samples backfilled with `promtool tsdb create-blocks-from openmetrics`, on a free loopback
//! port, in a temporary directory; killed on drop. A missing binary fails the test with the
//! install command, it never skips.
//!
//! promtool wants timestamps in seconds, samples of a series in time order (an out-of-order
//! one is dropped without a word) and a final `# EOF` line; this helper writes exactly that.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A series to backfill: `name{labels}` as written in OpenMetrics, and `(unix seconds,
/// value)` samples.
pub(crate) type Series<'a> = (&'a str, &'a [(u64, f64)]);

/// A running Prometheus.
pub(crate) struct Prometheus {
    /// The server; killed and waited for on drop.
    child: Child,
    /// `http://127.0.0.1:<port>`.
    url: String,
    /// TSDB, config and log; removed after the process is gone (fields drop in order).
    dir: TempDir,
}

impl Prometheus {
    /// Prometheus serving `series`, scraping nothing.
    pub(crate) fn backfilled(series: &[Series<'_>]) -> Prometheus {
        let mut dir = tempfile::Builder::new()
            .prefix("ferry-analysis-prom-")
            .tempdir()
            .expect("a temporary directory");
        let tsdb = dir.path().join("tsdb");
        fs::create_dir_all(&tsdb).expect("the TSDB directory");
        let mut text = String::new();
        for (name, samples) in series {
            let mut sorted = samples.to_vec();
            sorted.sort_by_key(|(at, _)| *at);
            for (at, value) in sorted {
                text.push_str(&format!("{name} {value} {at}\n"));
            }
        }
        text.push_str("# EOF\n");
        let file = dir.path().join("series.om");
        fs::write(&file, text).expect("write the OpenMetrics file");
        let out = Command::new(binary("promtool"))
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&file)
            .arg(&tsdb)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("prometheus.yml");
        fs::write(&config, "scrape_configs: []\n").expect("write the config");
        let log_path = dir.path().join("prometheus.log");
        for _ in 0..5 {
            let addr = free_port();
            let log = fs::File::create(&log_path).expect("the log file");
            let child = Command::new(binary("prometheus"))
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", tsdb.display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.retention.time=30d")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log handle"))
                .stderr(log)
                .spawn()
                .expect("start prometheus");
            let mut server = Prometheus {
                child,
                url: format!("http://{addr}"),
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if get(addr, "/-/ready").is_some_and(|status| status == 200) {
                    return server;
                }
                if let Ok(Some(status)) = server.child.try_wait() {
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    assert!(
                        log.contains("address already in use"),
                        "prometheus exited with {status}:\n{log}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "prometheus was not ready within 30 s:\n{}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(25));
            }
            // The port was taken between choosing and binding it: try another one.
            let _ = server.child.wait();
            dir = std::mem::replace(
                &mut server.dir,
                tempfile::tempdir().expect("a temporary directory"),
            );
        }
        panic!("prometheus found no free port in 5 attempts")
    }

    /// The base URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An installed binary; panics (failing the test) when it is missing.
fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: apt-get install prometheus"))
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("the bound address")
}

/// The status of an HTTP/1.0 GET, or `None` when nothing answers.
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}
