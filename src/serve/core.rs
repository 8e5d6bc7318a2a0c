//! What every front end of `ledger serve` (NATS, HTTP) shares: how a
//! request's fields become a submission, deciding within a deadline,
//! batches, the views with read-your-writes, measuring health, and the
//! metrics every decision feeds. A front end only maps its transport onto
//! these.

use std::time::Duration;

use events::Actor;
use serde_json::{json, Map, Value};

use super::health::Health;
use super::metrics::Metrics;
use crate::engine::command::{
    parse_command, take_admitted_offline, take_idempotency_key, tenant_id, Command, Rejection, Submission,
};
use crate::engine::{Ledger, Reply};
use crate::log::{AnyLog, EventLog};
use crate::projector;
use crate::report::{self, reply_json, QueryError};
use projections::domain::Alerts;
use projections::notice::NoticeRow;
use projections::LedgerView;

pub use ledger_client::protocol::MAX_BATCH_COMMANDS;

/// A command not decided within this is answered `unavailable` (its outcome
/// is then unknown; resending it with the same key is safe). Below the
/// client's default request timeout, so the client hears the answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a query waits for the views to include the tenant's newest
/// event: well below the client's request timeout, so an `unavailable`
/// answer reaches the client.
const QUERY_SYNC_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a health check or a metrics scrape waits for the log's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a health check waits for the views to reach the head it read.
const READY_WAIT: Duration = Duration::from_secs(1);
/// A query's whole deadline (the tenant's head, the views catching up, the
/// read): below the client's 5 s request timeout, so it hears the answer.
const QUERY_TIMEOUT: Duration = Duration::from_millis(3500);

/// The views a tenant can be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryView {
    Usage,
    /// `usage` with the events behind its storage and token figures (the
    /// command line's `--explain`).
    UsageExplained,
    /// The invoice of the period holding the instant; `explain` adds each
    /// line's arithmetic and the events behind it.
    Invoice {
        explain: bool,
    },
    Invoices,
}

/// The engine, the log it writes, and the metrics: one per process, shared
/// by every front end.
pub struct Core {
    pub ledger: Ledger,
    pub log: AnyLog,
    pub metrics: Metrics,
}

impl Core {
    pub fn new(ledger: Ledger, log: AnyLog) -> Core {
        let metrics = Metrics::new(ledger.stats_handle());
        Core { ledger, log, metrics }
    }

    /// Decides one command; `unavailable` once [`COMMAND_TIMEOUT`] passed.
    pub async fn command(&self, submission: Submission) -> Reply {
        let started = std::time::Instant::now();
        let name = submission.command.name();
        let answer = self.ledger.submit_nowait(submission).await;
        let reply = until(tokio::time::Instant::now() + COMMAND_TIMEOUT, answer).await;
        self.metrics.decided(name, &reply, started.elapsed());
        reply
    }

    /// `{"results": [...]}` in order. Commands are queued in order (a
    /// tenant's commands are decided in that order) and group-committed
    /// together. The whole batch shares one deadline: a command not decided
    /// by then is answered `unavailable`, so the reply reaches the client
    /// before its own timeout however long the batch.
    pub async fn batch(&self, items: Vec<Result<Submission, Rejection>>) -> Value {
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        let mut pending = Vec::with_capacity(items.len());
        for item in items {
            pending.push(match item {
                Ok(submission) => {
                    let name = submission.command.name();
                    Ok((name, self.ledger.submit_nowait(submission).await))
                }
                Err(rejection) => Err(rejection),
            });
        }
        let mut results = Vec::with_capacity(pending.len());
        for entry in pending {
            results.push(match entry {
                Ok((name, answer)) => {
                    let reply = until(deadline, answer).await;
                    self.metrics.decided(name, &reply, started.elapsed());
                    reply_json(&reply)
                }
                Err(rejection) => {
                    self.metrics.malformed();
                    report::rejection_json(&rejection)
                }
            });
        }
        json!({"results": results})
    }

