//! The OpenAPI 3.1 document, built from the route table
//! ([`super::routes::routes`]) the router is built from.
//!
//! Each command has an operation of its own on each path it is served on,
//! with a request schema written from the parser's bounds (the patterns
//! and limits of `engine::command`), and each operation lists exactly the
//! statuses it can answer: the rejections the command can meet, each put
//! through the one mapping from a rejection to a status
//! ([`super::status_of`]), with the codes each status can carry.

mod schemas;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::routes::{camel, routes, Auth, Command, Route, Senders, Serves};
use crate::engine::command::{own_key, Cause, Rejection};
use crate::notify::egress;
use crate::serve::core::MAX_BATCH_COMMANDS;
use schemas::{command_body, endpoint_id, id, instant, key_id, schema, schemas, tenant};
use Cause::{Request as R, State as S};

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
