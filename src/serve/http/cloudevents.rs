//! `POST /v1/events`: usage reported as CloudEvents 1.0 (structured JSON
//! mode), mapped onto commands.
//!
//! | `type` | `data` | command |
//! |---|---|---|
//! | `ledger.tokens.consumed` | `{"tokens": n}` | `consume_tokens`, `request` = `id` |
//! | `ledger.file.stored` | `{"bytes": n, "file"?: id}` | `upload`, `file` = `data.file` or `id` |
//! | `ledger.file.deleted` | `{"file"?: id}` | `delete_file`, `file` = `data.file` or `id` |
//!
//! `subject` is the tenant. The event's `id` is the idempotency key: the
//! request key of a token use, the file id of an upload. The key is used
//! up only by the event's own durable record (the engine answers a retry
//! from the log), so a retried event is a duplicate, never counted twice,
//! and an event whose first attempt failed is never marked seen.

use serde_json::{Map, Value};

use crate::engine::command::{tenant_id, Rejection};
use crate::serve::core::MAX_BATCH_COMMANDS;

/// One event, as the command it becomes.
#[derive(Debug)]
pub struct Mapped {
    pub tenant: String,
    pub command: &'static str,
    pub fields: Map<String, Value>,
}

/// The events of a body: `application/cloudevents+json` is one event,
/// `application/cloudevents-batch+json` an array. Each event is mapped on
/// its own (a malformed one is answered and skipped, the rest still run).
pub fn parse(content_type: &str, body: &[u8]) -> Result<Vec<Result<Mapped, Rejection>>, Rejection> {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Rejection::malformed(format!("not JSON: {e}")))?;
    let events = match (media.as_str(), value) {
        ("application/cloudevents+json", event @ Value::Object(_)) => vec![event],
        ("application/cloudevents+json", _) => {
            return Err(Rejection::malformed(
                "application/cloudevents+json carries one event (a JSON object)",
            ))
        }
        ("application/cloudevents-batch+json", Value::Array(events)) => events,
        ("application/cloudevents-batch+json", _) => {
            return Err(Rejection::malformed(
                "application/cloudevents-batch+json carries a JSON array of events",
            ))
        }
        (other, _) => {
            return Err(Rejection::malformed(format!(
            "Content-Type {other:?}: send application/cloudevents+json or application/cloudevents-batch+json"
        )))
        }
    };
    if events.len() > MAX_BATCH_COMMANDS {
        return Err(Rejection::malformed(format!(
            "{} events is over the batch limit of {MAX_BATCH_COMMANDS}",
            events.len()
        )));
    }
    Ok(events.into_iter().map(map).collect())
}

fn text<'a>(event: &'a Map<String, Value>, attribute: &str) -> Result<&'a str, Rejection> {
    match event.get(attribute) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(Rejection::malformed(format!("a CloudEvent needs a non-empty string \"{attribute}\""))),
    }
}

/// One event as a command.
fn map(event: Value) -> Result<Mapped, Rejection> {
    let Value::Object(event) = event else {
        return Err(Rejection::malformed("each CloudEvent is a JSON object"));
    };
    if text(&event, "specversion")? != "1.0" {
        return Err(Rejection::malformed("specversion must be \"1.0\""));
    }
    text(&event, "source")?;
    let id = text(&event, "id")?.to_string();
    let tenant = text(&event, "subject")?.to_string();
    tenant_id(&tenant)?;
    if let Some(content_type) = event.get("datacontenttype") {
        if content_type.as_str().is_none_or(|t| !t.starts_with("application/json")) {
            return Err(Rejection::malformed("datacontenttype must be application/json"));
        }
    }
    let mut data = match event.get("data") {
        Some(Value::Object(data)) => data.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(Rejection::malformed("data must be a JSON object")),
    };
    let allow = |data: &Map<String, Value>, known: &[&str]| match data
        .keys()
        .find(|k| !known.contains(&k.as_str()))
    {
        Some(field) => Err(Rejection::malformed(format!("unknown data field {field:?}"))),
        None => Ok(()),
    };
    let mut fields = Map::new();
    let command = match text(&event, "type")? {
        "ledger.tokens.consumed" => {
            allow(&data, &["tokens"])?;
            fields.insert("request".into(), Value::String(id));
            fields.insert("tokens".into(), data.remove("tokens").unwrap_or(Value::Null));
            "consume_tokens"
        }
        "ledger.file.stored" => {
            allow(&data, &["bytes", "file"])?;
            fields.insert("file".into(), data.remove("file").unwrap_or(Value::String(id)));
            fields.insert("bytes".into(), data.remove("bytes").unwrap_or(Value::Null));
            "upload"
        }
        "ledger.file.deleted" => {
            allow(&data, &["file"])?;
            fields.insert("file".into(), data.remove("file").unwrap_or(Value::String(id)));
            "delete_file"
        }
        other => {
            return Err(Rejection::malformed(format!(
                "unknown type {other:?} (ledger.tokens.consumed, ledger.file.stored, ledger.file.deleted)"
            )))
        }
    };
    Ok(Mapped { tenant, command, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(event: &str) -> Result<Mapped, Rejection> {
        parse("application/cloudevents+json", event.as_bytes()).unwrap().pop().unwrap()
    }

    #[test]
    fn events_map_onto_commands_with_the_id_as_key() {
        let m = one(r#"{"specversion":"1.0","id":"r-1","source":"app","type":"ledger.tokens.consumed","subject":"acme","data":{"tokens":5}}"#).unwrap();
        assert_eq!((m.tenant.as_str(), m.command), ("acme", "consume_tokens"));
        assert_eq!(Value::Object(m.fields), serde_json::json!({"request": "r-1", "tokens": 5}));
        let m = one(r#"{"specversion":"1.0","id":"f","source":"app","type":"ledger.file.stored","subject":"acme","data":{"bytes":7}}"#).unwrap();
        assert_eq!(Value::Object(m.fields), serde_json::json!({"file": "f", "bytes": 7}));
        let m = one(r#"{"specversion":"1.0","id":"e","source":"app","type":"ledger.file.deleted","subject":"acme","data":{"file":"g"}}"#).unwrap();
        assert_eq!((m.command, Value::Object(m.fields)), ("delete_file", serde_json::json!({"file": "g"})));
    }

    #[test]
    fn what_is_not_a_ledger_cloudevent_is_malformed() {
        for bad in [
            r#"{"id":"r","source":"a","type":"ledger.tokens.consumed","subject":"acme","data":{"tokens":1}}"#,
            r#"{"specversion":"0.3","id":"r","source":"a","type":"ledger.tokens.consumed","subject":"acme"}"#,
            r#"{"specversion":"1.0","source":"a","type":"ledger.tokens.consumed","subject":"acme"}"#,
            r#"{"specversion":"1.0","id":"r","source":"a","type":"ledger.tokens.consumed","subject":"Not.A.Tenant"}"#,
            r#"{"specversion":"1.0","id":"r","source":"a","type":"com.example.other","subject":"acme"}"#,
            r#"{"specversion":"1.0","id":"r","source":"a","type":"ledger.tokens.consumed","subject":"acme","data":{"tokens":1,"extra":2}}"#,
            r#"{"specversion":"1.0","id":"r","source":"a","type":"ledger.tokens.consumed","subject":"acme","data":"text"}"#,
        ] {
            assert_eq!(one(bad).unwrap_err().code, "malformed", "{bad}");
        }
        assert!(parse("application/json", b"{}").is_err());
        assert!(parse("application/cloudevents-batch+json", b"{}").is_err());
        assert!(parse("application/cloudevents+json", b"[]").is_err());
    }
}
