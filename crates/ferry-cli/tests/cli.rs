//! Whole-binary tests: the real `ferry` binary as a server and as a client, each test with its
//! own data directory (never the developer's home), servers on port 0, every child process
//! killed when its guard drops.

// Test helpers may unwrap and panic (house rule 2); clippy's test allowances only cover
// `#[test]` functions, not the helpers of an integration test crate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// How long anything in these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/core")
}

/// A `ferry` command with a clean environment: no FERRY_* variables from the developer, HOME
/// and XDG_DATA_HOME inside the test's directory.
fn ferry_command(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("xdg"))
        .stdin(Stdio::null());
    c
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    /// Waits for the process to exit, failing the test after `PATIENCE`.
    fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "process did not exit in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a child's stdout lines on a thread.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line matching `pred`; returns every line read so far (the match last).
fn wait_for_line(
    rx: &Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if pred(&line) {
                    return line;
                }
            }
            Err(_) => panic!("no line {what}; got:\n{}", seen.join("\n")),
        }
    }
}

/// A `ferry server` on 127.0.0.1:0 with its own data directory.
struct Server {
    proc: Proc,
    url: String,
    data_dir: PathBuf,
    home: PathBuf,
    log: PathBuf,
    _stdout: Receiver<String>,
}

impl Server {
    fn start(home: &Path, data_dir: &Path, extra: &[&str]) -> Server {
        let log = home.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = ferry_command(home)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let rx = lines_of(&mut child);
        let proc = Proc { child };
        let mut seen = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        let ready = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.starts_with("ferry ready on ") => break line,
                Ok(line) => seen.push(line),
                Err(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "server not ready; stdout: {seen:?}\nlog:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let rest = ready.strip_prefix("ferry ready on ").unwrap();
        let url = rest.split(' ').next().unwrap().to_string();
        assert!(
            url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
            "{ready}"
        );
        assert!(
            ready.ends_with(&format!("(data: {}, store: sqlite)", data_dir.display())),
            "{ready}"
        );
        Server {
            proc,
            url,
            data_dir: data_dir.to_path_buf(),
            home: home.to_path_buf(),
            log,
            _stdout: rx,
        }
    }

    /// Runs the CLI against this server, finding the token through FERRY_DATA_DIR.
    fn ferry(&self, args: &[&str]) -> Out {
        self.ferry_with(args, |_| {})
    }

    fn ferry_with(&self, args: &[&str], f: impl FnOnce(&mut Command)) -> Out {
        let mut c = self.client_command();
        c.args(args);
        f(&mut c);
        run(c)
    }

    fn client_command(&self) -> Command {
        let mut c = ferry_command(&self.home);
        c.env("FERRY_SERVER", &self.url)
            .env("FERRY_DATA_DIR", &self.data_dir);
        c
    }

    /// SIGKILL, as in a crash.
    fn crash(mut self) {
        self.proc.child.kill().unwrap();
        self.proc.child.wait().unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What a finished CLI command printed.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Out {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

fn run(mut c: Command) -> Out {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let mut proc = Proc { child };
    let stdout = proc.child.stdout.take().unwrap();
    let stderr = proc.child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err_t = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let code = proc.wait();
    Out {
        code,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Polls `ferry execution get ID -o json` until `pred` holds.
fn poll_execution(server: &Server, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = server.ferry(&["execution", "get", id, "-o", "json"]);
        if out.code == 0 {
            let e = out.json();
            if pred(&e) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "execution never {what}: {e:#}\nserver log:\n{}",
                server.log()
            );
        } else {
            assert!(Instant::now() < deadline, "execution get failed: {out:#?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stage<'a>(e: &'a Value, ref_id: &str) -> &'a Value {
    e["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["refId"] == ref_id)
        .unwrap()
}

#[test]
fn apply_run_wait_and_judge_from_a_second_process() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        tmp.path(),
        &tmp.path().join("data"),
        &["--allow-network", "127.0.0.0/8"],
    );

    let applied = server
        .ferry(&["apply", "-f", examples_dir().to_str().unwrap()])
        .ok();
    assert!(
        applied.stdout.contains("application/shop applied"),
        "{applied:#?}"
    );
    assert!(
        applied
            .stdout
            .contains("pipeline/shop/release applied (version 1)"),
        "{applied:#?}"
    );

    let pipelines = server
        .ferry(&["get", "pipelines", "-o", "json"])
        .ok()
        .json();
    let names: Vec<&str> = pipelines
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["release"]);
    let table = server.ferry(&["get", "pl", "-a", "shop"]).ok().stdout;
    assert!(table.starts_with("APPLICATION   NAME      ID"), "{table}");

    // The first CLI runs and waits...
    let ferry_url = format!("ferryUrl={}", server.url);
    let mut c = server.client_command();
    c.args([
        "run",
        "shop",
        "release",
        "--wait",
        "-p",
        "version=2.0.0",
        "-p",
        &ferry_url,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let rx = lines_of(&mut child);
    let mut waiting = Proc { child };
    let mut seen = Vec::new();
    let id = wait_for_line(&rx, &mut seen, "with the execution id", |_| true);
    wait_for_line(&rx, &mut seen, "saying the judgment runs", |l| {
        l.contains("stage 4 \"Approve release\" RUNNING")
    });

    // ...while a second one judges.
    let judged = server
        .ferry(&[
            "judge",
            &id,
            "Approve release",
            "--continue",
            "--input",
            "ship",
        ])
        .ok();
    assert!(judged.stdout.contains("judged continue"), "{judged:#?}");

    let code = waiting.wait();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        seen.push(l);
    }
    let text = seen.join("\n");
    assert_eq!(code, 0, "{text}\nserver log:\n{}", server.log());
    assert!(
        text.contains(&format!("execution {id} SUCCEEDED")),
        "{text}"
    );
    for want in [
        "stage 1 \"Compute version\" SUCCEEDED",
        "stage 3 \"Check Ferry is healthy\" SUCCEEDED",
        "stage 8 \"Summary\" SUCCEEDED",
    ] {
        assert!(text.contains(want), "missing {want}: {text}");
    }
    assert!(
        text.contains(&format!("judge {id} 4 --continue")),
        "the judgment hint is printed: {text}"
    );

    let listing = server
        .ferry(&["get", "executions", "-o", "table"])
        .ok()
        .stdout;
    let row = listing
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        row.contains("shop") && row.contains("release") && row.contains("SUCCEEDED"),
        "{listing}"
    );

    // What the stages computed, end to end: expressions, script outputs, the judgment.
    let e = server
        .ferry(&["execution", "get", &id, "-o", "json"])
        .ok()
        .json();
    assert_eq!(stage(&e, "2")["outputs"]["artifact"], "shop-v2.0.0.tar.gz");
    assert_eq!(
        stage(&e, "8")["outputs"]["summary"],
        "shop-v2.0.0 released: shop-v2.0.0.tar.gz, approved by admin"
    );
    // Fan-out: both branches started before either ended.
    let (b6, b7) = (stage(&e, "6"), stage(&e, "7"));
    assert!(
        b6["startTime"].as_i64() < b7["endTime"].as_i64()
            && b7["startTime"].as_i64() < b6["endTime"].as_i64(),
        "{e:#}"
    );
    let detail = server.ferry(&["execution", "get", &id]).ok().stdout;
    assert!(detail.contains("REF   NAME"), "{detail}");
    let row = detail
        .lines()
        .find(|l| l.starts_with("4 "))
        .unwrap_or_else(|| panic!("{detail}"));
    assert!(
        row.contains("Approve release")
            && row.contains("manualJudgment")
            && row.contains("SUCCEEDED"),
        "{detail}"
    );
}

const BROKEN: &str = r#"kind: Application
name: broken-app
---
kind: Pipeline
application: broken-app
name: broken
stages:
  - refId: "1"
    type: wait
    waitTime: 1
  - refId: "1"
    type: wait
    waitTime: 1
  - refId: "2"
    type: teleport
  - refId: "3"
    type: wait
    waitTime: 1
    requisiteStageRefIds: ["9"]
  - refId: "4"
    type: wait
    waitTime: 1
    requisiteStageRefIds: ["5"]
  - refId: "5"
    type: wait
    waitTime: 1
    requisiteStageRefIds: ["4"]
  - refId: "6"
    type: checkPreconditions
    preconditions:
      - type: expression
        context:
          expression: "${1 +}"
"#;

#[test]
fn invalid_documents_report_every_problem_and_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "broken.yaml", BROKEN);
    let file = file.to_str().unwrap();

    // Offline: no server at all.
    let mut c = ferry_command(tmp.path());
    c.env("FERRY_DATA_DIR", tmp.path().join("nowhere"))
        .args(["validate", "-f", file]);
    let out = run(c);
    assert_eq!(out.code, 1, "{out:#?}");
    for want in [
        format!("{file}: documents[1].stages[1].refId"),
        format!("{file}: documents[1].stages[2].type: unknown stage type \"teleport\""),
        format!("{file}: documents[1].stages[3].requisiteStageRefIds[0]"),
        format!(
            "{file}: documents[1].stages[6].preconditions[0].context.expression: invalid expression"
        ),
    ] {
        assert!(
            out.stderr.contains(&want),
            "missing {want:?} in:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("cycle"),
        "the cycle is reported:\n{}",
        out.stderr
    );

    let good = run({
        let mut c = ferry_command(tmp.path());
        c.args(["validate", "-f", examples_dir().to_str().unwrap()]);
        c
    });
    assert_eq!(
        (good.code, good.stdout.trim()),
        (0, "2 documents valid"),
        "{good:#?}"
    );

    // Through the server: the same problems, located in the file, and nothing stored.
    let server = Server::start(tmp.path(), &tmp.path().join("data"), &[]);
    let out = server.ferry(&["apply", "-f", file]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains(&format!(
            "{file}: documents[1].stages[2].type: unknown stage type"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "{file}: documents[1].stages[3].requisiteStageRefIds[0]"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        server
            .ferry(&["get", "pipelines", "-o", "json"])
            .ok()
            .json(),
        serde_json::json!([])
    );
    assert_eq!(
        server
            .ferry(&["get", "applications", "-o", "json"])
            .ok()
            .json(),
        serde_json::json!([])
    );
}

const DURABLE: &str = r#"{"kind": "Application", "name": "crash"}
"#;

const DURABLE_PIPELINE: &str = r#"{"kind": "Pipeline", "application": "crash", "name": "durable", "stages": [
  {"refId": "1", "name": "Before", "type": "evaluateVariables", "variables": [{"key": "a", "value": "one"}]},
  {"refId": "2", "name": "Long wait", "type": "wait", "waitTime": 3, "requisiteStageRefIds": ["1"]},
  {"refId": "3", "name": "Short wait", "type": "wait", "waitTime": 1, "requisiteStageRefIds": ["2"]},
  {"refId": "4", "name": "After", "type": "evaluateVariables", "requisiteStageRefIds": ["3"],
   "variables": [{"key": "b", "value": "${a}-done"}]}
]}
"#;

#[test]
fn a_killed_server_resumes_every_execution_without_repeating_stages() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let docs = tmp.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    write(&docs, "app.json", DURABLE);
    write(&docs, "pipeline.json", DURABLE_PIPELINE);

    let first = Server::start(tmp.path(), &data, &[]);
    first.ferry(&["apply", "-f", docs.to_str().unwrap()]).ok();
    let id = first
        .ferry(&["run", "crash", "durable"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let before = poll_execution(&first, &id, "reached the long wait", |e| {
        stage(e, "2")["status"] == "RUNNING"
    });
    assert_eq!(stage(&before, "1")["status"], "SUCCEEDED");
    first.crash();

    let second = Server::start(tmp.path(), &data, &[]);
    let after = poll_execution(&second, &id, "completed", |e| {
        matches!(
            e["status"].as_str(),
            Some("SUCCEEDED" | "TERMINAL" | "CANCELED" | "STOPPED")
        )
    });
    assert_eq!(
        after["status"],
        "SUCCEEDED",
        "{after:#}\nlog:\n{}",
        second.log()
    );
    for s in after["stages"].as_array().unwrap() {
        assert_eq!(s["status"], "SUCCEEDED", "{s:#}");
        assert_eq!(s["attempt"], 1, "a stage ran twice: {s:#}");
    }
    // The stage finished before the crash kept its times; the wait kept its start.
    for key in ["startTime", "endTime"] {
        assert_eq!(stage(&after, "1")[key], stage(&before, "1")[key], "{key}");
    }
    assert_eq!(
        stage(&after, "2")["startTime"],
        stage(&before, "2")["startTime"]
    );
    let waited = stage(&after, "2")["endTime"].as_i64().unwrap()
        - stage(&after, "2")["startTime"].as_i64().unwrap();
    assert!(waited >= 3000, "waited only {waited} ms");
    assert_eq!(stage(&after, "4")["outputs"]["b"], "one-done");
}

#[test]
fn a_failed_stage_makes_run_wait_exit_1_with_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"), &[]);
    let file = write(
        tmp.path(),
        "failing.yaml",
        r#"kind: Application
name: moon
---
kind: Pipeline
application: moon
name: launch
stages:
  - refId: "1"
    name: Check the moon
    type: checkPreconditions
    preconditions:
      - type: expression
        context:
          expression: "${1 == 2}"
          failureMessage: the moon is not full
  - refId: "2"
    name: Never
    type: wait
    waitTime: 1
    requisiteStageRefIds: ["1"]
"#,
    );
    server.ferry(&["apply", "-f", file.to_str().unwrap()]).ok();
    let out = server.ferry(&["run", "moon", "launch", "--wait"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("TERMINAL"), "{out:#?}");
    assert!(
        out.stdout.contains(
            "stage 1 \"Check the moon\" TERMINAL: preconditions[0]: the moon is not full"
        ),
        "{out:#?}"
    );
    assert!(
        !out.stdout.contains("stage 2 \"Never\" RUNNING"),
        "{out:#?}"
    );

    // A parameter that is not key=value is a usage error.
    let bad = server.ferry(&["run", "moon", "launch", "-p", "oops"]);
    assert_eq!(bad.code, 2, "{bad:#?}");
    // An unknown pipeline is the API's 404, printed as an error.
    let missing = server.ferry(&["run", "moon", "nope"]);
    assert_eq!(missing.code, 1, "{missing:#?}");
    assert!(
        missing
            .stderr
            .starts_with("error: no pipeline \"nope\" in application \"moon\""),
        "{missing:#?}"
    );
}

#[test]
fn without_a_token_the_cli_says_how_to_get_one() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("data"), &[]);
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = server.ferry_with(&["get", "applications"], |c| {
        c.env("FERRY_DATA_DIR", &empty);
    });
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.starts_with("error: missing credentials"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "no token: {} does not exist",
            empty.join("admin.token").display()
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--token (FERRY_TOKEN)"),
        "{}",
        out.stderr
    );

    let wrong = server.ferry_with(&["get", "applications"], |c| {
        c.env("FERRY_TOKEN", "not-the-token");
    });
    assert_eq!(wrong.code, 1, "{wrong:#?}");
    assert!(
        wrong.stderr.contains("invalid token") && wrong.stderr.contains("was refused"),
        "{}",
        wrong.stderr
    );
    // The token never shows up in the server's log.
    let token = std::fs::read_to_string(tmp.path().join("data/admin.token")).unwrap();
    assert!(!server.log().contains(token.trim()));
    assert!(
        server.log().contains("admin.token"),
        "the log names the token file"
    );
}

#[test]
fn an_unreachable_server_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = ferry_command(tmp.path());
    c.env("FERRY_SERVER", format!("http://127.0.0.1:{port}"))
        .env("FERRY_DATA_DIR", tmp.path())
        .args(["get", "executions"]);
    let out = run(c);
    assert_eq!(out.code, 3, "{out:#?}");
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot reach Ferry at http://127.0.0.1:{port}: is `ferry server` running?"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn demo_runs_the_example_to_success_and_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("demo-data");
    let mut c = ferry_command(tmp.path());
    c.args(["demo", "--exit", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data);
    let out = run(c);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.starts_with("ferry ready on http://127.0.0.1:"),
        "{}",
        out.stdout
    );
    for want in [
        "application/shop applied",
        "judged continue with input \"ship\"",
        "SUCCEEDED in",
        "get executions -a shop",
    ] {
        assert!(
            out.stdout.contains(want),
            "missing {want:?}:\n{}",
            out.stdout
        );
    }
    assert!(data.join("admin.token").exists() && data.join("ferry.db").exists());
}

#[test]
fn canary_judge_works_offline_on_recorded_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop/deploy/canary-config.yaml");
    let baseline: Vec<f64> = (0..30).map(|i| 0.01 + f64::from(i % 5) * 0.001).collect();
    let bad: Vec<f64> = (0..30).map(|i| 0.1 + f64::from(i % 5) * 0.002).collect();
    let latency: Vec<f64> = (0..30).map(|i| 4.0 + f64::from(i % 7) * 0.1).collect();
    let b = write(
        tmp.path(),
        "baseline.json",
        &json!({"error-rate": baseline, "latency": latency}).to_string(),
    );
    let c = write(
        tmp.path(),
        "canary.json",
        &json!({"error-rate": bad, "latency": latency}).to_string(),
    );
    let judge = |extra: &[&str]| {
        let mut cmd = ferry_command(tmp.path());
        cmd.args(["canary", "judge", "--config", config.to_str().unwrap()])
            .args([
                "--baseline",
                b.to_str().unwrap(),
                "--canary",
                c.to_str().unwrap(),
            ])
            .args(extra);
        run(cmd)
    };
    let out = judge(&[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let v = out.json();
    assert_eq!(v["metrics"][0]["name"], "error-rate");
    assert_eq!(v["metrics"][0]["classification"], "High");
    assert!(v["metrics"][0]["pValue"].as_f64().unwrap() < 0.001);
    assert!(
        v["metrics"][0]["confidenceInterval"]["lower"]
            .as_f64()
            .unwrap()
            > 0.08
    );
    assert_eq!(v["summary"]["score"], 0.0, "a critical metric failed: {v}");
    assert_eq!(v["summary"]["classification"], "Fail");

    let table = judge(&["-o", "table"]);
    assert_eq!(table.code, 0, "{table:#?}");
    assert!(
        table.stdout.contains("error-rate") && table.stdout.contains("High"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("summary: Fail"), "{}", table.stdout);

    // A sample that is not a number: every problem, with its path; exit 1.
    let c2 = write(
        tmp.path(),
        "broken.json",
        r#"{"error-rate": [1, "x"], "nope": [1]}"#,
    );
    let mut cmd = ferry_command(tmp.path());
    cmd.args(["canary", "judge", "--config", config.to_str().unwrap()])
        .args([
            "--baseline",
            b.to_str().unwrap(),
            "--canary",
            c2.to_str().unwrap(),
        ]);
    let out = run(cmd);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("canary.error-rate[1]"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("canary.nope"), "{}", out.stderr);
}
