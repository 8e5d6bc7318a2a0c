//! The NATS front end (the spec's "Service contract").
//!
//! Three endpoints of one async-nats `service` (so `nats micro ls` finds it),
//! each a queue subscription in the service's queue group, so requests are
//! split among however many `serve` instances run against one stream:
//! - `ledger.cmd.<tenant>.<role>.<command>` (and `.batch`): the actor is
//!   `<tenant>:<role>`, taken from the subject NATS authorized, never from
//!   the body;
//! - `ledger.admin.<command>` (and `.batch`): the control panel (`admin`);
//! - `ledger.query.<tenant>.<view>`: `usage`, `invoice`, `invoices`.
//!
//! Every request the service receives gets a JSON reply, `ok: false` with a
//! code when it fails.

use std::sync::Arc;

use async_nats::service::ServiceExt;
use events::Actor;
use futures_util::StreamExt;
use serde_json::Value;

use super::core::{fields, parse_batch, submission, tenant_actor, Core, QueryView};
use crate::engine::command::{tenant_id, Rejection, Submission};
use crate::report::{rejection_json, reply_json};

pub use ledger_client::protocol::{inbox_prefix, SERVICE_NAME};

/// Requests being answered at once; past it, the endpoint waits.
const MAX_REQUESTS_IN_FLIGHT: usize = 10_000;
/// Starts the service's endpoints on `client`, answering from `core`.
pub(super) async fn start(
    client: &async_nats::Client,
    core: Arc<Core>,
) -> anyhow::Result<(async_nats::service::Service, Vec<tokio::task::JoinHandle<()>>)> {
    let service = client
        .service_builder()
        .description("Event-sourced subscription ledger: commands, queries, billing clock")
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("starting the NATS service: {e}"))?;
    let mut tasks = Vec::new();
    for (name, subject) in
        [("command", "ledger.cmd.*.*.*"), ("admin", "ledger.admin.*"), ("query", "ledger.query.*.*")]
    {
        let endpoint = service
            .endpoint_builder()
            .name(name)
            .add(subject)
            .await
            .map_err(|e| anyhow::anyhow!("adding endpoint {subject}: {e}"))?;
        tasks.push(tokio::spawn(serve_endpoint(endpoint, client.clone(), core.clone())));
    }
    tracing::info!("serving ledger.cmd.>, ledger.admin.>, ledger.query.>");
    Ok((service, tasks))
}

async fn serve_endpoint(
    mut endpoint: async_nats::service::endpoint::Endpoint,
    client: async_nats::Client,
    core: Arc<Core>,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_IN_FLIGHT));
    while let Some(request) = endpoint.next().await {
        let subject = request.message.subject.to_string();
        // Read per request: a reconnect may land on a server configured
        // otherwise.
        let open_server = !client.server_info().auth_required;
        let reply_ok =
            request.message.reply.as_deref().is_some_and(|reply| reply_allowed(&subject, reply, open_server));
        if !reply_ok {
            // The ledger's credential may publish where tenants may not: a
            // reply subject is only ever an inbox of the sender's kind, or
            // a request could make the ledger publish into the stream or
            // the JetStream API on its behalf.
            tracing::warn!(%subject, reply = ?request.message.reply, "refusing a request whose reply subject is not an inbox");
            continue;
        }
        let core = core.clone();
        let permit = in_flight.clone().acquire_owned().await.expect("never closed");
        // Each request on its own task: the engine group-commits whatever
        // arrives together, so concurrency here is throughput.
        tokio::spawn(async move {
            let answer = route(&core, &subject, &request.message.payload).await;
            let body = serde_json::to_vec(&answer).expect("replies serialize");
            if let Err(error) = request.respond(Ok(body.into())).await {
                tracing::warn!(%error, %subject, "could not send a reply");
            }
            drop(permit);
        });
    }
}

