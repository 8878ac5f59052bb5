//! Server groups, clusters, instances, load balancers and logs through the API: reads across
//! every configured provider, and the operations `ferry scale|enable|disable|rollback|destroy`
//! use.
//!
//! The operations are **orchestrations**: a handler checks what it can up front (the account
//! and server group exist, the capacity is sound, there is something to roll back to) so the
//! caller gets 400/404/409, then starts one server-group stage (`resizeServerGroup`,
//! `enableServerGroup`, `disableServerGroup`, `rollbackServerGroup` with
//! `PREVIOUS_SERVER_GROUP`, `destroyServerGroup`) as the caller, through
//! [`ferry_engine::EngineHandle::run_orchestration`], and by default waits for it to end. The
//! stage does the work, so it is durable (a restart of Ferry resumes it), visible as an
//! execution, and written once, shared with pipelines. `?wait=false` answers `202 {id}` at once.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::routes::Caller;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use ferry_core::{Execution, Problems, Status};
use ferry_engine::{EngineError, ExecutionEvent, RunRequest};
use ferry_provider::{Capacity, Provider, ProviderError, ServerGroup};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::NotFound(m) => ApiError::NotFound(m),
            ProviderError::Invalid(m) => ApiError::BadRequest(m),
            ProviderError::Conflict(m) => ApiError::Conflict(m),
            ProviderError::Backend(m) => ApiError::Unavailable(m),
        }
    }
}

/// The provider serving `account`.
pub fn provider_for(s: &AppState, account: &str) -> Result<Arc<dyn Provider>, ApiError> {
    s.providers
        .iter()
        .find(|p| p.accounts().iter().any(|a| a == account))
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no provider serves account \"{account}\"")))
}

async fn all_server_groups(s: &AppState, app: &str) -> Result<Vec<ServerGroup>, ApiError> {
    let mut out = Vec::new();
    for p in &s.providers {
        out.extend(p.server_groups(app).await?);
    }
    Ok(out)
}

/// `GET /api/v1/applications/{app}/serverGroups`
pub async fn server_groups(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(all_server_groups(&s, &app).await?)))
}

