//! The HTTP front end (the spec's "HTTP contract"): the same commands and
//! views as the NATS service, with the actor taken from an API key, plus
//! CloudEvents ingest, `/healthz`, `/metrics`, the OpenAPI document and the
//! console.
//!
//! Every route is one row of [`routes::routes`]: the router and the OpenAPI
//! document are both built from that table, so neither can list a route
//! the other lacks. Every answer carries the security headers of
//! [`console::security_headers`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::core::{batch_commands, fields, submission, Core, QueryView};
use super::keys::{KeyEntry, KeyRing, Role};
use crate::engine::command::{own_key, parse_at, tenant_id, Cause, Rejection};
use crate::engine::Reply;
use crate::notify::egress::{self, Egress};
use crate::notify::store::NotifyStore;
use crate::report::{rejection_json, reply_json};

mod cloudevents;
mod console;
mod keys;
pub mod openapi;
pub mod routes;
mod webhooks;

/// Bodies past this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// What a 503 asks the client to wait before trying again, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

/// What every handler reads.
pub struct Http {
    pub core: Arc<Core>,
    pub keys: Arc<KeyRing>,
    /// The ledger's webhook endpoints and their delivery records.
    pub notify: NotifyStore,
    /// Where webhooks may go (`serve --webhook-allow-hosts`,
    /// `--webhook-allow-private`): registrations are held to it too.
    pub egress: Egress,
}

pub type AppState = Arc<Http>;

/// Serves the API on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, state: Http) {
    let app = routes::router(Arc::new(state));
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "the HTTP API stopped");
    }
}

/// An RFC 9457 problem: `application/problem+json` with the spec's fields
/// and everything the NATS reply carries for the same rejection; a 401
/// names the scheme (`WWW-Authenticate`), a 503 when to retry.
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
    match status {
        StatusCode::UNAUTHORIZED => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        _ => {}
    }
    response
}

/// The spec's status for a rejection: 401 for a missing or unknown key, 403
/// `forbidden` (and a webhook destination the ledger will not reach), 405
/// a method the path does not serve, 413 a body too large, 415 a
/// CloudEvents request in no content mode, 503 `unavailable`;
/// otherwise 400 for what the request alone shows ([`Cause::Request`]), and
/// for what the ledger's state decides 404 (`unknown_*`, `not_subscribed`)
/// or 409 (every other conflict, and what only a comparison of two fields
/// shows, [`Cause::Combination`], which no schema can say).
pub fn status_of(rejection: &Rejection) -> StatusCode {
    match rejection.code {
        "unauthorized" => StatusCode::UNAUTHORIZED,
        "forbidden" | egress::REFUSED => StatusCode::FORBIDDEN,
        "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "unsupported_media_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
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

/// A handler's answer: what it built, or the problem it met.
fn answer(result: Result<Response, Rejection>) -> Response {
    result.unwrap_or_else(|rejection| problem(&rejection))
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

/// The key a request presents (`Authorization: Bearer <key>`), or 401; 503
/// while the keys cannot be read (every key is refused then, and the
/// client is told to come back rather than that its key is wrong).
async fn authenticate(state: &Http, headers: &HeaderMap) -> Result<KeyEntry, Rejection> {
    let unauthorized = |message: &str| Rejection::new("unauthorized", message);
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(unauthorized("no API key: send Authorization: Bearer <key>"));
    };
    // The scheme is case-insensitive (RFC 9110).
    let key = match value.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
        _ => return Err(unauthorized("the Authorization header must be Bearer <key>")),
    };
    match state.keys.check(key).await {
        Ok(Some(entry)) => Ok(entry),
        Ok(None) => Err(unauthorized("unknown or revoked API key")),
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "cannot read the API keys; refusing every key until it can");
            Err(Rejection::new("unavailable", "the API keys cannot be read now; try again"))
        }
    }
}

/// A key may act on `tenant` when it is that tenant's, or the panel's.
fn may_reach(key: &KeyEntry, tenant: &str) -> Result<(), Rejection> {
    match (&key.role, &key.tenant) {
        (Role::Panel, _) => Ok(()),
        (_, Some(own)) if own == tenant => Ok(()),
        _ => Err(Rejection::new("forbidden", format!("this key cannot reach tenant {tenant}"))),
    }
}

fn panel_only(key: &KeyEntry) -> Result<(), Rejection> {
    match key.role {
        Role::Panel => Ok(()),
        _ => Err(Rejection::new("forbidden", "this route is for the control panel key only")),
    }
}

