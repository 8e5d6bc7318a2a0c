//! Where a ledger keeps what is not an event: its webhook endpoints, the
//! record of their deliveries, and requests to deliver again.
//!
//! A JetStream ledger keeps them on the server, so every `serve` of the
//! ledger sees the same ones, and only the ledger's credential (the one
//! allowed JetStream's API) can read them:
//! - KV bucket `LEDGER_WEBHOOKS`: endpoint id -> [`Endpoint`] (with its
//!   secrets);
//! - stream `LEDGER_DELIVERIES`: the attempts' [`DeliveryRecord`]s on
//!   `ledger.deliveries.<endpoint>`, a batch a message (a JSON array), the
//!   newest [`RECORDS_KEPT`] batches per endpoint;
//! - stream `LEDGER_WEBHOOK_REQUESTS` (a work queue): `webhooks retry` and
//!   `webhooks test` on `ledger.webhook.requests.<endpoint>`, taken by
//!   whichever `serve` pulls first.
//!
//! An embedded ledger keeps them in its data directory (`notify/`), where
//! the one `serve` that holds the directory delivers them. Files, not
//! sled: the command line changes them while `serve` runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// Batches of delivery records kept per endpoint (the oldest go first).
pub const RECORDS_KEPT: i64 = 1000;
const WEBHOOKS_BUCKET: &str = "LEDGER_WEBHOOKS";
const DELIVERIES_STREAM: &str = "LEDGER_DELIVERIES";
const REQUESTS_STREAM: &str = "LEDGER_WEBHOOK_REQUESTS";
const REQUESTS_CONSUMER: &str = "webhook-requests";

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `ep_` and 12 hex digits.
    pub id: String,
    pub url: String,
    /// Only this tenant's notifications; `None`: every tenant's.
    pub tenant: Option<String>,
    /// Only these types; `None`: every type.
    pub types: Option<Vec<String>>,
    /// The delays between attempts, in milliseconds: an attempt, then one
    /// more after each delay, then the notification is marked failed.
    pub retries_ms: Vec<u64>,
    /// The signing secrets (`whsec_...`), newest first. After a rotation
    /// the previous one stays until it expires, and deliveries carry a
    /// signature under each.
    pub secrets: Vec<Secret>,
    /// RFC 3339.
    pub created: String,
    /// It receives the notifications recorded after it was registered: those
    /// of events past this log position.
    pub after_position: u64,
    /// The heads of partitions 1 and on at registration (a partitioned
    /// ledger): the endpoint hears of events after these too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_partitions: Vec<u64>,
    /// Registered with a tenant key: its destination must stay public at
    /// every delivery (unless `serve --webhook-allow-private`).
    pub registered_by_tenant: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub secret: String,
    /// Microseconds since the epoch; `None`: the current secret.
    pub expires_at_us: Option<i64>,
}

impl Endpoint {
    /// Whether this endpoint receives a notification of `kind` about `tenant`.
    pub fn wants(&self, kind: &str, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self.types.as_ref().is_none_or(|types| types.iter().any(|t| t == kind))
    }

    /// Whether this endpoint gets `notification`: a kind and tenant it
    /// wants, from an event after its registration.
    pub fn receives(&self, notification: &super::Notification) -> bool {
        self.wants(notification.kind, &notification.tenant)
            && notification.position
                > self.after(crate::log::Position::unpack(notification.position).partition)
    }

    /// The position in `partition` the endpoint hears from after.
    pub fn after(&self, partition: u32) -> u64 {
        match partition {
            0 => self.after_position,
            p => self.after_partitions.get(p as usize - 1).copied().unwrap_or(0),
        }
    }

    /// The secrets that sign a delivery at `now_us`.
    pub fn signing_secrets(&self, now_us: i64) -> impl Iterator<Item = &str> {
        self.secrets
            .iter()
            .filter(move |s| s.expires_at_us.is_none_or(|at| at > now_us))
            .map(|s| s.secret.as_str())
    }
}

