//! The route table — the single list from which the router, the authorization middleware and
//! the OpenAPI document are all built — and the handlers.

use crate::auth::{Action, Principal};
use crate::canary;
use crate::documents::{self, Document};
use crate::error::ApiError;
use crate::infra;
use crate::sse;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use ferry_core::{Application, ExecutionFilter, Status};
use ferry_engine::{Command, RunRequest};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// One API route.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path pattern, axum syntax (`/api/v1/executions/{id}`).
    pub path: &'static str,
    /// What it does, for authorization.
    pub action: Action,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// Whether it takes a JSON body.
    pub body: bool,
}

const fn r(
    method: Method,
    path: &'static str,
    action: Action,
    summary: &'static str,
    body: bool,
) -> Route {
    Route {
        method,
        path,
        action,
        summary,
        body,
    }
}

/// Every route Ferry serves.
pub const ROUTES: &[Route] = &[
    r(
        Method::GET,
        "/healthz",
        Action::Public,
        "Liveness: the process is up",
        false,
    ),
    r(
        Method::GET,
        "/readyz",
        Action::Public,
        "Readiness: the store answers and the engine runs",
        false,
    ),
    r(
        Method::GET,
        "/metrics",
        Action::Public,
        "Prometheus metrics",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/openapi.json",
        Action::Public,
        "This document",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/whoami",
        Action::Read,
        "The calling principal",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/stage-types",
        Action::Read,
        "Registered stage types",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/applications",
        Action::Read,
        "List applications",
        false,
    ),
    r(
        Method::POST,
        "/api/v1/applications",
        Action::Write,
        "Create or update an application",
        true,
    ),
    r(
        Method::GET,
        "/api/v1/applications/{app}",
        Action::Read,
        "Get an application",
        false,
    ),
    r(
        Method::DELETE,
        "/api/v1/applications/{app}",
        Action::Write,
        "Delete an application without pipelines",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/pipelines",
        Action::Read,
        "List pipelines (latest versions); ?application=",
        false,
    ),
    r(
        Method::POST,
        "/api/v1/pipelines",
        Action::Write,
        "Save a pipeline (Spinnaker JSON); a new version when changed",
        true,
    ),
    r(
        Method::POST,
        "/api/v1/pipelines/validate",
        Action::Read,
        "Validate a pipeline without saving it",
        true,
    ),
    r(
        Method::GET,
        "/api/v1/pipelines/{id}",
        Action::Read,
        "Get a pipeline's latest version",
        false,
    ),
    r(
        Method::DELETE,
        "/api/v1/pipelines/{id}",
        Action::Write,
        "Delete a pipeline and its history",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/pipelines/{id}/history",
        Action::Read,
        "Every saved version, newest first",
        false,
    ),
    r(
        Method::POST,
        "/api/v1/pipelines/{id}/run",
        Action::Execute,
        "Run a pipeline: {parameters}",
        true,
    ),
    r(
        Method::POST,
        "/api/v1/applications/{app}/pipelines/{name}/run",
        Action::Execute,
        "Run a pipeline by application and name: {parameters}",
        true,
    ),
    r(
        Method::POST,
        "/api/v1/apply",
        Action::Write,
        "Validate a batch of documents whole, then store them: {documents: [...]}",
        true,
    ),
    r(
        Method::GET,
        "/api/v1/executions",
        Action::Read,
        "List executions, newest first; ?application=&pipeline=&status=&limit=",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/executions/{id}",
        Action::Read,
        "Get an execution with its stages",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/executions/{id}/events",
        Action::Read,
        "Server-sent events: the execution after every change, until it completes",
        false,
    ),
    r(
        Method::POST,
        "/api/v1/executions/{id}/cancel",
        Action::Execute,
        "Cancel a run: {reason}",
        true,
    ),
    r(
        Method::POST,
        "/api/v1/executions/{id}/pause",
        Action::Execute,
        "Pause a run",
        false,
    ),
    r(
        Method::POST,
        "/api/v1/executions/{id}/resume",
        Action::Execute,
        "Resume a paused run",
        false,
    ),
    r(
        Method::POST,
        "/api/v1/executions/{id}/stages/{stage}/restart",
        Action::Execute,
        "Restart a stage and everything downstream",
        false,
    ),
    r(
        Method::POST,
        "/api/v1/executions/{id}/stages/{stage}/judgment",
        Action::Execute,
        "Judge a manual judgment: {judgmentStatus: continue|stop, judgmentInput}",
        true,
    ),
    r(
        Method::POST,
        "/api/v1/executions/{id}/stages/{stage}/input",
        Action::Execute,
        "Give a running stage input, e.g. {skipRemainingWait: true}",
        true,
    ),
    r(
        Method::GET,
        "/api/v1/applications/{app}/clusters",
        Action::Read,
        "Clusters of an application with their server groups",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/applications/{app}/serverGroups",
        Action::Read,
        "Server groups of an application",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/applications/{app}/instances",
        Action::Read,
        "Instances of an application",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/applications/{app}/loadBalancers",
        Action::Read,
        "Load balancers of an application",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/serverGroups/{account}/{name}",
        Action::Read,
        "One server group with its instances",
        false,
    ),
    r(
        Method::DELETE,
        "/api/v1/serverGroups/{account}/{name}",
        Action::Execute,
        "Destroy a server group (stops every instance); an orchestration, ?wait=false for 202 {id}",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/serverGroups/{account}/{name}/logs",
        Action::Read,
        "Captured instance output; ?tail=&instance=",
        false,
    ),
    r(
        Method::POST,
        "/api/v1/serverGroups/{account}/{name}/resize",
        Action::Execute,
        "Resize: {capacity: {min,max,desired}} or {desired}; an orchestration, ?wait=false for 202 {id}",
        true,
    ),
    r(
        Method::POST,
        "/api/v1/serverGroups/{account}/{name}/enable",
        Action::Execute,
        "Send traffic to a server group; an orchestration, ?wait=false for 202 {id}",
        false,
    ),
    r(
        Method::POST,
        "/api/v1/serverGroups/{account}/{name}/disable",
        Action::Execute,
        "Take a server group out of traffic (drains first); an orchestration, ?wait=false for 202 {id}",
        false,
    ),
    r(
        Method::POST,
        "/api/v1/serverGroups/{account}/{name}/rollback",
        Action::Execute,
        "Enable the previous server group of the cluster, then disable this one; an orchestration, ?wait=false for 202 {id}",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/canaryConfigs",
        Action::Read,
        "Canary configs (latest version of each)",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/canaryConfigs/{name}",
        Action::Read,
        "One canary config; ?version= for an older one",
        false,
    ),
    r(
        Method::DELETE,
        "/api/v1/canaryConfigs/{name}",
        Action::Write,
        "Delete a canary config with its history",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/canaryConfigs/{name}/history",
        Action::Read,
        "Every version of a canary config, newest first",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/analysisTemplates",
        Action::Read,
        "Analysis templates (latest version of each)",
        false,
    ),
    r(
        Method::GET,
        "/api/v1/analysisTemplates/{name}",
        Action::Read,
        "One analysis template; ?version= for an older one",
        false,
    ),
    r(
        Method::DELETE,
        "/api/v1/analysisTemplates/{name}",
        Action::Write,
        "Delete an analysis template with its history",
        false,
    ),
    r(
        Method::POST,
        "/api/v1/canary/judge",
        Action::Execute,
        "Judge recorded samples: {config, baseline, canary, thresholds?}",
        true,
    ),
];

