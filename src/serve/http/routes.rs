//! Every HTTP route, once: the router and the OpenAPI 3.1 document are both
//! built from [`routes`]. (A derive-based generator such as utoipa would
//! add proc-macro build time on a 2-core machine; one table keeps the
//! document exact with none.)
//!
//! Each command has an operation of its own on each path it is served on,
//! with a request schema written from the parser's bounds (the patterns
//! and limits of `engine::command`), and each operation lists exactly the
//! statuses it can answer: the rejections the command can meet, each put
//! through the one mapping from a rejection to a status
//! ([`super::status_of`]), with the codes each status can carry.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderMap;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use serde_json::{json, Map, Value};

use super::AppState;
use crate::engine::command::{
    offline_admissible, own_key, Cause, Rejection, DECIMAL_PATTERN, ID_PATTERN, INSTANT_PATTERN, MAX_COUNT,
    MAX_ID_BYTES, MAX_NAME_BYTES, NAME_PATTERN, TENANT_PATTERN,
};
use crate::notify::{admin, egress};
use crate::serve::core::MAX_BATCH_COMMANDS;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone (operations, the console page itself).
    Open,
    /// A tenant key for the path's tenant, or the panel key.
    Tenant,
    /// Any valid key (routes that check each item's tenant themselves).
    Key,
    /// The panel key only.
    Panel,
    /// The panel key, or a tenant admin key for its own tenant (webhooks).
    Admins,
}

/// Who may send a command (the decider's rule, for the document).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Senders {
    Panel,
    Admins,
    Anyone,
}

/// A command as the document describes it: besides `malformed` and what
/// the transport answers (401, 403, 413, 503), the rejections it can meet.
pub struct Command {
    pub name: &'static str,
    senders: Senders,
    /// The catalog's commands have no tenant, and no tenant path.
    catalog: bool,
    summary: &'static str,
    /// The code of the denial the ledger records (a 200 with `ok: false`).
    denial: Option<&'static str>,
    refusals: &'static [(&'static str, Cause)],
}

use Cause::{Combination as C, Request as R, State as S};

/// The rejections every command under an `idempotency_key` can meet: the
/// key used for another command, or a header and a body that name
/// different keys.
const KEYED: [(&str, Cause); 2] = [("idempotency_conflict", S), ("idempotency_conflict", C)];

pub const COMMANDS: &[Command] = &[
    Command {
        name: "define_plan",
        senders: Senders::Panel,
        catalog: true,
        summary: "Define a plan (plans are immutable)",
        denial: None,
        refusals: &[
            ("invalid_amount", R),
            ("invalid_seats", R),
            ("invalid_seats", C),
            ("plan_exists", S),
            ("unknown_addon", S),
            KEYED[0],
            KEYED[1],
        ],
    },
    Command {
        name: "define_addon",
        senders: Senders::Panel,
        catalog: true,
        summary: "Define an add-on (add-ons are immutable)",
        denial: None,
        refusals: &[("invalid_amount", R), ("addon_exists", S), KEYED[0], KEYED[1]],
    },
    Command {
        name: "subscribe",
        senders: Senders::Panel,
        catalog: false,
        summary: "Subscribe the tenant to a plan, starting now (the billing anchor)",
        denial: None,
        refusals: &[
            ("invalid_seats", R),
            ("invalid_amount", R),
            ("already_subscribed", S),
            ("unknown_plan", S),
            ("invalid_seats", S),
            ("invalid_amount", S),
            KEYED[0],
            KEYED[1],
        ],
    },
    Command {
        name: "set_seats",
        senders: Senders::Admins,
        catalog: false,
        summary: "Change the number of seats (within the plan's range)",
        denial: None,
        refusals: &[
            ("invalid_seats", R),
            ("invalid_amount", R),
            ("not_subscribed", S),
            ("unknown_plan", S),
            ("invalid_seats", S),
            ("invalid_amount", S),
            KEYED[0],
            KEYED[1],
        ],
    },
    Command {
        name: "change_plan",
        senders: Senders::Panel,
        catalog: false,
        summary: "Move the subscription to another plan, now",
        denial: None,
        refusals: &[
            ("not_subscribed", S),
            ("unknown_plan", S),
            ("currency_mismatch", S),
            ("invalid_seats", S),
            ("addon_not_available_on_plan", S),
            ("invalid_amount", S),
            KEYED[0],
            KEYED[1],
        ],
    },
    Command {
        name: "cancel",
        senders: Senders::Panel,
        catalog: false,
        summary: "End the subscription and finalize every unclosed period",
        denial: None,
        refusals: &[
            ("not_subscribed", S),
            ("clock_regression", S),
            ("invalid_amount", S),
            KEYED[0],
            KEYED[1],
        ],
    },
    Command {
        name: "upload",
        senders: Senders::Anyone,
        catalog: false,
        summary: "Store a file's bytes against the storage quota (keyed by the file id)",
        denial: Some("storage_quota_exceeded"),
        refusals: &[("invalid_amount", R), ("not_subscribed", S), ("file_exists", S)],
    },
    Command {
        name: "delete_file",
        senders: Senders::Anyone,
        catalog: false,
        summary: "Delete a live file, freeing its bytes",
        denial: None,
        refusals: &[("not_subscribed", S), ("unknown_file", S), KEYED[0], KEYED[1]],
    },
    Command {
        name: "consume_tokens",
        senders: Senders::Anyone,
        catalog: false,
        summary: "Use AI tokens against the period's limit (keyed by the request id)",
        denial: Some("token_limit_exceeded"),
        refusals: &[
            ("invalid_amount", R),
            ("not_subscribed", S),
            ("unknown_plan", S),
            ("idempotency_conflict", S),
            ("clock_regression", S),
            ("invalid_amount", S),
        ],
    },
    Command {
        name: "purchase_addon",
        senders: Senders::Admins,
        catalog: false,
        summary: "Buy an add-on, on the invoice or by card (keyed by the purchase id)",
        denial: None,
        refusals: &[
            ("invalid_amount", R),
            ("not_subscribed", S),
            ("unknown_addon", S),
            ("unknown_plan", S),
            ("idempotency_conflict", S),
            ("addon_not_available_on_plan", S),
            ("currency_mismatch", S),
            ("unsupported_payment", S),
            ("invalid_amount", S),
        ],
    },
    Command {
        name: "settle_payment",
        senders: Senders::Panel,
        catalog: false,
        summary: "Record a card payment's outcome for a pending purchase",
        denial: None,
        refusals: &[
            ("not_subscribed", S),
            ("unknown_purchase", S),
            ("payment_not_pending", S),
            ("invalid_amount", S),
            KEYED[0],
            KEYED[1],
        ],
    },
    Command {
        name: "cancel_addon",
        senders: Senders::Admins,
        catalog: false,
        summary: "Stop an active recurring add-on and its grants, now",
        denial: None,
        refusals: &[("not_subscribed", S), ("unknown_purchase", S), KEYED[0], KEYED[1]],
    },
    Command {
        name: "close_period",
        senders: Senders::Panel,
        catalog: false,
        summary: "Finalize the earliest unclosed period's invoice (the billing clock sends it)",
        denial: None,
        refusals: &[
            ("not_subscribed", S),
            ("period_not_ended", S),
            ("invalid_amount", S),
            KEYED[0],
            KEYED[1],
        ],
    },
    Command {
        name: "set_usage_alerts",
        senders: Senders::Admins,
        catalog: false,
        summary: "Replace the tenant's usage alert thresholds (percent) for each meter given",
        denial: None,
        refusals: &[("invalid_amount", R), ("not_subscribed", S), KEYED[0], KEYED[1]],
    },
];

