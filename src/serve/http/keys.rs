//! `/v1/keys`: the control panel's API keys over HTTP (`ledger keys` on
//! the command line). A key is shown once, when it is made; rotation is
//! adding a new key, then revoking the old.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::{answer, authenticate, body, json_body, json_response, panel_only, unavailable, AppState};
use crate::engine::command::{tenant_id, Rejection};
use crate::serve::keys::Role;

/// What `POST /v1/keys` takes: a tenant key names its tenant, the panel's
/// none.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    tenant: Option<String>,
    role: Role,
}

/// `POST /v1/keys`: a new key, shown this once (the panel key only).
pub async fn add(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            panel_only(&authenticate(&state, &headers).await?)?;
            let request: NewKey = json_body(&body(raw)?)?;
            match (&request.tenant, request.role) {
                (Some(tenant), Role::User | Role::Admin) => tenant_id(tenant)?,
                (None, Role::Panel) => {}
                _ => {
                    return Err(Rejection::malformed(
                        "a user or admin key names its tenant; the panel's names none",
                    ))
                }
            }
            let (entry, key) =
                state.keys.store().add(request.tenant.as_deref(), request.role).await.map_err(unavailable)?;
            let added = json!({"id": entry.id, "key": key, "tenant": entry.tenant, "role": entry.role});
            Ok(json_response(StatusCode::OK, &added))
        }
        .await,
    )
}

/// `GET /v1/keys`: every key (never a key itself, nor its hash).
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(
        async {
            panel_only(&authenticate(&state, &headers).await?)?;
            let keys = state.keys.store().list().await.map_err(unavailable)?;
            let keys: Vec<_> = keys
                .iter()
                .map(|k| json!({"id": k.id, "tenant": k.tenant, "role": k.role, "created": k.created}))
                .collect();
            Ok(json_response(StatusCode::OK, &json!({ "keys": keys })))
        }
        .await,
    )
}

/// `DELETE /v1/keys/{id}`: revokes a key; this instance refuses it at once,
/// every other `serve` of the ledger within seconds.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    answer(
        async {
            panel_only(&authenticate(&state, &headers).await?)?;
            let no_such = || Rejection::new("not_found", "no such key (GET /v1/keys lists them)");
            let Path(id) = id.map_err(|_| no_such())?;
            if !state.keys.revoke(&id).await.map_err(unavailable)? {
                return Err(no_such());
            }
            Ok(json_response(StatusCode::OK, &json!({"id": id, "revoked": true})))
        }
        .await,
    )
}
