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

pub mod placement;

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
    /// For single publishes (their acks are multiplexed on one inbox).
    context: jetstream::Context,
    /// Every partition's stream, in partition order (one for a ledger of
    /// one partition).
    parts: std::sync::Arc<Vec<Part>>,
    /// The partition `head` and untargeted reads are in.
    this: u32,
}

/// One partition's stream.
struct Part {
    index: u32,
    name: String,
    /// `ledger.v1` for partition 0, `ledger.p<P>.v1` for the others.
    prefix: String,
    stream: stream::Stream,
    /// Counts the stream's leader elections and quorum losses (JetStream's
    /// advisories): a request in flight to a leader that died is never
    /// answered, so it ends as an unknown outcome the moment another
    /// leader is elected, rather than after [`COMMIT_TIMEOUT`].
    leader_changes: tokio::sync::watch::Receiver<u64>,
}

impl Part {
    fn tenant_filter(&self, tenant: &str) -> String {
        format!("{}.{tenant}.>", self.prefix)
    }

    fn subject(&self, message: &super::AppendMessage) -> String {
        format!("{}.{}.{}", self.prefix, message.tenant, message.kind)
    }

    fn position(&self, seq: u64) -> u64 {
        super::Position::pack(self.index, seq)
    }

    /// The stream sequence of a position in this partition (0: none yet).
    fn seq(&self, position: u64) -> u64 {
        let p = super::Position::unpack(position);
        if position == 0 || p.partition < self.index {
            0
        } else if p.partition > self.index {
            u64::MAX >> super::SEQ_BITS
        } else {
            p.seq
        }
    }
}

/// The stream of partition `p`: `LEDGER` for partition 0 (a ledger of one
/// partition is today's), `LEDGER_P<P>` for the others.
pub fn stream_name(partition: u32) -> String {
    if partition == 0 {
        STREAM_NAME.to_string()
    } else {
        format!("{STREAM_NAME}_P{partition}")
    }
}

/// Where the number of partitions is kept: the `LEDGER` stream's metadata,
/// written once when `ledger init` creates the ledger. A stream without it
/// is a ledger of one partition (every ledger made before partitions).
pub const PARTITIONS_METADATA: &str = "ledger_partitions";

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

/// Connects to nats-server and checks its version; the receiver counts
/// the connection's losses.
async fn open_client(url: &str) -> Result<(async_nats::Client, tokio::sync::watch::Receiver<u64>), LogError> {
    // Its own inbox prefix: replies the service sends to `_INBOX.` (for
    // clients without per-credential prefixes) can never reach the
    // ledger's own JetStream requests.
    let (address, connect) = ledger_client::nats::options(url, "ledger", Some("_INBOX_ledger"));
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
    Ok((client, disconnects))
}

