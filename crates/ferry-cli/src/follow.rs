//! Following a running execution: snapshots from the server-sent events of
//! `GET /api/v1/executions/{id}/events` (falling back to polling `GET /api/v1/executions/{id}`
//! every 500 ms when the stream cannot be opened or breaks), the stage changes between two
//! snapshots, and the lines that show them.

use crate::client::ApiClient;
use crate::error::CliError;
use crate::render;
use crate::sse::SseParser;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Interval between polls when there is no event stream.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Consecutive failed polls tolerated (a server restarting) before giving up: one minute.
const MAX_POLL_FAILURES: u32 = 120;

/// The parts of an execution the CLI looks at (the API's JSON, read leniently).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecutionView {
    /// Execution id.
    pub id: String,
    /// Application.
    pub application: String,
    /// Pipeline name.
    pub name: String,
    /// Status, e.g. `RUNNING`.
    pub status: String,
    /// Start, epoch millis.
    pub start_time: Option<i64>,
    /// End, epoch millis.
    pub end_time: Option<i64>,
    /// Why it was canceled.
    pub cancellation_reason: Option<String>,
    /// Stages, in definition order.
    pub stages: Vec<StageView>,
}

/// The parts of a stage the CLI looks at.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StageView {
    /// refId.
    pub ref_id: String,
    /// Display name.
    pub name: String,
    /// Stage type.
    #[serde(rename = "type")]
    pub stage_type: String,
    /// Status.
    pub status: String,
    /// Start, epoch millis.
    pub start_time: Option<i64>,
    /// End, epoch millis.
    pub end_time: Option<i64>,
    /// Context (errors live in `exception.details.error`).
    pub context: Value,
}

/// Statuses after which nothing more happens (the reference's "complete" column).
pub fn is_complete(status: &str) -> bool {
    matches!(
        status,
        "SUCCEEDED" | "FAILED_CONTINUE" | "SKIPPED" | "TERMINAL" | "CANCELED" | "STOPPED"
    )
}

impl ExecutionView {
    /// Reads the API's JSON.
    pub fn from_json(v: &Value) -> Result<Self, CliError> {
        ExecutionView::deserialize(v)
            .map_err(|e| CliError::Failed(format!("unexpected execution JSON: {e}")))
    }

    /// True once the execution is complete.
    pub fn is_complete(&self) -> bool {
        is_complete(&self.status)
    }
}

impl StageView {
    /// `context.exception.details.error`.
    pub fn error(&self) -> Option<String> {
        render::stage_error(&serde_json::json!({"context": self.context}))
    }

