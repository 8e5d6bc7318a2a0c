//! `POST /v1/events`: usage reported as CloudEvents 1.0, in the three
//! content modes of the HTTP binding, mapped onto commands.
//!
//! - binary: the attributes in `ce-*` headers (percent-encoded), the body
//!   is the `data` with its own `Content-Type` (`application/json`, or none);
//!   what the official SDKs send by default;
//! - structured: `Content-Type: application/cloudevents+json`, one event;
//! - batched: `Content-Type: application/cloudevents-batch+json`, an array.
//!
//! | `type` | `data` | command |
//! |---|---|---|
//! | `ledger.tokens.consumed` | `{"tokens": n}` | `consume_tokens`, `request` = `id` |
//! | `ledger.file.stored` | `{"bytes": n, "file"?: id}` | `upload`, `file` = `data.file` or `id` |
//! | `ledger.file.deleted` | `{"file"?: id}` | `delete_file`, `file` = `data.file` or `id` |
//!
//! A request whose events do not all carry the required attributes
//! (`specversion` "1.0", non-empty `id`, `source` and `type`, a tenant id as
//! `subject`; `datacontenttype`, when given, a string) is refused whole,
//! before anything is decided: it is not a request of CloudEvents. An event that does carry them but whose `type` or
//! `data` the ledger cannot map is answered in its place in `results`, and
//! the others still run.
//!
//! `subject` is the tenant. The event's `id` is the idempotency key: the
//! request key of a token use, the file id of an upload. The key is used
//! up only by the event's own durable record (the engine answers a retry
//! from the log), so a retried event is a duplicate, never counted twice,
//! and an event whose first attempt failed is never marked seen.

use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};

use crate::engine::command::{tenant_id, Rejection};
use crate::serve::core::MAX_BATCH_COMMANDS;

/// Structured mode's media type: one event.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// Batched mode's media type: an array of events.
pub const BATCHED: &str = "application/cloudevents-batch+json";
/// The attributes every event must carry, as strings.
const REQUIRED: [&str; 5] = ["specversion", "id", "source", "type", "subject"];

/// An event that carries the required attributes: its tenant, and the
/// command it maps onto (or why it maps onto none).
#[derive(Debug)]
pub struct Event {
    pub tenant: String,
    pub command: Result<Mapped, Rejection>,
}

/// One event as the command it becomes.
#[derive(Debug, PartialEq)]
pub struct Mapped {
    pub command: &'static str,
    pub fields: Map<String, Value>,
}

/// The events of a request, in order. Refused whole (`malformed`) when any
/// event lacks a required attribute, and `unsupported_media_type` when the
/// request is in none of the three modes.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Event>, Rejection> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let events = match media.as_str() {
        STRUCTURED => match json(body)? {
            event @ Value::Object(_) => vec![event],
            _ => return Err(Rejection::malformed(format!("{STRUCTURED} carries one event (a JSON object)"))),
        },
        BATCHED => match json(body)? {
            Value::Array(events) => events,
            _ => return Err(Rejection::malformed(format!("{BATCHED} carries a JSON array of events"))),
        },
        _ if headers.contains_key("ce-specversion") => return Ok(vec![binary(headers, &media, body)?]),
        _ => {
            return Err(Rejection::new(
                "unsupported_media_type",
                format!(
                "Content-Type {media:?} without ce-* headers: send {STRUCTURED}, {BATCHED}, or binary mode \
                     (the attributes as ce-* headers)"
            ),
            ))
        }
    };
    if events.len() > MAX_BATCH_COMMANDS {
        return Err(Rejection::malformed(format!(
            "{} events is over the batch limit of {MAX_BATCH_COMMANDS}",
            events.len()
        )));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let Value::Object(mut event) = event else {
                return Err(Rejection::malformed(format!("event {i} is not a JSON object")));
            };
            let attributes = required(|name| event.get(name).and_then(Value::as_str).map(str::to_string))
                .and_then(|attributes| match event.get("datacontenttype") {
                    None | Some(Value::String(_)) => Ok(attributes),
                    Some(_) => Err(Rejection::malformed("datacontenttype must be a string")),
                })
                .map_err(|r| Rejection::malformed(format!("event {i}: {}", r.message)))?;
            Ok(structured(attributes, &mut event))
        })
        .collect()
}

fn json(body: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(body).map_err(|e| Rejection::malformed(format!("not JSON: {e}")))
}