/// The configuration of partition `partition`'s stream; partition 0's
/// carries the number of partitions when `ledger init` sets it.
fn stream_config(partition: u32, replicas: usize, partitions: Option<u32>) -> stream::Config {
    stream::Config {
        name: stream_name(partition),
        subjects: vec![format!("{}.>", events::partition_prefix(partition))],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        // Events are never dropped: no age, count or size limits.
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        allow_atomic_publish: true,
        allow_direct: true,
        metadata: partitions
            .map(|n| HashMap::from([(PARTITIONS_METADATA.to_string(), n.to_string())]))
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// The number of partitions a `LEDGER` stream says its ledger has.
fn partitions_of(info: &stream::Info) -> Result<u32, LogError> {
    match info.config.metadata.get(PARTITIONS_METADATA) {
        None => Ok(1),
        Some(n) => n.parse().ok().filter(|n| (1..=super::MAX_PARTITIONS).contains(n)).ok_or_else(|| {
            LogError::Layout(format!("stream {STREAM_NAME} says the ledger has {n:?} partitions, which is not a number of partitions"))
        }),
    }
}

/// Runs a stream request a server started a moment ago may not answer yet
/// (it accepts connections before JetStream is up): retried for a few
/// seconds.
async fn retried<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    mut op: impl FnMut() -> F,
) -> Result<T, E> {
    let mut tries = 0;
    loop {
        match op().await {
            Err(error) if tries < 20 => {
                tries += 1;
                tracing::debug!(%error, "JetStream not ready; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

impl JetStreamLog {
    /// Connects, checks the server version, and opens the ledger's streams.
    /// A server without a ledger gets today's ledger of one partition (the
    /// `LEDGER` stream); a partitioned ledger is made only by
    /// [`JetStreamLog::init`], and a writer never creates a partition's
    /// stream or decides with another number of partitions.
    pub async fn connect(options: &JetStreamOptions) -> Result<JetStreamLog, LogError> {
        let (client, disconnects) = open_client(&options.url).await?;
        let context = jetstream::new(client.clone());
        let config = stream_config(0, options.replicas, None);
        let ledger = retried(|| context.get_or_create_stream(config.clone())).await.map_err(unavailable)?;
        JetStreamLog::open(client, disconnects, ledger).await
    }

    /// `ledger init`: creates a ledger of `partitions` partitions, each a
    /// stream of `replicas` replicas, and writes the number into `LEDGER`'s
    /// metadata (last, so a writer that finds it finds every partition's
    /// stream). A ledger that exists already is opened if it has as many
    /// partitions, and refused otherwise (changing the number is a replay
    /// into a new ledger: `docs/scale.md`).
    pub async fn init(options: &JetStreamOptions, partitions: u32) -> Result<JetStreamLog, LogError> {
        if !(1..=super::MAX_PARTITIONS).contains(&partitions) {
            return Err(LogError::Layout(format!(
                "{partitions} partitions: a ledger has from 1 to {} partitions",
                super::MAX_PARTITIONS
            )));
        }
        let (client, disconnects) = open_client(&options.url).await?;
        let context = jetstream::new(client.clone());
        let existing = retried(|| async {
            match context.get_stream(STREAM_NAME).await {
                Ok(stream) => Ok(Some(stream)),
                Err(e)
                    if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(unavailable)?;
        let ledger = match existing {
            Some(stream) => stream,
            None => {
                for p in 1..partitions {
                    let config = stream_config(p, options.replicas, None);
                    retried(|| context.get_or_create_stream(config.clone())).await.map_err(unavailable)?;
                }
                let config = stream_config(0, options.replicas, Some(partitions));
                // Another `init` or a writer may have made `LEDGER` since:
                // then what it holds is compared below.
                match context.create_stream(config).await {
                    Ok(stream) => stream,
                    Err(_) => context.get_stream(STREAM_NAME).await.map_err(unavailable)?,
                }
            }
        };
        let found = partitions_of(ledger.cached_info())?;
        if found != partitions {
            let s = if found == 1 { "" } else { "s" };
            return Err(LogError::Layout(format!(
                "a ledger of {found} partition{s} exists on this server already; its number of partitions \
                 is fixed: to change it, replay it into a new ledger (docs/scale.md)"
            )));
        }
        let log = JetStreamLog::open(client, disconnects, ledger).await?;
        log.spread_leaders().await?;
        Ok(log)
    }

    /// Opens a ledger whose `LEDGER` stream is `ledger`: reads its number
    /// of partitions and finds every partition's stream.
    async fn open(
        client: async_nats::Client,
        disconnects: tokio::sync::watch::Receiver<u64>,
        ledger: stream::Stream,
    ) -> Result<JetStreamLog, LogError> {
        if !ledger.cached_info().config.allow_atomic_publish {
            return Err(LogError::Unavailable(format!(
                "stream {STREAM_NAME} exists without allow_atomic_publish; enable it \
                 (nats stream edit {STREAM_NAME} --allow-batch) and restart"
            )));
        }
        let partitions = partitions_of(ledger.cached_info())?;
        let context = jetstream::ContextBuilder::new().timeout(COMMIT_TIMEOUT).build(client.clone());
        let mut parts = Vec::with_capacity(partitions as usize);
        for index in 0..partitions {
            let name = stream_name(index);
            let stream = if index == 0 {
                ledger.clone()
            } else {
                context.get_stream(&name).await.map_err(|e| {
                    LogError::Layout(format!(
                        "the ledger has {partitions} partitions, but stream {name} (partition {index}) cannot be \
                         opened ({e}): a writer never creates it; run `ledger init --partitions {partitions}` again"
                    ))
                })?
            };
            let leader_changes = watch_leader(&client, &name).await?;
            parts.push(Part { index, prefix: events::partition_prefix(index), name, stream, leader_changes });
        }
        Ok(JetStreamLog { client, disconnects, context, parts: std::sync::Arc::new(parts), this: 0 })
    }

    /// How many partitions the ledger has.
    pub fn partitions(&self) -> u32 {
        self.parts.len() as u32
    }

    /// The same ledger with `head` and untargeted reads in `partition`.
    pub fn in_partition(&self, partition: u32) -> JetStreamLog {
        assert!(partition < self.partitions(), "partition {partition} of {}", self.partitions());
        JetStreamLog { this: partition, ..self.clone() }
    }

    /// The partition `head` and untargeted reads are in.
    pub fn partition(&self) -> u32 {
        self.this
    }

    fn here(&self) -> &Part {
        &self.parts[self.this as usize]
    }

    fn part_of(&self, tenant: &str) -> &Part {
        &self.parts[super::partition_of(tenant, self.partitions()) as usize]
    }

    /// Runs `op` (a request to `part`'s stream leader), or ends it as an
    /// unknown outcome the moment the connection drops or the stream elects
    /// another leader: the old leader will never answer it.
    async fn watched<T>(
        &self,
        part: &Part,
        what: &str,
        op: impl std::future::Future<Output = Result<T, LogError>>,
    ) -> Result<T, LogError> {
        let (mut disconnects, mut leaders) = (self.disconnects.clone(), part.leader_changes.clone());
        disconnects.borrow_and_update();
        leaders.borrow_and_update();
        tokio::select! {
            result = op => result,
            () = changed(&mut disconnects) => Err(LogError::Unavailable(format!(
                "the connection to nats-server dropped with {what} in flight; its outcome is unknown"
            ))),
            () = changed(&mut leaders) => Err(LogError::Unavailable(format!(
                "stream {} changed leader with {what} in flight; its outcome is unknown", part.name
            ))),
        }
    }

    /// The state and cluster of partition `partition`'s stream as its
    /// leader sees them now.
    pub(super) async fn stream_info(&self, partition: u32) -> Result<stream::Info, LogError> {
        let part = &self.parts[partition as usize];
        self.watched(part, "a stream info request", async {
            part.stream.get_info().await.map_err(unavailable)
        })
        .await
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context (requests time out after [`COMMIT_TIMEOUT`]).
    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// Partition 0's stream (`LEDGER`).
    pub fn ledger_stream(&self) -> &stream::Stream {
        &self.parts[0].stream
    }

    /// Every partition's stream, in partition order, for the consumers of
    /// other parts (webhook deliveries).
    pub fn streams(&self) -> impl Iterator<Item = (u32, &stream::Stream)> {
        self.parts.iter().map(|p| (p.index, &p.stream))
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
    async fn append_one(&self, part: &Part, batch: &AppendBatch) -> Result<AppendAck, LogError> {
        let m = &batch.messages[0];
        let mut headers = HeaderMap::new();
        if let Some(e) = batch.expectations.first() {
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                part.seq(e.last_position).to_string().as_str(),
            );
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence-Subject",
                part.tenant_filter(&m.tenant).as_str(),
            );
        }
        let published = self
            .context
            .publish_with_headers(part.subject(m), headers, m.payload.clone())
            .await
            .map_err(unavailable)?
            .await;
        match published {
            Ok(ack) if ack.stream == part.name && ack.sequence > 0 && !ack.duplicate => {
                let position = part.position(ack.sequence);
                Ok(AppendAck { first: position, last: position })
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

/// A record's subject as the ledger reads it: a message on partition
/// `partition`'s subject for a tenant that hashes to another partition
/// (only a raw publish puts one there) gets a subject that no event
/// matches, so it decodes as no ledger event and is reported as such,
/// rather than taking the place of the tenant's first event.
fn placed_subject(subject: &str, partition: u32, partitions: u32) -> String {
    if partitions > 1 {
        if let Some((tenant, _)) = events::parse_subject(subject) {
            let home = super::partition_of(tenant, partitions);
            if home != partition {
                return format!("{subject} (tenant {tenant} lives in partition {home})");
            }
        }
    }
    subject.to_string()
}

/// Follows a stream's leader elections and quorum losses, from
/// JetStream's advisories, and logs each.
async fn watch_leader(
    client: &async_nats::Client,
    stream: &str,
) -> Result<tokio::sync::watch::Receiver<u64>, LogError> {
    let (moved, changes) = tokio::sync::watch::channel(0u64);
    let advisory = |kind: &str| format!("$JS.EVENT.ADVISORY.STREAM.{kind}.{stream}");
    let mut elected = client.subscribe(advisory("LEADER_ELECTED")).await.map_err(unavailable)?;
    let mut lost = client.subscribe(advisory("QUORUM_LOST")).await.map_err(unavailable)?;
    let stream = stream.to_string();
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
                %stream,
                %leader,
                "the stream {what}: requests in flight to its old leader end as unknown outcomes"
            );
            moved.send_modify(|n| *n = n.wrapping_add(1));
        }
    });
    Ok(changes)
}

impl EventLog for JetStreamLog {
    fn partitions(&self) -> u32 {
        JetStreamLog::partitions(self)
    }

    fn in_partition(&self, partition: u32) -> JetStreamLog {
        JetStreamLog::in_partition(self, partition)
    }

    async fn append(&self, batch: AppendBatch) -> Result<AppendAck, LogError> {
        batch.check()?;
        // A batch is one partition's: the tenants of its first message.
        let part = self.part_of(&batch.messages[0].tenant);
        if let Some(other) = batch.messages.iter().find(|m| self.part_of(&m.tenant).index != part.index) {
            return Err(LogError::InvalidBatch(format!(
                "tenants {} and {} are in different partitions: a batch is one partition's",
                batch.messages[0].tenant, other.tenant
            )));
        }
        self.watched(part, "the append", self.append_checked(part, &batch)).await
    }

    async fn tenant_head(&self, tenant: &str) -> Result<u64, LogError> {
        let part = self.part_of(tenant);
        let filter = part.tenant_filter(tenant);
        self.watched(part, "a head read", async {
            match part.stream.get_last_raw_message_by_subject(&filter).await {
                Ok(message) => Ok(part.position(message.sequence)),
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
        let part = self.part_of(tenant);
        let filter = part.tenant_filter(tenant);
        let mut out = Vec::new();
        let mut next = part.seq(from).max(1);
        let last = part.seq(head);
        while next <= last && out.len() < DIRECT_READS {
            match part.stream.direct_get_next_for_subject(filter.as_str(), Some(next)).await {
                Ok(message) if message.sequence >= next && message.sequence <= last => {
                    next = message.sequence + 1;
                    out.push(LogRecord {
                        position: part.position(message.sequence),
                        subject: placed_subject(&message.subject, part.index, self.partitions()),
                        payload: message.payload,
                    });
                }
                _ => break,
            }
        }
        super::read_through(self, tenant, part.position(next), head, out).await
    }
}

/// Most records a tenant load reads by direct gets before opening a reader.
const DIRECT_READS: usize = 64;

impl JetStreamLog {
    /// [`EventLog::append`] of a checked batch of one partition's tenants.
    async fn append_checked(&self, part: &Part, batch: &AppendBatch) -> Result<AppendAck, LogError> {
        if batch.messages.len() == 1 {
            return self.append_one(part, batch).await;
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
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    part.seq(last_position).to_string().as_str(),
                );
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence-Subject",
                    part.tenant_filter(&m.tenant).as_str(),
                );
            }
            if i + 1 < count {
                self.client
                    .publish_with_headers(part.subject(m), headers, m.payload.clone())
                    .await
                    .map_err(unavailable)?;
                continue;
            }
            headers.insert("Nats-Batch-Commit", "1");
            let request =
                Request::new().headers(headers).payload(m.payload.clone()).timeout(Some(COMMIT_TIMEOUT));
            let reply = self.client.send_request(part.subject(m), request).await.map_err(unavailable)?;
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
            return Ok(AppendAck {
                first: part.position(reply.seq + 1 - count as u64),
                last: part.position(reply.seq),
            });
        }
        Err(LogError::InvalidBatch("empty batch".into()))
    }
}

impl Source for JetStreamLog {
    type Error = LogError;

    fn partition(&self) -> u32 {
        self.this
    }

    async fn head(&self) -> Result<u64, LogError> {
        let here = self.here();
        Ok(here.position(self.stream_info(here.index).await?.state.last_sequence))
    }

    async fn catalog_head(&self) -> Result<u64, LogError> {
        Ok(self.stream_info(0).await?.state.last_sequence)
    }

    async fn read(&self, from: u64, tenant: Option<&str>) -> Result<RecordStream, LogError> {
        let part = match tenant {
            Some(t) => self.part_of(t),
            None => self.here(),
        };
        let filter_subject = tenant.map(|t| part.tenant_filter(t)).unwrap_or_default();
        let start = part.seq(from).max(1);
        let consumer = part
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject,
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: start },
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let messages = consumer.messages().await.map_err(unavailable)?;
        let (index, partitions) = (part.index, self.partitions());
        Ok(messages
            .map(move |item| {
                let message = item.map_err(unavailable)?;
                let seq = message.info().map_err(unavailable)?.stream_sequence;
                Ok(LogRecord {
                    position: super::Position::pack(index, seq),
                    subject: placed_subject(&message.subject, index, partitions),
                    payload: message.payload.clone(),
                })
            })
            // An ordered consumer that resets (the server restarted) before
            // delivering anything is recreated by async-nats 0.51 with
            // `DeliverPolicy::All`, from the stream's first message, not
            // from `from` (found by `tests/faults.rs`: tenant loads after a
            // restart met their whole history again). What lies before
            // `from` is not what the caller asked for.
            .try_filter(move |record| {
                std::future::ready(super::Position::unpack(record.position).seq >= start)
            })
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
