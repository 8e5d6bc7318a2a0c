//! Every HTTP route, once: the router and the OpenAPI 3.1 document are both
//! built from [`ROUTES`]. (A derive-based generator such as utoipa would
//! add proc-macro build time on a 2-core machine for a dozen routes; one
//! table keeps the document exact with none.)

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use serde_json::{json, Map, Value};

use super::AppState;

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
}

/// One route: how it is served and how it is described.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub operation: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// The request body's schema (a name under `components/schemas`).
    pub body: Option<&'static str>,
    /// The 200 response's schema and media type.
    pub ok: (&'static str, &'static str),
    /// Query parameters: name and schema type.
    pub query: &'static [(&'static str, &'static str)],
    handler: fn() -> MethodRouter<AppState>,
}

const JSON: &str = "application/json";

pub const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/v1/tenants/{tenant}/{command}",
        operation: "tenantCommand",
        summary: "A tenant command (upload, delete_file, consume_tokens, set_seats, purchase_addon, cancel_addon, ...), or `batch` with {\"commands\": [...]}",
        auth: Auth::Tenant,
        body: Some("CommandFields"),
        ok: ("Decision", JSON),
        query: &[],
        handler: || post(super::tenant_command),
    },
    Route {
        method: "post",
        path: "/v1/admin/{command}",
        operation: "adminCommand",
        summary: "A control panel command (define_plan, define_addon, subscribe, change_plan, cancel, settle_payment, close_period, any tenant command), or `batch`",
        auth: Auth::Panel,
        body: Some("CommandFields"),
        ok: ("Decision", JSON),
        query: &[],
        handler: || post(super::admin_command),
    },
    Route {
        method: "post",
        path: "/v1/events",
        operation: "ingestCloudEvents",
        summary: "Usage as CloudEvents: application/cloudevents+json (one) or application/cloudevents-batch+json (an array)",
        auth: Auth::Key,
        body: Some("CloudEvents"),
        ok: ("Results", JSON),
        query: &[],
        handler: || post(super::events),
    },
    Route {
        method: "get",
        path: "/v1/tenants/{tenant}/usage",
        operation: "usage",
        summary: "The tenant's usage: `ledger usage --json`",
        auth: Auth::Tenant,
        body: None,
        ok: ("Usage", JSON),
        query: &[("at", "string")],
        handler: || get(super::usage),
    },
    Route {
        method: "get",
        path: "/v1/tenants/{tenant}/invoice",
        operation: "invoice",
        summary: "The invoice of the period holding `at`: `ledger invoice --json`; `explain=true` adds each line's arithmetic and events",
        auth: Auth::Tenant,
        body: None,
        ok: ("Invoice", JSON),
        query: &[("at", "string"), ("explain", "boolean")],
        handler: || get(super::invoice),
    },
    Route {
        method: "get",
        path: "/v1/tenants/{tenant}/invoices",
        operation: "invoices",
        summary: "Every period of the tenant with its status and totals",
        auth: Auth::Tenant,
        body: None,
        ok: ("Invoices", JSON),
        query: &[],
        handler: || get(super::invoices),
    },
    Route {
        method: "get",
        path: "/v1/tenants",
        operation: "tenants",
        summary: "Every tenant with plan, status, seats and usage",
        auth: Auth::Panel,
        body: None,
        ok: ("Tenants", JSON),
        query: &[],
        handler: || get(super::tenants),
    },
    Route {
        method: "get",
        path: "/v1/me",
        operation: "me",
        summary: "Whom the presented key speaks for",
        auth: Auth::Key,
        body: None,
        ok: ("Me", JSON),
        query: &[],
        handler: || get(super::me),
    },
    Route {
        method: "get",
        path: "/healthz",
        operation: "health",
        summary: "200 once the views include the whole log, 503 before (or when the log is unreachable)",
        auth: Auth::Open,
        body: None,
        ok: ("Health", JSON),
        query: &[],
        handler: || get(super::healthz),
    },
    Route {
        method: "get",
        path: "/metrics",
        operation: "metrics",
        summary: "Prometheus metrics: decisions by command and outcome, decision latency, batch sizes, projector lag, log reachability",
        auth: Auth::Open,
        body: None,
        ok: ("Text", "application/openmetrics-text"),
        query: &[],
        handler: || get(super::metrics),
    },
    Route {
        method: "get",
        path: "/v1/openapi.json",
        operation: "openapi",
        summary: "This document",
        auth: Auth::Open,
        body: None,
        ok: ("Object", JSON),
        query: &[],
        handler: || get(super::openapi),
    },
    Route {
        method: "get",
        path: "/",
        operation: "console",
        summary: "The web console (HTML)",
        auth: Auth::Open,
        body: None,
        ok: ("Text", "text/html"),
        query: &[],
        handler: || get(super::console),
    },
];

