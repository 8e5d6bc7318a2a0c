//! `ledger serve`: the ledger as a NATS service (the spec's "Service
//! contract").
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
//! code when it fails. Two instances may both decide for one tenant: the
//! per-tenant expected sequence on every append makes the later one reload
//! and decide again (see `engine`), so they never corrupt a tenant.
//!
//! The billing clock is a task of every instance: it finalizes each period
//! that has ended with an admin `close_period`. The decider makes that
//! exactly-once however many instances race or restart: a second
//! `close_period` for the same tenant finds the next period not ended and is
//! rejected, recording nothing.

use std::sync::Arc;
use std::time::Duration;

use async_nats::service::ServiceExt;
use events::Actor;
use futures_util::StreamExt;
use projections::ViewStore;
use serde_json::{json, Map, Value};

mod clock;
mod config;

pub use clock::close_ended_periods;
pub use config::{credentials_env, nats_authorization, TenantCredentials};

use crate::engine::command::{
    parse_command, take_admitted_offline, tenant_id, Command, Rejection, Submission,
};
use crate::engine::{Ledger, Reply};
use crate::log::{EventLog, JetStreamLog};
use crate::report::{self, rejection_json, reply_json, QueryError};

pub use ledger_client::protocol::{inbox_prefix, MAX_BATCH_COMMANDS, SERVICE_NAME};
/// How long a query waits for the views to include the tenant's newest
/// event: well below the client's request timeout, so an `unavailable`
/// answer reaches the client.
const QUERY_SYNC_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How often the billing clock looks for ended periods.
    pub clock_interval: Duration,
}

struct Context {
    ledger: Ledger,
    log: JetStreamLog,
}

/// A running service. Dropping it does not stop it; call [`Server::stop`].
pub struct Server {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    service: async_nats::service::Service,
    ledger: Ledger,
}

impl Server {
    /// Starts the engine, the projectors, the service endpoints and the
    /// billing clock over `log` and `views`.
    pub async fn start(log: JetStreamLog, views: ViewStore, options: ServeOptions) -> anyhow::Result<Server> {
        let ledger = Ledger::start(log.clone(), views.clone()).await?;
        let client = log.client().clone();
        let service = client
            .service_builder()
            .description("Event-sourced subscription ledger: commands, queries, billing clock")
            .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|e| anyhow::anyhow!("starting the NATS service: {e}"))?;
        let context = Arc::new(Context { ledger: ledger.clone(), log });
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
            tasks.push(tokio::spawn(serve_endpoint(endpoint, context.clone())));
        }
        tasks.push(tokio::spawn(clock::billing_clock(ledger.clone(), options.clock_interval)));
        tracing::info!("serving ledger.cmd.>, ledger.admin.>, ledger.query.>");
        Ok(Server { tasks, service, ledger })
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Stops taking requests and the clock, then the projectors.
    pub async fn stop(self) {
        let _ = self.service.stop().await;
        for task in &self.tasks {
            task.abort();
        }
        self.ledger.shutdown().await;
        let _ = self.ledger.views().flush().await;
    }
}

/// `ledger serve`: runs until interrupted (Ctrl-C or SIGTERM).
pub async fn run(
    url: &str,
    data: &std::path::Path,
    replicas: usize,
    options: ServeOptions,
) -> anyhow::Result<()> {
    let log = crate::store::open_log(data, Some(url), replicas).await?;
    let views = crate::store::open_views(data, &log)?;
    let crate::log::AnyLog::JetStream(log) = log else { unreachable!("opened with a NATS URL") };
    let server = Server::start(log, views, options).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    server.stop().await;
    Ok(())
}

/// Requests being answered at once; past it, the endpoint waits.
const MAX_REQUESTS_IN_FLIGHT: usize = 10_000;
/// A command not decided within this is answered `unavailable` (its outcome
/// is then unknown; resending it with the same key is safe). Below the
/// client's default request timeout, so the client hears the answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(4);