/// One attempt to deliver one notification to one endpoint, and what came
/// of the notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub endpoint: String,
    pub webhook_id: String,
    /// The notification's `type` and tenant, and its event's log position
    /// (`None` for a `webhook.test`).
    pub kind: String,
    pub tenant: Option<String>,
    pub position: Option<u64>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `delivered`, `retrying` (another attempt follows) or `failed` (the
    /// last attempt failed).
    pub outcome: String,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// RFC 3339.
    pub at: String,
    /// How long the attempt took.
    pub took_ms: u64,
}

/// What `webhooks retry` and `webhooks test` ask a `serve` to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Send again every notification whose last record is `failed`.
    Retry { endpoint: String },
    /// Send a `webhook.test` notification with this id.
    Test { endpoint: String, id: String },
}

impl Request {
    pub fn endpoint(&self) -> &str {
        match self {
            Request::Retry { endpoint } | Request::Test { endpoint, .. } => endpoint,
        }
    }
}

/// The ledger's store of endpoints, records and requests.
#[derive(Clone)]
pub enum NotifyStore {
    /// An embedded ledger's data directory.
    Dir(PathBuf),
    JetStream(JetStreamStore),
}

#[derive(Clone)]
pub struct JetStreamStore {
    context: jetstream::Context,
    webhooks: kv::Store,
    deliveries: stream::Stream,
    requests: stream::Stream,
}

/// `records` as JSON arrays of at most `limit` bytes each (a record larger
/// than `limit` alone in its array).
fn chunks(records: &[DeliveryRecord], limit: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut current = b"[".to_vec();
    for record in records {
        let json = serde_json::to_vec(record)?;
        if current.len() > 1 && current.len() + json.len() + 2 > limit {
            current.push(b']');
            out.push(std::mem::replace(&mut current, b"[".to_vec()));
        }
        if current.len() > 1 {
            current.push(b',');
        }
        current.extend_from_slice(&json);
    }
    if current.len() > 1 {
        current.push(b']');
        out.push(current);
    }
    Ok(out)
}

fn store_error(what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{what}: {e}")
}