/// Whether the service may publish its reply to `reply` for a request on
/// `subject`: the inbox prefix (`_INBOX_<user>.`) of a credential that may
/// send on `subject` in the shipped configuration, or, on a server that
/// requires no authentication (`open_server`: development), also the
/// default `_INBOX.`. On a server with credentials, `_INBOX.` is refused:
/// every credential there has its own prefix, and a shared one could be
/// read by another tenant.
pub fn reply_allowed(subject: &str, reply: &str, open_server: bool) -> bool {
    let inbox = |user: &str| {
        let prefix = inbox_prefix(user);
        reply.len() > prefix.len() + 1 && reply.starts_with(&prefix) && reply.as_bytes()[prefix.len()] == b'.'
    };
    if open_server && reply.starts_with("_INBOX.") && reply.len() > "_INBOX.".len() {
        return true;
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    match tokens.as_slice() {
        ["ledger", "cmd", tenant, role, _] => inbox(&format!("{tenant}-{role}")),
        ["ledger", "admin", _] => inbox("panel"),
        ["ledger", "query", tenant, _] => {
            inbox("panel") || inbox(&format!("{tenant}-admin")) || inbox(&format!("{tenant}-user"))
        }
        _ => false,
    }
}

/// A request as the service understood it, before anything is decided.
#[derive(Debug)]
pub enum ParsedRequest {
    /// One command.
    Command(Submission),
    /// A batch: each command parsed on its own (a malformed one is answered
    /// and skipped, the rest still run).
    Batch(Vec<Result<Submission, Rejection>>),
    /// A view of a tenant, at an instant (default: ledger time).
    Query { tenant: String, view: QueryView, at_us: Option<i64> },
}

/// Parses a request from its subject and body: pure, no IO, never panics
/// on anything a request carries (the fuzz target `serve_request` holds it
/// to that).
pub fn parse_request(subject: &str, body: &[u8]) -> Result<ParsedRequest, Rejection> {
    let tokens: Vec<&str> = subject.split('.').collect();
    match tokens.as_slice() {
        ["ledger", "cmd", tenant, role, command] => {
            let actor = tenant_actor(tenant, role)?;
            if *command == "batch" {
                Ok(ParsedRequest::Batch(parse_batch(Some(tenant), &actor, body)?))
            } else {
                Ok(ParsedRequest::Command(submission(Some(tenant), &actor, command, fields(body)?)?))
            }
        }
        ["ledger", "admin", "batch"] => Ok(ParsedRequest::Batch(parse_batch(None, &Actor::Admin, body)?)),
        ["ledger", "admin", command] => {
            Ok(ParsedRequest::Command(submission(None, &Actor::Admin, command, fields(body)?)?))
        }
        ["ledger", "query", tenant, view] => {
            tenant_id(tenant)?;
            let view = match *view {
                "usage" => QueryView::Usage,
                "invoice" => QueryView::Invoice { explain: false },
                "invoices" => QueryView::Invoices,
                other => {
                    return Err(Rejection::malformed(format!(
                        "unknown view {other:?} (usage, invoice, invoices)"
                    )))
                }
            };
            let mut fields = fields(body)?;
            let at_us = match fields.remove("at") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(crate::engine::command::parse_at(&s)?),
                Some(other) => return Err(Rejection::malformed(format!("at must be a string, not {other}"))),
            };
            if let Some(field) = fields.keys().next() {
                return Err(Rejection::malformed(format!(
                    "unknown field {field:?} (a query takes only \"at\")"
                )));
            }
            Ok(ParsedRequest::Query { tenant: tenant.to_string(), view, at_us })
        }
        _ => Err(Rejection::malformed(format!("no endpoint for subject {subject}"))),
    }
}

async fn route(core: &Core, subject: &str, body: &[u8]) -> Value {
    let result = match parse_request(subject, body) {
        Ok(ParsedRequest::Command(submission)) => Ok(reply_json(&core.command(submission).await)),
        Ok(ParsedRequest::Batch(items)) => Ok(core.batch(items).await),
        Ok(ParsedRequest::Query { tenant, view, at_us }) => core.query(&tenant, view, at_us).await,
        Err(rejection) => {
            core.metrics.malformed();
            Err(rejection)
        }
    };
    result.unwrap_or_else(|rejection| rejection_json(&rejection))
}

#[cfg(test)]
mod tests {
    use super::reply_allowed;

    #[test]
    fn replies_go_only_to_the_requesters_own_inbox() {
        let cmd = "ledger.cmd.acme.user.consume_tokens";
        // With credentials: only the inbox of a user allowed on the subject.
        assert!(reply_allowed(cmd, "_INBOX_acme-user.abc.1", false));
        for refused in [
            "_INBOX.abc.1",                   // the shared default prefix
            "_INBOX_acme-admin.abc",          // another role of the tenant
            "_INBOX_beta-user.abc",           // another tenant
            "_INBOX_acme-user",               // the bare prefix
            "_INBOX_acme-user.",              // nothing after it
            "_INBOX_acme-userx.abc",          // a longer user name
            "$JS.API.STREAM.PURGE.LEDGER",    // not an inbox at all
            "ledger.v1.acme.tokens_consumed", // the stream
        ] {
            assert!(!reply_allowed(cmd, refused, false), "{refused}");
        }
        assert!(reply_allowed("ledger.admin.define_plan", "_INBOX_panel.x", false));
        assert!(!reply_allowed("ledger.admin.define_plan", "_INBOX_acme-admin.x", false));
        for user in ["panel", "acme-admin", "acme-user"] {
            assert!(reply_allowed("ledger.query.acme.usage", &format!("_INBOX_{user}.x"), false), "{user}");
        }
        assert!(!reply_allowed("ledger.query.acme.usage", "_INBOX_beta-user.x", false));
        // Without authentication (development) the default prefix works too.
        assert!(reply_allowed(cmd, "_INBOX.abc.1", true));
        assert!(!reply_allowed(cmd, "_INBOX.", true));
        assert!(!reply_allowed(cmd, "$JS.API.STREAM.PURGE.LEDGER", true));
    }
}