    /// A tenant's view, once the views include the tenant's newest event,
    /// whichever writer appended it (read your writes).
    pub async fn query(&self, tenant: &str, view: QueryView, at_us: Option<i64>) -> Result<Value, Rejection> {
        self.read_tenant(tenant, async |views| {
            let unavailable = |e: String| Rejection::new("unavailable", e);
            let answer = match view {
                QueryView::Usage => report::usage(views, tenant, at_us),
                QueryView::Invoice { explain: false } => report::invoice(views, tenant, at_us),
                QueryView::Invoice { explain: true } => {
                    return crate::audit::explain::invoice(&self.log, views, tenant, at_us).await.map_err(
                        |e| match e.downcast::<QueryError>() {
                            Ok(e) => query_rejection(e),
                            Err(e) => unavailable(e.to_string()),
                        },
                    )
                }
                QueryView::UsageExplained => {
                    return crate::audit::explain::usage(&self.log, views, tenant, at_us).await.map_err(|e| {
                        match e.downcast::<QueryError>() {
                            Ok(e) => query_rejection(e),
                            Err(e) => unavailable(e.to_string()),
                        }
                    })
                }
                QueryView::Invoices => report::invoices(views, tenant),
            };
            answer.map_err(query_rejection)
        })
        .await
    }

    /// A tenant's usage alert thresholds (the defaults when it never set
    /// any) and its newest notifications, newest first, at most `limit`,
    /// once the views include the tenant's newest event.
    pub async fn notifications(
        &self,
        tenant: &str,
        limit: usize,
    ) -> Result<(Alerts, Vec<NoticeRow>), Rejection> {
        self.read_tenant(tenant, async |views| {
            let unavailable = |e: projections::ViewError| Rejection::new("unavailable", e.to_string());
            let alerts = LedgerView::tenant(views, tenant).map_err(unavailable)?.map(|s| s.alerts);
            let notices = LedgerView::tenant_notices(views, tenant, limit).map_err(unavailable)?;
            Ok((alerts.unwrap_or_default(), notices))
        })
        .await
    }

    /// What `read` answers from the views once they include the tenant's
    /// newest event on the log, all within [`QUERY_TIMEOUT`]. A store
    /// reopened meanwhile may hold an older prefix than the one the views
    /// were synced on: no answer from a mix of the two.
    async fn read_tenant<T>(
        &self,
        tenant: &str,
        read: impl AsyncFnOnce(&projections::ViewStore) -> Result<T, Rejection>,
    ) -> Result<T, Rejection> {
        tenant_id(tenant)?;
        let unavailable = |e: String| Rejection::new("unavailable", e);
        let synced = async {
            let generation = self.ledger.views().generation();
            let head = self.log.tenant_head(tenant).await.map_err(|e| unavailable(e.to_string()))?;
            self.views_reach(head).await?;
            let answer = read(self.ledger.views()).await;
            if self.ledger.views().generation() != generation {
                return Err(unavailable("the views were reopened during the query; try again".into()));
            }
            answer
        };
        tokio::time::timeout(QUERY_TIMEOUT, synced).await.unwrap_or_else(|_| {
            Err(unavailable("the log or the views did not answer in time; try again".into()))
        })
    }

    /// Waits (up to [`QUERY_SYNC_TIMEOUT`]) until the views include the log
    /// up to `head`: read your writes, whichever writer appended them.
    async fn views_reach(&self, head: u64) -> Result<(), Rejection> {
        let unavailable = |e: String| Rejection::new("unavailable", e);
        tokio::time::timeout(QUERY_SYNC_TIMEOUT, self.ledger.sync_to(head))
            .await
            .map_err(|_| unavailable("the views are behind the log; try again".into()))?
            .map_err(|e| unavailable(e.to_string()))
    }

    /// Every tenant with its plan, status, seats and current usage (the
    /// control panel's list).
    pub async fn tenants(&self) -> Result<Value, Rejection> {
        let views = self.synced_views().await?;
        let mut tenants = report::tenants(views).map_err(query_rejection)?;
        for tenant in tenants.as_array_mut().into_iter().flatten() {
            let id = tenant["tenant"].as_str().unwrap_or_default().to_string();
            if let Ok(usage) = report::usage(views, &id, None) {
                tenant["storage"] = usage["storage"].clone();
                tenant["tokens"] = usage["tokens"].clone();
            }
        }
        Ok(tenants)
    }

    /// The views, once they include the whole log as it stood when asked.
    pub async fn synced_views(&self) -> Result<&projections::ViewStore, Rejection> {
        let heads = self.log.heads().await.map_err(|e| Rejection::new("unavailable", e.to_string()))?;
        for head in heads {
            self.views_reach(head).await?;
        }
        Ok(self.ledger.views())
    }

    /// Whether the views keep up with the log: they must include the log
    /// as it stood when asked within [`READY_WAIT`] (under steady writes
    /// the views always trail the head by a fold or two, so an instant's
    /// comparison would call a busy instance unhealthy).
    pub async fn ready(&self) -> Health {
        let heads = tokio::time::timeout(HEAD_TIMEOUT, self.log.heads()).await.ok().and_then(Result::ok);
        if let Some(heads) = &heads {
            let synced = async {
                for head in heads {
                    self.ledger.sync_to(*head).await?;
                }
                anyhow::Ok(())
            };
            let _ = tokio::time::timeout(READY_WAIT, synced).await;
        }
        self.health_at(heads)
    }

