//! The HTTP front end (the spec's "HTTP contract"): the same commands and
//! views as the NATS service, with the actor taken from an API key, plus
//! CloudEvents ingest, `/healthz`, `/metrics`, the OpenAPI document and the
//! console.
//!
//! Every route is one row of [`routes::ROUTES`]: the router and the OpenAPI
//! document are both built from that table, so neither can list a route
//! the other lacks.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{json, Value};

use super::core::{fields, parse_batch, submission, Core, QueryView};
use super::keys::{KeyEntry, KeyRing, Role};
use crate::engine::command::{own_key, parse_at, tenant_id, Cause, Rejection, Submission};
use crate::engine::Reply;
use crate::report::{rejection_json, reply_json};

mod cloudevents;
pub mod routes;

/// Bodies past this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// What a 503 asks the client to wait before trying again, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

/// What every handler reads.
pub struct Http {
    pub core: Arc<Core>,
    pub keys: Arc<KeyRing>,
}

pub type AppState = Arc<Http>;

/// Serves the API on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, core: Arc<Core>, keys: Arc<KeyRing>) {
    let app = routes::router(Arc::new(Http { core, keys }));
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "the HTTP API stopped");
    }
}

/// An RFC 9457 problem: `application/problem+json` with the spec's fields
/// and everything the NATS reply carries for the same rejection.
pub fn problem(rejection: &Rejection) -> Response {
    let status = status_of(rejection);
    let mut body = rejection_json(rejection);
    body["type"] = json!(format!("urn:ledger:{}", rejection.code));
    body["title"] = json!(title(rejection.code));
    body["status"] = json!(status.as_u16());
    body["detail"] = json!(rejection.message);
    let mut response = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    response
}

/// The spec's status for a rejection: 401 for a missing or unknown key, 403
/// `forbidden`, 413 a body too large, 503 `unavailable`; otherwise 400 for
/// what the request alone shows ([`Cause::Request`]), and for what the
/// ledger's state decides 404 (`unknown_*`, `not_subscribed`) or 409 (every
/// other conflict, and what only a comparison of two fields shows,
/// [`Cause::Combination`], which no schema can say).
pub fn status_of(rejection: &Rejection) -> StatusCode {
    match rejection.code {
        "unauthorized" => StatusCode::UNAUTHORIZED,
        "forbidden" => StatusCode::FORBIDDEN,
        "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ if rejection.cause == Cause::Request => StatusCode::BAD_REQUEST,
        "not_subscribed" | "not_found" => StatusCode::NOT_FOUND,
        c if c.starts_with("unknown_") => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    }
}

/// "storage_quota_exceeded" -> "Storage quota exceeded".
fn title(code: &str) -> String {
    let text = code.replace('_', " ");
    let mut chars = text.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, serde_json::to_vec(body).unwrap_or_default()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A decision as HTTP: a recorded decision (accepted, duplicate, or a
/// quota or token denial) is 200 with the `apply` object; a rejection
/// (nothing recorded) is a problem; an unknown outcome is 503.
fn decision(reply: &Reply) -> Response {
    match reply {
        Reply::Ok { .. } | Reply::Rejected { seq: Some(_), .. } => {
            json_response(StatusCode::OK, &reply_json(reply))
        }
        Reply::Rejected { rejection, seq: None } => problem(rejection),
        Reply::Failed { message } => problem(&Rejection::new("unavailable", message.clone())),
    }
}

/// The key a request presents (`Authorization: Bearer <key>`), or 401.
fn authenticate(state: &Http, headers: &HeaderMap) -> Result<KeyEntry, Response> {
    let unauthorized = |message: &str| {
        let mut response = problem(&Rejection::new("unauthorized", message));
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    };
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(unauthorized("no API key: send Authorization: Bearer <key>"));
    };
    // The scheme is case-insensitive (RFC 9110).
    let key = match value.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
        _ => return Err(unauthorized("the Authorization header must be Bearer <key>")),
    };
    state.keys.check(key).ok_or_else(|| unauthorized("unknown or revoked API key"))
}