/// The route with this method and path pattern.
pub fn find_route(method: &Method, path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

fn handler(route: &Route) -> MethodRouter<AppState> {
    let f = MethodFilter::try_from(route.method.clone()).unwrap_or(MethodFilter::GET);
    match (route.method.as_str(), route.path) {
        ("GET", "/healthz") => on(f, healthz),
        ("GET", "/readyz") => on(f, readyz),
        ("GET", "/metrics") => on(f, crate::metrics::render),
        ("GET", "/api/v1/openapi.json") => on(f, openapi),
        ("GET", "/api/v1/whoami") => on(f, whoami),
        ("GET", "/api/v1/stage-types") => on(f, stage_types),
        ("GET", "/api/v1/applications") => on(f, list_applications),
        ("POST", "/api/v1/applications") => on(f, put_application),
        ("GET", "/api/v1/applications/{app}") => on(f, get_application),
        ("DELETE", "/api/v1/applications/{app}") => on(f, delete_application),
        ("GET", "/api/v1/pipelines") => on(f, list_pipelines),
        ("POST", "/api/v1/pipelines") => on(f, save_pipeline),
        ("POST", "/api/v1/pipelines/validate") => on(f, validate_pipeline),
        ("GET", "/api/v1/pipelines/{id}") => on(f, get_pipeline),
        ("DELETE", "/api/v1/pipelines/{id}") => on(f, delete_pipeline),
        ("GET", "/api/v1/pipelines/{id}/history") => on(f, pipeline_history),
        ("POST", "/api/v1/pipelines/{id}/run") => on(f, run_pipeline),
        ("POST", "/api/v1/applications/{app}/pipelines/{name}/run") => on(f, run_by_name),
        ("POST", "/api/v1/apply") => on(f, apply),
        ("GET", "/api/v1/executions") => on(f, list_executions),
        ("GET", "/api/v1/executions/{id}") => on(f, get_execution),
        ("GET", "/api/v1/executions/{id}/events") => on(f, sse::execution_events),
        ("POST", "/api/v1/executions/{id}/cancel") => on(f, cancel),
        ("POST", "/api/v1/executions/{id}/pause") => on(f, pause),
        ("POST", "/api/v1/executions/{id}/resume") => on(f, resume),
        ("POST", "/api/v1/executions/{id}/stages/{stage}/restart") => on(f, restart_stage),
        ("POST", "/api/v1/executions/{id}/stages/{stage}/judgment") => on(f, judge),
        ("POST", "/api/v1/executions/{id}/stages/{stage}/input") => on(f, stage_input),
        ("GET", "/api/v1/applications/{app}/clusters") => on(f, infra::clusters),
        ("GET", "/api/v1/applications/{app}/serverGroups") => on(f, infra::server_groups),
        ("GET", "/api/v1/applications/{app}/instances") => on(f, infra::instances),
        ("GET", "/api/v1/applications/{app}/loadBalancers") => on(f, infra::load_balancers),
        ("GET", "/api/v1/serverGroups/{account}/{name}") => on(f, infra::server_group),
        ("DELETE", "/api/v1/serverGroups/{account}/{name}") => on(f, infra::destroy),
        ("GET", "/api/v1/serverGroups/{account}/{name}/logs") => on(f, infra::logs),
        ("POST", "/api/v1/serverGroups/{account}/{name}/resize") => on(f, infra::resize),
        ("POST", "/api/v1/serverGroups/{account}/{name}/enable") => on(f, infra::enable),
        ("POST", "/api/v1/serverGroups/{account}/{name}/disable") => on(f, infra::disable),
        ("POST", "/api/v1/serverGroups/{account}/{name}/rollback") => on(f, infra::rollback),
        ("GET", "/api/v1/canaryConfigs") => on(f, canary::list),
        ("GET", "/api/v1/canaryConfigs/{name}") => on(f, canary::get),
        ("DELETE", "/api/v1/canaryConfigs/{name}") => on(f, canary::delete),
        ("GET", "/api/v1/canaryConfigs/{name}/history") => on(f, canary::history),
        ("POST", "/api/v1/canary/judge") => on(f, canary::judge),
        ("GET", "/api/v1/analysisTemplates") => on(f, canary::list_templates),
        ("GET", "/api/v1/analysisTemplates/{name}") => on(f, canary::get_template),
        ("DELETE", "/api/v1/analysisTemplates/{name}") => on(f, canary::delete_template),
        _ => on(f, unrouted),
    }
}

/// Builds the router from [`ROUTES`].
pub fn router() -> axum::Router<AppState> {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for route in ROUTES {
        let h = handler(route);
        match by_path.iter_mut().find(|(p, _)| *p == route.path) {
            Some((_, mr)) => *mr = std::mem::take(mr).merge(h),
            None => by_path.push((route.path, h)),
        }
    }
    by_path
        .into_iter()
        .fold(axum::Router::new(), |router, (path, mr)| {
            router.route(path, mr)
        })
}

async fn unrouted() -> ApiError {
    ApiError::Internal("route listed without a handler".into())
}

/// The caller, as established by the auth middleware.
#[derive(Clone)]
pub struct Caller(pub Arc<Principal>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Arc<Principal>>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::Unauthenticated("no principal".into()))
    }
}

