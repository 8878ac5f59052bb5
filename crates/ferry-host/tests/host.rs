//! The host provider with real processes on loopback: instances of `ferry-test-server` are
//! started, checked, crashed, restarted, re-adopted across provider restarts, put behind the
//! load balancer, and destroyed with nothing left running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use ferry_host::{HostConfig, HostProvider, Supervision};
use ferry_provider::conformance::{self, Fixture};
use ferry_provider::{
    Artifact, ArtifactSource, Capacity, FirewallSpec, HealthCheck, InstanceState, Listener,
    LoadBalancerSpec, Moniker, PathRoute, Provider, ProviderError, ServerGroup, ServerGroupSpec,
};
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVER: &str = env!("CARGO_BIN_EXE_ferry-test-server");

/// Each provider of this test binary gets its own slice of ports.
static NEXT_PORTS: AtomicU16 = AtomicU16::new(21_000);

/// A state directory that, when dropped (also when a test fails), kills every instance process
/// group recorded in it, so a failing test leaves nothing running.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Ok(groups) = std::fs::read_dir(self.path().join("local")) else {
            return;
        };
        for group in groups.flatten() {
            let Ok(instances) = std::fs::read_dir(group.path()) else {
                continue;
            };
            for instance in instances.flatten() {
                let Some(record) = std::fs::read(instance.path().join("instance.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                else {
                    continue;
                };
                // The same process: pid alive and started when recorded (not a recycled pid).
                if let (Some(pid), Some(start)) =
                    (record["pid"].as_i64(), record["startTime"].as_u64())
                    && pid > 0
                    && running(pid as i32)
                    && start_time(pid as i32) == Some(start)
                {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

fn fast() -> Supervision {
    Supervision {
        restart_backoff_initial: Duration::from_millis(50),
        restart_backoff_max: Duration::from_millis(400),
        crash_loop_restarts: 5,
        crash_loop_window: Duration::from_secs(60),
        stop_grace: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(2),
        resize_drain_timeout: Duration::from_millis(200),
        liveness_poll: Duration::from_millis(50),
        log_poll: Duration::from_millis(50),
    }
}

fn config(dir: &Path) -> HostConfig {
    let start = NEXT_PORTS.fetch_add(40, Ordering::SeqCst);
    HostConfig {
        port_range: start..start + 40,
        supervision: fast(),
        ..HostConfig::new(dir)
    }
}

fn health() -> HealthCheck {
    HealthCheck {
        path: "/health".into(),
        interval_ms: 100,
        timeout_ms: 1000,
        healthy_threshold: 1,
        unhealthy_threshold: 2,
    }
}

fn artifact(source: ArtifactSource, env: &[(&str, &str)]) -> Artifact {
    Artifact {
        name: "test-server".into(),
        version: "1.0.0".into(),
        source,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn server(env: &[(&str, &str)]) -> Artifact {
    artifact(
        ArtifactSource::Command {
            command: vec![SERVER.into()],
        },
        env,
    )
}

fn spec(stack: &str, artifact: Artifact, n: u32) -> ServerGroupSpec {
    ServerGroupSpec {
        account: "local".into(),
        moniker: Moniker::cluster("shop", Some(stack), None).unwrap(),
        capacity: Capacity::fixed(n),
        artifact,
        health_check: health(),
        load_balancers: vec![],
        enabled: true,
        weight: 100,
        deployed_by: "tester".into(),
        execution_id: Some("exec-1".into()),
    }
}

async fn get(p: &HostProvider, name: &str) -> ServerGroup {
    p.server_group("local", name).await.unwrap().unwrap()
}

/// Polls `name` until `pred` holds; panics with the last state after `within`.
async fn wait_for(
    p: &HostProvider,
    name: &str,
    within: Duration,
    pred: impl Fn(&ServerGroup) -> bool,
) -> ServerGroup {
    let deadline = Instant::now() + within;
    loop {
        let g = get(p, name).await;
        if pred(&g) {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: condition not met within {within:?}: {:#?}",
            g.instances
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_up(p: &HostProvider, name: &str) -> ServerGroup {
    wait_for(p, name, Duration::from_secs(15), |g| {
        g.instances
            .iter()
            .filter(|i| i.state == InstanceState::Up)
            .count()
            == g.capacity.desired as usize
    })
    .await
}

fn group_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join("local").join(name)
}

/// The recorded pid of each instance, from its `instance.json`.
fn pids(dir: &Path, name: &str) -> Vec<i32> {
    let mut indexes: Vec<u32> = std::fs::read_dir(group_dir(dir, name))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    indexes.sort();
    indexes
        .into_iter()
        .map(|i| {
            let path = group_dir(dir, name)
                .join(i.to_string())
                .join("instance.json");
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            v["pid"].as_i64().expect("a recorded pid") as i32
        })
        .collect()
}

/// (state, process group) of a process from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some((fields[0].chars().next()?, fields[2].parse().ok()?))
}

/// `/proc/<pid>/stat` field 22.
fn start_time(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    after.split_whitespace().nth(22 - 3)?.parse().ok()
}

fn running(pid: i32) -> bool {
    stat(pid).is_some_and(|(s, _)| s != 'Z' && s != 'X')
}

/// Live (non-zombie) processes of process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(s, g)| g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

/// A plain `GET` over a fresh connection: (status, body).
async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// Polls `GET addr path` until the body starts with `prefix`.
async fn wait_answer(addr: &str, path: &str, status: u16, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = http_get(addr, path).await;
        if let Some((s, body)) = &got
            && *s == status
            && body.starts_with(prefix)
        {
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "GET {addr}{path}: wanted {status} {prefix:?}, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn load_balancer(
    name: &str,
    port: u16,
    routes: &[(&str, &str)],
    default: &str,
) -> LoadBalancerSpec {
    LoadBalancerSpec {
        name: name.into(),
        application: "shop".into(),
        account: "local".into(),
        listeners: vec![Listener {
            port,
            address: Some("127.0.0.1".into()),
        }],
        routes: routes
            .iter()
            .map(|(p, c)| PathRoute {
                path_prefix: (*p).into(),
                cluster: (*c).into(),
            })
            .collect(),
        default_cluster: Some(default.into()),
        firewalls: vec![],
        preview_listeners: vec![],
    }
}

#[tokio::test]
async fn three_instances_become_up_on_distinct_ports() {
    let dir = Scratch::new();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    let created = p
        .create_server_group(spec("prod", server(&[]), 3))
        .await
        .unwrap();
    assert_eq!(created.name, "shop-prod-v000");
    assert_eq!(created.provider, "host");
    assert_eq!(created.instances.len(), 3);
    let g = wait_up(&p, "shop-prod-v000").await;
    let addresses: HashSet<&str> = g.instances.iter().map(|i| i.address.as_str()).collect();
    assert_eq!(addresses.len(), 3, "{addresses:?}");
    for (n, i) in g.instances.iter().enumerate() {
        assert_eq!(i.id, format!("shop-prod-v000-{n}"));
        assert_eq!(i.restarts, 0);
        // PORT and FERRY_INSTANCE reached the process.
        let (status, body) = http_get(&i.address, "/").await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body.trim(), format!("{} /", i.id));
        assert!(group_dir(dir.path(), &g.name).join(n.to_string()).is_dir());
    }
    p.destroy("local", &g.name).await.unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn a_crashed_instance_is_restarted_with_backoff() {
    let dir = Scratch::new();
    let mut cfg = config(dir.path());
    cfg.supervision.restart_backoff_initial = Duration::from_millis(300);
    cfg.supervision.restart_backoff_max = Duration::from_secs(5);
    let p = HostProvider::start(cfg).await.unwrap();
    let g = p
        .create_server_group(spec("crash", server(&[("CRASH_AFTER_MS", "300")]), 1))
        .await
        .unwrap();
    // Collect the start times of successive runs and the states seen.
    let mut starts: Vec<i64> = Vec::new();
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while starts.len() < 4 {
        assert!(Instant::now() < deadline, "only {} runs seen", starts.len());
        let i = get(&p, &g.name).await.instances[0].clone();
        if !states.contains(&i.state) {
            states.push(i.state);
        }
        if let Some(t) = i.started_at
            && starts.last() != Some(&t)
        {
            starts.push(t);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gaps: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // Each run lasts ~300 ms, then waits 300, 600, 1200 ms.
    assert!(gaps[0] >= 550, "{gaps:?}");
    assert!(gaps[1] >= gaps[0] + 150, "{gaps:?}");
    assert!(gaps[2] >= gaps[1] + 300, "{gaps:?}");
    assert!(states.contains(&InstanceState::Restarting), "{states:?}");
    assert!(states.contains(&InstanceState::Up), "{states:?}");
    let i = get(&p, &g.name).await.instances[0].clone();
    assert!(i.restarts >= 3, "{i:?}");
    assert_eq!(i.last_exit.as_deref(), Some("exited with status 3"));
    p.destroy("local", &g.name).await.unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn a_command_that_exits_at_once_is_crash_looping() {
    let dir = Scratch::new();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    let g = p
        .create_server_group(spec("loop", server(&[("EXIT_AT_ONCE", "1")]), 1))
        .await
        .unwrap();
    let g = wait_for(&p, &g.name, Duration::from_secs(10), |g| {
        g.instances[0].state == InstanceState::CrashLooping
    })
    .await;
    let i = &g.instances[0];
    assert!(i.restarts >= 5, "{i:?}");
    assert_eq!(i.last_exit.as_deref(), Some("exited with status 1"));
    assert!(!g.is_up());
    // Its own words are in the logs.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = p.logs("local", &g.name, None, 100).await.unwrap();
        if logs
            .iter()
            .any(|l| l.stream == "stderr" && l.line.contains("exiting at once"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{logs:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.destroy("local", &g.name).await.unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn a_missing_executable_is_a_clear_error() {
    let dir = Scratch::new();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    // A command: the instances say why they cannot start.
    let missing = artifact(
        ArtifactSource::Command {
            command: vec!["./missing-program".into(), "--flag".into()],
        },
        &[],
    );
    let g = p
        .create_server_group(spec("missing", missing, 1))
        .await
        .unwrap();
    let g = wait_for(&p, &g.name, Duration::from_secs(10), |g| {
        g.instances[0].state == InstanceState::CrashLooping
    })
    .await;
    let exit = g.instances[0].last_exit.clone().unwrap();
    assert!(
        exit.contains("cannot start ./missing-program")
            && exit.contains("No such file or directory"),
        "{exit}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !p
        .logs("local", &g.name, None, 10)
        .await
        .unwrap()
        .iter()
        .any(|l| l.line.starts_with("ferry: cannot start ./missing-program"))
    {
        assert!(Instant::now() < deadline, "no note in the logs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.destroy("local", &g.name).await.unwrap();
    // An executable to copy: refused when the server group is created.
    let missing = artifact(
        ArtifactSource::Executable {
            path: "/nonexistent/ferry-program".into(),
            args: vec![],
        },
        &[],
    );
    let err = p
        .create_server_group(spec("missing", missing, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Invalid(m) if m.contains("/nonexistent/ferry-program") && m.contains("No such file")),
        "{err:?}"
    );
    assert!(p.server_groups("shop").await.unwrap().is_empty());
    p.shutdown().await;
}

#[tokio::test]
async fn an_executable_is_copied_and_run() {
    let dir = Scratch::new();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    let exe = artifact(
        ArtifactSource::Executable {
            path: SERVER.into(),
            args: vec![],
        },
        &[],
    );
    let g = p.create_server_group(spec("exe", exe, 1)).await.unwrap();
    wait_up(&p, &g.name).await;
    let copied = group_dir(dir.path(), &g.name)
        .join("artifact")
        .join("ferry-test-server");
    assert!(copied.is_file());
    p.destroy("local", &g.name).await.unwrap();
    p.shutdown().await;
}

/// A tar archive with one entry per `(path, mode, bytes)`, written with raw headers so that
/// paths the `tar` crate would refuse to write (`..`) can be made too.
fn tarball(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, bytes) in entries {
        let mut header = tar::Header::new_old();
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_mode(*mode);
        header.set_size(bytes.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *bytes).unwrap();
    }
    builder.into_inner().unwrap()
}

#[tokio::test]
async fn tarballs_are_checked_then_unpacked_and_run() {
    let dir = Scratch::new();
    let files = tempfile::tempdir().unwrap();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    let tar_spec = |path: &Path, command: &str| {
        spec(
            "tar",
            artifact(
                ArtifactSource::Tarball {
                    path: path.display().to_string(),
                    command: vec![command.into()],
                },
                &[],
            ),
            1,
        )
    };
    // Not a tarball.
    let text = files.path().join("notes.tar.gz");
    std::fs::write(&text, "these are not the bytes you are looking for\n").unwrap();
    let err = p
        .create_server_group(tar_spec(&text, "bin/server"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Invalid(m) if m.contains("is not a tarball")),
        "{err:?}"
    );
    // An entry that climbs out.
    let evil = files.path().join("evil.tar");
    std::fs::write(
        &evil,
        tarball(&[("ok.txt", 0o644, b"ok"), ("../evil.txt", 0o644, b"x")]),
    )
    .unwrap();
    let err = p
        .create_server_group(tar_spec(&evil, "bin/server"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Invalid(m) if m.contains("../evil.txt") && m.contains("\"..\"")),
        "{err:?}"
    );
    assert!(!dir.path().join("local").join("evil.txt").exists());
    assert!(p.server_groups("shop").await.unwrap().is_empty());
    // A good one, gzip-compressed, whose program is inside it.
    let binary = std::fs::read(SERVER).unwrap();
    let raw = tarball(&[("bin/server", 0o755, &binary)]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let good = files.path().join("server.tar.gz");
    std::fs::write(&good, gz.finish().unwrap()).unwrap();
    let g = p
        .create_server_group(tar_spec(&good, "bin/server"))
        .await
        .unwrap();
    // Sequences were used by the refused creates too; they are never reused.
    assert_eq!(g.name, "shop-tar-v002");
    wait_up(&p, &g.name).await;
    assert!(
        group_dir(dir.path(), &g.name)
            .join("artifact/bin/server")
            .is_file()
    );
    p.destroy("local", &g.name).await.unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn a_health_check_that_never_passes_is_never_up() {
    let dir = Scratch::new();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    let g = p
        .create_server_group(spec("sick", server(&[("FAIL_HEALTH", "1")]), 2))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        let g = get(&p, &g.name).await;
        assert!(
            g.instances.iter().all(|i| i.state != InstanceState::Up),
            "{g:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let g = get(&p, &g.name).await;
    for i in &g.instances {
        assert_eq!(i.state, InstanceState::Unhealthy, "{i:?}");
        assert_eq!(i.restarts, 0, "readiness failures do not restart: {i:?}");
    }
    p.destroy("local", &g.name).await.unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn destroy_leaves_no_process_behind() {
    let dir = Scratch::new();
    let mut cfg = config(dir.path());
    cfg.supervision.stop_grace = Duration::from_millis(500);
    let p = HostProvider::start(cfg).await.unwrap();
    let g = p
        .create_server_group(spec("web", server(&[]), 2))
        .await
        .unwrap();
    wait_up(&p, &g.name).await;
    // A program that ignores SIGTERM and leaves a child behind in its group (the user chose
    // `sh`; Ferry never adds a shell).
    let stubborn = artifact(
        ArtifactSource::Command {
            command: vec![
                "sh".into(),
                "-c".into(),
                "trap '' TERM; sleep 300 & sleep 300".into(),
            ],
        },
        &[],
    );
    let s = p
        .create_server_group(spec("stubborn", stubborn, 1))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let stubborn_pid = loop {
        if let Some(pid) = std::fs::read(group_dir(dir.path(), &s.name).join("0/instance.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["pid"].as_i64())
            && group_members(pid as i32).len() >= 2
        {
            break pid as i32;
        }
        assert!(
            Instant::now() < deadline,
            "the stubborn group did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut pgids = pids(dir.path(), &g.name);
    assert!(pgids.iter().all(|pid| running(*pid)));
    pgids.push(stubborn_pid);
    p.destroy("local", &g.name).await.unwrap();
    p.destroy("local", &s.name).await.unwrap();
    for pgid in pgids {
        assert_eq!(
            group_members(pgid),
            Vec::<i32>::new(),
            "group {pgid} left processes"
        );
    }
    assert!(p.server_group("local", &g.name).await.unwrap().is_none());
    assert!(!group_dir(dir.path(), &g.name).exists());
    assert!(!group_dir(dir.path(), &s.name).exists());
    // Idempotent.
    p.destroy("local", &g.name).await.unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn resize_up_and_down() {
    let dir = Scratch::new();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    let g = p
        .create_server_group(spec("web", server(&[]), 1))
        .await
        .unwrap();
    wait_up(&p, &g.name).await;
    let first = pids(dir.path(), &g.name)[0];
    let three = Capacity {
        min: 1,
        max: 3,
        desired: 3,
    };
    p.resize("local", &g.name, three).await.unwrap();
    let up = wait_up(&p, &g.name).await;
    assert_eq!(up.capacity, three);
    assert_eq!(up.instances.len(), 3);
    let all = pids(dir.path(), &g.name);
    assert_eq!(all[0], first, "the first instance is kept");
    p.resize("local", &g.name, Capacity::fixed(1))
        .await
        .unwrap();
    let down = get(&p, &g.name).await;
    assert_eq!(down.instances.len(), 1);
    assert_eq!(down.instances[0].id, format!("{}-0", g.name));
    assert_eq!(down.instances[0].state, InstanceState::Up);
    for pid in &all[1..] {
        assert!(group_members(*pid).is_empty(), "instance {pid} still runs");
    }
    assert!(running(first));
    assert!(!group_dir(dir.path(), &g.name).join("2").exists());
    let err = p
        .resize(
            "local",
            &g.name,
            Capacity {
                min: 2,
                max: 1,
                desired: 1,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Invalid(_)), "{err:?}");
    p.destroy("local", &g.name).await.unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn instances_are_readopted_after_a_ferry_restart() {
    let dir = Scratch::new();
    let cfg = config(dir.path());
    let p = HostProvider::start(cfg.clone()).await.unwrap();
    let lb_port = free_port();
    p.upsert_load_balancer(load_balancer("web", lb_port, &[], "shop-web"))
        .await
        .unwrap();
    let mut s = spec("web", server(&[]), 2);
    s.load_balancers = vec!["web".into()];
    let g = p.create_server_group(s).await.unwrap();
    let before = wait_up(&p, &g.name).await;
    let lb_addr = format!("127.0.0.1:{lb_port}");
    wait_answer(&lb_addr, "/", 200, "shop-web-v000-").await;
    let pids_before = pids(dir.path(), &g.name);

    // Two providers never supervise the same state directory.
    let err = HostProvider::start(cfg.clone()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Conflict(_)), "{err:?}");
    p.shutdown().await;
    // The instances keep running and serving; the load balancer's port is released.
    for (pid, i) in pids_before.iter().zip(&before.instances) {
        assert!(running(*pid), "instance {pid} died with the provider");
        let (status, body) = http_get(&i.address, "/").await.unwrap();
        assert_eq!((status, body.trim()), (200, format!("{} /", i.id).as_str()));
    }
    assert!(http_get(&lb_addr, "/").await.is_none());

    let p = HostProvider::start(cfg).await.unwrap();
    let after = wait_up(&p, &g.name).await;
    assert_eq!(
        pids(dir.path(), &g.name),
        pids_before,
        "the same processes are adopted"
    );
    for (a, b) in after.instances.iter().zip(&before.instances) {
        assert_eq!(a.restarts, 0, "{a:?}");
        assert_eq!(a.address, b.address);
        assert_eq!(a.started_at, b.started_at);
    }
    // The load balancer is back, with the adopted instances behind it.
    wait_answer(&lb_addr, "/", 200, "shop-web-v000-").await;
    // Adopted processes are destroyed like any other.
    p.destroy("local", &g.name).await.unwrap();
    for pid in pids_before {
        assert!(
            group_members(pid).is_empty(),
            "adopted instance {pid} still runs"
        );
    }
    p.shutdown().await;
}

#[tokio::test]
async fn an_instance_killed_while_ferry_was_down_is_started_again() {
    let dir = Scratch::new();
    let cfg = config(dir.path());
    let p = HostProvider::start(cfg.clone()).await.unwrap();
    let g = p
        .create_server_group(spec("web", server(&[]), 2))
        .await
        .unwrap();
    wait_up(&p, &g.name).await;
    let before = pids(dir.path(), &g.name);
    p.shutdown().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(before[0]) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let p = HostProvider::start(cfg).await.unwrap();
    let after = wait_up(&p, &g.name).await;
    let now = pids(dir.path(), &g.name);
    assert_ne!(
        now[0], before[0],
        "the killed instance runs again as a new process"
    );
    assert_eq!(now[1], before[1], "the other one is adopted");
    assert_eq!(after.instances[0].restarts, 1);
    assert!(
        after.instances[0]
            .last_exit
            .as_deref()
            .is_some_and(|e| e.contains("was not running when Ferry started")),
        "{:?}",
        after.instances[0]
    );
    assert_eq!(after.instances[1].restarts, 0);
    p.destroy("local", &g.name).await.unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn records_and_sequences_survive_a_restart() {
    let dir = Scratch::new();
    let cfg = config(dir.path());
    let p = HostProvider::start(cfg.clone()).await.unwrap();
    let fw = FirewallSpec {
        name: "office".into(),
        application: "shop".into(),
        account: "local".into(),
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        deny: vec![],
    };
    p.upsert_firewall(fw.clone()).await.unwrap();
    let lb_port = free_port();
    let mut lb = load_balancer("web", lb_port, &[], "shop-web");
    lb.firewalls = vec!["office".into()];
    p.upsert_load_balancer(lb.clone()).await.unwrap();
    let v0 = p
        .create_server_group(spec("web", server(&[]), 1))
        .await
        .unwrap();
    let v1 = p
        .create_server_group(spec("web", server(&[]), 1))
        .await
        .unwrap();
    assert_eq!(v1.name, "shop-web-v001");
    p.destroy("local", &v1.name).await.unwrap();
    p.set_weight("local", &v0.name, 42).await.unwrap();
    p.disable("local", &v0.name).await.unwrap();
    p.shutdown().await;

    let p = HostProvider::start(cfg).await.unwrap();
    let listed = p.server_groups("shop").await.unwrap();
    assert_eq!(listed.len(), 1);
    let g = &listed[0];
    assert_eq!(g.name, "shop-web-v000");
    assert_eq!(g.artifact, v0.artifact);
    assert_eq!(g.created_at, v0.created_at);
    assert_eq!(g.deployed_by, "tester");
    assert_eq!(g.execution_id.as_deref(), Some("exec-1"));
    assert_eq!((g.weight, g.enabled), (42, false));
    let v2 = p
        .create_server_group(spec("web", server(&[]), 1))
        .await
        .unwrap();
    assert_eq!(v2.name, "shop-web-v002", "v001 is never reused");
    assert_eq!(p.load_balancers("shop").await.unwrap(), vec![lb]);
    assert_eq!(p.firewalls("shop").await.unwrap(), vec![fw]);
    assert_eq!(p.lb().bound()[0].1.port(), lb_port);
    for g in p.server_groups("shop").await.unwrap() {
        p.destroy("local", &g.name).await.unwrap();
    }
    p.shutdown().await;
}

#[tokio::test]
async fn the_load_balancer_routes_paths_to_clusters_and_follows_traffic_changes() {
    let dir = Scratch::new();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    p.upsert_load_balancer(load_balancer(
        "web",
        port,
        &[("/kids", "shop-kids")],
        "shop-home",
    ))
    .await
    .unwrap();
    let behind = |stack: &str, n: u32| {
        let mut s = spec(stack, server(&[]), n);
        s.load_balancers = vec!["web".into()];
        s
    };
    let kids = p.create_server_group(behind("kids", 2)).await.unwrap();
    let home = p.create_server_group(behind("home", 1)).await.unwrap();
    wait_up(&p, &kids.name).await;
    wait_up(&p, &home.name).await;
    let body = wait_answer(&addr, "/kids/shoes", 200, "shop-kids-v000-").await;
    assert!(body.trim().ends_with(" /kids/shoes"), "{body}");
    wait_answer(&addr, "/", 200, "shop-home-v000-0 /").await;
    wait_answer(&addr, "/kidsfoo", 200, "shop-home-v000-0").await;
    // Both kids instances get traffic.
    let mut seen = HashSet::new();
    for _ in 0..10 {
        if let Some((200, body)) = http_get(&addr, "/kids").await {
            seen.insert(
                body.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Disabled: no backend for /kids; enabled again: served.
    p.disable("local", &kids.name).await.unwrap();
    assert_eq!(http_get(&addr, "/kids").await.unwrap().0, 503);
    p.enable("local", &kids.name).await.unwrap();
    wait_answer(&addr, "/kids", 200, "shop-kids-v000-").await;

    // A second home server group at weight 0 takes nothing until its weight is raised.
    let home2 = p
        .create_server_group({
            let mut s = behind("home", 1);
            s.weight = 0;
            s
        })
        .await
        .unwrap();
    wait_up(&p, &home2.name).await;
    for _ in 0..5 {
        assert!(
            http_get(&addr, "/")
                .await
                .unwrap()
                .1
                .starts_with("shop-home-v000-")
        );
    }
    p.set_weight("local", &home.name, 0).await.unwrap();
    p.set_weight("local", &home2.name, 100).await.unwrap();
    wait_answer(&addr, "/", 200, "shop-home-v001-0").await;

    // The load balancer's view: both kids instances are backends of the cluster's pool.
    let status = p.lb().status();
    let pool = status.group("local/web/shop-kids", &kids.name).unwrap();
    assert_eq!(pool.backends.len(), 2);

    // Destroyed: the cluster has nothing to serve.
    p.destroy("local", &kids.name).await.unwrap();
    assert_eq!(http_get(&addr, "/kids").await.unwrap().0, 503);
    for g in [home, home2] {
        p.destroy("local", &g.name).await.unwrap();
    }
    p.delete_load_balancer("local", "web").await.unwrap();
    assert!(http_get(&addr, "/").await.is_none());
    p.shutdown().await;
}

#[tokio::test]
async fn a_taken_port_is_refused_and_the_previous_config_keeps_serving() {
    let dir = Scratch::new();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let lb = load_balancer("web", port, &[], "shop-web");
    p.upsert_load_balancer(lb.clone()).await.unwrap();
    let mut s = spec("web", server(&[]), 1);
    s.load_balancers = vec!["web".into()];
    let g = p.create_server_group(s).await.unwrap();
    wait_up(&p, &g.name).await;
    wait_answer(&addr, "/", 200, "shop-web-v000-0").await;

    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let mut moved = lb.clone();
    moved.listeners[0].port = taken;
    let err = p.upsert_load_balancer(moved).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Invalid(m) if m.contains(&format!("port {taken}"))),
        "{err:?}"
    );
    // Nothing changed.
    assert_eq!(p.load_balancers("shop").await.unwrap(), vec![lb]);
    assert_eq!(p.lb().bound()[0].1.port(), port);
    wait_answer(&addr, "/", 200, "shop-web-v000-0").await;
    drop(squatter);
    p.destroy("local", &g.name).await.unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn firewalls_become_listener_allow_and_deny_lists() {
    let dir = Scratch::new();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut lb = load_balancer("web", port, &[], "shop-web");
    lb.firewalls = vec!["office".into()];
    // A firewall that does not exist is refused (never fail open).
    let err = p.upsert_load_balancer(lb.clone()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Invalid(m) if m.contains("office")),
        "{err:?}"
    );
    let mut fw = FirewallSpec {
        name: "office".into(),
        application: "shop".into(),
        account: "local".into(),
        allow: vec![],
        deny: vec!["127.0.0.0/8".parse().unwrap()],
    };
    p.upsert_firewall(fw.clone()).await.unwrap();
    p.upsert_load_balancer(lb).await.unwrap();
    let mut s = spec("web", server(&[]), 1);
    s.load_balancers = vec!["web".into()];
    let g = p.create_server_group(s).await.unwrap();
    wait_up(&p, &g.name).await;
    assert_eq!(http_get(&addr, "/").await.unwrap().0, 403);
    fw.deny.clear();
    fw.allow = vec!["127.0.0.1/32".parse().unwrap()];
    p.upsert_firewall(fw).await.unwrap();
    wait_answer(&addr, "/", 200, "shop-web-v000-0").await;
    p.destroy("local", &g.name).await.unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn logs_are_returned_followed_and_rotated() {
    let dir = Scratch::new();
    let mut cfg = config(dir.path());
    cfg.log_retention_bytes = 64 * 1024;
    let p = HostProvider::start(cfg).await.unwrap();
    let g = p
        .create_server_group(spec(
            "logs",
            server(&[
                ("LOG_BYTES", "300000"),
                ("STDERR_LINE", "hello from stderr"),
            ]),
            2,
        ))
        .await
        .unwrap();
    let g = wait_up(&p, &g.name).await;
    let mut follow = Box::pin(p.follow_logs("local", &g.name));
    // Lines with their stream, instance and a time.
    for i in &g.instances {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = p.logs("local", &g.name, Some(&i.id), 3).await.unwrap();
            assert!(lines.len() <= 3);
            if lines.iter().any(|l| l.line.contains("listening on")) {
                break;
            }
            assert!(Instant::now() < deadline, "{lines:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The instances write ~300 KB each at start; the log reader catches up in its own time
    // (slowly on a loaded machine), so wait until 1,000 lines are there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = p.logs("local", &g.name, None, 1000).await.unwrap();
        if lines.len() == 1000 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lines.len(), 1000);
    assert!(
        lines.windows(2).all(|w| w[0].time <= w[1].time),
        "oldest first"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.time > 0 && l.instance.starts_with(&g.name))
    );
    let stderr = p
        .logs("local", &g.name, Some(&g.instances[0].id), 5000)
        .await
        .unwrap();
    assert!(
        stderr
            .iter()
            .any(|l| l.stream == "stderr" && l.line == "hello from stderr"),
        "{:#?}",
        stderr
            .iter()
            .filter(|l| l.stream == "stderr")
            .collect::<Vec<_>>()
    );
    let tail = p.logs("local", &g.name, None, 3).await.unwrap();
    assert_eq!(tail.len(), 3);
    let one = &g.instances[1].id;
    let only = p.logs("local", &g.name, Some(one), 50).await.unwrap();
    assert!(!only.is_empty() && only.iter().all(|l| &l.instance == one));
    let err = p.logs("local", &g.name, Some("nope"), 5).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound(_)));
    // Rotated: each file keeps at most half of the retention.
    for n in 0..2 {
        let len = std::fs::metadata(group_dir(dir.path(), &g.name).join(format!("{n}/stdout.log")))
            .unwrap()
            .len();
        assert!(
            len <= 32 * 1024,
            "stdout.log of instance {n} is {len} bytes"
        );
    }
    // Followers get new lines as they are written.
    http_get(&g.instances[0].address, "/followed")
        .await
        .unwrap();
    let line = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let l = follow.next().await.expect("the stream ended");
            if l.line.contains("GET /followed") {
                return l;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(line.instance, g.instances[0].id);
    assert_eq!(line.stream, "stdout");
    p.destroy("local", &g.name).await.unwrap();
    // The stream ends with the server group.
    let rest = tokio::time::timeout(Duration::from_secs(5), follow.collect::<Vec<_>>()).await;
    assert!(rest.is_ok(), "the follow stream did not end after destroy");
    p.shutdown().await;
}

#[tokio::test]
async fn operations_on_unknown_things_and_after_shutdown() {
    let dir = Scratch::new();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    assert_eq!(p.kind(), "host");
    assert_eq!(p.accounts(), vec!["local"]);
    let err = p.server_group("prod", "x").await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound(_)));
    let err = p
        .create_server_group({
            let mut s = spec("web", server(&[]), 1);
            s.load_balancers = vec!["nope".into()];
            s
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Invalid(m) if m.contains("nope")),
        "{err:?}"
    );
    let image = artifact(
        ArtifactSource::Image {
            image: "nginx".into(),
        },
        &[],
    );
    let err = p
        .create_server_group(spec("web", image, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Invalid(m) if m.contains("container images")),
        "{err:?}"
    );
    p.shutdown().await;
    let err = p
        .create_server_group(spec("web", server(&[]), 1))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Backend(_)), "{err:?}");
}

#[tokio::test]
async fn the_host_provider_passes_the_provider_conformance_kit() {
    let dir = Scratch::new();
    let p = HostProvider::start(config(dir.path())).await.unwrap();
    let mut fixture = Fixture::new("conf", server(&[]), server(&[("FAIL_HEALTH", "1")]));
    fixture.health_check = health();
    fixture.listener_port = free_port();
    fixture.ready_within = Duration::from_secs(20);
    conformance::run(&p, &fixture).await.unwrap();
    assert!(p.server_groups("conf").await.unwrap().is_empty());
    p.shutdown().await;
}