/// What a route serves.
#[derive(Clone, Copy)]
pub enum Serves {
    /// `POST /v1/tenants/{tenant}/<command>`.
    TenantCommand(&'static Command),
    /// `POST /v1/admin/<command>`: the body names the tenant.
    AdminCommand(&'static Command),
    TenantBatch,
    AdminBatch,
    Events,
    Usage,
    Invoice,
    Invoices,
    Tenants,
    Me,
    /// `GET /v1/tenants/{tenant}/notifications`.
    Notifications,
    /// `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}`.
    AddKey,
    Keys,
    RevokeKey,
    /// `POST /v1/webhooks`, `GET /v1/webhooks`, `DELETE /v1/webhooks/{id}`.
    AddWebhook,
    Webhooks,
    RemoveWebhook,
    Health,
    Metrics,
    OpenApi,
    Console,
}

/// One route: how it is served and how it is described.
pub struct Route {
    pub method: &'static str,
    pub path: String,
    pub operation: String,
    pub summary: String,
    pub auth: Auth,
    pub serves: Serves,
}

/// `consume_tokens` -> `ConsumeTokens`.
fn camel(name: &str) -> String {
    name.split('_').map(|w| w[..1].to_ascii_uppercase() + &w[1..]).collect()
}

/// Every route: each tenant command on its tenant's path, each command on
/// the panel's path, the two batches, CloudEvents, the views and the
/// operations' routes.
pub fn routes() -> Vec<Route> {
    let route = |method, path: &str, operation: &str, summary: &str, auth, serves| Route {
        method,
        path: path.to_string(),
        operation: operation.to_string(),
        summary: summary.to_string(),
        auth,
        serves,
    };
    let mut routes = Vec::new();
    for command in COMMANDS.iter().filter(|c| !c.catalog) {
        let (path, operation) = (format!("/v1/tenants/{{tenant}}/{}", command.name), camel(command.name));
        let operation = operation[..1].to_ascii_lowercase() + &operation[1..];
        routes.push(route(
            "post",
            &path,
            &operation,
            command.summary,
            Auth::Tenant,
            Serves::TenantCommand(command),
        ));
    }
    routes.push(route(
        "post",
        "/v1/tenants/{tenant}/batch",
        "tenantBatch",
        "Several of the tenant's commands in one request, decided in order",
        Auth::Tenant,
        Serves::TenantBatch,
    ));
    for command in COMMANDS {
        let path = format!("/v1/admin/{}", command.name);
        let operation = format!("admin{}", camel(command.name));
        routes.push(route(
            "post",
            &path,
            &operation,
            command.summary,
            Auth::Panel,
            Serves::AdminCommand(command),
        ));
    }
    routes.extend([
        route(
            "post",
            "/v1/admin/batch",
            "adminBatch",
            "Several commands of the control panel in one request, decided in order",
            Auth::Panel,
            Serves::AdminBatch,
        ),
        route("post", "/v1/events", "ingestCloudEvents", "Usage as CloudEvents", Auth::Key, Serves::Events),
        route(
            "get",
            "/v1/tenants/{tenant}/usage",
            "usage",
            "The tenant's usage: `ledger usage --json`",
            Auth::Tenant,
            Serves::Usage,
        ),
        route(
            "get",
            "/v1/tenants/{tenant}/invoice",
            "invoice",
            "The invoice of the period holding `at`: `ledger invoice --json`; `explain=true` adds each line's \
             arithmetic and events",
            Auth::Tenant,
            Serves::Invoice,
        ),
        route(
            "get",
            "/v1/tenants/{tenant}/invoices",
            "invoices",
            "Every period of the tenant with its status and totals",
            Auth::Tenant,
            Serves::Invoices,
        ),
        route(
            "get",
            "/v1/tenants",
            "tenants",
            "Every tenant with plan, status, seats and usage",
            Auth::Panel,
            Serves::Tenants,
        ),
        route(
            "get",
            "/v1/tenants/{tenant}/notifications",
            "notifications",
            "The tenant's usage alert thresholds and its newest 50 notifications, each with its delivery state at \
             every endpoint that receives it (a tenant key: its tenant's endpoints; the panel: every one)",
            Auth::Tenant,
            Serves::Notifications,
        ),
        route("get", "/v1/me", "me", "Whom the presented key speaks for", Auth::Key, Serves::Me),
        route(
            "post",
            "/v1/keys",
            "addKey",
            "A new API key, shown this once (only its hash is stored)",
            Auth::Panel,
            Serves::AddKey,
        ),
        route("get", "/v1/keys", "keys", "Every API key (never a key itself)", Auth::Panel, Serves::Keys),
        route(
            "delete",
            "/v1/keys/{id}",
            "revokeKey",
            "Revoke an API key: refused at once here, and within seconds by every serve of the ledger",
            Auth::Panel,
            Serves::RevokeKey,
        ),
        route(
            "post",
            "/v1/webhooks",
            "addWebhook",
            "Register a webhook endpoint; it receives the notifications recorded from now on, signed with the \
             secret shown this once",
            Auth::Admins,
            Serves::AddWebhook,
        ),
        route(
            "get",
            "/v1/webhooks",
            "webhooks",
            "The webhook endpoints the key manages (never a secret)",
            Auth::Admins,
            Serves::Webhooks,
        ),
        route(
            "delete",
            "/v1/webhooks/{id}",
            "removeWebhook",
            "Remove a webhook endpoint the key manages; nothing more goes to it",
            Auth::Admins,
            Serves::RemoveWebhook,
        ),
        route(
            "get",
            "/healthz",
            "health",
            "200 once the views include the log as it stood when asked, 503 before (or when the log is \
             unreachable)",
            Auth::Open,
            Serves::Health,
        ),
        route(
            "get",
            "/metrics",
            "metrics",
            "Prometheus metrics: decisions by command and outcome, decision latency, batch sizes, projector \
             lag, log reachability",
            Auth::Open,
            Serves::Metrics,
        ),
        route("get", "/v1/openapi.json", "openapi", "This document", Auth::Open, Serves::OpenApi),
        route("get", "/", "console", "The web console (HTML)", Auth::Open, Serves::Console),
    ]);
    routes
}

type Body = Result<Bytes, BytesRejection>;
type TenantPath = Result<Path<String>, PathRejection>;

/// How a route is served.
fn method_router(serves: Serves) -> MethodRouter<AppState> {
    match serves {
        Serves::TenantCommand(command) => {
            post(move |State(state): State<AppState>, tenant: TenantPath, headers: HeaderMap, body: Body| {
                super::tenant_command(state, tenant, Some(command.name), headers, body)
            })
        }
        Serves::AdminCommand(command) => {
            post(move |State(state): State<AppState>, headers: HeaderMap, body: Body| {
                super::admin_command(state, Some(command.name), headers, body)
            })
        }
        Serves::TenantBatch => {
            post(|State(state): State<AppState>, tenant: TenantPath, headers: HeaderMap, body: Body| {
                super::tenant_command(state, tenant, None, headers, body)
            })
        }
        Serves::AdminBatch => post(|State(state): State<AppState>, headers: HeaderMap, body: Body| {
            super::admin_command(state, None, headers, body)
        }),
        Serves::Events => post(super::events),
        Serves::Usage => get(super::usage),
        Serves::Invoice => get(super::invoice),
        Serves::Invoices => get(super::invoices),
        Serves::Tenants => get(super::tenants),
        Serves::Me => get(super::me),
        Serves::Notifications => get(super::webhooks::notifications),
        Serves::AddKey => post(super::keys::add),
        Serves::Keys => get(super::keys::list),
        Serves::RevokeKey => delete(super::keys::revoke),
        Serves::AddWebhook => post(super::webhooks::add),
        Serves::Webhooks => get(super::webhooks::list),
        Serves::RemoveWebhook => delete(super::webhooks::remove),
        Serves::Health => get(super::healthz),
        Serves::Metrics => get(super::metrics),
        Serves::OpenApi => get(super::openapi),
        Serves::Console => get(super::console::page),
    }
}

/// The router over [`routes`], with the body limit, the problem-shaped
/// 404, and the security headers on every answer. The methods of one path
/// are served together; any other method on it is a 405 problem (axum adds
/// the `Allow` header).
pub fn router(state: AppState) -> Router {
    let mut paths: BTreeMap<String, MethodRouter<AppState>> = BTreeMap::new();
    for route in routes() {
        let served = method_router(route.serves);
        let merged = match paths.remove(&route.path) {
            Some(others) => others.merge(served),
            None => served,
        };
        paths.insert(route.path, merged);
    }
    let mut router = Router::new();
    for (path, methods) in paths {
        router = router.route(&path, methods.fallback(super::method_not_allowed));
    }
    router
        .fallback(super::not_found)
        .layer(DefaultBodyLimit::max(super::MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(super::console::security_headers))
        .with_state(state)
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// An id: 1 to 128 bytes of printable ASCII without spaces.
fn id(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_ID_BYTES, "pattern": ID_PATTERN, "description": description})
}

fn tenant() -> Value {
    json!({"type": "string", "pattern": TENANT_PATTERN, "description": "The tenant id"})
}

fn count(minimum: i64, maximum: i64, description: &str) -> Value {
    json!({"type": "integer", "minimum": minimum, "maximum": maximum, "description": description})
}

/// What the ledger stores as a `u32` (seats, quantities).
const MAX_U32: i64 = u32::MAX as i64;

fn decimal(description: &str) -> Value {
    json!({
        "type": "string",
        "pattern": DECIMAL_PATTERN,
        "description": format!("{description}: a decimal string, at most 10^12 with at most 12 decimal places"),
        "examples": ["20.00"],
    })
}

/// A key's id, as `ledger keys add` makes them.
fn key_id() -> Value {
    json!({"type": "string", "pattern": "^[0-9a-f]{12}$", "description": "The key's id (`GET /v1/keys`)"})
}

/// A webhook endpoint's id, as registrations make them.
fn endpoint_id() -> Value {
    json!({"type": "string", "pattern": "^ep_[0-9a-f]{12}$", "description": "The endpoint's id (`GET /v1/webhooks`)"})
}

fn instant(description: &str) -> Value {
    json!({"type": "string", "format": "date-time", "pattern": INSTANT_PATTERN, "description": format!("{description} (RFC 3339, years up to 9998)")})
}

/// A plan's or add-on's name: at most 256 bytes of UTF-8 without control
/// characters. A schema counts characters, not bytes: it admits the names
/// that surely fit (up to 64 characters, or ASCII up to 256).
fn name() -> Value {
    json!({
        "type": ["string", "null"],
        "maxLength": MAX_NAME_BYTES,
        "pattern": NAME_PATTERN,
        "anyOf": [{"type": "null"}, {"maxLength": MAX_NAME_BYTES / 4}, {"pattern": "^[ -~]*$"}],
        "description": format!("At most {MAX_NAME_BYTES} bytes of UTF-8 without control characters"),
    })
}

/// An optional field: absent and `null` mean the same.
fn nullable(mut schema: Value) -> Value {
    if let Some(kind) = schema.get("type").cloned() {
        schema["type"] = json!([kind, "null"]);
    }
    schema
}

/// An object with exactly these properties (`(name, schema, required)`).
fn object(properties: Vec<(&str, Value, bool)>) -> Value {
    let required: Vec<&str> = properties.iter().filter(|(_, _, r)| *r).map(|(n, _, _)| *n).collect();
    let properties: Map<String, Value> = properties.into_iter().map(|(n, s, _)| (n.to_string(), s)).collect();
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties})
}

