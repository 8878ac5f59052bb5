//! Ferry's core stage types, each an implementation of `ferry_engine::TypedStage`:
//! `wait`, `waitUntil`, `manualJudgment`, `checkPreconditions`, `evaluateVariables`,
//! `webhook`, `pipeline` and `script`. [`core_registry`] registers them all.
//!
//! Every stage type here passes the engine's conformance kit (`ferry_engine::conformance`);
//! see each module's tests.

pub mod evaluate_variables;
pub mod manual_judgment;
pub mod pipeline;
pub mod preconditions;
pub mod script;
pub mod wait;
pub mod webhook;

use ferry_engine::{Registry, Typed};
use std::sync::Arc;

/// Where stage types that notify people (manual judgments) send their notifications. The
/// notifications issue plugs real channels in here; the default writes a log line.
pub trait Notifier: Send + Sync + 'static {
    /// Sends one notification.
    fn notify(&self, event: Notification);
}

/// One notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// e.g. `manualJudgment.awaiting`.
    pub kind: String,
    /// Execution id.
    pub execution_id: String,
    /// Application.
    pub application: String,
    /// Stage name.
    pub stage: String,
    /// Human-readable text.
    pub message: String,
}

/// A [`Notifier`] that logs.
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn notify(&self, event: Notification) {
        tracing::info!(kind = %event.kind, execution = %event.execution_id, stage = %event.stage, "{}", event.message);
    }
}

/// What the core stages need from the outside.
#[derive(Clone)]
pub struct StageServices {
    /// The URL guard for webhooks.
    pub http: ferry_http::GuardedClient,
    /// Notifications.
    pub notifier: Arc<dyn Notifier>,
    /// Root directory for script working directories.
    pub work_dir: std::path::PathBuf,
}

/// A registry with every core stage type.
pub fn core_registry(services: &StageServices) -> Registry {
    let mut r = Registry::new();
    register_core(&mut r, services);
    r
}

/// Adds every core stage type to `registry`.
pub fn register_core(registry: &mut Registry, services: &StageServices) {
    registry
        .register(Typed(wait::Wait))
        .register(Typed(wait::WaitUntil))
        .register(Typed(manual_judgment::ManualJudgment {
            notifier: services.notifier.clone(),
        }))
        .register(Typed(preconditions::CheckPreconditions))
        .register(Typed(evaluate_variables::EvaluateVariables))
        .register(Typed(webhook::Webhook {
            http: services.http.clone(),
        }))
        .register(Typed(pipeline::PipelineStage))
        .register(Typed(script::Script {
            work_dir: services.work_dir.clone(),
        }));
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers shared by this crate's tests.
    use ferry_core::Store;
    use std::sync::Arc;

    /// A fresh SQLite store in a temp dir (kept alive by the returned guard).
    pub async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ferry_store::StoreConfig::Sqlite {
            path: dir.path().join("ferry.db"),
        };
        (ferry_store::open(&cfg).await.unwrap(), dir)
    }

    /// Validates and saves `doc`, then runs it as `user`; returns the execution id.
    pub async fn run_doc(
        engine: &ferry_engine::EngineHandle,
        doc: serde_json::Value,
        user: &str,
    ) -> String {
        let p = ferry_engine::validate_pipeline(&doc, engine.registry()).unwrap();
        let record = engine.store().save_pipeline(&p, "tester").await.unwrap();
        let request = ferry_engine::RunRequest {
            user: user.into(),
            ..ferry_engine::RunRequest::default()
        };
        engine.run_pipeline(&record, request).await.unwrap()
    }

    /// Waits (20 s at most) until the execution is complete.
    pub async fn finished(engine: &ferry_engine::EngineHandle, id: &str) -> ferry_core::Execution {
        ferry_engine::conformance::wait_for(
            engine,
            id,
            std::time::Duration::from_secs(20),
            "completion",
            |e| e.status.is_complete(),
        )
        .await
        .unwrap()
    }

    /// The error recorded on stage `i`, or "".
    pub fn error_at(e: &ferry_core::Execution, i: usize) -> String {
        e.stages[i].context["exception"]["details"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Services for tests: webhooks may reach loopback; scripts run in a temp dir.
    pub fn services(work_dir: &std::path::Path) -> super::StageServices {
        let mut policy = ferry_http::UrlPolicy::public_internet();
        policy.allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
        super::StageServices {
            http: ferry_http::GuardedClient::new(policy).unwrap(),
            notifier: Arc::new(super::LogNotifier),
            work_dir: work_dir.to_path_buf(),
        }
    }
}
