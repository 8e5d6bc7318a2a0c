//! Every HTTP route, once: the router here and the OpenAPI 3.1 document
//! (`super::openapi`) are both built from [`routes`]. (A derive-based
//! generator such as utoipa would add proc-macro build time on a 2-core
//! machine; one table keeps the document exact with none.)
//!
//! Each command has a route of its own on each path it is served on, and
//! [`COMMANDS`] says, for the document, who may send it and which
//! rejections it can meet.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderMap;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;

use super::AppState;
use crate::engine::command::Cause;

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
pub(super) enum Senders {
    Panel,
    Admins,
    Anyone,
}

/// A command as the document describes it: besides `malformed` and what
/// the transport answers (401, 403, 413, 503), the rejections it can meet.
pub struct Command {
    pub name: &'static str,
    pub(super) senders: Senders,
    /// The catalog's commands have no tenant, and no tenant path.
    pub(super) catalog: bool,
    pub(super) summary: &'static str,
    /// The code of the denial the ledger records (a 200 with `ok: false`).
    pub(super) denial: Option<&'static str>,
    pub(super) refusals: &'static [(&'static str, Cause)],
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
pub(super) fn camel(name: &str) -> String {
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
        Serves::OpenApi => get(super::openapi_document),
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