/// The router over [`ROUTES`], with the body limit and the problem-shaped
/// 404.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        router = router.route(route.path, (route.handler)());
    }
    router.fallback(super::not_found).layer(DefaultBodyLimit::max(super::MAX_BODY_BYTES)).with_state(state)
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The OpenAPI 3.1 document for [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(
            route
                .query
                .iter()
                .map(|(name, kind)| json!({"name": name, "in": "query", "schema": {"type": kind}})),
        );
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({"description": "OK", "content": {route.ok.1: {"schema": schema(route.ok.0)}}}),
        );
        let problem = |description: &str| json!({"description": description, "content": {"application/problem+json": {"schema": schema("Problem")}}});
        if route.auth != Auth::Open {
            responses.insert("401".into(), problem("No key, or an unknown or revoked key"));
            responses.insert("403".into(), problem("The key cannot reach this tenant or route"));
            responses.insert("400".into(), problem("malformed or invalid_*"));
            responses.insert("404".into(), problem("unknown_* or not_subscribed"));
            responses.insert("409".into(), problem("Another state conflict"));
            responses
                .insert("503".into(), problem("The log is unreachable: retry after Retry-After seconds"));
        }
        if route.body.is_some() {
            responses.insert("413".into(), problem("The body is over 1 MiB"));
        }
        if route.operation == "health" {
            responses.insert("503".into(), json!({"description": "Catching up, or the log is unreachable", "content": {JSON: {"schema": schema("Health")}}}));
        }
        let mut operation = json!({
            "operationId": route.operation,
            "summary": route.summary,
            "parameters": parameters,
            "responses": responses,
        });
        if route.auth == Auth::Open {
            operation["security"] = json!([]);
        }
        if let Some(body) = route.body {
            let content = if body == "CloudEvents" {
                json!({
                    "application/cloudevents+json": {"schema": schema("CloudEvent")},
                    "application/cloudevents-batch+json": {"schema": {"type": "array", "items": schema("CloudEvent")}},
                })
            } else {
                json!({ JSON: {"schema": schema(body)} })
            };
            operation["requestBody"] = json!({"required": true, "content": content});
        }
        let entry = paths.entry(route.path.to_string()).or_insert_with(|| json!({}));
        entry[route.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Subscription ledger",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Per-seat billing, add-ons with payment, storage quotas and AI token limits, on an event log. The actor of every request comes from its API key.",
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
    let period = json!({"type": "object", "properties": {"start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"}}});
    json!({
        "CommandFields": {"type": "object", "description": "The command's fields as in `ledger apply` (tenant, at, actor and cmd come from the route, the clock and the key); for `batch`: {\"commands\": [{\"cmd\": ..., ...}]}", "additionalProperties": true},
        "Decision": {
            "type": "object",
            "description": "The object `apply` prints for a line: accepted (ok), or a recorded quota or token denial (ok false with its code and figures)",
            "required": ["ok"],
            "properties": {"ok": {"type": "boolean"}, "seq": {"type": "integer"}, "duplicate": {"type": "boolean"}, "code": {"type": "string"}, "message": {"type": "string"}},
            "additionalProperties": {"type": "integer"},
        },
        "Results": {"type": "object", "properties": {"results": {"type": "array", "items": schema("Decision")}}},
        "Problem": {
            "type": "object",
            "description": "RFC 9457",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}, "code": {"type": "string"}, "ok": {"type": "boolean"}, "message": {"type": "string"}},
        },
        "CloudEvent": {
            "type": "object",
            "required": ["specversion", "id", "source", "type", "subject"],
            "properties": {
                "specversion": {"const": "1.0"},
                "id": {"type": "string", "description": "The idempotency key"},
                "source": {"type": "string"},
                "type": {"enum": ["ledger.tokens.consumed", "ledger.file.stored", "ledger.file.deleted"]},
                "subject": {"type": "string", "description": "The tenant"},
                "data": {"type": "object", "properties": {"tokens": {"type": "integer"}, "bytes": {"type": "integer"}, "file": {"type": "string"}}},
            },
        },
        "Usage": {
            "type": "object",
            "properties": {
                "tenant": {"type": "string"}, "plan": {"type": "string"}, "seats": {"type": "integer"}, "status": {"type": "string"},
                "period": period,
                "storage": {"type": "object", "properties": {"used_bytes": {"type": "integer"}, "quota_bytes": {"type": "integer"}}},
                "tokens": {"type": "object", "properties": {"used": {"type": "integer"}, "limit": {"type": "integer"}}},
                "addons": {"type": "array", "items": {"type": "object", "properties": {"purchase": {"type": "string"}, "addon": {"type": "string"}, "quantity": {"type": "integer"}, "status": {"type": "string"}}}},
            },
        },
        "Invoice": {
            "type": "object",
            "properties": {
                "tenant": {"type": "string"}, "period": period, "currency": {"type": "string"}, "status": {"enum": ["draft", "final"]},
                "lines": {"type": "array", "items": {"type": "object", "properties": {"code": {"type": "string"}, "description": {"type": "string"}, "amount": {"type": "string"}, "paid": {"type": "boolean"}}}},
                "total": {"type": "string"}, "paid": {"type": "string"}, "amount_due": {"type": "string"},
                "explain": {"type": "array", "description": "With explain=true: per line, the arithmetic, the exact amount and the events behind it", "items": {"type": "object"}},
            },
        },
        "Invoices": {"type": "object", "properties": {"tenant": {"type": "string"}, "invoices": {"type": "array", "items": {"type": "object"}}}},
        "Tenants": {"type": "object", "properties": {"tenants": {"type": "array", "items": {"type": "object", "properties": {"tenant": {"type": "string"}, "plan": {"type": ["string", "null"]}, "status": {"type": "string"}, "seats": {"type": ["integer", "null"]}, "storage": {"type": "object"}, "tokens": {"type": "object"}}}}}},
        "Me": {"type": "object", "properties": {"id": {"type": "string"}, "tenant": {"type": ["string", "null"]}, "role": {"enum": ["user", "admin", "panel"]}, "actor": {"type": "string"}}},
        "Health": {"type": "object", "properties": {"status": {"enum": ["ok", "catching_up", "log_unreachable"]}, "log_head": {"type": ["integer", "null"]}, "views_at": {"type": "integer"}}},
        "Text": {"type": "string"},
        "Object": {"type": "object"},
    })
}