/// A JSON body whose parse errors use the common error shape.
pub struct Body(pub Value);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = Response;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                let status = e.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "too_large"
                } else {
                    "bad_request"
                };
                (
                    status,
                    Json(crate::error::error_body(code, &e.body_text(), &[])),
                )
                    .into_response()
            })?;
        if bytes.is_empty() {
            return Ok(Body(Value::Object(Map::new())));
        }
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            ApiError::BadRequest(format!("body is not valid JSON: {e}")).into_response()
        })
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppState>) -> Response {
    let store_ok = s.store.get_application("").await.is_ok();
    let engine_ok = s.engine.is_running();
    let status = if store_ok && engine_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"store": store_ok, "engine": engine_ok})),
    )
        .into_response()
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

async fn whoami(Caller(who): Caller) -> Json<Value> {
    Json(json!({"name": who.name, "admin": who.admin}))
}

async fn stage_types(State(s): State<AppState>) -> Json<Value> {
    Json(json!(s.engine.registry().keys()))
}

async fn list_applications(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(s.store.list_applications().await?)))
}

async fn put_application(
    State(s): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let app = Application::parse(&body)?;
    Ok(Json(json!(s.store.put_application(&app).await?)))
}

async fn get_application(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match s.store.get_application(&app).await? {
        Some(a) => Ok(Json(json!(a))),
        None => Err(ApiError::NotFound(format!("no application \"{app}\""))),
    }
}