/// The tenant of a tenant path, checked: well formed, and reachable with
/// the request's key.
async fn tenant_of(
    state: &Http,
    headers: &HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<(KeyEntry, String), Rejection> {
    let key = authenticate(state, headers).await?;
    let Path(tenant) = path.map_err(|e| Rejection::malformed(format!("the path: {}", e.body_text())))?;
    tenant_id(&tenant)?;
    may_reach(&key, &tenant)?;
    Ok((key, tenant))
}

/// The body, or 413 past [`MAX_BODY_BYTES`].
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Rejection> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Rejection::new("too_large", format!("the body is over {MAX_BODY_BYTES} bytes"))
        } else {
            Rejection::malformed(format!("could not read the body: {}", e.body_text()))
        }
    })
}

/// A body as the typed request of a route that is not a command (keys,
/// webhooks): a JSON object with exactly its fields, else 400.
fn json_body<T: serde::de::DeserializeOwned>(raw: &Bytes) -> Result<T, Rejection> {
    serde_json::from_slice(raw).map_err(|e| Rejection::malformed(format!("the body: {e}")))
}

/// A store of the ledger's (keys, webhook endpoints, the log) that did not
/// answer: 503, to be tried again; the cause goes to the log.
fn unavailable(error: impl Into<anyhow::Error>) -> Rejection {
    tracing::warn!(error = %format!("{:#}", error.into()), "a store of the ledger did not answer");
    Rejection::new("unavailable", "the ledger's store did not answer; try again")
}

/// `POST /v1/tenants/{tenant}/<command>`, or `/batch` (`command` `None`).
pub async fn tenant_command(
    state: AppState,
    path: Result<Path<String>, PathRejection>,
    command: Option<&'static str>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let (key, tenant) = tenant_of(&state, &headers, path).await?;
            decide(&state, &key, Some(&tenant), command, &headers, body(raw)?).await
        }
        .await,
    )
}

/// `POST /v1/admin/<command>`, or `/batch` (`command` `None`): the panel
/// key only.
pub async fn admin_command(
    state: AppState,
    command: Option<&'static str>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let key = authenticate(&state, &headers).await?;
            panel_only(&key)?;
            decide(&state, &key, None, command, &headers, body(raw)?).await
        }
        .await,
    )
}

/// A command (or, for `None`, a batch) of an authorized request, as the
/// key's actor, about `tenant` (`None`: the body names it).
async fn decide(
    state: &Http,
    key: &KeyEntry,
    tenant: Option<&str>,
    command: Option<&'static str>,
    headers: &HeaderMap,
    raw: Bytes,
) -> Result<Response, Rejection> {
    let actor = key.actor();
    let Some(command) = command else {
        let items = batch_commands(&raw)?
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                // The document types an item as an object with a `cmd`
                // string: anything else makes the body no batch at all.
                Value::Object(mut fields) => match fields.remove("cmd") {
                    Some(Value::String(name)) => Ok((name, fields)),
                    _ => Err(Rejection::malformed(format!("command {i} needs a \"cmd\" string"))),
                },
                _ => Err(Rejection::malformed(format!("command {i} is not a JSON object"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let submissions = items
            .into_iter()
            .map(|(name, fields)| {
                only_command_fields(tenant, &fields).and_then(|()| submission(tenant, &actor, &name, fields))
            })
            .collect();
        return Ok(json_response(StatusCode::OK, &state.core.batch(submissions).await));
    };
    let parsed = fields(&raw)
        .and_then(|fields| only_command_fields(tenant, &fields).map(|()| fields))
        .and_then(|fields| with_idempotency_header(headers, command, fields))
        .and_then(|fields| submission(tenant, &actor, command, fields));
    let submission = parsed.inspect_err(|_| state.core.metrics.malformed())?;
    Ok(decision(&state.core.command(submission).await))
}

/// Over HTTP a body carries only the command's own fields: the route names
/// the command (and on a tenant's path the tenant), the key the actor, and
/// the ledger's clock the time. The document says so
/// (`additionalProperties: false`), so the server refuses them rather than
/// ignoring them.
fn only_command_fields(tenant: Option<&str>, fields: &Map<String, Value>) -> Result<(), Rejection> {
    let transport = ["cmd", "actor", "at"].into_iter().chain(tenant.map(|_| "tenant"));
    match transport.into_iter().find(|name| fields.contains_key(*name)) {
        Some(name) => Err(Rejection::malformed(format!(
            "\"{name}\" is not a field of the body: the route names the command and tenant, the key the actor, \
             and the ledger's clock the time"
        ))),
        None => Ok(()),
    }
}

/// The `Idempotency-Key` header as the command's `idempotency_key` field.
/// Commands keyed by a field of their own (`request`, `file`, `purchase`)
/// ignore it, so a client may send the header with every command.
fn with_idempotency_header(
    headers: &HeaderMap,
    command: &str,
    mut fields: Map<String, Value>,
) -> Result<Map<String, Value>, Rejection> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(fields) };
    if own_key(command).is_some() {
        return Ok(fields);
    }
    let key = value
        .to_str()
        .map_err(|_| Rejection::malformed("the Idempotency-Key header must be printable ASCII"))?
        .to_string();
    match fields.get("idempotency_key") {
        None | Some(Value::Null) => {
            fields.insert("idempotency_key".into(), Value::String(key));
            Ok(fields)
        }
        Some(Value::String(body)) if *body != key => Err(Rejection::new(
            "idempotency_conflict",
            "the Idempotency-Key header and the body's idempotency_key name different keys",
        )
        .from_combination()),
        // The same key, or a body value the parser refuses.
        Some(_) => Ok(fields),
    }
}

/// `POST /v1/events`: CloudEvents, in any of the three content modes.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    answer(
        async {
            let key = authenticate(&state, &headers).await?;
            let events = cloudevents::parse(&headers, &body(raw)?)?;
            // Every event must be about a tenant the key reaches, or nothing runs.
            for event in &events {
                may_reach(&key, &event.tenant)?;
            }
            let actor = key.actor();
            let items = events
                .into_iter()
                .map(|e| e.command.and_then(|m| submission(Some(&e.tenant), &actor, m.command, m.fields)))
                .collect();
            Ok(json_response(StatusCode::OK, &state.core.batch(items).await))
        }
        .await,
    )
}