async fn serve_endpoint(mut endpoint: async_nats::service::endpoint::Endpoint, context: Arc<Context>) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_IN_FLIGHT));
    while let Some(request) = endpoint.next().await {
        let subject = request.message.subject.to_string();
        // Read per request: a reconnect may land on a server configured
        // otherwise.
        let open_server = !context.log.client().server_info().auth_required;
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
        let context = context.clone();
        let permit = in_flight.clone().acquire_owned().await.expect("never closed");
        // Each request on its own task: the engine group-commits whatever
        // arrives together, so concurrency here is throughput.
        tokio::spawn(async move {
            let answer = route(&context, &subject, &request.message.payload).await;
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

/// The views `ledger.query.<tenant>.<view>` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryView {
    Usage,
    Invoice,
    Invoices,
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
                "invoice" => QueryView::Invoice,
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

async fn route(context: &Context, subject: &str, body: &[u8]) -> Value {
    let result = match parse_request(subject, body) {
        Ok(ParsedRequest::Command(submission)) => {
            Ok(reply_json(&within_deadline(context.ledger.submit_nowait(submission).await).await))
        }
        Ok(ParsedRequest::Batch(items)) => Ok(batch(context, items).await),
        Ok(ParsedRequest::Query { tenant, view, at_us }) => query(context, &tenant, view, at_us).await,
        Err(rejection) => Err(rejection),
    };
    result.unwrap_or_else(|rejection| rejection_json(&rejection))
}

fn tenant_actor(tenant: &str, role: &str) -> Result<Actor, Rejection> {
    tenant_id(tenant)?;
    match role {
        "admin" => Ok(Actor::TenantAdmin { tenant: tenant.to_string() }),
        "user" => Ok(Actor::TenantUser { tenant: tenant.to_string() }),
        other => Err(Rejection::malformed(format!("role {other:?} is neither admin nor user"))),
    }
}

/// A request body as command fields (an empty body is no fields).
fn fields(body: &[u8]) -> Result<Map<String, Value>, Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(Rejection::malformed("the body must be a JSON object")),
        Err(e) => Err(Rejection::malformed(format!("not JSON: {e}"))),
    }
}

/// Builds the submission for one command. The subject, not the body, says
/// who sends it, which command it is and (on `ledger.cmd.`) which tenant it
/// is about; the ledger's clock sets `at`.
fn submission(
    tenant: Option<&str>,
    actor: &Actor,
    command: &str,
    mut fields: Map<String, Value>,
) -> Result<Submission, Rejection> {
    for ignored in ["actor", "at", "cmd"] {
        fields.remove(ignored);
    }
    if tenant.is_some() && matches!(command, "define_plan" | "define_addon") {
        return Err(Rejection::new(
            "forbidden",
            format!("{command} is for the control panel (ledger.admin.)"),
        ));
    }
    fields.insert("cmd".into(), Value::String(command.to_string()));
    if let Some(tenant) = tenant {
        fields.insert("tenant".into(), Value::String(tenant.to_string()));
    }
    let admitted_offline_at_us = take_admitted_offline(&mut fields)?;
    let command: Command = parse_command(fields)?;
    Ok(Submission { at_us: None, actor: actor.clone(), command, admitted_offline_at_us })
}

/// The reply, or `unavailable` once [`COMMAND_TIMEOUT`] has passed.
async fn within_deadline(answer: tokio::sync::oneshot::Receiver<Reply>) -> Reply {
    until(tokio::time::Instant::now() + COMMAND_TIMEOUT, answer).await
}

/// The reply, or `unavailable` once `deadline` has passed.
async fn until(deadline: tokio::time::Instant, answer: tokio::sync::oneshot::Receiver<Reply>) -> Reply {
    match tokio::time::timeout_at(deadline, crate::engine::wait(answer)).await {
        Ok(reply) => reply,
        Err(_) => Reply::Failed {
            message: "not decided in time; its outcome is unknown: resend it with the same key".into(),
        },
    }
}

/// The commands of a `{"commands": [...]}` body, each parsed on its own.
fn parse_batch(
    tenant: Option<&str>,
    actor: &Actor,
    body: &[u8],
) -> Result<Vec<Result<Submission, Rejection>>, Rejection> {
    let mut fields = fields(body)?;
    let Some(Value::Array(commands)) = fields.remove("commands") else {
        return Err(Rejection::malformed("a batch is {\"commands\": [...]}"));
    };
    if commands.len() > MAX_BATCH_COMMANDS {
        return Err(Rejection::malformed(format!(
            "{} commands is over the batch limit of {MAX_BATCH_COMMANDS}",
            commands.len()
        )));
    }
    Ok(commands
        .into_iter()
        .map(|item| match item {
            Value::Object(mut fields) => match fields.remove("cmd") {
                Some(Value::String(name)) if name != "batch" => submission(tenant, actor, &name, fields),
                _ => Err(Rejection::malformed("each batch command needs a \"cmd\" (not \"batch\")")),
            },
            _ => Err(Rejection::malformed("each batch command is a JSON object")),
        })
        .collect())
}

/// `{"results": [...]}` in order. Commands are queued in order (a tenant's
/// commands are decided in that order) and group-committed together. The
/// whole batch shares one deadline: a command not decided by then is
/// answered `unavailable`, so the reply reaches the client before its own
/// timeout however long the batch.
async fn batch(context: &Context, items: Vec<Result<Submission, Rejection>>) -> Value {
    let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
    let mut pending = Vec::with_capacity(items.len());
    for item in items {
        pending.push(match item {
            Ok(submission) => Ok(context.ledger.submit_nowait(submission).await),
            Err(rejection) => Err(rejection),
        });
    }
    let mut results = Vec::with_capacity(pending.len());
    for entry in pending {
        results.push(match entry {
            Ok(answer) => reply_json(&until(deadline, answer).await),
            Err(rejection) => rejection_json(&rejection),
        });
    }
    json!({"results": results})
}

async fn query(
    context: &Context,
    tenant: &str,
    view: QueryView,
    at_us: Option<i64>,
) -> Result<Value, Rejection> {
    // Read your writes: answer once the views include the tenant's newest
    // event, whichever instance appended it.
    let unavailable = |e: String| Rejection::new("unavailable", e);
    let head = context.log.tenant_head(tenant).await.map_err(|e| unavailable(e.to_string()))?;
    tokio::time::timeout(QUERY_SYNC_TIMEOUT, context.ledger.sync_to(head))
        .await
        .map_err(|_| unavailable("the views are behind the log; try again".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
    let views = context.ledger.views();
    let answer = match view {
        QueryView::Usage => report::usage(views, tenant, at_us),
        QueryView::Invoice => report::invoice(views, tenant, at_us),
        QueryView::Invoices => report::invoices(views, tenant),
    };
    answer.map_err(|e| match e {
        QueryError::NotSubscribed(_) => Rejection::new("not_subscribed", e.to_string()),
        QueryError::BeforeSubscription(..) => Rejection::malformed(e.to_string()),
        QueryError::Unpriceable(_) => Rejection::new("invalid_amount", e.to_string()),
        QueryError::View(e) => unavailable(e.to_string()),
    })
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