async fn delete_application(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> Result<StatusCode, ApiError> {
    if s.store.delete_application(&app).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no application \"{app}\"")))
    }
}

#[derive(Deserialize)]
struct AppQuery {
    application: Option<String>,
}

async fn list_pipelines(
    State(s): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        s.store.list_pipelines(q.application.as_deref()).await?
    )))
}

async fn save_pipeline(
    State(s): State<AppState>,
    Caller(who): Caller,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let stored = apply_documents(&s, &who, vec![with_kind(body, "Pipeline")]).await?;
    Ok(Json(stored.into_iter().next().unwrap_or(Value::Null)))
}

fn with_kind(mut doc: Value, kind: &str) -> Value {
    if let Some(o) = doc.as_object_mut()
        && !o.contains_key("kind")
    {
        o.insert("kind".into(), Value::String(kind.into()));
    }
    doc
}

async fn validate_pipeline(
    State(s): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let p = ferry_engine::validate_pipeline(&body, s.engine.registry())?;
    Ok(Json(
        json!({"valid": true, "application": p.application, "name": p.name, "stages": p.stages.len()}),
    ))
}

async fn get_pipeline(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match s.store.get_pipeline(&id).await? {
        Some(p) => Ok(Json(json!(p))),
        None => Err(ApiError::NotFound(format!("no pipeline \"{id}\""))),
    }
}

async fn delete_pipeline(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if s.store.delete_pipeline(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no pipeline \"{id}\"")))
    }
}

async fn pipeline_history(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let h = s.store.pipeline_history(&id).await?;
    if h.is_empty() {
        return Err(ApiError::NotFound(format!("no pipeline \"{id}\"")));
    }
    Ok(Json(json!(h)))
}

fn run_request(who: &Principal, body: &Value) -> Result<RunRequest, ApiError> {
    let parameters = match body.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(ApiError::BadRequest("parameters must be an object".into())),
    };
    Ok(RunRequest {
        trigger_type: "manual".into(),
        user: who.name.clone(),
        parameters,
        extra: Map::new(),
    })
}

/// Starts a run of `record` for `who`; answers `201 {id}`.
async fn start_run(
    s: &AppState,
    who: &Principal,
    record: &ferry_core::PipelineRecord,
    body: &Value,
) -> Result<Response, ApiError> {
    let exec = s
        .engine
        .run_pipeline(record, run_request(who, body)?)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": exec}))).into_response())
}

async fn run_pipeline(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let Some(record) = s.store.get_pipeline(&id).await? else {
        return Err(ApiError::NotFound(format!("no pipeline \"{id}\"")));
    };
    start_run(&s, &who, &record, &body).await
}

async fn run_by_name(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((app, name)): Path<(String, String)>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let Some(record) = s.store.find_pipeline(&app, &name).await? else {
        return Err(ApiError::NotFound(format!(
            "no pipeline \"{name}\" in application \"{app}\""
        )));
    };
    start_run(&s, &who, &record, &body).await
}

async fn apply(
    State(s): State<AppState>,
    Caller(who): Caller,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let docs = match body.get("documents") {
        Some(Value::Array(d)) => d.clone(),
        _ => {
            return Err(ApiError::BadRequest(
                "body must be {\"documents\": [...]}".into(),
            ));
        }
    };
    let stored = apply_documents(&s, &who, docs).await?;
    Ok(Json(json!({"applied": stored})))
}