/// A command's body: its fields (the tenant's only on the panel's path),
/// `idempotency_key` for commands without a key of their own, and
/// `admitted_offline_at` for what a client may admit offline.
fn command_body(command: &Command, with_tenant: bool) -> Value {
    let seats = || count(1, MAX_U32, "Seats");
    let mut fields: Vec<(&str, Value, bool)> = match command.name {
        "define_plan" => vec![("plan", schema("Plan"), true)],
        "define_addon" => vec![("addon", schema("Addon"), true)],
        "subscribe" => vec![("plan", id("The plan"), true), ("seats", seats(), true)],
        "set_seats" => vec![("seats", seats(), true)],
        "change_plan" => vec![("plan", id("The new plan"), true)],
        "upload" => vec![
            ("file", id("The file id: the upload's idempotency key among the live files"), true),
            ("bytes", count(0, MAX_COUNT, "The file's size in bytes"), true),
        ],
        "delete_file" => vec![("file", id("The live file to delete"), true)],
        "consume_tokens" => vec![
            ("request", id("The request id: the idempotency key for the tenant's whole history"), true),
            ("tokens", count(1, MAX_COUNT, "Tokens used"), true),
        ],
        "purchase_addon" => vec![
            ("addon", id("The add-on"), true),
            ("purchase", id("The purchase id: the idempotency key"), true),
            ("quantity", nullable(count(1, MAX_U32, "How many (default 1)")), false),
            (
                "payment",
                json!({"enum": ["invoice", "card"], "description": "invoice: active at once, charged on this period's invoice; card (one-off add-ons only): pending until settle_payment"}),
                true,
            ),
        ],
        "settle_payment" => vec![
            ("purchase", id("The pending card purchase"), true),
            ("outcome", json!({"enum": ["paid", "failed"]}), true),
            ("reference", nullable(id("The payment provider's reference")), false),
        ],
        "cancel_addon" => vec![("purchase", id("The active recurring purchase to stop"), true)],
        "set_usage_alerts" => {
            let thresholds = |meter: &str| {
                let percent =
                    count(1, i64::from(events::MAX_ALERT_PERCENT), "A threshold: percent of the limit");
                let list = json!({"type": "array", "items": percent, "maxItems": events::MAX_ALERTS,
                    "description": format!("The {meter} thresholds, replacing the tenant's (an empty list silences the meter)")});
                nullable(list)
            };
            vec![
                ("tokens", thresholds("token limit"), false),
                ("storage", thresholds("storage quota"), false),
            ]
        }
        _ => Vec::new(),
    };
    if with_tenant && !command.catalog {
        fields.insert(0, ("tenant", tenant(), true));
    }
    if own_key(command.name).is_none() {
        let key = "A key of the caller's: a resend under it answers as the first time (`duplicate: true`); \
                   another command under it is 409 idempotency_conflict. Same as the Idempotency-Key header";
        fields.push(("idempotency_key", nullable(id(key)), false));
    }
    if offline_admissible(command.name) {
        let when = "When a client admitted this from its cached quota while the ledger was unreachable";
        fields.push(("admitted_offline_at", nullable(instant(when)), false));
    }
    let mut body = object(fields);
    if command.name == "set_usage_alerts" {
        // One meter at least, as a list (the parser refuses neither).
        let given = |meter: &str| json!({"required": [meter], "properties": {meter: {"type": "array"}}});
        body["anyOf"] = json!([given("tokens"), given("storage")]);
    }
    body
}