/// `GET /api/v1/applications/{app}/clusters`
pub async fn clusters(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut by: BTreeMap<(String, String), Vec<&ServerGroup>> = BTreeMap::new();
    let groups = all_server_groups(&s, &app).await?;
    for g in &groups {
        by.entry((g.account.clone(), g.cluster()))
            .or_default()
            .push(g);
    }
    let out: Vec<Value> = by
        .into_iter()
        .map(|((account, cluster), gs)| {
            json!({
                "name": cluster,
                "account": account,
                "provider": gs.first().map(|g| g.provider.clone()),
                "serverGroups": gs.iter().map(|g| json!({
                    "name": g.name, "enabled": g.enabled, "weight": g.weight,
                    "desired": g.capacity.desired, "healthy": g.healthy(),
                    "version": g.artifact.version,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!(out)))
}

/// `GET /api/v1/applications/{app}/instances`
pub async fn instances(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let groups = all_server_groups(&s, &app).await?;
    let out: Vec<Value> = groups
        .iter()
        .flat_map(|g| {
            g.instances
                .iter()
                .map(move |i| json!({"account": g.account, "serverGroup": g.name, "instance": i}))
        })
        .collect();
    Ok(Json(json!(out)))
}

/// `GET /api/v1/applications/{app}/loadBalancers`
pub async fn load_balancers(
    State(s): State<AppState>,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for p in &s.providers {
        out.extend(p.load_balancers(&app).await?);
    }
    Ok(Json(json!(out)))
}

/// `GET /api/v1/serverGroups/{account}/{name}`
pub async fn server_group(
    State(s): State<AppState>,
    Path((account, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = provider_for(&s, &account)?;
    match p.server_group(&account, &name).await? {
        Some(g) => Ok(Json(json!(g))),
        None => Err(ApiError::NotFound(format!(
            "no server group \"{name}\" in account \"{account}\""
        ))),
    }
}

#[derive(Deserialize)]
pub struct LogQuery {
    tail: Option<usize>,
    instance: Option<String>,
}

/// `GET /api/v1/serverGroups/{account}/{name}/logs?tail=&instance=`
pub async fn logs(
    State(s): State<AppState>,
    Path((account, name)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    let p = provider_for(&s, &account)?;
    let lines = p
        .logs(
            &account,
            &name,
            q.instance.as_deref(),
            q.tail.unwrap_or(200).min(10_000),
        )
        .await?;
    Ok(Json(json!(lines)))
}

// ----- operations (orchestrations) -----

/// The trigger type of the orchestrations these routes start.
pub const TRIGGER_TYPE: &str = "api";

/// How often a waiting request looks at its orchestration even without an event.
const RECHECK: Duration = Duration::from_secs(5);

/// `?wait=` of the operations: `true` (default) answers when the orchestration ends, `false`
/// answers `202 {id}` at once.
#[derive(Deserialize)]
pub struct OperationQuery {
    wait: Option<String>,
}

impl OperationQuery {
    fn wait(&self) -> Result<bool, ApiError> {
        match self.wait.as_deref() {
            None | Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ApiError::BadRequest(format!(
                "wait must be true or false, not \"{other}\""
            ))),
        }
    }
}

/// The server group an operation acts on, looked up before the orchestration starts.
struct Operated {
    provider: Arc<dyn Provider>,
    group: ServerGroup,
}

/// The provider and server group, or 404.
async fn look_up(s: &AppState, account: &str, name: &str) -> Result<Operated, ApiError> {
    let provider = provider_for(s, account)?;
    match provider.server_group(account, name).await? {
        Some(group) => Ok(Operated { provider, group }),
        None => Err(ApiError::NotFound(format!(
            "no server group \"{name}\" in account \"{account}\""
        ))),
    }
}

impl Operated {
    /// The one stage of the orchestration: `stage_type` on this server group by name, plus
    /// `config`.
    fn stage(&self, stage_type: &str, name: &str, config: Value) -> Value {
        let mut stage = json!({
            "refId": "1",
            "type": stage_type,
            "name": name,
            "cloudProvider": self.provider.kind(),
            "credentials": self.group.account,
            "application": self.group.moniker.app,
            "serverGroupName": self.group.name,
        });
        if let (Some(s), Value::Object(extra)) = (stage.as_object_mut(), config) {
            s.extend(extra);
        }
        stage
    }
}

/// Starts `stage` as an orchestration for `who`; with `wait`, answers `200` with `answer` once
/// it SUCCEEDED (or the error of its failed stage), else `202 {id}` at once.
async fn orchestrate(
    s: &AppState,
    who: &Principal,
    wait: bool,
    target: &Operated,
    description: String,
    stage: Value,
    answer: impl FnOnce(&Execution) -> Map<String, Value>,
) -> Result<Response, ApiError> {
    if s.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable(
            "Ferry is shutting down; try again when it is back".into(),
        ));
    }
    // Subscribe before starting, so the end cannot slip between the start and the wait.
    let events = s.engine.subscribe();
    let request = RunRequest {
        trigger_type: TRIGGER_TYPE.into(),
        user: who.name.clone(),
        ..RunRequest::default()
    };
    let id = s
        .engine
        .run_orchestration(
            &target.group.moniker.app,
            &description,
            vec![stage],
            request,
        )
        .await
        .map_err(start_error)?;
    if !wait {
        return Ok((StatusCode::ACCEPTED, Json(json!({"id": id}))).into_response());
    }
    let Some(e) = wait_for_end(s, &id, events).await else {
        return Err(ApiError::OperationInterrupted { execution_id: id });
    };
    if e.status != Status::Succeeded {
        return Err(ApiError::OperationFailed {
            message: failure_message(&e),
            execution_id: id,
        });
    }
    let mut body = Map::new();
    body.insert("id".into(), json!(id));
    body.insert("status".into(), json!(e.status));
    body.insert("account".into(), json!(target.group.account));
    body.insert("serverGroup".into(), json!(target.group.name));
    body.extend(answer(&e));
    Ok((StatusCode::OK, Json(Value::Object(body))).into_response())
}

/// An orchestration refused at its start. Its stages come only from the request's values (the
/// capacity, the names), so invalid stages are a bad request, told without the stage prefix.
fn start_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Invalid(Problems(problems)) => ApiError::BadRequest(
            problems
                .iter()
                .map(|p| {
                    let path = p.path.strip_prefix("stages[0].").unwrap_or(&p.path);
                    format!("{path}: {}", p.message)
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => other.into(),
    }
}

/// Waits until the execution completes. `None` when Ferry began shutting down first (the
/// orchestration continues when it starts again).
async fn wait_for_end(
    s: &AppState,
    id: &str,
    mut events: broadcast::Receiver<ExecutionEvent>,
) -> Option<Execution> {
    loop {
        match s.engine.get_execution(id).await {
            Ok(Some(e)) if e.status.is_complete() => return Some(e),
            Ok(_) => {}
            // The store may come back; the next look tries again.
            Err(err) => {
                tracing::warn!(execution = id, error = %err, "cannot read an orchestration")
            }
        }
        loop {
            if !s.engine.is_running() {
                return None;
            }
            let next = tokio::select! {
                _ = s.shutdown.cancelled() => return None,
                r = tokio::time::timeout(RECHECK, events.recv()) => r,
            };
            match next {
                // Only the commit that completes this execution needs a look.
                Ok(Ok(ev)) if ev.execution_id != id || !ev.status.is_complete() => continue,
                Ok(Err(RecvError::Closed)) => return None,
                // Its completion, missed events, or the periodic look.
                _ => break,
            }
        }
    }
}

/// Why a completed orchestration did not succeed: its failed stage's error, else how it ended.
fn failure_message(e: &Execution) -> String {
    let stage_error = e.stages.iter().find_map(|st| {
        st.context
            .get("exception")
            .and_then(|x| x.pointer("/details/error"))
            .and_then(Value::as_str)
    });
    if let Some(error) = stage_error {
        return error.to_string();
    }
    if e.canceled {
        let by = e.canceled_by.as_deref().unwrap_or("someone");
        return match &e.cancellation_reason {
            Some(reason) => format!("the orchestration was canceled by {by}: {reason}"),
            None => format!("the orchestration was canceled by {by}"),
        };
    }
    format!("the orchestration ended {}", e.status)
}

/// A value the orchestration's stage recorded in its context (`op.capacity`, `op.restore`…).
fn recorded(e: &Execution, key: &str) -> Value {
    e.stages
        .first()
        .and_then(|st| st.context.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

/// `POST /api/v1/serverGroups/{account}/{name}/resize` with `{capacity: {min,max,desired}}` or
/// `{desired: N}`: a `resizeServerGroup` orchestration, which waits until the server group is up
/// at the new capacity.
pub async fn resize(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((account, name)): Path<(String, String)>,
    Query(q): Query<OperationQuery>,
    crate::routes::Body(body): crate::routes::Body,
) -> Result<Response, ApiError> {
    let wait = q.wait()?;
    let capacity = match (
        body.get("capacity"),
        body.get("desired").and_then(Value::as_u64),
    ) {
        (Some(c), _) => serde_json::from_value::<Capacity>(c.clone()).map_err(|e| {
            ApiError::BadRequest(format!("capacity must be {{min, max, desired}}: {e}"))
        })?,
        (None, Some(n)) => Capacity::fixed(
            u32::try_from(n).map_err(|_| ApiError::BadRequest("desired is too large".into()))?,
        ),
        _ => {
            return Err(ApiError::BadRequest(
                "give {capacity: {min, max, desired}} or {desired: N}".into(),
            ));
        }
    };
    if capacity.min > capacity.max
        || capacity.desired < capacity.min
        || capacity.desired > capacity.max
    {
        return Err(ApiError::BadRequest(format!(
            "capacity must have min <= desired <= max, not min {}, desired {}, max {}",
            capacity.min, capacity.desired, capacity.max
        )));
    }
    let target = look_up(&s, &account, &name).await?;
    let stage = target.stage(
        "resizeServerGroup",
        "Resize",
        json!({"action": "scale_exact", "capacity": capacity}),
    );
    let description = format!("Resize {name} to {}", capacity.desired);
    orchestrate(&s, &who, wait, &target, description, stage, |e| {
        let mut out = Map::new();
        out.insert("capacity".into(), recorded(e, "op.capacity"));
        out
    })
    .await
}

/// `POST /api/v1/serverGroups/{account}/{name}/enable`: an `enableServerGroup` orchestration (a
/// weight of 0 becomes 100; it waits until the server group is up).
pub async fn enable(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((account, name)): Path<(String, String)>,
    Query(q): Query<OperationQuery>,
) -> Result<Response, ApiError> {
    let wait = q.wait()?;
    let target = look_up(&s, &account, &name).await?;
    let stage = target.stage("enableServerGroup", "Enable", json!({}));
    orchestrate(
        &s,
        &who,
        wait,
        &target,
        format!("Enable {name}"),
        stage,
        |_| Map::new(),
    )
    .await
}

/// `POST /api/v1/serverGroups/{account}/{name}/disable`: a `disableServerGroup` orchestration
/// (ends once drained).
pub async fn disable(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((account, name)): Path<(String, String)>,
    Query(q): Query<OperationQuery>,
) -> Result<Response, ApiError> {
    let wait = q.wait()?;
    let target = look_up(&s, &account, &name).await?;
    let stage = target.stage("disableServerGroup", "Disable", json!({}));
    orchestrate(
        &s,
        &who,
        wait,
        &target,
        format!("Disable {name}"),
        stage,
        |_| Map::new(),
    )
    .await
}

/// `DELETE /api/v1/serverGroups/{account}/{name}`: a `destroyServerGroup` orchestration
/// (disables, then destroys).
pub async fn destroy(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((account, name)): Path<(String, String)>,
    Query(q): Query<OperationQuery>,
) -> Result<Response, ApiError> {
    let wait = q.wait()?;
    let target = look_up(&s, &account, &name).await?;
    let stage = target.stage("destroyServerGroup", "Destroy", json!({}));
    orchestrate(
        &s,
        &who,
        wait,
        &target,
        format!("Destroy {name}"),
        stage,
        |_| Map::new(),
    )
    .await
}

/// `POST /api/v1/serverGroups/{account}/{name}/rollback`: a `rollbackServerGroup` orchestration
/// (`PREVIOUS_SERVER_GROUP`): the server group before `name` in its cluster is resized to
/// `name`'s capacity if it has fewer instances, given weight 100 if it had 0, enabled and waited
/// for; only then is `name` disabled. Refused (409) when `name` is the oldest of its cluster.
pub async fn rollback(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((account, name)): Path<(String, String)>,
    Query(q): Query<OperationQuery>,
) -> Result<Response, ApiError> {
    let wait = q.wait()?;
    let target = look_up(&s, &account, &name).await?;
    // The stage picks the server group to go back to when it runs; this only refuses early
    // (and with 409) when there can be none.
    let current = &target.group;
    let cluster = current.cluster();
    let has_older = target
        .provider
        .server_groups(&current.moniker.app)
        .await?
        .iter()
        .any(|g| {
            g.account == account && g.cluster() == cluster && g.sequence() < current.sequence()
        });
    if !has_older {
        return Err(ApiError::Conflict(format!(
            "{name} is the oldest server group of {cluster}; nothing to roll back to"
        )));
    }
    let stage = target.stage(
        "rollbackServerGroup",
        "Roll back",
        json!({"rollbackType": "PREVIOUS_SERVER_GROUP"}),
    );
    orchestrate(
        &s,
        &who,
        wait,
        &target,
        format!("Roll back {name}"),
        stage,
        |e| {
            let mut out = Map::new();
            out.insert("enabled".into(), recorded(e, "op.restore"));
            out.insert("disabled".into(), recorded(e, "op.rollback"));
            out
        },
    )
    .await
}