/// `?at=` of the usage view.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    at: Option<String>,
}

/// `?at=` and `?explain=` of the invoice view.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceParams {
    at: Option<String>,
    explain: Option<bool>,
}

/// The invoices view takes no parameters.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

type ViewPath = Result<Path<String>, PathRejection>;

fn params<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, Rejection> {
    params.map(|Query(p)| p).map_err(|e| Rejection::malformed(format!("query: {}", e.body_text())))
}

async fn view(state: &Http, tenant: &str, view: QueryView, at: Option<&str>) -> Result<Response, Rejection> {
    let at_us = at.map(parse_at).transpose()?;
    let answer = state.core.query(tenant, view, at_us).await?;
    Ok(json_response(StatusCode::OK, &answer))
}

/// `GET /v1/tenants/{tenant}/usage[?at=]`.
pub async fn usage(
    State(state): State<AppState>,
    path: ViewPath,
    headers: HeaderMap,
    query: Result<Query<UsageParams>, QueryRejection>,
) -> Response {
    answer(
        async {
            let (_, tenant) = tenant_of(&state, &headers, path).await?;
            let query = params(query)?;
            view(&state, &tenant, QueryView::Usage, query.at.as_deref()).await
        }
        .await,
    )
}

/// `GET /v1/tenants/{tenant}/invoice[?at=][&explain=true]`.
pub async fn invoice(
    State(state): State<AppState>,
    path: ViewPath,
    headers: HeaderMap,
    query: Result<Query<InvoiceParams>, QueryRejection>,
) -> Response {
    answer(
        async {
            let (_, tenant) = tenant_of(&state, &headers, path).await?;
            let query = params(query)?;
            let explain = query.explain.unwrap_or(false);
            view(&state, &tenant, QueryView::Invoice { explain }, query.at.as_deref()).await
        }
        .await,
    )
}

/// `GET /v1/tenants/{tenant}/invoices`.
pub async fn invoices(
    State(state): State<AppState>,
    path: ViewPath,
    headers: HeaderMap,
    query: Result<Query<NoParams>, QueryRejection>,
) -> Response {
    answer(
        async {
            let (_, tenant) = tenant_of(&state, &headers, path).await?;
            params(query)?;
            view(&state, &tenant, QueryView::Invoices, None).await
        }
        .await,
    )
}

/// `GET /v1/tenants`: every tenant with plan, status, seats and usage (the
/// panel key only).
pub async fn tenants(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(
        async {
            panel_only(&authenticate(&state, &headers).await?)?;
            let tenants = state.core.tenants().await?;
            Ok(json_response(StatusCode::OK, &json!({ "tenants": tenants })))
        }
        .await,
    )
}

/// `GET /v1/me`: whom the key speaks for (the console asks this first).
pub async fn me(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(authenticate(&state, &headers).await.map(|key| {
        let me = json!({"id": key.id, "tenant": key.tenant, "role": key.role, "actor": key.actor().label()});
        json_response(StatusCode::OK, &me)
    }))
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
pub async fn openapi_document() -> Response {
    json_response(StatusCode::OK, &openapi::openapi())
}

/// Any other path: a problem, like every other error.
pub async fn not_found() -> Response {
    problem(&Rejection::new("not_found", "no such route; see /v1/openapi.json"))
}

/// A method the path does not serve (axum adds `Allow`).
pub async fn method_not_allowed() -> Response {
    problem(&Rejection::new(
        "method_not_allowed",
        "this path does not serve that method; see the Allow header",
    ))
}