/// The problem answers an operation can give: status -> the codes it can
/// carry, each rejection's status from [`super::status_of`].
fn problem_statuses(refusals: &[(&'static str, Cause)]) -> BTreeMap<u16, Vec<&'static str>> {
    let mut statuses: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
    for (code, cause) in refusals {
        let status = super::status_of(&Rejection { cause: *cause, ..Rejection::new(code, "") }).as_u16();
        let codes = statuses.entry(status).or_default();
        if !codes.contains(code) {
            codes.push(code);
        }
    }
    statuses
}

/// What every keyed route can answer besides its own rejections: no key or
/// a wrong one, and 503 while the keys cannot be read.
fn transport(route: &Route, body: bool) -> Vec<(&'static str, Cause)> {
    let mut refusals = vec![("unauthorized", S), ("unavailable", S)];
    if route.auth != Auth::Key || matches!(route.serves, Serves::Events) {
        refusals.push(("forbidden", S));
    }
    if body {
        refusals.push(("too_large", R));
    }
    refusals
}

/// Every rejection a route can answer with a problem.
fn refusals(route: &Route) -> Vec<(&'static str, Cause)> {
    let mut refusals = Vec::new();
    match route.serves {
        Serves::TenantCommand(command) | Serves::AdminCommand(command) => {
            refusals.extend(transport(route, true));
            refusals.push(("malformed", R));
            refusals.extend(command.refusals);
            refusals.push(("unavailable", S));
        }
        Serves::TenantBatch | Serves::AdminBatch => {
            refusals.extend(transport(route, true));
            refusals.push(("malformed", R));
        }
        Serves::Events => {
            refusals.extend(transport(route, true));
            refusals.extend([("malformed", R), ("unsupported_media_type", R)]);
        }
        Serves::Usage | Serves::Invoice | Serves::Invoices => {
            refusals.extend(transport(route, false));
            refusals.extend([("malformed", R), ("not_subscribed", S), ("unavailable", S)]);
            if !matches!(route.serves, Serves::Usage) {
                // Only a history the ledger's own checks would not have let
                // through prices past what an amount can hold.
                refusals.push(("invalid_amount", S));
            }
        }
        Serves::Tenants => {
            refusals.extend(transport(route, false));
            refusals.push(("unavailable", S));
        }
        Serves::Me | Serves::Keys | Serves::Webhooks => refusals.extend(transport(route, false)),
        Serves::Notifications => {
            refusals.extend(transport(route, false));
            refusals.push(("malformed", R));
        }
        Serves::AddKey => {
            refusals.extend(transport(route, true));
            refusals.push(("malformed", R));
        }
        Serves::RevokeKey | Serves::RemoveWebhook => {
            refusals.extend(transport(route, false));
            refusals.push(("not_found", S));
        }
        Serves::AddWebhook => {
            refusals.extend(transport(route, true));
            refusals.extend([("malformed", R), (egress::REFUSED, S)]);
        }
        Serves::Health | Serves::Metrics | Serves::OpenApi | Serves::Console => {}
    }
    refusals
}

/// The 200 answer's media type and schema.
fn success(serves: Serves) -> (&'static str, Value) {
    let json_schema = |name: &str| ("application/json", schema(name));
    match serves {
        Serves::TenantCommand(command) | Serves::AdminCommand(command) => match command.denial {
            Some(code) => (
                "application/json",
                json!({"oneOf": [schema("Accepted"), {"allOf": [schema("Denied"), {"properties": {"code": {"const": code}}}]}]}),
            ),
            None => json_schema("Accepted"),
        },
        Serves::TenantBatch | Serves::AdminBatch | Serves::Events => json_schema("Results"),
        Serves::Usage => json_schema("Usage"),
        Serves::Invoice => json_schema("Invoice"),
        Serves::Invoices => json_schema("Invoices"),
        Serves::Tenants => json_schema("Tenants"),
        Serves::Me => json_schema("Me"),
        Serves::Notifications => json_schema("Notifications"),
        Serves::AddKey => json_schema("NewKey"),
        Serves::Keys => json_schema("Keys"),
        Serves::RevokeKey => json_schema("Revoked"),
        Serves::AddWebhook => json_schema("NewWebhook"),
        Serves::Webhooks => json_schema("Webhooks"),
        Serves::RemoveWebhook => json_schema("Removed"),
        Serves::Health => json_schema("Health"),
        Serves::Metrics => ("application/openmetrics-text", json!({"type": "string"})),
        Serves::OpenApi => json_schema("Object"),
        Serves::Console => ("text/html", json!({"type": "string"})),
    }
}

/// The description of a command's operation: who may send it, and how a
/// resend is recognized.
fn command_description(command: &Command, on_tenant_path: bool) -> String {
    let who = match (command.senders, on_tenant_path) {
        (Senders::Panel, true) => "The panel key only; a tenant key is 403 forbidden.",
        (Senders::Admins, true) => "The tenant's admin key or the panel key; a user key is 403 forbidden.",
        (Senders::Anyone, true) => "Any key of the tenant, or the panel key.",
        (_, false) => "The panel key only (actor `admin`); the body names the tenant.",
    };
    let key = match own_key(command.name) {
        Some(field) => format!("`{field}` is the idempotency key: a resend answers `duplicate: true`."),
        None => "An `idempotency_key` (or the `Idempotency-Key` header) makes a resend answer as the first \
                 time (`duplicate: true`)."
            .to_string(),
    };
    let denial = command.denial.map_or(String::new(), |code| {
        format!(
            " Over the quota or limit the ledger records a denial: 200 with `ok: false` and code `{code}`."
        )
    });
    format!("{who} {key}{denial}")
}

fn parameters(route: &Route) -> Vec<Value> {
    let mut parameters = Vec::new();
    if route.path.contains("{tenant}") {
        parameters.push(json!({"name": "tenant", "in": "path", "required": true, "schema": tenant()}));
    }
    if route.path.contains("{id}") {
        let id = match route.serves {
            Serves::RevokeKey => key_id(),
            _ => endpoint_id(),
        };
        parameters.push(json!({"name": "id", "in": "path", "required": true, "schema": id}));
    }
    match route.serves {
        Serves::TenantCommand(command) | Serves::AdminCommand(command) if own_key(command.name).is_none() => {
            parameters.push(json!({
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": "The body's `idempotency_key`; both given, they must name the same key (else 409 idempotency_conflict)",
                "schema": id("A key of the caller's"),
            }));
        }
        Serves::Usage | Serves::Invoice => {
            let at = "The instant whose period to show (default: now); before the subscription: 404 not_subscribed";
            parameters.push(json!({"name": "at", "in": "query", "required": false, "schema": instant(at)}));
            if matches!(route.serves, Serves::Invoice) {
                let explain = json!({"type": "boolean", "description": "Add each line's arithmetic, exact amount and events"});
                parameters
                    .push(json!({"name": "explain", "in": "query", "required": false, "schema": explain}));
            }
        }
        _ => {}
    }
    parameters
}

fn request_body(route: &Route) -> Option<(Value, Value)> {
    match route.serves {
        Serves::TenantCommand(command) | Serves::AdminCommand(command) => {
            let with_tenant = matches!(route.serves, Serves::AdminCommand(_));
            let body = command_body(command, with_tenant);
            // A body with no required field may be left out (no fields),
            // unless it must name one of several (`set_usage_alerts`).
            let required =
                body["required"].as_array().is_some_and(|r| !r.is_empty()) || body.get("anyOf").is_some();
            let name =
                if with_tenant { format!("Admin{}", camel(command.name)) } else { camel(command.name) };
            Some((json!(required), json!({"application/json": {"schema": schema(&name)}})))
        }
        Serves::TenantBatch | Serves::AdminBatch => {
            Some((json!(true), json!({"application/json": {"schema": schema("Batch")}})))
        }
        Serves::AddKey => Some((json!(true), json!({"application/json": {"schema": schema("KeyRequest")}}))),
        Serves::AddWebhook => {
            Some((json!(true), json!({"application/json": {"schema": schema("WebhookRequest")}})))
        }
        Serves::Events => Some((
            json!(true),
            json!({
                super::cloudevents::STRUCTURED: {"schema": schema("CloudEvent")},
                super::cloudevents::BATCHED: {"schema": {"type": "array", "maxItems": MAX_BATCH_COMMANDS, "items": schema("CloudEvent")}},
            }),
        )),
        _ => None,
    }
}

const EVENTS_DESCRIPTION: &str = "CloudEvents 1.0 in the three content modes of the HTTP binding. Structured \
    (`application/cloudevents+json`, one event) and batched (`application/cloudevents-batch+json`, an array of up \
    to 1000) are described here; binary mode is accepted too (the attributes as `ce-specversion`, `ce-id`, \
    `ce-source`, `ce-type`, `ce-subject` headers, percent-encoded, and the body as the data with `Content-Type: \
    application/json` or none), which is what the official SDKs send by default. `subject` is the tenant and `id` \
    the idempotency key. `ledger.tokens.consumed` (`data: {\"tokens\": n}`) becomes `consume_tokens` with \
    `request` = `id`; `ledger.file.stored` (`data: {\"bytes\": n, \"file\"?: id}`) becomes `upload` (`file` = \
    `data.file`, else `id`); `ledger.file.deleted` (`data: {\"file\"?: id}`) becomes `delete_file`. A request \
    whose events do not all carry the required attributes is a 400 for the whole request, with nothing decided; \
    an event whose `type` or `data` the ledger cannot map is answered in its place in `results`. A tenant key \
    may send events only for its own tenant: one event about another is a 403 for the whole request.";

const WEBHOOKS_DESCRIPTION: &str = "The panel key manages every endpoint; a tenant admin key its own \
    tenant's only (registering for another tenant is 403 forbidden; another tenant's endpoint is 404), and a \
    user key none (403). An endpoint registered with a tenant key must resolve to public addresses only, unless \
    the serve runs with --webhook-allow-private; with --webhook-allow-hosts, every endpoint's host must be \
    listed. A destination refused either way is 403 webhook_destination_refused, checked before any lookup of \
    a refused host's name, and nothing is stored.";

fn operation(route: &Route) -> Value {
    let mut responses = Map::new();
    let (media, ok) = success(route.serves);
    responses.insert("200".into(), json!({"description": "OK", "content": {media: {"schema": ok}}}));
    if matches!(route.serves, Serves::Health) {
        responses.insert(
            "503".into(),
            json!({"description": "Catching up, or the log is unreachable", "headers": retry_after(), "content": {"application/json": {"schema": schema("Health")}}}),
        );
    }
    for (status, codes) in problem_statuses(&refusals(route)) {
        let problem = json!({"allOf": [schema("Problem"), {"properties": {"status": {"const": status}, "code": {"enum": codes}}}]});
        let mut response = json!({
            "description": codes.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "),
            "content": {"application/problem+json": {"schema": problem}},
        });
        match status {
            401 => {
                response["headers"] =
                    json!({"WWW-Authenticate": {"required": true, "schema": {"const": "Bearer"}}})
            }
            503 => response["headers"] = retry_after(),
            _ => {}
        }
        responses.insert(status.to_string(), response);
    }
    let mut operation = json!({
        "operationId": route.operation,
        "summary": route.summary,
        "parameters": parameters(route),
        "responses": responses,
    });
    match route.serves {
        Serves::TenantCommand(command) => operation["description"] = json!(command_description(command, true)),
        Serves::AdminCommand(command) => operation["description"] = json!(command_description(command, false)),
        Serves::TenantBatch | Serves::AdminBatch => {
            operation["description"] = json!("Each item is an object with `cmd` and that command's fields (as \
                the command's own operation takes them; over the panel's path `tenant` too). Items are decided \
                in order; an item's own errors are answered in its place in `results`, the others still run.")
        }
        Serves::Events => operation["description"] = json!(EVENTS_DESCRIPTION),
        Serves::AddWebhook | Serves::Webhooks | Serves::RemoveWebhook => {
            operation["description"] = json!(WEBHOOKS_DESCRIPTION)
        }
        _ => {}
    }
    if route.auth == Auth::Open {
        operation["security"] = json!([]);
    }
    if let Some((required, content)) = request_body(route) {
        operation["requestBody"] = json!({"required": required, "content": content});
    }
    operation
}

fn retry_after() -> Value {
    json!({"Retry-After": {"required": true, "description": "Seconds to wait before trying again", "schema": {"type": "string", "pattern": "^[0-9]+$"}}})
}

/// The OpenAPI 3.1 document for [`routes`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in routes() {
        let entry = paths.entry(route.path.clone()).or_insert_with(|| json!({}));
        entry[route.method] = operation(&route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Subscription ledger",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Per-seat billing, add-ons with payment, storage quotas and AI token limits, on an \
                event log. The actor of every request comes from its API key (`Authorization: Bearer <key>`). \
                A recorded decision, accepted or denied, is 200; a rejection (nothing recorded) is an RFC 9457 \
                problem: 400 only for what the request alone shows to be wrong (so a request valid under this \
                document never gets a 400), 404 or 409 for what the ledger's state decides (and 409 for what \
                only a comparison of two fields shows). A method a path does not declare is 405 with `Allow`.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A key from `ledger keys add`"}},
            "schemas": schemas(),
        },
    })
}