/// A key may act on `tenant` when it is that tenant's, or the panel's.
fn may_reach(key: &KeyEntry, tenant: &str) -> Result<(), Response> {
    match (&key.role, &key.tenant) {
        (Role::Panel, _) => Ok(()),
        (_, Some(own)) if own == tenant => Ok(()),
        _ => Err(problem(&Rejection::new("forbidden", format!("this key cannot reach tenant {tenant}")))),
    }
}

fn panel_only(key: &KeyEntry) -> Result<(), Response> {
    match key.role {
        Role::Panel => Ok(()),
        _ => Err(problem(&Rejection::new("forbidden", "this route is for the control panel key only"))),
    }
}

/// The body, or 413 past [`MAX_BODY_BYTES`].
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Response> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            problem(&Rejection::new("too_large", format!("the body is over {MAX_BODY_BYTES} bytes")))
        } else {
            problem(&Rejection::malformed(format!("could not read the body: {}", e.body_text())))
        }
    })
}

fn either(result: Result<Response, Response>) -> Response {
    result.unwrap_or_else(|response| response)
}

/// `POST /v1/tenants/{tenant}/{command}` (and `batch`).
pub async fn tenant_command(
    State(state): State<AppState>,
    Path((tenant, command)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    either(
        async {
            let key = authenticate(&state, &headers)?;
            tenant_id(&tenant).map_err(|r| problem(&r))?;
            may_reach(&key, &tenant)?;
            decide(&state, &key, Some(&tenant), &command, &headers, body(raw)?).await
        }
        .await,
    )
}

/// `POST /v1/admin/{command}` (and `batch`): the panel key only.
pub async fn admin_command(
    State(state): State<AppState>,
    Path(command): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    either(
        async {
            let key = authenticate(&state, &headers)?;
            panel_only(&key)?;
            decide(&state, &key, None, &command, &headers, body(raw)?).await
        }
        .await,
    )
}

/// A command (or `batch`) of an authorized request, as the key's actor,
/// about `tenant` (`None`: the body names it).
async fn decide(
    state: &Http,
    key: &KeyEntry,
    tenant: Option<&str>,
    command: &str,
    headers: &HeaderMap,
    raw: Bytes,
) -> Result<Response, Response> {
    let actor = key.actor();
    if command == "batch" {
        let items = parse_batch(tenant, &actor, &raw).map_err(|r| problem(&r))?;
        return Ok(json_response(StatusCode::OK, &state.core.batch(items).await));
    }
    let fields = fields(&raw).and_then(|f| with_idempotency_header(headers, command, f));
    let submission = parsed(state, fields.and_then(|f| submission(tenant, &actor, command, f)))?;
    Ok(decision(&state.core.command(submission).await))
}

/// The `Idempotency-Key` header as the command's `idempotency_key` field.
/// Commands keyed by a field of their own (`request`, `file`, `purchase`)
/// ignore it, so a client may send the header with every command.
fn with_idempotency_header(
    headers: &HeaderMap,
    command: &str,
    mut fields: serde_json::Map<String, Value>,
) -> Result<serde_json::Map<String, Value>, Rejection> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(fields) };
    if own_key(command).is_some() {
        return Ok(fields);
    }
    let key = value
        .to_str()
        .map_err(|_| Rejection::malformed("the Idempotency-Key header must be printable ASCII"))?
        .to_string();
    match fields.get("idempotency_key") {
        Some(Value::String(body)) if *body != key => {
            Err(Rejection::malformed("the Idempotency-Key header and the body's idempotency_key differ"))
        }
        _ => {
            fields.insert("idempotency_key".into(), Value::String(key));
            Ok(fields)
        }
    }
}

fn parsed(state: &Http, submission: Result<Submission, Rejection>) -> Result<Submission, Response> {
    submission.map_err(|rejection| {
        state.core.metrics.malformed();
        problem(&rejection)
    })
}

