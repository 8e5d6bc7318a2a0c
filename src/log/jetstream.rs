//! The JetStream log: stream `LEDGER`, subjects `ledger.v1.>`, one message per
//! event on `ledger.v1.<tenant>.<kind>`.
//!
//! An append is one atomic batch publish (ADR-50): every message carries
//! `Nats-Batch-Id` and `Nats-Batch-Sequence`, the last one also
//! `Nats-Batch-Commit: 1` and is sent as a request whose reply is the batch's
//! ack. async-nats 0.51 has only the header names, so the protocol is spoken
//! here. Per-tenant optimistic concurrency rides on each tenant's first
//! message: `Nats-Expected-Last-Subject-Sequence` with
//! `Nats-Expected-Last-Subject-Sequence-Subject: ledger.v1.<tenant>.>`. A stale
//! one makes the server drop the whole batch with error 10071.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{HeaderMap, Request};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;

use super::{AppendAck, AppendBatch, EventLog, LogError, LogRecord, RecordStream, Source};

pub const STREAM_NAME: &str = "LEDGER";

/// JetStream's error code for a failed expected-last-sequence check.
const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;

/// How long the ledger waits for a batch's commit ack. A 1000-message
/// commit with `sync_interval: always` takes milliseconds; what takes
/// longer is a server that died with the publish in flight (async-nats does
/// not fail a pending request when the connection drops). Past this the
/// outcome is unknown: the engine reloads the tenants and decides again,
/// and the per-tenant expectation keeps a late-arriving first attempt from
/// landing twice. Measured in `tests/faults.rs`: at 30 s, a client waited up
/// to 28 s for a definite answer after nats-server was killed.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    pub url: String,
    /// Stream replicas (a clustered deployment uses 3).
    pub replicas: usize,
}

impl JetStreamOptions {
    pub fn new(url: impl Into<String>) -> JetStreamOptions {
        JetStreamOptions { url: url.into(), replicas: 1 }
    }
}

#[derive(Clone)]
pub struct JetStreamLog {
    client: async_nats::Client,
    /// Counts the connection's losses: an append in flight when it moves
    /// has an unknown outcome, and says so at once rather than after
    /// [`COMMIT_TIMEOUT`] (async-nats leaves a pending request waiting).
    disconnects: tokio::sync::watch::Receiver<u64>,
    /// Counts the stream's leader elections and quorum losses (JetStream's
    /// advisories): a request in flight to a leader that died is never
    /// answered, so it ends as an unknown outcome the moment another
    /// leader is elected, rather than after [`COMMIT_TIMEOUT`].
    leader_changes: tokio::sync::watch::Receiver<u64>,
    /// For single publishes (their acks are multiplexed on one inbox).
    context: jetstream::Context,
    stream: stream::Stream,
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

/// `2.15.1` -> (2, 15). Anything unparsable counts as too old.
fn server_supports_atomic_batches(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    let major: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (2, 12)
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct CommitReply {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    batch: String,
    #[serde(default)]
    count: u64,
}

impl JetStreamLog {
    /// Connects, checks the server version, and creates the stream if needed.
    pub async fn connect(options: &JetStreamOptions) -> Result<JetStreamLog, LogError> {
        // Its own inbox prefix: replies the service sends to `_INBOX.` (for
        // clients without per-credential prefixes) can never reach the
        // ledger's own JetStream requests.
        let (address, connect) = ledger_client::nats::options(&options.url, "ledger", Some("_INBOX_ledger"));
        let (lost, disconnects) = tokio::sync::watch::channel(0u64);
        let client = connect
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Disconnected) {
                    tracing::warn!("lost the connection to nats-server; reconnecting");
                    lost.send_modify(|n| *n += 1);
                }
                std::future::ready(())
            })
            .connect(&address)
            .await
            .map_err(|e| LogError::Unavailable(format!("cannot connect to {}: {e}", address.join(","))))?;
        let found = client.server_info().version;
        if !server_supports_atomic_batches(&found) {
            return Err(LogError::ServerTooOld { found });
        }
        let context = jetstream::new(client.clone());
        let config = stream::Config {
            name: STREAM_NAME.to_string(),
            subjects: vec![format!("{}.>", events::SUBJECT_PREFIX)],
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            // Events are never dropped: no age, count or size limits.
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            allow_atomic_publish: true,
            allow_direct: true,
            ..Default::default()
        };
        // A server started a moment ago may accept connections before
        // JetStream answers: retry the stream setup for a few seconds.
        let mut tries = 0;
        let stream = loop {
            match context.get_or_create_stream(config.clone()).await {
                Ok(stream) => break stream,
                Err(error) if tries < 20 => {
                    tries += 1;
                    tracing::debug!(%error, "JetStream not ready; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(unavailable(error)),
            }
        };
        if !stream.cached_info().config.allow_atomic_publish {
            return Err(LogError::Unavailable(format!(
                "stream {STREAM_NAME} exists without allow_atomic_publish; enable it \
                 (nats stream edit {STREAM_NAME} --allow-batch) and restart"
            )));
        }
        let context = jetstream::ContextBuilder::new().timeout(COMMIT_TIMEOUT).build(client.clone());
        let leader_changes = watch_leader(&client).await?;
        Ok(JetStreamLog { client, disconnects, leader_changes, context, stream })
    }

    /// Runs `op` (a request to the stream's leader), or ends it as an
    /// unknown outcome the moment the connection drops or the stream elects
    /// another leader: the old leader will never answer it.
    async fn watched<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = Result<T, LogError>>,
    ) -> Result<T, LogError> {
        let (mut disconnects, mut leaders) = (self.disconnects.clone(), self.leader_changes.clone());
        disconnects.borrow_and_update();
        leaders.borrow_and_update();
        tokio::select! {
            result = op => result,
            () = changed(&mut disconnects) => Err(LogError::Unavailable(format!(
                "the connection to nats-server dropped with {what} in flight; its outcome is unknown"
            ))),
            () = changed(&mut leaders) => Err(LogError::Unavailable(format!(
                "stream {STREAM_NAME} changed leader with {what} in flight; its outcome is unknown"
            ))),
        }
    }