fn schemas() -> Value {
    let mut schemas = Map::new();
    for command in COMMANDS {
        if !command.catalog {
            schemas.insert(camel(command.name), command_body(command, false));
        }
        schemas.insert(format!("Admin{}", camel(command.name)), command_body(command, true));
    }
    let common = common_schemas();
    schemas.extend(common.as_object().cloned().unwrap_or_default());
    Value::Object(schemas)
}

/// Every currency the ledger accepts (ISO 4217), read from the one list
/// (`projections::money`) by asking it about each three-letter code.
fn currencies() -> Vec<String> {
    let letters = || b'A'..=b'Z';
    letters()
        .flat_map(|a| letters().flat_map(move |b| letters().map(move |c| [a, b, c])))
        .map(|code| String::from_utf8_lossy(&code).into_owned())
        .filter(|code| projections::money::minor_units(code).is_some())
        .collect()
}

fn common_schemas() -> Value {
    let period = object(vec![
        ("start", json!({"type": "string", "format": "date-time"}), true),
        ("end", json!({"type": "string", "format": "date-time"}), true),
    ]);
    let amount = json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"});
    let natural = json!({"type": "integer", "minimum": 0});
    let text = json!({"type": "string"});
    let storage = object(vec![("used_bytes", natural.clone(), true), ("quota_bytes", natural.clone(), true)]);
    let tokens = object(vec![("used", natural.clone(), true), ("limit", natural.clone(), true)]);
    let status = json!({"enum": ["active", "cancelled"]});
    let kind = json!({"enum": crate::notify::KINDS});
    let event = object(vec![
        ("position", json!({"type": "integer", "minimum": 1}), true),
        ("event_id", json!({"type": "string", "format": "uuid"}), true),
        ("at", json!({"type": "string", "format": "date-time"}), true),
        ("actor", text.clone(), true),
        ("kind", text.clone(), true),
    ]);
    let explained = object(vec![
        ("code", text.clone(), true),
        ("arithmetic", text.clone(), true),
        ("exact", amount.clone(), true),
        ("amount", amount.clone(), true),
        ("paid", json!({"type": "boolean"}), true),
        ("events", json!({"type": "array", "items": event}), true),
    ]);
    let line = object(vec![
        ("code", text.clone(), true),
        ("description", text.clone(), true),
        ("amount", amount.clone(), true),
        ("paid", json!({"type": "boolean"}), true),
    ]);
    let mut invoice = object(vec![
        ("tenant", tenant(), true),
        ("period", period.clone(), true),
        ("currency", text.clone(), true),
        ("status", json!({"enum": ["draft", "final"]}), true),
        ("lines", json!({"type": "array", "items": line}), true),
        ("total", amount.clone(), true),
        ("paid", amount.clone(), true),
        ("amount_due", amount.clone(), true),
        ("explain", json!({"type": "array", "items": explained}), false),
    ]);
    invoice["description"] = json!("`ledger invoice --json`; `explain` only with explain=true");
    let summary = object(vec![
        ("period", period.clone(), true),
        ("status", json!({"enum": ["draft", "final"]}), true),
        ("currency", text.clone(), true),
        ("total", amount.clone(), true),
        ("paid", amount.clone(), true),
        ("amount_due", amount.clone(), true),
    ]);
    let addon = object(vec![
        ("purchase", text.clone(), true),
        ("addon", text.clone(), true),
        ("quantity", json!({"type": "integer", "minimum": 1}), true),
        ("status", json!({"enum": ["pending", "active", "failed", "cancelled"]}), true),
    ]);
    let listed = object(vec![
        ("tenant", tenant(), true),
        ("plan", json!({"type": ["string", "null"]}), true),
        ("status", json!({"enum": ["active", "cancelled", "unsubscribed"]}), true),
        ("seats", json!({"type": ["integer", "null"], "minimum": 1}), true),
        ("storage", storage.clone(), false),
        ("tokens", tokens.clone(), false),
    ]);
    let token_overage = json!({
        "oneOf": [
            {"const": "block", "description": "Deny past the limit"},
            object(vec![("bill_per_1k", decimal("Price per 1000 tokens past the limit"), true)]),
        ],
    });
    json!({
        "Plan": object(vec![
            ("id", id("The plan id"), true),
            ("name", name(), false),
            ("currency", json!({"enum": currencies()}), true),
            ("price", decimal("Per period, per seat when per_seat"), true),
            ("per_seat", json!({"type": "boolean"}), true),
            ("min_seats", nullable(count(1, MAX_U32, "Fewest seats (default 1)")), false),
            ("max_seats", nullable(count(1, MAX_U32, "Most seats (default unlimited); below min_seats is 409 invalid_seats")), false),
            ("storage_quota_gb", decimal("Storage quota in GB (2^30 bytes)"), true),
            ("monthly_token_limit", count(0, MAX_COUNT, "AI tokens per period"), true),
            ("token_overage", token_overage, true),
            ("addons", json!({"type": "array", "items": id("An add-on tenants on this plan may buy (defined first)")}), true),
        ]),
        "Addon": object(vec![
            ("id", id("The add-on id"), true),
            ("name", name(), false),
            ("currency", json!({"enum": currencies()}), true),
            ("price", decimal("Per period when recurring, else once"), true),
            ("recurring", json!({"type": "boolean"}), true),
            ("grants", schema("Grants"), true),
        ]),
        "Grants": object(vec![
            ("storage_gb", nullable(decimal("Storage in GB per unit")), false),
            ("tokens", nullable(count(0, MAX_COUNT, "AI tokens per unit")), false),
            ("feature", nullable(id("A feature flag")), false),
        ]),
        "Batch": object(vec![(
            "commands",
            json!({
                "type": "array",
                "maxItems": MAX_BATCH_COMMANDS,
                "items": {
                    "type": "object",
                    "required": ["cmd"],
                    "properties": {"cmd": {"type": "string", "description": "The command's name"}},
                    "description": "`cmd` and the command's fields, as the command's own operation takes them. Typed loosely: an item's own errors are answered in its place in `results`.",
                },
            }),
            true,
        )]),
        "Accepted": object(vec![
            ("ok", json!({"const": true}), true),
            ("seq", json!({"type": "integer", "minimum": 1, "description": "The log position of the command's last event"}), true),
            ("duplicate", json!({"type": "boolean", "description": "A resend of a command already accepted: nothing was appended"}), true),
        ]),
        "Denied": {
            "type": "object",
            "description": "A recorded quota or token denial, with the figures behind it",
            "required": ["ok", "code", "message", "used", "requested"],
            "properties": {
                "ok": {"const": false},
                "code": {"enum": ["storage_quota_exceeded", "token_limit_exceeded"]},
                "message": text,
                "used": natural,
                "quota": natural,
                "limit": natural,
                "requested": natural,
            },
            "additionalProperties": false,
        },
        "Refused": {
            "type": "object",
            "description": "A batch item's rejection, denial or unknown outcome: the NATS reply",
            "required": ["ok", "code", "message"],
            "properties": {"ok": {"const": false}, "code": {"type": "string", "pattern": "^[a-z_]+$"}, "message": text},
            "additionalProperties": {"type": "integer", "minimum": 0},
        },
        "Results": object(vec![(
            "results",
            json!({"type": "array", "items": {"oneOf": [schema("Accepted"), schema("Refused")]}, "description": "One answer per item, in order"}),
            true,
        )]),
        "Problem": {
            "type": "object",
            "description": "RFC 9457, with the fields the NATS reply carries (`ok`, `code`, `message`, and any figures)",
            "required": ["type", "title", "status", "detail", "code", "ok", "message"],
            "properties": {
                "type": {"type": "string", "pattern": "^urn:ledger:[a-z_]+$"},
                "title": {"type": "string", "minLength": 1},
                "status": {"type": "integer"},
                "detail": {"type": "string", "minLength": 1},
                "code": {"type": "string"},
                "ok": {"const": false},
                "message": {"type": "string", "minLength": 1},
            },
            "additionalProperties": {"type": "integer", "minimum": 0},
        },
        "CloudEvent": {
            "type": "object",
            "description": "A CloudEvent 1.0 in the JSON format. The required attributes decide whether the request is one of events (else 400 for all of it); `type` and `data` are each event's own to get right (its answer in `results`). Other attributes (`time`, extensions) are accepted and ignored.",
            "required": ["specversion", "id", "source", "type", "subject"],
            "properties": {
                "specversion": {"const": "1.0"},
                "id": {"type": "string", "minLength": 1, "description": "The idempotency key (the request id, or the file id)"},
                "source": {"type": "string", "minLength": 1},
                "type": {"type": "string", "minLength": 1, "description": "ledger.tokens.consumed, ledger.file.stored or ledger.file.deleted"},
                "subject": tenant(),
                "datacontenttype": {"type": "string", "description": "application/json when given"},
                "data": {"description": "{\"tokens\": n} | {\"bytes\": n, \"file\"?: id} | {\"file\"?: id}"},
            },
        },
        "Usage": object(vec![
            ("tenant", tenant(), true),
            ("plan", text.clone(), true),
            ("seats", json!({"type": "integer", "minimum": 1}), true),
            ("status", status, true),
            ("period", period.clone(), true),
            ("storage", storage, true),
            ("tokens", tokens, true),
            ("addons", json!({"type": "array", "items": addon}), true),
        ]),
        "Invoice": invoice,
        "Invoices": object(vec![("tenant", tenant(), true), ("invoices", json!({"type": "array", "items": summary}), true)]),
        "Tenants": object(vec![("tenants", json!({"type": "array", "items": listed}), true)]),
        "Me": object(vec![
            ("id", text.clone(), true),
            ("tenant", json!({"type": ["string", "null"]}), true),
            ("role", json!({"enum": ["user", "admin", "panel"]}), true),
            ("actor", text.clone(), true),
        ]),
        "KeyRequest": {
            "description": "A tenant key (`user` or `admin`) names its tenant; the panel's names none",
            "oneOf": [
                object(vec![("tenant", tenant(), true), ("role", json!({"enum": ["user", "admin"]}), true)]),
                object(vec![("tenant", json!({"type": "null"}), false), ("role", json!({"const": "panel"}), true)]),
            ],
        },
        "NewKey": object(vec![
            ("id", key_id(), true),
            ("key", json!({"type": "string", "pattern": "^lk_[0-9a-f]{12}_[0-9a-f]{32}$", "description": "The key: shown this once, send it as `Authorization: Bearer <key>`"}), true),
            ("tenant", json!({"type": ["string", "null"]}), true),
            ("role", json!({"enum": ["user", "admin", "panel"]}), true),
        ]),
        "Keys": object(vec![(
            "keys",
            json!({"type": "array", "items": object(vec![
                ("id", key_id(), true),
                ("tenant", json!({"type": ["string", "null"]}), true),
                ("role", json!({"enum": ["user", "admin", "panel"]}), true),
                ("created", json!({"type": "string", "format": "date-time"}), true),
            ])}),
            true,
        )]),
        "Revoked": object(vec![("id", key_id(), true), ("revoked", json!({"const": true}), true)]),
        "WebhookRequest": object(vec![
            ("url", json!({"type": "string", "maxLength": egress::MAX_URL_BYTES, "pattern": egress::URL_PATTERN, "description": "Where deliveries go (POST): http or https, a host or an address, an optional port, a path and query"}), true),
            ("tenant", nullable(tenant()), false),
            ("types", nullable(json!({"type": "array", "items": kind.clone(), "description": "Only these notification types (default: every type)"})), false),
            ("retries", nullable(json!({"type": "array", "maxItems": admin::MAX_RETRIES, "items": {"type": "string", "pattern": admin::DELAY_PATTERN}, "description": "The delays between attempts (5s, 2m, 1h, 1d; each at most 7 days; default 5s,30s,2m,10m,1h,4h,12h,24h,24h)"})), false),
        ]),
        "NewWebhook": object(vec![
            ("id", endpoint_id(), true),
            ("secret", json!({"type": "string", "pattern": "^whsec_[A-Za-z0-9+/]{43}=$", "description": "Signs every delivery (Standard Webhooks); shown this once"}), true),
        ]),
        "Webhooks": object(vec![(
            "webhooks",
            json!({"type": "array", "items": object(vec![
                ("id", endpoint_id(), true),
                ("url", text.clone(), true),
                ("tenant", json!({"type": ["string", "null"], "description": "null: every tenant's notifications"}), true),
                ("types", json!({"type": ["array", "null"], "items": kind.clone(), "description": "null: every type"}), true),
                ("retries_ms", json!({"type": "array", "items": natural.clone()}), true),
                ("created", json!({"type": "string", "format": "date-time"}), true),
                ("rotating", json!({"type": "boolean", "description": "A rotated-out secret still signs too"}), true),
            ])}),
            true,
        )]),
        "Removed": object(vec![("id", endpoint_id(), true), ("removed", json!({"const": true}), true)]),
        "Notifications": object(vec![
            ("tenant", tenant(), true),
            ("alerts", object(vec![
                ("tokens", json!({"type": "array", "items": natural.clone(), "description": "Percent of the token limit"}), true),
                ("storage", json!({"type": "array", "items": natural.clone(), "description": "Percent of the storage quota"}), true),
            ]), true),
            ("notifications", json!({"type": "array", "maxItems": 50, "description": "Newest first", "items": object(vec![
                ("id", json!({"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "The event's id"}), true),
                ("type", kind.clone(), true),
                ("timestamp", json!({"type": "string", "format": "date-time"}), true),
                ("data", json!({"type": "object", "description": "As the webhook's body carries it (docs/notifications.md)"}), true),
                ("deliveries", json!({"type": "array", "items": object(vec![
                    ("endpoint", endpoint_id(), true),
                    ("outcome", json!({"enum": ["pending", "delivered", "retrying", "failed"]}), true),
                    ("attempts", natural.clone(), true),
                    ("status", json!({"type": ["integer", "null"], "description": "The receiver's HTTP status"}), true),
                    ("error", json!({"type": ["string", "null"]}), true),
                    ("at", json!({"type": ["string", "null"], "format": "date-time", "description": "The last attempt"}), true),
                ])}), true),
            ])}), true),
        ]),
        "Health": object(vec![
            ("status", json!({"enum": ["ok", "catching_up", "log_unreachable"]}), true),
            ("log_head", json!({"type": ["integer", "null"], "minimum": 0}), true),
            ("views_at", natural.clone(), true),
        ]),
        "Object": {"type": "object"},
    })
}