/// `POST /v1/events`: CloudEvents, one or a batch.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    either(
        async {
            let key = authenticate(&state, &headers)?;
            let raw = body(raw)?;
            let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let parsed = cloudevents::parse(content_type, &raw).map_err(|r| problem(&r))?;
            // Every event must be about a tenant the key reaches, or nothing runs.
            for tenant in parsed.iter().filter_map(|e| e.as_ref().ok()).map(|e| e.tenant.as_str()) {
                may_reach(&key, tenant)?;
            }
            let actor = key.actor();
            let items = parsed
                .into_iter()
                .map(|event| event.and_then(|e| submission(Some(&e.tenant), &actor, e.command, e.fields)))
                .collect();
            Ok(json_response(StatusCode::OK, &state.core.batch(items).await))
        }
        .await,
    )
}

/// The `?at=` and `?explain=` of a view.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewParams {
    at: Option<String>,
    explain: Option<bool>,
}

async fn view(
    state: AppState,
    headers: HeaderMap,
    tenant: String,
    params: Result<Query<ViewParams>, axum::extract::rejection::QueryRejection>,
    view: impl FnOnce(bool) -> QueryView,
) -> Response {
    either(
        async {
            let key = authenticate(&state, &headers)?;
            tenant_id(&tenant).map_err(|r| problem(&r))?;
            may_reach(&key, &tenant)?;
            let Query(params) =
                params.map_err(|e| problem(&Rejection::malformed(format!("query: {}", e.body_text()))))?;
            let at_us = params.at.as_deref().map(parse_at).transpose().map_err(|r| problem(&r))?;
            let answer = state.core.query(&tenant, view(params.explain.unwrap_or(false)), at_us).await;
            answer.map(|v| json_response(StatusCode::OK, &v)).map_err(|r| problem(&r))
        }
        .await,
    )
}

/// `GET /v1/tenants/{tenant}/usage[?at=]`.
pub async fn usage(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    params: Result<Query<ViewParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    view(state, headers, tenant, params, |_| QueryView::Usage).await
}

/// `GET /v1/tenants/{tenant}/invoice[?at=][&explain=true]`.
pub async fn invoice(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    params: Result<Query<ViewParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    view(state, headers, tenant, params, |explain| QueryView::Invoice { explain }).await
}

/// `GET /v1/tenants/{tenant}/invoices`.
pub async fn invoices(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    params: Result<Query<ViewParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    view(state, headers, tenant, params, |_| QueryView::Invoices).await
}

/// `GET /v1/tenants`: every tenant with plan, status, seats and usage (the
/// panel key only).
pub async fn tenants(State(state): State<AppState>, headers: HeaderMap) -> Response {
    either(
        async {
            panel_only(&authenticate(&state, &headers)?)?;
            let tenants = state.core.tenants().await.map_err(|r| problem(&r))?;
            Ok(json_response(StatusCode::OK, &json!({ "tenants": tenants })))
        }
        .await,
    )
}

/// `GET /v1/me`: whom the key speaks for (the console asks this first).
pub async fn me(State(state): State<AppState>, headers: HeaderMap) -> Response {
    either(
        async {
            let key = authenticate(&state, &headers)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"id": key.id, "tenant": key.tenant, "role": key.role, "actor": key.actor().label()}),
            ))
        }
        .await,
    )
}

/// `GET /healthz`: 200 when the views include the log as it stood when
/// asked (within a second), else 503.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let health = state.core.ready().await;
    let body = json!({"status": health.status(), "log_head": health.log_head, "views_at": health.views_at});
    let mut response =
        json_response(if health.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &body);
    if !health.ready() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    response
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let health = state.core.health().await;
    let text = state.core.metrics.render(&health);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> Response {
    json_response(StatusCode::OK, &routes::openapi())
}

/// `GET /`: the console, shipped inside the binary.
pub async fn console() -> Html<&'static str> {
    Html(include_str!("console.html"))
}

/// Any other path: a problem, like every other error.
pub async fn not_found() -> Response {
    problem(&Rejection::new("not_found", "no such route; see /v1/openapi.json"))
}
