//! Server groups, clusters, instances, load balancers and logs through the API: reads across
//! every configured provider, and the operations `ferry scale|enable|disable|rollback|destroy`
//! use. Pipelines do the same through the server-group stage types; these routes are for
//! people.

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use ferry_provider::{Capacity, Provider, ProviderError, ServerGroup};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// `POST /api/v1/serverGroups/{account}/{name}/resize` with `{capacity: {min,max,desired}}` or `{desired: N}`.
pub async fn resize(
    State(s): State<AppState>,
    Path((account, name)): Path<(String, String)>,
    crate::routes::Body(body): crate::routes::Body,
) -> Result<StatusCode, ApiError> {
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
    provider_for(&s, &account)?
        .resize(&account, &name, capacity)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /api/v1/serverGroups/{account}/{name}/enable` (a weight of 0 becomes 100)
pub async fn enable(
    State(s): State<AppState>,
    Path((account, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let p = provider_for(&s, &account)?;
    if p.server_group(&account, &name)
        .await?
        .is_some_and(|g| g.weight == 0)
    {
        p.set_weight(&account, &name, 100).await?;
    }
    p.enable(&account, &name).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /api/v1/serverGroups/{account}/{name}/disable` (returns once drained)
pub async fn disable(
    State(s): State<AppState>,
    Path((account, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    provider_for(&s, &account)?.disable(&account, &name).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `DELETE /api/v1/serverGroups/{account}/{name}`
pub async fn destroy(
    State(s): State<AppState>,
    Path((account, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    provider_for(&s, &account)?.destroy(&account, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/serverGroups/{account}/{name}/rollback`: enables the server group before
/// `name` in its cluster (resized to `name`'s capacity if it was scaled down), waits until it is
/// up, then disables `name`. Refuses when there is nothing to roll back to.
pub async fn rollback(
    State(s): State<AppState>,
    Path((account, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = provider_for(&s, &account)?;
    let Some(current) = p.server_group(&account, &name).await? else {
        return Err(ApiError::NotFound(format!(
            "no server group \"{name}\" in account \"{account}\""
        )));
    };
    let cluster = current.cluster();
    let previous = p
        .server_groups(&current.moniker.app)
        .await?
        .into_iter()
        .filter(|g| {
            g.account == account && g.cluster() == cluster && g.sequence() < current.sequence()
        })
        .max_by_key(ServerGroup::sequence)
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "{name} is the oldest server group of {cluster}; nothing to roll back to"
            ))
        })?;
    if previous.capacity.desired < current.capacity.desired {
        p.resize(&account, &previous.name, current.capacity).await?;
    }
    // A rolling deploy leaves the old server group at weight 0: give it full weight back.
    if previous.weight == 0 {
        p.set_weight(&account, &previous.name, 100).await?;
    }
    p.enable(&account, &previous.name).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match p.server_group(&account, &previous.name).await? {
            Some(g) if g.is_up() => break,
            _ if tokio::time::Instant::now() > deadline => {
                return Err(ApiError::Conflict(format!(
                    "{} did not become healthy within 120 s; {name} keeps serving",
                    previous.name
                )));
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
    p.disable(&account, &name).await?;
    Ok(Json(json!({"enabled": previous.name, "disabled": name})))
}
