//! Routes for stored documents of other kinds — canary configs (`kind: CanaryConfig`) and
//! analysis templates (`kind: AnalysisTemplate`), each kept with every version — and judging
//! recorded samples.

use crate::error::ApiError;
use crate::routes::Body;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use ferry_canary::KIND;
use ferry_rollout::TEMPLATE_KIND;
use serde::Deserialize;
use serde_json::{Value, json};

fn summary(d: &ferry_core::DocumentRecord) -> Value {
    json!({
        "name": d.name,
        "version": d.version,
        "applications": d.body.get("applications").cloned().unwrap_or(Value::Array(Vec::new())),
        "metrics": d.body.get("metrics").and_then(Value::as_array).map_or(0, Vec::len),
        "updatedBy": d.updated_by,
        "updatedAt": d.updated_at,
    })
}

async fn list_kind(s: &AppState, kind: &str) -> Result<Json<Value>, ApiError> {
    let docs = s.store.list_documents(kind).await?;
    Ok(Json(Value::Array(docs.iter().map(summary).collect())))
}

#[derive(Deserialize)]
pub(crate) struct VersionQuery {
    version: Option<i64>,
}

fn what(kind: &str) -> &'static str {
    if kind == KIND {
        "canary config"
    } else {
        "analysis template"
    }
}

async fn get_kind(
    s: &AppState,
    kind: &str,
    name: &str,
    version: Option<i64>,
) -> Result<Json<Value>, ApiError> {
    match s.store.get_document(kind, name, version).await? {
        Some(d) => Ok(Json(serde_json::to_value(&d).unwrap_or(Value::Null))),
        None => Err(ApiError::NotFound(match version {
            Some(v) => format!("no {} \"{name}\" version {v}", what(kind)),
            None => format!("no {} \"{name}\"", what(kind)),
        })),
    }
}

async fn history_kind(s: &AppState, kind: &str, name: &str) -> Result<Json<Value>, ApiError> {
    let versions = s.store.document_history(kind, name).await?;
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!("no {} \"{name}\"", what(kind))));
    }
    Ok(Json(Value::Array(versions.iter().map(summary).collect())))
}

async fn delete_kind(s: &AppState, kind: &str, name: &str) -> Result<Json<Value>, ApiError> {
    if s.store.delete_document(kind, name).await? {
        Ok(Json(json!({"deleted": name})))
    } else {
        Err(ApiError::NotFound(format!("no {} \"{name}\"", what(kind))))
    }
}

pub(crate) async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    list_kind(&s, KIND).await
}

pub(crate) async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Json<Value>, ApiError> {
    get_kind(&s, KIND, &name, q.version).await
}

pub(crate) async fn history(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    history_kind(&s, KIND, &name).await
}

pub(crate) async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    delete_kind(&s, KIND, &name).await
}

pub(crate) async fn list_templates(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    list_kind(&s, TEMPLATE_KIND).await
}

pub(crate) async fn get_template(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Json<Value>, ApiError> {
    get_kind(&s, TEMPLATE_KIND, &name, q.version).await
}

pub(crate) async fn delete_template(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    delete_kind(&s, TEMPLATE_KIND, &name).await
}

/// `{config, baseline, canary, thresholds?: {pass, marginal}}` → the judge's full result.
pub(crate) async fn judge(Body(body): Body) -> Result<Json<Value>, ApiError> {
    let result = tokio::task::spawn_blocking(move || ferry_canary::recorded::judge_request(&body))
        .await
        .map_err(|e| ApiError::Internal(format!("the judge stopped: {e}")))?
        .map_err(ApiError::Invalid)?;
    Ok(Json(result))
}