/// Validates a batch whole, then stores it: applications first, then pipelines.
async fn apply_documents(
    s: &AppState,
    who: &Principal,
    docs: Vec<Value>,
) -> Result<Vec<Value>, ApiError> {
    let known: Vec<String> = s
        .store
        .list_applications()
        .await?
        .into_iter()
        .map(|a| a.name)
        .collect();
    let validated =
        documents::validate_batch(&docs, s.engine.registry(), &s.canary_sources, &|a| {
            known.iter().any(|k| k == a)
        })?;
    let mut out = Vec::new();
    for d in &validated {
        if let Document::Application(a) = d {
            let a = s.store.put_application(a).await?;
            out.push(json!({"kind": "Application", "name": a.name}));
        }
    }
    // Firewalls before the load balancers that name them.
    for d in &validated {
        if let Document::Firewall(f) = d {
            crate::infra::provider_for(s, &f.account)?
                .upsert_firewall(f.clone())
                .await?;
            out.push(json!({"kind": "Firewall", "name": f.name}));
        }
    }
    for d in &validated {
        if let Document::LoadBalancer(lb) = d {
            crate::infra::provider_for(s, &lb.account)?
                .upsert_load_balancer(lb.clone())
                .await?;
            out.push(json!({"kind": "LoadBalancer", "name": lb.name}));
        }
    }
    for d in &validated {
        if let Document::AnalysisTemplate { name, body } = d {
            let rec = s
                .store
                .save_document(ferry_rollout::TEMPLATE_KIND, name, body, &who.name)
                .await?;
            out.push(json!({"kind": ferry_rollout::TEMPLATE_KIND, "name": rec.name, "version": rec.version}));
        }
    }
    for d in &validated {
        if let Document::CanaryConfig { name, body } = d {
            let rec = s
                .store
                .save_document(ferry_canary::KIND, name, body, &who.name)
                .await?;
            out.push(json!({"kind": ferry_canary::KIND, "name": rec.name, "version": rec.version}));
        }
    }
    for d in &validated {
        if let Document::Pipeline(p) = d {
            let rec = s.store.save_pipeline(p, &who.name).await?;
            out.push(json!({"kind": "Pipeline", "application": rec.application, "name": rec.name, "id": rec.id, "version": rec.version}));
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct ExecQuery {
    application: Option<String>,
    pipeline: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_executions(
    State(s): State<AppState>,
    Query(q): Query<ExecQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut statuses = Vec::new();
    for st in q
        .status
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|x| !x.is_empty())
    {
        statuses.push(
            Status::parse(st)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown status \"{st}\"")))?,
        );
    }
    let filter = ExecutionFilter {
        application: q.application,
        pipeline_config_id: q.pipeline,
        statuses,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    Ok(Json(json!(s.store.list_executions(&filter).await?)))
}

async fn get_execution(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match s.engine.get_execution(&id).await? {
        Some(e) => Ok(Json(crate::execution_json(&e))),
        None => Err(ApiError::NotFound(format!("no execution \"{id}\""))),
    }
}

async fn cancel(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    s.engine
        .command(
            &id,
            Command::Cancel {
                user: who.name.clone(),
                reason,
            },
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn pause(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.engine
        .command(
            &id,
            Command::Pause {
                user: who.name.clone(),
            },
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn resume(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.engine
        .command(
            &id,
            Command::Resume {
                user: who.name.clone(),
            },
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn restart_stage(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((id, stage)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.engine
        .command(
            &id,
            Command::RestartStage {
                stage,
                user: who.name.clone(),
            },
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn judge(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((id, stage)): Path<(String, String)>,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let mut input = Map::new();
    match body.get("judgmentStatus").and_then(Value::as_str) {
        Some(st @ ("continue" | "stop")) => {
            input.insert("judgmentStatus".into(), Value::String(st.into()));
        }
        _ => {
            return Err(ApiError::BadRequest(
                "judgmentStatus must be \"continue\" or \"stop\"".into(),
            ));
        }
    }
    if let Some(v) = body.get("judgmentInput").filter(|v| !v.is_null()) {
        input.insert("judgmentInput".into(), v.clone());
    }
    s.engine
        .command(
            &id,
            Command::StageInput {
                stage,
                input,
                user: who.name.clone(),
            },
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn stage_input(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((id, stage)): Path<(String, String)>,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let Value::Object(input) = body else {
        return Err(ApiError::BadRequest("input must be a JSON object".into()));
    };
    s.engine
        .command(
            &id,
            Command::StageInput {
                stage,
                input,
                user: who.name.clone(),
            },
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}