/// The required attributes, by name, from `get`; `malformed` naming the
/// first one missing or wrong.
fn required(get: impl Fn(&str) -> Option<String>) -> Result<[String; 5], Rejection> {
    let attributes = REQUIRED.map(|name| get(name).filter(|v| !v.is_empty()));
    for (name, value) in REQUIRED.iter().zip(&attributes) {
        if value.is_none() {
            return Err(Rejection::malformed(format!("a CloudEvent needs a non-empty string \"{name}\"")));
        }
    }
    let [specversion, id, source, kind, subject] = attributes.map(Option::unwrap_or_default);
    if specversion != "1.0" {
        return Err(Rejection::malformed(format!("specversion must be \"1.0\", not {specversion:?}")));
    }
    tenant_id(&subject).map_err(|r| Rejection::malformed(format!("subject: {}", r.message)))?;
    Ok([specversion, id, source, kind, subject])
}

/// A structured (or batched) event, whose `data` is a JSON value of the
/// event's own.
fn structured([_, id, _, kind, subject]: [String; 5], event: &mut Map<String, Value>) -> Event {
    let command = json_data(event.get("datacontenttype").and_then(Value::as_str))
        .and_then(|()| map(&kind, id, event.remove("data")));
    Event { tenant: subject, command }
}

/// A binary-mode event: the attributes from the `ce-*` headers, the body
/// as its data.
fn binary(headers: &HeaderMap, media: &str, body: &[u8]) -> Result<Event, Rejection> {
    let header = |name: &str| -> Result<Option<String>, Rejection> {
        let Some(value) = headers.get(format!("ce-{name}")) else { return Ok(None) };
        // The binding percent-encodes what is not printable ASCII, spaces,
        // quotes and `%` itself.
        let decoded = percent_encoding::percent_decode(value.as_bytes()).decode_utf8().map_err(|_| {
            Rejection::malformed(format!("the ce-{name} header is not percent-encoded UTF-8"))
        })?;
        Ok(Some(decoded.into_owned()))
    };
    let mut decoded = Vec::with_capacity(REQUIRED.len());
    for name in REQUIRED {
        decoded.push((name, header(name)?));
    }
    let [_, id, _, kind, subject] =
        required(|name| decoded.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.clone()))?;
    let data_type = (!media.is_empty()).then_some(media);
    let command = json_data(data_type).and_then(|()| {
        let data = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(json(body).map_err(|r| Rejection::malformed(format!("data: {}", r.message)))?)
        };
        map(&kind, id, data)
    });
    Ok(Event { tenant: subject, command })
}

/// The ledger's events carry JSON data: `datacontenttype` (or a binary
/// event's `Content-Type`), when given, is `application/json`.
fn json_data(data_type: Option<&str>) -> Result<(), Rejection> {
    match data_type {
        Some(t) if !t.trim().to_ascii_lowercase().starts_with("application/json") => {
            Err(Rejection::malformed(format!("the data's content type must be application/json, not {t:?}")))
        }
        _ => Ok(()),
    }
}