impl JetStreamStore {
    /// Opens (creating when needed) the buckets and streams, with the
    /// replicas of the ledger's stream.
    pub async fn open(context: jetstream::Context, replicas: usize) -> anyhow::Result<JetStreamStore> {
        let webhooks = bucket(&context, WEBHOOKS_BUCKET, "the ledger's webhook endpoints", replicas).await?;
        let deliveries = context
            .get_or_create_stream(stream::Config {
                name: DELIVERIES_STREAM.into(),
                subjects: vec!["ledger.deliveries.>".into()],
                storage: stream::StorageType::File,
                num_replicas: replicas,
                max_messages_per_subject: RECORDS_KEPT,
                discard: stream::DiscardPolicy::Old,
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(|e| store_error("opening the delivery records", e))?;
        let requests = context
            .get_or_create_stream(stream::Config {
                name: REQUESTS_STREAM.into(),
                subjects: vec!["ledger.webhook.requests.>".into()],
                storage: stream::StorageType::File,
                num_replicas: replicas,
                retention: stream::RetentionPolicy::WorkQueue,
                max_age: Duration::from_secs(7 * 86_400),
                ..Default::default()
            })
            .await
            .map_err(|e| store_error("opening the webhook requests", e))?;
        Ok(JetStreamStore { context, webhooks, deliveries, requests })
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }
}

/// Opens a KV bucket of the ledger's, creating it when it does not exist:
/// created once and never updated, since the ledger's credential may not
/// reconfigure streams (`ledger nats-config` denies it), with the replicas
/// of the ledger's stream and one value a key.
pub async fn bucket(
    context: &jetstream::Context,
    name: &str,
    description: &str,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    let config = kv::Config {
        bucket: name.into(),
        description: description.into(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    match context.create_key_value(config).await {
        Ok(store) => Ok(store),
        // It exists (created by another instance, or before this one ran).
        Err(_) => context.get_key_value(name).await.map_err(|e| store_error(&format!("opening {name}"), e)),
    }
}

fn notify_dir(data: &Path) -> PathBuf {
    data.join("notify")
}

fn webhooks_file(data: &Path) -> PathBuf {
    notify_dir(data).join("webhooks.json")
}

fn records_file(data: &Path, endpoint: &str) -> PathBuf {
    notify_dir(data).join("deliveries").join(format!("{endpoint}.jsonl"))
}

fn requests_dir(data: &Path) -> PathBuf {
    notify_dir(data).join("requests")
}

/// An endpoint id names files and subjects: only what `ep_<hex>` holds.
pub fn valid_endpoint_id(id: &str) -> bool {
    id.strip_prefix("ep_")
        .is_some_and(|hex| !hex.is_empty() && hex.len() <= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl NotifyStore {
    /// Every endpoint, in id order.
    pub async fn endpoints(&self) -> anyhow::Result<Vec<Endpoint>> {
        let mut out = match self {
            NotifyStore::Dir(data) => read_json::<Vec<Endpoint>>(&webhooks_file(data))?.unwrap_or_default(),
            NotifyStore::JetStream(js) => {
                let mut out = Vec::new();
                let mut keys = js.webhooks.keys().await.map_err(|e| store_error("listing endpoints", e))?;
                while let Some(key) = keys.next().await {
                    let key = key.map_err(|e| store_error("listing endpoints", e))?;
                    if let Some(endpoint) = js.endpoint(&key).await? {
                        out.push(endpoint);
                    }
                }
                out
            }
        };
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub async fn endpoint(&self, id: &str) -> anyhow::Result<Option<Endpoint>> {
        if !valid_endpoint_id(id) {
            return Ok(None);
        }
        match self {
            NotifyStore::Dir(_) => Ok(self.endpoints().await?.into_iter().find(|e| e.id == id)),
            NotifyStore::JetStream(js) => js.endpoint(id).await,
        }
    }

    /// Adds or replaces an endpoint.
    pub async fn put_endpoint(&self, endpoint: &Endpoint) -> anyhow::Result<()> {
        anyhow::ensure!(valid_endpoint_id(&endpoint.id), "not an endpoint id: {:?}", endpoint.id);
        match self {
            NotifyStore::Dir(data) => {
                let _lock = FileLock::take(&notify_dir(data))?;
                let mut all = read_json::<Vec<Endpoint>>(&webhooks_file(data))?.unwrap_or_default();
                all.retain(|e| e.id != endpoint.id);
                all.push(endpoint.clone());
                write_json(&webhooks_file(data), &all)
            }
            NotifyStore::JetStream(js) => {
                js.webhooks
                    .put(&endpoint.id, serde_json::to_vec(endpoint)?.into())
                    .await
                    .map_err(|e| store_error("storing the endpoint", e))?;
                Ok(())
            }
        }
    }

    /// Removes an endpoint; false when there is none.
    pub async fn remove_endpoint(&self, id: &str) -> anyhow::Result<bool> {
        if self.endpoint(id).await?.is_none() {
            return Ok(false);
        }
        match self {
            NotifyStore::Dir(data) => {
                let _lock = FileLock::take(&notify_dir(data))?;
                let mut all = read_json::<Vec<Endpoint>>(&webhooks_file(data))?.unwrap_or_default();
                all.retain(|e| e.id != id);
                write_json(&webhooks_file(data), &all)?;
            }
            NotifyStore::JetStream(js) => {
                js.webhooks.purge(id).await.map_err(|e| store_error("removing the endpoint", e))?;
            }
        }
        Ok(true)
    }

    /// Records attempts at one endpoint's notifications (in one write: a
    /// busy endpoint's records are written a batch at a time, not an fsync
    /// each).
    pub async fn record(&self, endpoint: &str, records: &[DeliveryRecord]) -> anyhow::Result<()> {
        anyhow::ensure!(valid_endpoint_id(endpoint), "not an endpoint id: {endpoint:?}");
        if records.is_empty() {
            return Ok(());
        }
        match self {
            NotifyStore::Dir(data) => {
                use std::io::Write;
                let path = records_file(data, endpoint);
                std::fs::create_dir_all(path.parent().expect("in a folder"))?;
                let mut lines = Vec::new();
                for record in records {
                    lines.extend_from_slice(&serde_json::to_vec(record)?);
                    lines.push(b'\n');
                }
                // One write of whole lines to a file opened for appending:
                // lines from several writers never interleave.
                std::fs::OpenOptions::new().create(true).append(true).open(&path)?.write_all(&lines)?;
                Ok(())
            }
            NotifyStore::JetStream(js) => {
                // As few messages as fit under the server's payload limit
                // (half of it: room for the headers and the array's commas).
                let limit = (js.context.client().server_info().max_payload / 2).max(64 * 1024);
                for chunk in chunks(records, limit)? {
                    js.context
                        .publish(format!("ledger.deliveries.{endpoint}"), chunk.into())
                        .await
                        .map_err(|e| store_error("recording deliveries", e))?
                        .await
                        .map_err(|e| store_error("recording deliveries", e))?;
                }
                Ok(())
            }
        }
    }

    /// The endpoint's records, oldest first (at most [`RECORDS_KEPT`] on
    /// JetStream; the data directory's file keeps them all).
    pub async fn deliveries(&self, endpoint: &str) -> anyhow::Result<Vec<DeliveryRecord>> {
        if !valid_endpoint_id(endpoint) {
            return Ok(Vec::new());
        }
        match self {
            NotifyStore::Dir(data) => match std::fs::read_to_string(records_file(data, endpoint)) {
                Ok(text) => Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e.into()),
            },
            NotifyStore::JetStream(js) => {
                let subject = format!("ledger.deliveries.{endpoint}");
                // The endpoint's newest batch: read up to it, and when there
                // is none, wait for nothing.
                let last = match js.deliveries.get_last_raw_message_by_subject(&subject).await {
                    Ok(newest) => newest.sequence,
                    Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                        return Ok(Vec::new())
                    }
                    Err(e) => return Err(store_error("reading deliveries", e)),
                };
                let consumer = js
                    .deliveries
                    .create_consumer(consumer::pull::OrderedConfig {
                        filter_subject: subject,
                        deliver_policy: consumer::DeliverPolicy::All,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| store_error("reading deliveries", e))?;
                let mut messages =
                    consumer.messages().await.map_err(|e| store_error("reading deliveries", e))?;
                let mut out = Vec::new();
                loop {
                    // The filtered consumer says how many are left; stop at
                    // the last instead of waiting for more.
                    let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
                    let Ok(Some(message)) = next else { break };
                    let message = message.map_err(|e| store_error("reading deliveries", e))?;
                    let info = message.info().map_err(|e| store_error("reading deliveries", e))?;
                    let (pending, sequence) = (info.pending, info.stream_sequence);
                    if let Ok(batch) = serde_json::from_slice::<Vec<DeliveryRecord>>(&message.payload) {
                        out.extend(batch);
                    }
                    if pending == 0 || sequence >= last {
                        break;
                    }
                }
                Ok(out)
            }
        }
    }

    /// Asks the `serve` instances to act on an endpoint.
    pub async fn request(&self, request: &Request) -> anyhow::Result<()> {
        anyhow::ensure!(
            valid_endpoint_id(request.endpoint()),
            "not an endpoint id: {:?}",
            request.endpoint()
        );
        match self {
            NotifyStore::Dir(data) => {
                let dir = requests_dir(data);
                std::fs::create_dir_all(&dir)?;
                let name = format!("{}.json", uuid::Uuid::now_v7().simple());
                write_json(&dir.join(name), request)
            }
            NotifyStore::JetStream(js) => {
                js.context
                    .publish(
                        format!("ledger.webhook.requests.{}", request.endpoint()),
                        serde_json::to_vec(request)?.into(),
                    )
                    .await
                    .map_err(|e| store_error("sending the request", e))?
                    .await
                    .map_err(|e| store_error("sending the request", e))?;
                Ok(())
            }
        }
    }

    /// The requests waiting, oldest first; each is gone once taken (a
    /// `serve` that dies while acting on one loses it: the command line
    /// said it was sent, not done, and it can be sent again).
    pub async fn take_requests(&self) -> anyhow::Result<Vec<Request>> {
        match self {
            NotifyStore::Dir(data) => {
                let dir = requests_dir(data);
                let mut names: Vec<PathBuf> = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(e.into()),
                };
                names.retain(|p| p.extension().is_some_and(|e| e == "json"));
                names.sort();
                let mut out = Vec::new();
                for path in names {
                    if let Some(request) = read_json::<Request>(&path)? {
                        out.push(request);
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Ok(out)
            }
            NotifyStore::JetStream(js) => {
                let consumer: consumer::PullConsumer = js
                    .requests
                    .get_or_create_consumer(
                        REQUESTS_CONSUMER,
                        consumer::pull::Config {
                            durable_name: Some(REQUESTS_CONSUMER.into()),
                            ack_policy: consumer::AckPolicy::Explicit,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| store_error("reading webhook requests", e))?;
                let mut batch = consumer
                    .fetch()
                    .max_messages(100)
                    .expires(Duration::from_millis(100))
                    .messages()
                    .await
                    .map_err(|e| store_error("reading webhook requests", e))?;
                let mut out = Vec::new();
                while let Some(message) = batch.next().await {
                    let message = message.map_err(|e| store_error("reading webhook requests", e))?;
                    if let Ok(request) = serde_json::from_slice(&message.payload) {
                        out.push(request);
                    }
                    message.ack().await.map_err(|e| store_error("taking a webhook request", e))?;
                }
                Ok(out)
            }
        }
    }
}

impl JetStreamStore {
    async fn endpoint(&self, id: &str) -> anyhow::Result<Option<Endpoint>> {
        match self.webhooks.get(id).await.map_err(|e| store_error("reading an endpoint", e))? {
            Some(bytes) if !bytes.is_empty() => Ok(Some(serde_json::from_slice(&bytes)?)),
            _ => Ok(None),
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{} is damaged: {e}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// Replaces a file whole (write, sync, rename), readable by its owner only:
/// it may hold secrets.
pub(crate) fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().expect("a file in a folder");
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(&serde_json::to_vec_pretty(value)?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// An exclusive `flock` on `dir/.lock` while a change reads and rewrites a
/// file, so two changes at once cannot undo each other.
pub(crate) struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    pub(crate) fn take(dir: &Path) -> anyhow::Result<FileLock> {
        use std::os::unix::io::AsRawFd;
        std::fs::create_dir_all(dir)?;
        let file =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".lock"))?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        #[allow(unsafe_code)]
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        anyhow::ensure!(locked == 0, "locking {}: {}", dir.display(), std::io::Error::last_os_error());
        Ok(FileLock(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32) -> DeliveryRecord {
        DeliveryRecord {
            endpoint: "ep_000000000001".into(),
            webhook_id: format!("msg_{n}"),
            kind: "usage.denied".into(),
            tenant: Some("acme".into()),
            position: Some(u64::from(n)),
            attempt: n % 4 + 1,
            outcome: "retrying".into(),
            status: Some(500),
            error: Some("answered 500".repeat(n as usize % 7)),
            at: "2026-12-04T00:00:00Z".into(),
            took_ms: 3,
        }
    }

    #[test]
    fn records_are_split_into_arrays_under_the_limit_losing_none() {
        let records: Vec<DeliveryRecord> = (0..5_000).map(record).collect();
        for limit in [1, 300, 4_096, 65_536, usize::MAX] {
            let chunks = chunks(&records, limit).unwrap();
            let mut back = Vec::new();
            for chunk in &chunks {
                let part: Vec<DeliveryRecord> = serde_json::from_slice(chunk).unwrap();
                assert!(chunk.len() <= limit || part.len() == 1, "{} bytes over {limit}", chunk.len());
                back.extend(part);
            }
            assert_eq!(back, records, "limit {limit}");
        }
        assert!(chunks(&[], 100).unwrap().is_empty());
    }
}
