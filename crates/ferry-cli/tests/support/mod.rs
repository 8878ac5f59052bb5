//! Shared by the whole-binary end-to-end tests: the example service, a server API client, a
//! load generator that counts answers per version, and cleanup of instances left by a failed test.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn shop_binary() -> PathBuf {
    // The example service is built by the workspace into the same target directory.
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let bin = exe.with_file_name("shop-service");
    if !bin.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "ferry-example-shop", "--bin", "shop-service"])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build shop-service");
    }
    assert!(bin.exists(), "shop-service not found at {}", bin.display());
    bin
}

/// Kills every instance recorded under the host provider's state directory when dropped, so a
/// failing test leaves no process behind.
pub struct KillInstances(pub PathBuf);

impl Drop for KillInstances {
    fn drop(&mut self) {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.file_name().is_some_and(|n| n == "instance.json") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.0, &mut files);
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if let Some(pid) = v.get("pid").and_then(Value::as_i64) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &format!("-{pid}")])
                    .status();
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Ferry's real server wiring (engine, host provider, load balancer, every stage type) on a
/// free port with a temporary data directory, and an API client holding its admin token.
pub struct Ferry {
    pub server: ferry_cli::server::RunningServer,
    pub api: Api,
    /// Kills instances a failing test leaves (dropped before the directory).
    pub _cleanup: KillInstances,
    pub _dir: tempfile::TempDir,
}

impl Ferry {
    pub async fn start() -> Ferry {
        Ferry::start_with(|_| {}).await
    }

    /// Like [`Ferry::start`], with the server options adjusted first.
    pub async fn start_with(adjust: impl FnOnce(&mut ferry_cli::server::ServerOptions)) -> Ferry {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let mut options = ferry_cli::server::ServerOptions {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().join("data"),
            database_url: None,
            allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
            allow_url_hosts: vec![],
            max_body_bytes: ferry_cli::server::DEFAULT_MAX_BODY_BYTES,
            prometheus_url: None,
            lb_address: std::net::IpAddr::from([127, 0, 0, 1]),
            lb_workers: None,
            lb_pin_workers: false,
        };
        adjust(&mut options);
        let cleanup = KillInstances(options.data_dir.join("host"));
        let server = ferry_cli::server::start(&options).await.unwrap();
        let token = std::fs::read_to_string(options.data_dir.join("admin.token")).unwrap();
        let api = Api {
            base: format!("http://{}", server.addr),
            token: token.trim().to_string(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        Ferry {
            server,
            api,
            _cleanup: cleanup,
            _dir: dir,
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(300));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Polls the execution (180 s at most) until `done` holds for it; returns it.
    pub async fn until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (_, e) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/executions/{id}"),
                    None,
                )
                .await;
            if done(&e) {
                return e;
            }
            assert!(Instant::now() < deadline, "execution {id}: not {what}: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the execution completes.
    pub async fn wait(&self, id: &str) -> Value {
        self.until(id, "complete", |e| {
            let status = e["status"].as_str().unwrap_or("");
            ["SUCCEEDED", "TERMINAL", "CANCELED", "STOPPED"].contains(&status)
        })
        .await
    }

    /// Starts a pipeline of `shop` with these parameters; returns the execution id.
    pub async fn start(&self, pipeline: &str, params: Value) -> String {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/applications/shop/pipelines/{pipeline}/run"),
                Some(json!({"parameters": params})),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Runs a pipeline of `shop` to completion.
    pub async fn run(&self, pipeline: &str, params: Value) -> Value {
        let id = self.start(pipeline, params).await;
        self.wait(&id).await
    }

    /// Destroys every server group of `shop` (each must go: 204).
    pub async fn destroy_all_server_groups(&self) {
        let (_, groups) = self
            .call(
                reqwest::Method::GET,
                "/api/v1/applications/shop/serverGroups",
                None,
            )
            .await;
        for g in groups.as_array().unwrap() {
            let name = g["name"].as_str().unwrap();
            let (status, v) = self
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/serverGroups/local/{name}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{v}");
        }
    }
}

#[derive(Default)]
pub struct Load {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub stop: AtomicBool,
    pub last_version: std::sync::Mutex<String>,
    pub first_failures: std::sync::Mutex<Vec<String>>,
    /// Responses per `x-shop-version`: (answered, of which status ≥ 500).
    pub by_version: std::sync::Mutex<std::collections::BTreeMap<String, (u64, u64)>>,
}

impl Load {
    pub fn failed(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_failures.lock().unwrap();
        if f.len() < 10 {
            f.push(what);
        }
    }
}

pub fn start_load(url: String, load: Arc<Load>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..6)
        .map(|_| {
            let url = url.clone();
            let load = load.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder().no_proxy().build().unwrap();
                while !load.stop.load(Ordering::Relaxed) {
                    match client
                        .get(&url)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            if let Some(v) = r
                                .headers()
                                .get("x-shop-version")
                                .and_then(|v| v.to_str().ok())
                            {
                                let mut by = load.by_version.lock().unwrap();
                                let e = by.entry(v.to_string()).or_default();
                                e.0 += 1;
                                e.1 += u64::from(status >= 500);
                            }
                            if status != 200 {
                                load.failed(format!("status {status}"));
                                continue;
                            }
                            if let Some(v) = r
                                .headers()
                                .get("x-shop-version")
                                .and_then(|v| v.to_str().ok())
                            {
                                *load.last_version.lock().unwrap() = v.to_string();
                            }
                            let _ = r.bytes().await;
                            load.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => load.failed(format!("error {e}")),
                    }
                }
            })
        })
        .collect()
}