/// An event of type `kind` as a command.
fn map(kind: &str, id: String, data: Option<Value>) -> Result<Mapped, Rejection> {
    let mut data = match data {
        Some(Value::Object(data)) => data,
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
    let command = match kind {
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
    Ok(Mapped { command, fields })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn one(event: &str) -> Event {
        parse(&headers(&[("content-type", STRUCTURED)]), event.as_bytes()).unwrap().pop().unwrap()
    }

    #[test]
    fn events_map_onto_commands_with_the_id_as_key() {
        let e = one(
            r#"{"specversion":"1.0","id":"r-1","source":"app","type":"ledger.tokens.consumed","subject":"acme","data":{"tokens":5}}"#,
        );
        let m = e.command.unwrap();
        assert_eq!((e.tenant.as_str(), m.command), ("acme", "consume_tokens"));
        assert_eq!(Value::Object(m.fields), json!({"request": "r-1", "tokens": 5}));
        let e = one(
            r#"{"specversion":"1.0","id":"f","source":"app","type":"ledger.file.stored","subject":"acme","data":{"bytes":7}}"#,
        );
        assert_eq!(Value::Object(e.command.unwrap().fields), json!({"file": "f", "bytes": 7}));
        let e = one(
            r#"{"specversion":"1.0","id":"e","source":"app","type":"ledger.file.deleted","subject":"acme","data":{"file":"g"}}"#,
        );
        let m = e.command.unwrap();
        assert_eq!((m.command, Value::Object(m.fields)), ("delete_file", json!({"file": "g"})));
    }

    #[test]
    fn a_binary_event_is_its_headers_and_its_body() {
        let event = |content_type: Option<&str>, body: &str| {
            let mut pairs = vec![
                ("ce-specversion", "1.0"),
                ("ce-id", "r%25%22-1"),
                ("ce-source", "acme%20site"),
                ("ce-type", "ledger.tokens.consumed"),
                ("ce-subject", "acme"),
            ];
            pairs.extend(content_type.map(|t| ("content-type", t)));
            parse(&headers(&pairs), body.as_bytes()).map(|mut events| events.pop().unwrap())
        };
        for content_type in [Some("application/json"), Some("application/json; charset=utf-8"), None] {
            let e = event(content_type, r#"{"tokens": 5}"#).unwrap();
            assert_eq!(e.tenant, "acme");
            // Header values are percent-decoded: the id is `r%"-1`.
            assert_eq!(Value::Object(e.command.unwrap().fields), json!({"request": "r%\"-1", "tokens": 5}));
        }
        // Well-formed attributes with data the ledger cannot use: the event's
        // own answer, not the request's.
        for (content_type, body) in [(Some("text/plain"), "5"), (None, "{"), (None, "[1]")] {
            let e = event(content_type, body).unwrap();
            assert_eq!(e.command.unwrap_err().code, "malformed", "{content_type:?} {body}");
        }
        // No body is no data: the command says what it lacks.
        let e = event(None, "").unwrap();
        assert_eq!(Value::Object(e.command.unwrap().fields), json!({"request": "r%\"-1", "tokens": null}));
        let missing = parse(&headers(&[("ce-specversion", "1.0"), ("ce-id", "r")]), b"{}").unwrap_err();
        assert_eq!(missing.code, "malformed");
        assert!(missing.message.contains("source"), "{}", missing.message);
    }

    #[test]
    fn a_request_of_events_without_their_attributes_is_refused_whole() {
        let batch = |body: &str| parse(&headers(&[("content-type", BATCHED)]), body.as_bytes());
        let good =
            r#"{"specversion":"1.0","id":"r","source":"a","type":"ledger.tokens.consumed","subject":"acme"}"#;
        for bad in [
            "[[null, null]]".to_string(),
            "[1]".to_string(),
            format!("[{good}, {{}}]"),
            format!("[{good}, {}]", good.replace(r#""specversion":"1.0""#, r#""specversion":"0.3""#)),
            format!("[{}]", good.replace(r#""id":"r","#, "")),
            format!("[{}]", good.replace(r#""source":"a""#, r#""source":"""#)),
            format!("[{}]", good.replace(r#""subject":"acme""#, r#""subject":"Not.A.Tenant""#)),
            format!("[{}]", good.replace(r#""type":"ledger.tokens.consumed""#, r#""type":7"#)),
            format!("[{}]", good.replace(r#""id":"r","#, r#""id":"r","datacontenttype":{},"#)),
            "{}".to_string(),
            "not json".to_string(),
        ] {
            assert_eq!(batch(&bad).unwrap_err().code, "malformed", "{bad}");
        }
        let items = batch(&format!("[{good}, {good}]")).unwrap();
        assert_eq!(items.len(), 2);
        let over = format!("[{}]", vec![good; MAX_BATCH_COMMANDS + 1].join(","));
        assert_eq!(batch(&over).unwrap_err().code, "malformed");
        assert_eq!(batch("[]").unwrap().len(), 0);
        let structured = |body: &str| parse(&headers(&[("content-type", STRUCTURED)]), body.as_bytes());
        assert_eq!(structured(&format!("[{good}]")).unwrap_err().code, "malformed");
        assert_eq!(structured(&good.replace(r#""id":"r","#, "")).unwrap_err().code, "malformed");
    }

    #[test]
    fn a_well_formed_event_with_a_wrong_type_or_data_is_answered_in_its_place() {
        for bad in [
            r#"{"specversion":"1.0","id":"r","source":"a","type":"com.example.other","subject":"acme"}"#,
            r#"{"specversion":"1.0","id":"r","source":"a","type":"ledger.tokens.consumed","subject":"acme","data":{"tokens":1,"extra":2}}"#,
            r#"{"specversion":"1.0","id":"r","source":"a","type":"ledger.tokens.consumed","subject":"acme","data":"text"}"#,
            r#"{"specversion":"1.0","id":"r","source":"a","type":"ledger.tokens.consumed","subject":"acme","datacontenttype":"text/xml","data":{"tokens":1}}"#,
        ] {
            assert_eq!(one(bad).command.unwrap_err().code, "malformed", "{bad}");
        }
    }

    #[test]
    fn a_request_in_no_mode_is_an_unsupported_media_type() {
        for content_type in ["application/json", "text/plain", ""] {
            let refused = parse(&headers(&[("content-type", content_type)]), b"{}").unwrap_err();
            assert_eq!(refused.code, "unsupported_media_type", "{content_type}");
        }
        assert_eq!(parse(&HeaderMap::new(), b"").unwrap_err().code, "unsupported_media_type");
    }
}