    /// The stream's state and cluster as its leader sees them now.
    pub(super) async fn stream_info(&self) -> Result<stream::Info, LogError> {
        self.watched("a stream info request", async { self.stream.get_info().await.map_err(unavailable) })
            .await
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context (requests time out after [`COMMIT_TIMEOUT`]).
    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// The `LEDGER` stream, for the consumers of other parts (webhook
    /// deliveries).
    pub fn stream(&self) -> &stream::Stream {
        &self.stream
    }

    /// Error 10071 says only the actual last sequence, not whose: find the
    /// tenant whose expectation is stale.
    async fn name_conflict(&self, batch: &AppendBatch, description: &str) -> LogError {
        for e in &batch.expectations {
            match self.tenant_head(&e.tenant).await {
                Ok(actual) if actual != e.last_position => {
                    return LogError::Conflict {
                        tenant: e.tenant.clone(),
                        expected: e.last_position,
                        actual,
                    };
                }
                Ok(_) => {}
                Err(err) => return err,
            }
        }
        // Every expectation matches now: the tenant that conflicted was
        // written and read back in between. Still a conflict; name the first.
        let first = &batch.expectations[0];
        tracing::warn!(%description, "conflict that no expectation explains any more");
        LogError::Conflict {
            tenant: first.tenant.clone(),
            expected: first.last_position,
            actual: first.last_position,
        }
    }
}

impl JetStreamLog {
    /// One message needs no batch protocol: a single publish carrying the
    /// tenant's expectation is as atomic and as durable, and answers ~7x
    /// sooner (`../shared/notes/jetstream-limits.md`: p50 ~0.35 ms against
    /// ~2.2 ms for an atomic batch of one). This is the path of a decision
    /// that finds the engine idle.
    async fn append_one(&self, batch: &AppendBatch) -> Result<AppendAck, LogError> {
        let m = &batch.messages[0];
        let mut headers = HeaderMap::new();
        if let Some(e) = batch.expectations.first() {
            headers.insert("Nats-Expected-Last-Subject-Sequence", e.last_position.to_string().as_str());
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence-Subject",
                format!("{}.{}.>", events::SUBJECT_PREFIX, m.tenant).as_str(),
            );
        }
        let published = self
            .context
            .publish_with_headers(m.subject(), headers, m.payload.clone())
            .await
            .map_err(unavailable)?
            .await;
        match published {
            Ok(ack) if ack.stream == STREAM_NAME && ack.sequence > 0 && !ack.duplicate => {
                Ok(AppendAck { first: ack.sequence, last: ack.sequence })
            }
            Ok(ack) => Err(LogError::Unavailable(format!(
                "publish ack does not describe the message sent (stream {:?}, sequence {}, duplicate {})",
                ack.stream, ack.sequence, ack.duplicate
            ))),
            Err(error)
                if error.kind() == jetstream::context::PublishErrorKind::WrongLastSequence
                    && !batch.expectations.is_empty() =>
            {
                Err(self.name_conflict(batch, &error.to_string()).await)
            }
            Err(error) => Err(unavailable(error)),
        }
    }
}

