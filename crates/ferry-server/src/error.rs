//! The one error body every route returns:
//! `{"error": {"code": "...", "message": "...", "problems": [{"path", "message"}]}}`, plus
//! `executionId` when the error is about an orchestration the request started.
//! Internal errors are logged with detail and shown to callers only as a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_core::{Problem, Problems, StoreError};
use ferry_engine::{CommandError, EngineError};
use serde_json::json;

/// An error as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request's document or parameters are invalid (422), with every problem.
    #[error("invalid: {0}")]
    Invalid(Problems),
    /// The request itself is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// No credentials, or bad ones (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such thing (404).
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    /// Something failed inside Ferry (500); the detail is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
    /// Ferry is shutting down or its store is unavailable (503).
    #[error("{0}")]
    Unavailable(String),
    /// An orchestration the request started ended without succeeding (409); the message is its
    /// failed stage's error. The body names the execution (`executionId`).
    #[error("{message}")]
    OperationFailed {
        /// The orchestration.
        execution_id: String,
        /// The failed stage's error (or how the orchestration ended).
        message: String,
    },
    /// Ferry began shutting down while the request waited for its orchestration (503); the
    /// orchestration continues when Ferry starts again. The body names it (`executionId`).
    #[error(
        "Ferry is shutting down; orchestration {execution_id} continues when Ferry starts again"
    )]
    OperationInterrupted {
        /// The orchestration.
        execution_id: String,
    },
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::OperationFailed { .. } => (StatusCode::CONFLICT, "operation_failed"),
            ApiError::OperationInterrupted { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        }
    }
}

/// Builds the error body for a status and message (also used by fallbacks and layers).
pub fn error_body(code: &str, message: &str, problems: &[Problem]) -> serde_json::Value {
    json!({"error": {"code": code, "message": message, "problems": problems}})
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let (message, problems) = match &self {
            ApiError::Invalid(p) => (format!("{} problem(s) found", p.0.len()), p.0.clone()),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                ("internal error; see the server log".to_string(), Vec::new())
            }
            other => (other.to_string(), Vec::new()),
        };
        let mut body = error_body(code, &message, &problems);
        if let ApiError::OperationFailed { execution_id, .. }
        | ApiError::OperationInterrupted { execution_id } = &self
        {
            body["error"]["executionId"] = json!(execution_id);
        }
        (status, Json(body)).into_response()
    }
}

impl From<Problems> for ApiError {
    fn from(p: Problems) -> Self {
        ApiError::Invalid(p)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Backend(m) => {
                ApiError::Unavailable(format!("the store is unavailable: {m}"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(p) => ApiError::Invalid(p),
            EngineError::Disabled(_) => ApiError::Conflict(e.to_string()),
            EngineError::Store(s) => s.into(),
            EngineError::Shutdown => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound(m) => ApiError::NotFound(m),
            CommandError::Conflict(m) => ApiError::Conflict(m),
            CommandError::Store(s) => s.into(),
            CommandError::Shutdown => ApiError::Unavailable(e.to_string()),
        }
    }
}