    /// Where the views stand against the log, now. Counted in events over
    /// every partition (a ledger of one partition: its positions).
    pub async fn health(&self) -> Health {
        let heads = tokio::time::timeout(HEAD_TIMEOUT, self.log.heads()).await.ok().and_then(Result::ok);
        self.health_at(heads)
    }

    fn health_at(&self, heads: Option<Vec<u64>>) -> Health {
        let log_head = heads.map(|heads| heads.iter().map(|h| crate::log::Position::unpack(*h).seq).sum());
        let views_at = projector::events_folded(self.ledger.views(), self.ledger.partitions());
        Health { log_head, views_at }
    }
}

fn query_rejection(e: QueryError) -> Rejection {
    match e {
        QueryError::NotSubscribed(_) => Rejection::new("not_subscribed", e.to_string()),
        // The instant is well formed; the tenant had no period then.
        QueryError::BeforeSubscription(..) => Rejection::new("not_subscribed", e.to_string()),
        QueryError::Unpriceable(_) => Rejection::new("invalid_amount", e.to_string()).from_state(),
        QueryError::View(e) => Rejection::new("unavailable", e.to_string()),
    }
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

/// The actor of a tenant credential (`<tenant>:admin`, `<tenant>:user`).
pub fn tenant_actor(tenant: &str, role: &str) -> Result<Actor, Rejection> {
    tenant_id(tenant)?;
    match role {
        "admin" => Ok(Actor::TenantAdmin { tenant: tenant.to_string() }),
        "user" => Ok(Actor::TenantUser { tenant: tenant.to_string() }),
        other => Err(Rejection::malformed(format!("role {other:?} is neither admin nor user"))),
    }
}

/// A request body as command fields (an empty body is no fields).
pub fn fields(body: &[u8]) -> Result<Map<String, Value>, Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(Rejection::malformed("the body must be a JSON object")),
        Err(e) => Err(Rejection::malformed(format!("not JSON: {e}"))),
    }
}

/// Builds the submission for one command. The transport (subject or path
/// and credential), not the body, says who sends it, which command it is
/// and which tenant it is about (`tenant`: `None` for the control panel's
/// own routes, where the body names the tenant); the ledger's clock sets
/// `at`.
pub fn submission(
    tenant: Option<&str>,
    actor: &Actor,
    command: &str,
    mut fields: Map<String, Value>,
) -> Result<Submission, Rejection> {
    for ignored in ["actor", "at", "cmd"] {
        fields.remove(ignored);
    }
    if tenant.is_some() && matches!(command, "define_plan" | "define_addon") {
        return Err(Rejection::new("forbidden", format!("{command} is for the control panel only")));
    }
    fields.insert("cmd".into(), Value::String(command.to_string()));
    if let Some(tenant) = tenant {
        fields.insert("tenant".into(), Value::String(tenant.to_string()));
    }
    let admitted_offline_at_us = take_admitted_offline(&mut fields)?;
    let idempotency_key = take_idempotency_key(&mut fields)?;
    let command: Command = parse_command(fields)?;
    Ok(Submission { at_us: None, actor: actor.clone(), command, admitted_offline_at_us, idempotency_key })
}

/// The items of a `{"commands": [...]}` body (nothing else beside them,
/// at most [`MAX_BATCH_COMMANDS`]), not yet parsed.
pub fn batch_commands(body: &[u8]) -> Result<Vec<Value>, Rejection> {
    let mut fields = fields(body)?;
    let commands = match fields.remove("commands") {
        Some(Value::Array(commands)) if fields.is_empty() => commands,
        _ => return Err(Rejection::malformed("a batch is {\"commands\": [...]} and nothing else")),
    };
    if commands.len() > MAX_BATCH_COMMANDS {
        return Err(Rejection::malformed(format!(
            "{} commands is over the batch limit of {MAX_BATCH_COMMANDS}",
            commands.len()
        )));
    }
    Ok(commands)
}

/// The commands of a `{"commands": [...]}` body, each parsed on its own (a
/// malformed one is answered and skipped, the rest still run).
pub fn parse_batch(
    tenant: Option<&str>,
    actor: &Actor,
    body: &[u8],
) -> Result<Vec<Result<Submission, Rejection>>, Rejection> {
    Ok(batch_commands(body)?
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