    /// The values of `judgmentInputs`, for a manual judgment.
    pub fn judgment_inputs(&self) -> Vec<String> {
        self.context
            .get("judgmentInputs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|i| i.get("value").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// True while a manual judgment waits for a person.
    pub fn awaits_judgment(&self) -> bool {
        self.stage_type == "manualJudgment" && self.status == "RUNNING"
    }
}

/// A stage whose status changed between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageChange {
    /// refId.
    pub ref_id: String,
    /// Display name.
    pub name: String,
    /// New status.
    pub status: String,
    /// When it happened (the stage's start or end time, else now), epoch millis.
    pub at: i64,
    /// The stage's error, when it failed.
    pub error: Option<String>,
}

impl StageChange {
    /// `[12:00:01] stage 2 "Approve" RUNNING`, with the error after an ignored failure.
    pub fn line(&self) -> String {
        let mut s = format!(
            "[{}] stage {} \"{}\" {}",
            render::clock(self.at),
            self.ref_id,
            self.name,
            self.status
        );
        if let Some(e) = &self.error {
            s.push_str(": ");
            s.push_str(e);
        }
        s
    }
}

/// The stage status changes from `prev` to `next`, oldest first. Without a previous snapshot,
/// every stage that has started counts as changed (so following a half-done run shows where it
/// is).
pub fn changes(prev: Option<&ExecutionView>, next: &ExecutionView, now: i64) -> Vec<StageChange> {
    let before: HashMap<&str, &str> = prev
        .map(|p| {
            p.stages
                .iter()
                .map(|s| (s.ref_id.as_str(), s.status.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let mut out: Vec<StageChange> = next
        .stages
        .iter()
        .filter(|s| match before.get(s.ref_id.as_str()) {
            Some(old) => *old != s.status,
            None => prev.is_some() || s.status != "NOT_STARTED",
        })
        .map(|s| {
            let at = if is_complete(&s.status) {
                s.end_time
            } else {
                s.start_time
            };
            StageChange {
                ref_id: s.ref_id.clone(),
                name: s.name.clone(),
                status: s.status.clone(),
                at: at.unwrap_or(now),
                // Halting failures are listed with the outcome; a failure the pipeline ignores
                // (FAILED_CONTINUE) is shown here, where it happens.
                error: if s.status == "FAILED_CONTINUE" {
                    s.error()
                } else {
                    None
                },
            }
        })
        .collect();
    out.sort_by_key(|c| c.at);
    out
}

/// The closing lines for a complete execution: the outcome, and why it failed.
pub fn outcome_lines(e: &ExecutionView, now: i64) -> Vec<String> {
    let took = render::span(e.start_time, e.end_time, now);
    if e.status == "SUCCEEDED" {
        return vec![format!("execution {} SUCCEEDED in {took}", e.id)];
    }
    let mut lines = vec![format!("execution {} {} after {took}", e.id, e.status)];
    if let Some(r) = &e.cancellation_reason {
        lines.push(format!("  canceled: {r}"));
    }
    for s in &e.stages {
        if let Some(err) = s.error() {
            lines.push(format!(
                "  stage {} \"{}\" {}: {err}",
                s.ref_id, s.name, s.status
            ));
        }
    }
    lines
}

/// Where the live lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Standard output (table mode).
    Stdout,
    /// Standard error (when stdout carries JSON or YAML).
    Stderr,
}

impl Sink {
    /// Prints one line.
    pub fn line(self, s: &str) {
        match self {
            Sink::Stdout => println!("{s}"),
            Sink::Stderr => eprintln!("{s}"),
        }
    }
}

/// Yields snapshots of one execution as it changes.
pub struct Follower<'a> {
    client: &'a ApiClient,
    id: String,
    stream: Option<BoxStream<'static, reqwest::Result<bytes::Bytes>>>,
    parser: SseParser,
    queued: VecDeque<Value>,
    /// True once the event stream has failed: poll from then on.
    polling: bool,
    tried_stream: bool,
    polls: u32,
}

impl<'a> Follower<'a> {
    /// Follows execution `id`.
    pub fn new(client: &'a ApiClient, id: &str) -> Self {
        Follower {
            client,
            id: id.to_string(),
            stream: None,
            parser: SseParser::new(),
            queued: VecDeque::new(),
            polling: false,
            tried_stream: false,
            polls: 0,
        }
    }

    /// Follows by polling only (no event stream).
    pub fn polling(mut self) -> Self {
        self.polling = true;
        self
    }

    /// The next snapshot (the first one is the current state).
    pub async fn next(&mut self) -> Result<Value, CliError> {
        loop {
            if let Some(v) = self.queued.pop_front() {
                return Ok(v);
            }
            if self.polling {
                return self.poll().await;
            }
            if !self.tried_stream {
                self.tried_stream = true;
                match self
                    .client
                    .events(&["api", "v1", "executions", &self.id, "events"])
                    .await
                {
                    Ok(res) => self.stream = Some(res.bytes_stream().boxed()),
                    Err(e @ CliError::Api { status: 404, .. }) => return Err(e),
                    Err(e @ CliError::Unauthorized { .. }) => return Err(e),
                    Err(e) => {
                        tracing::debug!(error = %e, "no event stream; polling");
                        self.polling = true;
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                self.polling = true;
                continue;
            };
            match stream.next().await {
                Some(Ok(chunk)) => {
                    for ev in self.parser.push(&chunk) {
                        if ev.event != "execution" {
                            continue;
                        }
                        match serde_json::from_str::<Value>(&ev.data) {
                            Ok(v) => self.queued.push_back(v),
                            Err(e) => tracing::debug!(error = %e, "ignoring an unreadable event"),
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "event stream broke; polling");
                    self.stream = None;
                    self.polling = true;
                }
                None => {
                    // The server ends the stream after the complete event; if it ended early
                    // (a restart), polling finds out what happened.
                    self.stream = None;
                    self.polling = true;
                }
            }
        }
    }

    async fn poll(&mut self) -> Result<Value, CliError> {
        let mut failures = 0u32;
        loop {
            if self.polls > 0 || failures > 0 {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            self.polls += 1;
            match self
                .client
                .get(&["api", "v1", "executions", &self.id], &[])
                .await
            {
                Ok(v) => return Ok(v),
                Err(
                    e @ (CliError::Connect { .. }
                    | CliError::Transport { .. }
                    | CliError::Api {
                        status: 502..=504, ..
                    }),
                ) if failures < MAX_POLL_FAILURES => {
                    if failures == 0 {
                        eprintln!("lost contact with Ferry ({e}); retrying");
                    }
                    failures += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(stages: &[(&str, &str, Option<i64>, Option<i64>)]) -> ExecutionView {
        let stages: Vec<Value> = stages
            .iter()
            .map(|(r, st, s, e)| json!({"refId": r, "name": format!("S{r}"), "type": "wait", "status": st, "startTime": s, "endTime": e}))
            .collect();
        ExecutionView::from_json(&json!({"id": "e", "status": "RUNNING", "stages": stages}))
            .unwrap()
    }

    #[test]
    fn first_snapshot_shows_started_stages() {
        let v = view(&[
            ("1", "SUCCEEDED", Some(1000), Some(2000)),
            ("2", "RUNNING", Some(2000), None),
            ("3", "NOT_STARTED", None, None),
        ]);
        let c = changes(None, &v, 9000);
        let lines: Vec<String> = c.iter().map(StageChange::line).collect();
        assert_eq!(
            lines,
            [
                "[00:00:02] stage 1 \"S1\" SUCCEEDED",
                "[00:00:02] stage 2 \"S2\" RUNNING"
            ]
        );
    }

    #[test]
    fn later_snapshots_show_only_changes_in_time_order() {
        let a = view(&[
            ("1", "RUNNING", Some(1000), None),
            ("2", "RUNNING", Some(1000), None),
        ]);
        let b = view(&[
            ("1", "SUCCEEDED", Some(1000), Some(5000)),
            ("2", "SUCCEEDED", Some(1000), Some(3000)),
        ]);
        let c = changes(Some(&a), &b, 0);
        assert_eq!(
            c.iter().map(|c| c.ref_id.as_str()).collect::<Vec<_>>(),
            ["2", "1"]
        );
        assert!(changes(Some(&b), &b, 0).is_empty());
    }

    #[test]
    fn failures_carry_their_error() {
        let e = ExecutionView::from_json(&json!({"id": "e", "status": "TERMINAL", "startTime": 0, "endTime": 1500,
            "stages": [{"refId": "1", "name": "Check", "type": "checkPreconditions", "status": "TERMINAL", "endTime": 1000,
                        "context": {"exception": {"details": {"error": "nope"}}}}]}))
        .unwrap();
        let c = changes(None, &e, 0);
        assert_eq!(
            c[0].line(),
            "[00:00:01] stage 1 \"Check\" TERMINAL",
            "the error comes with the outcome"
        );
        let mut ignored = e.clone();
        ignored.stages[0].status = "FAILED_CONTINUE".into();
        assert_eq!(
            changes(None, &ignored, 0)[0].line(),
            "[00:00:01] stage 1 \"Check\" FAILED_CONTINUE: nope"
        );
        assert_eq!(
            outcome_lines(&e, 0),
            [
                "execution e TERMINAL after 1.5s",
                "  stage 1 \"Check\" TERMINAL: nope"
            ]
        );
        let ok = ExecutionView::from_json(
            &json!({"id": "e", "status": "SUCCEEDED", "startTime": 0, "endTime": 2000}),
        )
        .unwrap();
        assert_eq!(outcome_lines(&ok, 0), ["execution e SUCCEEDED in 2.0s"]);
    }

    #[test]
    fn judgment_helpers() {
        let s: StageView = serde_json::from_value(
            json!({"refId": "4", "type": "manualJudgment", "status": "RUNNING",
            "context": {"judgmentInputs": [{"value": "ship"}, {"value": "hold"}]}}),
        )
        .unwrap();
        assert!(s.awaits_judgment());
        assert_eq!(s.judgment_inputs(), ["ship", "hold"]);
        assert!(is_complete("STOPPED") && !is_complete("PAUSED"));
    }

    /// A fake API: `events` answers with `events_body` (or 500 when `None`); the execution is
    /// SUCCEEDED when polled.
    async fn fake_api(events_body: Option<&'static str>) -> (String, tokio::task::JoinHandle<()>) {
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/api/v1/executions/e/events",
                get(move || async move {
                    match events_body {
                        Some(b) => {
                            ([(header::CONTENT_TYPE, "text/event-stream")], b).into_response()
                        }
                        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }),
            )
            .route(
                "/api/v1/executions/e",
                get(|| async {
                    axum::Json(json!({"id": "e", "status": "SUCCEEDED", "stages": []}))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (url, task)
    }

    fn client(url: &str) -> ApiClient {
        ApiClient::new(url, Some("t".into()), crate::client::TokenSource::Given).unwrap()
    }

    #[tokio::test]
    async fn a_broken_event_stream_falls_back_to_polling() {
        // The stream sends one (running) snapshot, a keep-alive, then ends before completion.
        let (url, task) = fake_api(Some(
            ": hi\n\nevent: execution\ndata: {\"id\": \"e\", \"status\": \"RUNNING\"}\n\n",
        ))
        .await;
        let c = client(&url);
        let mut f = Follower::new(&c, "e");
        assert_eq!(f.next().await.unwrap()["status"], "RUNNING");
        assert_eq!(f.next().await.unwrap()["status"], "SUCCEEDED");
        task.abort();
    }

    #[tokio::test]
    async fn no_event_stream_means_polling_from_the_start() {
        let (url, task) = fake_api(None).await;
        let c = client(&url);
        let mut f = Follower::new(&c, "e");
        assert_eq!(f.next().await.unwrap()["status"], "SUCCEEDED");
        let mut p = Follower::new(&c, "e").polling();
        assert_eq!(p.next().await.unwrap()["status"], "SUCCEEDED");
        task.abort();
    }

    #[tokio::test]
    async fn an_unknown_execution_is_an_error_not_a_poll_loop() {
        let (url, task) = fake_api(None).await;
        let c = client(&url);
        let mut f = Follower::new(&c, "nope");
        let err = f.next().await.unwrap_err();
        assert!(matches!(err, CliError::Api { status: 404, .. }), "{err:?}");
        task.abort();
    }
}
