//! The schemas of the OpenAPI document: each command's body, written
//! from the parser's bounds, and the answers' shapes.

use serde_json::{json, Map, Value};

use crate::engine::command::{
    offline_admissible, own_key, DECIMAL_PATTERN, ID_PATTERN, INSTANT_PATTERN, MAX_COUNT, MAX_ID_BYTES,
    MAX_NAME_BYTES, NAME_PATTERN, TENANT_PATTERN,
};
use crate::notify::{admin, egress};
use crate::serve::core::MAX_BATCH_COMMANDS;
use crate::serve::http::routes::{camel, Command, COMMANDS};

pub(super) fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// An id: 1 to 128 bytes of printable ASCII without spaces.
pub(super) fn id(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_ID_BYTES, "pattern": ID_PATTERN, "description": description})
}

pub(super) fn tenant() -> Value {
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
pub(super) fn key_id() -> Value {
    json!({"type": "string", "pattern": "^[0-9a-f]{12}$", "description": "The key's id (`GET /v1/keys`)"})
}

/// A webhook endpoint's id, as registrations make them.
pub(super) fn endpoint_id() -> Value {
    json!({"type": "string", "pattern": "^ep_[0-9a-f]{12}$", "description": "The endpoint's id (`GET /v1/webhooks`)"})
}

pub(super) fn instant(description: &str) -> Value {
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
pub(super) fn command_body(command: &Command, with_tenant: bool) -> Value {
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

pub(super) fn schemas() -> Value {
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
        ("partition", natural.clone(), true),
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
            ("partition", json!({"type": "integer", "minimum": 0, "description": "The log partition the command's events went to (0 on a ledger of one partition)"}), true),
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