/// Resolves when `counter` moves (never, once its sender is gone).
async fn changed(counter: &mut tokio::sync::watch::Receiver<u64>) {
    if counter.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Follows the `LEDGER` stream's leader elections and quorum losses, from
/// JetStream's advisories, and logs each.
async fn watch_leader(client: &async_nats::Client) -> Result<tokio::sync::watch::Receiver<u64>, LogError> {
    let (moved, changes) = tokio::sync::watch::channel(0u64);
    let advisory = |kind: &str| format!("$JS.EVENT.ADVISORY.STREAM.{kind}.{STREAM_NAME}");
    let mut elected = client.subscribe(advisory("LEADER_ELECTED")).await.map_err(unavailable)?;
    let mut lost = client.subscribe(advisory("QUORUM_LOST")).await.map_err(unavailable)?;
    tokio::spawn(async move {
        loop {
            let (what, message) = tokio::select! {
                Some(m) = elected.next() => ("elected a leader", m),
                Some(m) = lost.next() => ("lost its quorum", m),
                // Every copy of the log is gone: let the connection go too.
                () = moved.closed() => return,
                else => return,
            };
            let leader = serde_json::from_slice::<serde_json::Value>(&message.payload)
                .ok()
                .and_then(|v| v["leader"].as_str().map(str::to_string))
                .unwrap_or_default();
            tracing::warn!(
                stream = STREAM_NAME,
                %leader,
                "the stream {what}: requests in flight to its old leader end as unknown outcomes"
            );
            moved.send_modify(|n| *n = n.wrapping_add(1));
        }
    });
    Ok(changes)
}

impl EventLog for JetStreamLog {
    async fn append(&self, batch: AppendBatch) -> Result<AppendAck, LogError> {
        batch.check()?;
        self.watched("the append", self.append_checked(&batch)).await
    }

    async fn tenant_head(&self, tenant: &str) -> Result<u64, LogError> {
        let filter = format!("{}.{tenant}.>", events::SUBJECT_PREFIX);
        self.watched("a head read", async {
            match self.stream.get_last_raw_message_by_subject(&filter).await {
                Ok(message) => Ok(message.sequence),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    /// A short tail by direct gets, with no consumer: a consumer costs the
    /// server more than a few reads, and async-nats leaves an ordered one
    /// on the server for 30 s after its reader goes, so loads opening one
    /// each piled them up past the server's limit under a crash loop
    /// (`docs/operations.md`). A direct get may be answered by a replica
    /// that is behind; it can only miss what follows, never skip, so the
    /// reader takes over from the first miss, and past [`DIRECT_READS`].
    async fn read_tenant(&self, tenant: &str, from: u64, head: u64) -> Result<Vec<LogRecord>, LogError> {
        let filter = format!("{}.{tenant}.>", events::SUBJECT_PREFIX);
        let mut out = Vec::new();
        let mut next = from.max(1);
        while next <= head && out.len() < DIRECT_READS {
            match self.stream.direct_get_next_for_subject(filter.as_str(), Some(next)).await {
                Ok(message) if message.sequence >= next && message.sequence <= head => {
                    next = message.sequence + 1;
                    out.push(LogRecord {
                        position: message.sequence,
                        subject: message.subject.to_string(),
                        payload: message.payload,
                    });
                }
                _ => break,
            }
        }
        super::read_through(self, tenant, next, head, out).await
    }
}

/// Most records a tenant load reads by direct gets before opening a reader.
const DIRECT_READS: usize = 64;

impl JetStreamLog {
    /// [`EventLog::append`] of a checked batch.
    async fn append_checked(&self, batch: &AppendBatch) -> Result<AppendAck, LogError> {
        if batch.messages.len() == 1 {
            return self.append_one(batch).await;
        }
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        let count = batch.messages.len();
        // Each tenant's expectation rides on its first message; taking it out
        // of the map as it is used leaves the later messages bare.
        let mut expectations: HashMap<&str, u64> =
            batch.expectations.iter().map(|e| (e.tenant.as_str(), e.last_position)).collect();
        for (i, m) in batch.messages.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            if let Some(last_position) = expectations.remove(m.tenant.as_str()) {
                headers.insert("Nats-Expected-Last-Subject-Sequence", last_position.to_string().as_str());
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence-Subject",
                    format!("{}.{}.>", events::SUBJECT_PREFIX, m.tenant).as_str(),
                );
            }
            if i + 1 < count {
                self.client
                    .publish_with_headers(m.subject(), headers, m.payload.clone())
                    .await
                    .map_err(unavailable)?;
                continue;
            }
            headers.insert("Nats-Batch-Commit", "1");
            let request =
                Request::new().headers(headers).payload(m.payload.clone()).timeout(Some(COMMIT_TIMEOUT));
            let reply = self.client.send_request(m.subject(), request).await.map_err(unavailable)?;
            let reply: CommitReply = serde_json::from_slice(&reply.payload)
                .map_err(|e| LogError::Unavailable(format!("unreadable commit reply: {e}")))?;
            if let Some(error) = reply.error {
                if error.err_code == ERR_WRONG_LAST_SEQUENCE && !batch.expectations.is_empty() {
                    return Err(self.name_conflict(batch, &error.description).await);
                }
                return Err(LogError::Unavailable(format!(
                    "batch rejected ({}): {}",
                    error.err_code, error.description
                )));
            }
            // The ack must describe exactly our batch; anything else means we
            // cannot say which positions our events got, so the outcome is
            // unknown (what the server sends is never trusted to hold).
            if reply.batch != batch_id || reply.count != count as u64 || reply.seq < count as u64 {
                return Err(LogError::Unavailable(format!(
                    "commit ack does not describe the batch sent (batch {:?}, count {}, seq {}; sent {batch_id}, {count})",
                    reply.batch, reply.count, reply.seq
                )));
            }
            return Ok(AppendAck { first: reply.seq + 1 - count as u64, last: reply.seq });
        }
        Err(LogError::InvalidBatch("empty batch".into()))
    }
}

impl Source for JetStreamLog {
    type Error = LogError;

    async fn head(&self) -> Result<u64, LogError> {
        Ok(self.stream_info().await?.state.last_sequence)
    }

    async fn read(&self, from: u64, tenant: Option<&str>) -> Result<RecordStream, LogError> {
        let filter_subject = match tenant {
            Some(t) => format!("{}.{t}.>", events::SUBJECT_PREFIX),
            None => String::new(),
        };
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject,
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from.max(1) },
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let messages = consumer.messages().await.map_err(unavailable)?;
        let from = from.max(1);
        Ok(messages
            .map(|item| {
                let message = item.map_err(unavailable)?;
                let position = message.info().map_err(unavailable)?.stream_sequence;
                Ok(LogRecord {
                    position,
                    subject: message.subject.to_string(),
                    payload: message.payload.clone(),
                })
            })
            // An ordered consumer that resets (the server restarted) before
            // delivering anything is recreated by async-nats 0.51 with
            // `DeliverPolicy::All`, from the stream's first message, not
            // from `from` (found by `tests/faults.rs`: tenant loads after a
            // restart met their whole history again). What lies before
            // `from` is not what the caller asked for.
            .try_filter(move |record| std::future::ready(record.position >= from))
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::server_supports_atomic_batches;

    #[test]
    fn version_gate() {
        for ok in ["2.12.0", "2.15.1", "v2.14.0-beta", "3.0.0"] {
            assert!(server_supports_atomic_batches(ok), "{ok}");
        }
        for old in ["2.9.10", "2.11.4", "", "garbage", "1.99.0"] {
            assert!(!server_supports_atomic_batches(old), "{old}");
        }
    }
}
