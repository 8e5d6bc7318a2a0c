//! `/v1/webhooks`: webhook endpoints over HTTP (`ledger webhooks` on the
//! command line), with the panel key (any tenant, or every tenant) or a
//! tenant admin key (its own tenant only); and a tenant's recent
//! notifications with how each went to each endpoint
//! (`/v1/tenants/{tenant}/notifications`, what the console shows).
//!
//! An endpoint registered with a tenant key is held to the serve's egress
//! rules at registration as at every delivery: on the allowlist, and
//! public at every address it resolves to unless private ones are
//! allowed (`notify::egress`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use events::Meter;
use serde_json::{json, Value};

use super::{
    answer, authenticate, body, json_body, json_response, params, tenant_of, unavailable, AppState, NoParams,
};
use crate::engine::command::{tenant_id, Rejection};
use crate::notify::admin::{endpoint_json, new_endpoint, retries, types};
use crate::notify::egress::check_registration;
use crate::notify::store::{DeliveryRecord, Endpoint};
use crate::notify::{render, Notification};
use crate::serve::keys::{KeyEntry, Role};

/// How many of a tenant's newest notifications its route shows.
const RECENT: usize = 50;

/// Whose endpoints a key manages: `None` every tenant's (the panel),
/// `Some(tenant)` its own tenant's (a tenant admin); a user key none.
fn manages(key: &KeyEntry) -> Result<Option<&str>, Rejection> {
    match (key.role, key.tenant.as_deref()) {
        (Role::Panel, _) => Ok(None),
        (Role::Admin, Some(tenant)) => Ok(Some(tenant)),
        _ => Err(Rejection::new("forbidden", "webhooks are for the panel key or a tenant admin key")),
    }
}

/// What `POST /v1/webhooks` takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    url: String,
    tenant: Option<String>,
    types: Option<Vec<String>>,
    retries: Option<Vec<String>>,
}

/// `POST /v1/webhooks`: registers an endpoint, which receives the
/// notifications recorded from now on; its secret is shown this once. A
/// refused destination stores nothing.
pub async fn add(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let key = authenticate(&state, &headers).await?;
            let own = manages(&key)?;
            let request: NewEndpoint = json_body(&body(raw)?)?;
            if let Some(tenant) = &request.tenant {
                tenant_id(tenant)?;
            }
            let tenant = match (own, request.tenant) {
                (Some(own), Some(other)) if other != own => {
                    return Err(Rejection::new(
                        "forbidden",
                        format!("this key cannot register for tenant {other}"),
                    ))
                }
                // A tenant admin's endpoint is its tenant's, named or not.
                (Some(own), _) => Some(own.to_string()),
                (None, tenant) => tenant,
            };
            let types = types(request.types.as_deref()).map_err(Rejection::malformed)?;
            let retries_ms = retries(request.retries.as_deref()).map_err(Rejection::malformed)?;
            let by_tenant = own.is_some();
            check_registration(&request.url, &state.egress, by_tenant).await?;
            let heads = state.core.log.heads().await.map_err(unavailable)?;
            let endpoint = new_endpoint(&request.url, tenant, types, retries_ms, &heads, by_tenant)
                .map_err(unavailable)?;
            state.notify.put_endpoint(&endpoint).await.map_err(unavailable)?;
            let added = json!({"id": endpoint.id, "secret": endpoint.secrets[0].secret});
            Ok(json_response(StatusCode::OK, &added))
        }
        .await,
    )
}

/// The endpoints a key manages.
async fn managed(state: &AppState, key: &KeyEntry) -> Result<Vec<Endpoint>, Rejection> {
    let own = manages(key)?;
    let endpoints = state.notify.endpoints().await.map_err(unavailable)?;
    Ok(endpoints.into_iter().filter(|e| own.is_none() || e.tenant.as_deref() == own).collect())
}

/// `GET /v1/webhooks`: the endpoints the key manages (never a secret).
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(
        async {
            let key = authenticate(&state, &headers).await?;
            let endpoints: Vec<Value> = managed(&state, &key).await?.iter().map(endpoint_json).collect();
            Ok(json_response(StatusCode::OK, &json!({ "webhooks": endpoints })))
        }
        .await,
    )
}

/// `DELETE /v1/webhooks/{id}`: removes an endpoint the key manages; any
/// other id is 404, so a tenant learns nothing of others' endpoints.
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    answer(
        async {
            let key = authenticate(&state, &headers).await?;
            let no_such =
                || Rejection::new("not_found", "no such webhook endpoint (GET /v1/webhooks lists them)");
            let Path(id) = id.map_err(|_| no_such())?;
            if !managed(&state, &key).await?.iter().any(|e| e.id == id) {
                return Err(no_such());
            }
            if !state.notify.remove_endpoint(&id).await.map_err(unavailable)? {
                return Err(no_such());
            }
            Ok(json_response(StatusCode::OK, &json!({"id": id, "removed": true})))
        }
        .await,
    )
}

/// `GET /v1/tenants/{tenant}/notifications`: the tenant's alert thresholds
/// and its newest notifications, each with its delivery state at every
/// endpoint that receives it. A tenant key sees its tenant's endpoints;
/// the panel every one (those for every tenant are the operator's).
pub async fn notifications(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<NoParams>, QueryRejection>,
) -> Response {
    answer(
        async {
            let (key, tenant) = tenant_of(&state, &headers, path).await?;
            params(query)?;
            let (alerts, rows) = state.core.notifications(&tenant, RECENT).await?;
            let notifications: Vec<Notification> = rows.iter().map(render).collect();
            let endpoints = state.notify.endpoints().await.map_err(unavailable)?;
            let endpoints: Vec<Endpoint> = endpoints
                .into_iter()
                .filter(|e| key.role == Role::Panel || e.tenant.as_deref() == Some(tenant.as_str()))
                .filter(|e| notifications.iter().any(|n| e.receives(n)))
                .collect();
            // The newest record of each notification at each endpoint.
            let mut last: HashMap<String, DeliveryRecord> = HashMap::new();
            for endpoint in &endpoints {
                for record in state.notify.deliveries(&endpoint.id).await.map_err(unavailable)? {
                    last.insert(record.webhook_id.clone(), record);
                }
            }
            let notifications: Vec<Value> = notifications
                .iter()
                .map(|n| {
                    let deliveries: Vec<Value> = endpoints
                        .iter()
                        .filter(|e| e.receives(n))
                        .map(|e| match last.get(&n.webhook_id(&e.id)) {
                            Some(r) => json!({"endpoint": e.id, "outcome": r.outcome, "attempts": r.attempt,
                                "status": r.status, "error": r.error, "at": r.at}),
                            None => json!({"endpoint": e.id, "outcome": "pending", "attempts": 0,
                                "status": null, "error": null, "at": null}),
                        })
                        .collect();
                    json!({"id": n.id, "type": n.kind, "timestamp": n.timestamp, "data": n.data, "deliveries": deliveries})
                })
                .collect();
            let alerts =
                json!({"tokens": alerts.thresholds(Meter::Tokens), "storage": alerts.thresholds(Meter::Storage)});
            let answer = json!({"tenant": tenant, "alerts": alerts, "notifications": notifications});
            Ok(json_response(StatusCode::OK, &answer))
        }
        .await,
    )
}
