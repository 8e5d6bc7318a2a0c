//! Delivery: every notification to every endpoint that wants it, at least
//! once, signed afresh at each attempt, retried after the endpoint's delays,
//! and recorded; and each notification on NATS, at most once.
//!
//! **JetStream.** Each endpoint has a durable pull consumer on the `LEDGER`
//! stream (`webhook_<id>`), filtered to the event kinds that make the
//! notifications it wants and starting after the position it was
//! registered at. Every `serve` of the ledger pulls from it, and JetStream
//! hands each message to one of them: that is what makes a notification go
//! out once per endpoint in normal operation, with no lock of our own. A
//! message is acknowledged once its notification was delivered (or finally
//! failed); a failed attempt is NAKed with the endpoint's next delay, so
//! the server redelivers it then, to whichever instance pulls. The
//! consumer's ack wait (30 s) is above an attempt's 10 s limit, and an
//! in-progress ack goes out before an attempt at a message held here more
//! than 5 s, so a slow receiver is never redelivered to while it is still
//! answering. (No `BackOff` list:
//! nats-server sets the ack wait to its first delay, which would redeliver
//! a message whose attempt is still running.) A `serve` killed mid-attempt
//! leaves the message unacknowledged: it is delivered again, with the same
//! `webhook-id`. NATS publishing has one shared consumer (`notify_nats`).
//!
//! **Embedded log.** The one `serve` holding the data directory delivers:
//! per endpoint, a cursor over the `ledger` view's notifications and the
//! attempts still due, kept in `DATA/notify/cursors/<id>.json`, so a
//! restart resumes where it was (again, at least once).
//!
//! Each endpoint delivers on its own tasks, at most [`IN_FLIGHT`] attempts
//! at a time: a slow or failing endpoint delays no other, and no decision
//! (deliveries read the views; they never touch the engine).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use futures_util::StreamExt;
use projections::notice::NOTIFYING;
use projections::LedgerView;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::egress::{self, Egress};
use super::store::{DeliveryRecord, Endpoint, NotifyStore, Request};
use super::{render, sign, Notification, TEST_KIND};
use crate::engine::Ledger;
use crate::log::{AnyLog, JetStreamLog};
use crate::report::rfc3339;

/// An attempt gets this long for an answer (Standard Webhooks' usual limit).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The consumers' ack wait: above [`ATTEMPT_TIMEOUT`], so a message is not
/// redelivered while its attempt still runs.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// A message held here longer than this before its attempt starts is
/// marked in progress first. Otherwise, from the server's handing it over:
/// at most [`ATTEMPT_TIMEOUT`] in the client's buffer behind the batch's
/// earlier messages (each waits for a permit, freed by an attempt's end),
/// this, then the attempt's [`ATTEMPT_TIMEOUT`]: 25 s, within [`ACK_WAIT`].
const PROGRESS_AFTER: Duration = Duration::from_secs(5);
/// Attempts one endpoint has running at once.
pub const IN_FLIGHT: usize = 32;
/// The delays between attempts when an endpoint names none: 5 s, 30 s,
/// 2 min, 10 min, 1 h, 4 h, 12 h, 24 h, 24 h.
pub const DEFAULT_RETRIES_MS: [u64; 9] =
    [5_000, 30_000, 120_000, 600_000, 3_600_000, 14_400_000, 43_200_000, 86_400_000, 86_400_000];

/// Deliveries by outcome and what each endpoint has not delivered yet,
/// for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// (endpoint, outcome) -> attempts.
    outcomes: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// endpoint -> notification id -> its event's `at` (microseconds): the
    /// notifications taken up and not yet delivered or failed.
    undelivered: Mutex<HashMap<String, HashMap<String, i64>>>,
}

impl DeliveryStats {
    fn outcome(&self, endpoint: &str, outcome: &'static str) {
        *self
            .outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((endpoint.to_string(), outcome))
            .or_default() += 1;
    }

    fn taken(&self, endpoint: &str, id: &str, at_us: i64) {
        let mut undelivered = self.undelivered.lock().unwrap_or_else(|e| e.into_inner());
        undelivered.entry(endpoint.to_string()).or_default().insert(id.to_string(), at_us);
    }

    fn settled(&self, endpoint: &str, id: &str) {
        let mut undelivered = self.undelivered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = undelivered.get_mut(endpoint) {
            ids.remove(id);
        }
    }

    /// Attempts by endpoint and outcome (`delivered`, `retrying`, `failed`).
    pub fn outcomes(&self) -> Vec<(String, &'static str, u64)> {
        self.outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((e, o), n)| (e.clone(), *o, *n))
            .collect()
    }

    /// Per endpoint, the age in seconds of the oldest notification it has
    /// taken up and not delivered (0 when none).
    pub fn oldest_undelivered(&self, now_us: i64) -> Vec<(String, f64)> {
        let undelivered = self.undelivered.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, f64)> = undelivered
            .iter()
            .map(|(endpoint, ids)| {
                let oldest = ids.values().min().map_or(0.0, |at| (now_us - at).max(0) as f64 / 1e6);
                (endpoint.clone(), oldest)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn forget(&self, endpoint: &str) {
        self.undelivered.lock().unwrap_or_else(|e| e.into_inner()).remove(endpoint);
    }
}

/// What every delivery task shares.
pub struct Delivery {
    pub store: NotifyStore,
    pub egress: Egress,
    pub ledger: Ledger,
    pub log: AnyLog,
    pub stats: Arc<DeliveryStats>,
    /// Where attempts send their records ([`Delivery::write_records`]
    /// writes them in batches).
    pub records: tokio::sync::mpsc::UnboundedSender<DeliveryRecord>,
}

/// How often the records of attempts are written (per endpoint, one write).
const RECORD_EVERY: Duration = Duration::from_millis(250);

/// What an attempt came to.
enum Outcome {
    Delivered,
    /// Another attempt follows after this delay.
    Retrying(Duration),
    Failed,
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retrying(_) => "retrying",
            Outcome::Failed => "failed",
        }
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Delivery {
    /// Delivers until the task is aborted: follows the store's endpoints
    /// (added, rotated, removed) and its requests, every second.
    pub async fn run(self: Arc<Self>) {
        // Everything this spawns stops with it (a `serve` stopping aborts it).
        let _nats = match &self.log {
            AnyLog::JetStream(log) => Some(Task(tokio::spawn(self.clone().publish_on_nats(log.clone())))),
            AnyLog::Embedded(_) => None,
        };
        let mut workers: HashMap<String, (Endpoint, Task)> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            match self.store.endpoints().await {
                Ok(endpoints) => self.reconcile(&mut workers, endpoints).await,
                Err(error) => tracing::warn!(%error, "reading the webhook endpoints"),
            }
            match self.store.take_requests().await {
                Ok(requests) => {
                    for request in requests {
                        tokio::spawn(self.clone().answer(request));
                    }
                }
                Err(error) => tracing::warn!(%error, "reading webhook requests"),
            }
        }
    }

    /// Starts a worker per new endpoint, restarts those whose definition
    /// changed (a rotated secret), stops those removed.
    async fn reconcile(
        self: &Arc<Self>,
        workers: &mut HashMap<String, (Endpoint, Task)>,
        endpoints: Vec<Endpoint>,
    ) {
        let current: HashSet<&str> = endpoints.iter().map(|e| e.id.as_str()).collect();
        let gone: Vec<String> = workers.keys().filter(|id| !current.contains(id.as_str())).cloned().collect();
        for id in gone {
            workers.remove(&id);
            self.stats.forget(&id);
            if let AnyLog::JetStream(log) = &self.log {
                // Every instance tries; one succeeds.
                for (partition, stream) in log.streams() {
                    let _ = stream.delete_consumer(&consumer_name(&id, partition)).await;
                }
            }
        }
        for endpoint in endpoints {
            let running =
                workers.get(&endpoint.id).is_some_and(|(e, w)| *e == endpoint && !w.0.is_finished());
            if running {
                continue;
            }
            // Replacing an entry drops (and so aborts) the old worker.
            let worker = Task(tokio::spawn(self.clone().endpoint_worker(endpoint.clone())));
            workers.insert(endpoint.id.clone(), (endpoint, worker));
        }
    }

    async fn endpoint_worker(self: Arc<Self>, endpoint: Endpoint) {
        let result = match &self.log {
            AnyLog::JetStream(log) => self.clone().jetstream_worker(&endpoint, log.clone()).await,
            AnyLog::Embedded(_) => self.clone().embedded_worker(&endpoint).await,
        };
        if let Err(error) = result {
            // The next reconcile (within a second) starts it again.
            tracing::warn!(endpoint = %endpoint.id, error = %format!("{error:#}"), "webhook delivery stopped");
        }
    }

    /// Signs and sends one notification; returns the receiver's status or
    /// what went wrong.
    async fn send(&self, endpoint: &Endpoint, notification: &Notification) -> (Option<u16>, Option<String>) {
        let id = notification.webhook_id(&endpoint.id);
        let body = bytes::Bytes::from(notification.body().to_string());
        let target = match egress::resolve(&endpoint.url, &self.egress, endpoint.registered_by_tenant).await {
            Ok(target) => target,
            Err(refused) => return (None, Some(refused.message)),
        };
        let now = now_us();
        let timestamp = now / 1_000_000;
        let signature = match sign::signature_header(endpoint.signing_secrets(now), &id, timestamp, &body) {
            Ok(signature) => signature,
            Err(error) => return (None, Some(error.to_string())),
        };
        let headers = [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        match egress::post(&target, &headers, body, ATTEMPT_TIMEOUT).await {
            Ok(answer) => (Some(answer.status), None),
            Err(error) => (None, Some(error)),
        }
    }

    /// One attempt, its outcome (by the endpoint's delays) and its record.
    async fn attempt(&self, endpoint: &Endpoint, notification: &Notification, attempt: u32) -> Outcome {
        let started = std::time::Instant::now();
        let (status, error) = self.send(endpoint, notification).await;
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        let outcome = if delivered {
            Outcome::Delivered
        } else if let Some(delay) = endpoint.retries_ms.get(attempt as usize - 1) {
            Outcome::Retrying(Duration::from_millis(*delay))
        } else {
            Outcome::Failed
        };
        let error = error.or_else(|| status.filter(|_| !delivered).map(|s| format!("answered {s}")));
        self.stats.outcome(&endpoint.id, outcome.name());
        let record = DeliveryRecord {
            endpoint: endpoint.id.clone(),
            webhook_id: notification.webhook_id(&endpoint.id),
            kind: notification.kind.to_string(),
            tenant: (!notification.tenant.is_empty()).then(|| notification.tenant.clone()),
            position: (notification.kind != TEST_KIND).then_some(notification.position),
            attempt,
            outcome: outcome.name().to_string(),
            status,
            error,
            at: rfc3339(now_us()),
            took_ms: started.elapsed().as_millis() as u64,
        };
        let _ = self.records.send(record);
        if !matches!(outcome, Outcome::Retrying(_)) {
            self.stats.settled(&endpoint.id, &notification.id);
        }
        outcome
    }

    /// The notification the event at `position` made, for `endpoint`, once
    /// the views include it; `None` when it made none the endpoint wants.
    async fn notification_at(
        &self,
        endpoint: &Endpoint,
        position: u64,
    ) -> anyhow::Result<Option<Notification>> {
        tokio::time::timeout(Duration::from_secs(5), self.ledger.sync_to(position))
            .await
            .map_err(|_| anyhow::anyhow!("the views are behind position {position}"))??;
        let Some(row) = LedgerView::notice_at(self.ledger.views(), position)? else { return Ok(None) };
        Ok(Some(render(&row)).filter(|n| endpoint.wants(n.kind, &n.tenant)))
    }

    /// One durable consumer per partition the endpoint hears from (a
    /// tenant's endpoint: its tenant's partition only).
    async fn jetstream_worker(self: Arc<Self>, endpoint: &Endpoint, log: JetStreamLog) -> anyhow::Result<()> {
        let partitions: Vec<u32> = match &endpoint.tenant {
            Some(tenant) => vec![crate::log::partition_of(tenant, log.partitions())],
            None => (0..log.partitions()).collect(),
        };
        let workers = partitions.into_iter().map(|partition| {
            let (this, log) = (self.clone(), log.clone());
            async move { this.partition_worker(endpoint, &log, partition).await }
        });
        futures_util::future::try_join_all(workers).await?;
        Ok(())
    }

    async fn partition_worker(
        self: Arc<Self>,
        endpoint: &Endpoint,
        log: &JetStreamLog,
        partition: u32,
    ) -> anyhow::Result<()> {
        let stream = log.streams().nth(partition as usize).expect("a partition of the log").1;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &consumer_name(&endpoint.id, partition),
                consumer_config(endpoint, partition),
            )
            .await
            .map_err(|e| anyhow::anyhow!("the endpoint's consumer: {e}"))?;
        let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let endpoint = Arc::new(endpoint.clone());
        loop {
            // A waiting pull (not `fetch`, which asks again at once when
            // nothing is there): messages stream in as they are appended,
            // and an idle endpoint costs the server one request a second.
            let mut batch = consumer
                .batch()
                .max_messages(IN_FLIGHT)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("fetching: {e}"))?;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| anyhow::anyhow!("fetching: {e}"))?;
                let received = std::time::Instant::now();
                let permit = permits.clone().acquire_owned().await.expect("never closed");
                let (this, endpoint) = (self.clone(), endpoint.clone());
                tokio::spawn(async move {
                    this.jetstream_attempt(&endpoint, partition, message, received).await;
                    drop(permit);
                });
            }
        }
    }

    /// One attempt at the message the server handed over at `received`.
    async fn jetstream_attempt(
        &self,
        endpoint: &Endpoint,
        partition: u32,
        message: jetstream::Message,
        received: std::time::Instant,
    ) {
        let Ok(info) = message.info() else { return };
        let (position, attempt) =
            (crate::log::Position::pack(partition, info.stream_sequence), info.delivered.max(1) as u32);
        let notification = match self.notification_at(endpoint, position).await {
            Ok(Some(notification)) => notification,
            Ok(None) => {
                let _ = message.ack().await;
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "a notification not derived yet; later");
                let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                return;
            }
        };
        self.stats.taken(&endpoint.id, &notification.id, at_us(&notification));
        // The attempt may take up to 10 s of the 30 s ack wait: when the
        // message has waited here long enough that it might not end in
        // time (for a permit, or for the views), say it is in progress.
        // Otherwise it surely ends within the ack wait, and an acknowledgement
        // less per attempt is work nats-server does not do beside commits.
        if received.elapsed() > PROGRESS_AFTER {
            let _ = message.ack_with(AckKind::Progress).await;
        }
        let ack = match self.attempt(endpoint, &notification, attempt).await {
            Outcome::Delivered => AckKind::Ack,
            Outcome::Retrying(delay) => AckKind::Nak(Some(delay)),
            Outcome::Failed => AckKind::Term,
        };
        if let Err(error) = message.ack_with(ack).await {
            // Unacknowledged, it comes back after the ack wait: at least once.
            tracing::warn!(%error, "acknowledging a webhook delivery");
        }
    }

    async fn embedded_worker(self: Arc<Self>, endpoint: &Endpoint) -> anyhow::Result<()> {
        let AnyLog::Embedded(_) = &self.log else { unreachable!("embedded only") };
        let NotifyStore::Dir(data) = &self.store else {
            anyhow::bail!("an embedded ledger keeps endpoints in its data directory")
        };
        let path = data.join("notify").join("cursors").join(format!("{}.json", endpoint.id));
        let mut cursor =
            read_cursor(&path)?.unwrap_or(Cursor { after: endpoint.after_position, due: BTreeMap::new() });
        let endpoint = Arc::new(endpoint.clone());
        let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let (done, mut results) = tokio::sync::mpsc::unbounded_channel::<(u64, u32, Outcome)>();
        let mut running: HashSet<u64> = HashSet::new();
        loop {
            let mut changed = false;
            // New notifications the views hold.
            for position in LedgerView::notices_from(self.ledger.views(), cursor.after + 1)? {
                cursor.after = position;
                cursor.due.insert(position, Due { attempt: 1, at_us: 0 });
                changed = true;
            }
            // Attempts that came back.
            while let Ok((position, attempt, outcome)) = results.try_recv() {
                running.remove(&position);
                match outcome {
                    Outcome::Retrying(delay) => {
                        let at_us = now_us() + delay.as_micros() as i64;
                        cursor.due.insert(position, Due { attempt: attempt + 1, at_us });
                    }
                    Outcome::Delivered | Outcome::Failed => {
                        cursor.due.remove(&position);
                    }
                }
                changed = true;
            }
            if changed {
                // Saved before the attempts it lists start: a restart
                // repeats at most what was running (at least once).
                write_cursor(&path, &cursor)?;
            }
            let now = now_us();
            let due: Vec<(u64, u32)> = cursor
                .due
                .iter()
                .filter(|(p, d)| d.at_us <= now && !running.contains(p))
                .map(|(p, d)| (*p, d.attempt))
                .collect();
            for (position, attempt) in due {
                let Ok(permit) = permits.clone().try_acquire_owned() else { break };
                running.insert(position);
                let (this, endpoint, done) = (self.clone(), endpoint.clone(), done.clone());
                tokio::spawn(async move {
                    let outcome = match this.notification_at(&endpoint, position).await {
                        Ok(Some(notification)) => {
                            this.stats.taken(&endpoint.id, &notification.id, at_us(&notification));
                            this.attempt(&endpoint, &notification, attempt).await
                        }
                        Ok(None) => Outcome::Delivered,
                        Err(_) => Outcome::Retrying(Duration::from_secs(1)),
                    };
                    let _ = done.send((position, attempt, outcome));
                    drop(permit);
                });
            }
            // The next result (saved at once: a restart then repeats as
            // little as it can), or a look for new notifications.
            if let Ok(Some((position, attempt, outcome))) =
                tokio::time::timeout(Duration::from_millis(50), results.recv()).await
            {
                let _ = done.send((position, attempt, outcome));
            }
        }
    }

    /// Writes the records attempts send, every [`RECORD_EVERY`], one write
    /// per endpoint: a record is for people to read (`webhooks
    /// deliveries`, `retry`), and at a busy endpoint one durable write per
    /// attempt would cost the log's own writes their disk.
    pub async fn write_records(
        store: NotifyStore,
        mut records: tokio::sync::mpsc::UnboundedReceiver<DeliveryRecord>,
    ) {
        let mut pending: BTreeMap<String, Vec<DeliveryRecord>> = BTreeMap::new();
        let mut tick = tokio::time::interval(RECORD_EVERY);
        loop {
            tokio::select! {
                record = records.recv() => match record {
                    Some(record) => pending.entry(record.endpoint.clone()).or_default().push(record),
                    None => return,
                },
                _ = tick.tick() => {
                    for (endpoint, batch) in std::mem::take(&mut pending) {
                        if let Err(error) = store.record(&endpoint, &batch).await {
                            tracing::warn!(%error, records = batch.len(), "recording webhook deliveries");
                        }
                    }
                }
            }
        }
    }

    /// `webhooks retry` and `webhooks test`: one attempt each.
    async fn answer(self: Arc<Self>, request: Request) {
        let endpoint = match self.store.endpoint(request.endpoint()).await {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "reading an endpoint");
                return;
            }
        };
        match request {
            Request::Test { id, .. } => {
                let notification = Notification {
                    id: format!("test_{id}"),
                    kind: TEST_KIND,
                    tenant: endpoint.tenant.clone().unwrap_or_default(),
                    timestamp: rfc3339(now_us()),
                    position: 0,
                    data: json!({"endpoint": endpoint.id, "message": "a test from ledger webhooks test"}),
                };
                // No retries: a test says whether the endpoint answers now.
                let once = Endpoint { retries_ms: Vec::new(), ..endpoint };
                self.attempt(&once, &notification, 1).await;
            }
            Request::Retry { .. } => {
                let records = match self.store.deliveries(&endpoint.id).await {
                    Ok(records) => records,
                    Err(error) => {
                        tracing::warn!(%error, "reading deliveries");
                        return;
                    }
                };
                // The notifications whose last record says failed.
                let mut last: BTreeMap<&str, &DeliveryRecord> = BTreeMap::new();
                for record in &records {
                    last.insert(&record.webhook_id, record);
                }
                let once = Endpoint { retries_ms: Vec::new(), ..endpoint.clone() };
                for record in last.values().filter(|r| r.outcome == "failed") {
                    let Some(position) = record.position else { continue };
                    match self.notification_at(&endpoint, position).await {
                        Ok(Some(notification)) => {
                            self.attempt(&once, &notification, record.attempt + 1).await;
                        }
                        Ok(None) => {}
                        Err(error) => tracing::warn!(%error, "retrying a delivery"),
                    }
                }
            }
        }
    }

    /// Each notification on `ledger.notify.<tenant>.<type>`, plain NATS, at
    /// most once (one consumer shared by every instance, acknowledged after
    /// the publish), with its id in a `webhook-id` header.
    async fn publish_on_nats(self: Arc<Self>, log: JetStreamLog) {
        loop {
            if let Err(error) = self.publish_loop(&log).await {
                tracing::warn!(%error, "publishing notifications on NATS");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn publish_loop(&self, log: &JetStreamLog) -> anyhow::Result<()> {
        let loops = log.streams().map(|(partition, stream)| self.publish_partition(log, partition, stream));
        futures_util::future::try_join_all(loops).await?;
        Ok(())
    }

    async fn publish_partition(
        &self,
        log: &JetStreamLog,
        partition: u32,
        stream: &async_nats::jetstream::stream::Stream,
    ) -> anyhow::Result<()> {
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                NATS_CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(NATS_CONSUMER.into()),
                    deliver_policy: consumer::DeliverPolicy::New,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    filter_subjects: NOTIFYING
                        .iter()
                        .map(|k| format!("{}.*.{}", events::partition_prefix(partition), k.name()))
                        .collect(),
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("the NATS consumer: {e}"))?;
        let everyone = Endpoint {
            id: String::new(),
            url: String::new(),
            tenant: None,
            types: None,
            retries_ms: Vec::new(),
            secrets: Vec::new(),
            created: String::new(),
            after_position: 0,
            after_partitions: Vec::new(),
            registered_by_tenant: false,
        };
        loop {
            let mut batch =
                consumer.batch().max_messages(256).expires(Duration::from_secs(1)).messages().await?;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
                let seq = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
                let position = crate::log::Position::pack(partition, seq);
                if let Some(notification) = self.notification_at(&everyone, position).await? {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("webhook-id", notification.nats_id().as_str());
                    let subject = format!("ledger.notify.{}.{}", notification.tenant, notification.kind);
                    log.client()
                        .publish_with_headers(subject, headers, notification.body().to_string().into())
                        .await?;
                }
                let _ = message.ack().await;
            }
        }
    }
}

const NATS_CONSUMER: &str = "notify_nats";

/// A spawned task that is aborted when dropped.
pub struct Task(pub tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The endpoint's consumer on partition `partition`'s stream.
fn consumer_name(endpoint: &str, partition: u32) -> String {
    if partition == 0 {
        format!("webhook_{endpoint}")
    } else {
        format!("webhook_{endpoint}_p{partition}")
    }
}

/// The event kinds that make the notification types an endpoint wants.
fn kinds_for(types: Option<&[String]>) -> Vec<events::EventKind> {
    use events::EventKind::*;
    let Some(types) = types else { return NOTIFYING.to_vec() };
    let mut kinds: Vec<events::EventKind> = types
        .iter()
        .flat_map(|t| match t.as_str() {
            "invoice.finalized" => vec![PeriodFinalized],
            "usage.threshold_crossed" => vec![UsageThresholdCrossed],
            "usage.denied" => vec![TokensDenied, UploadDenied],
            "addon.payment_pending" | "addon.activated" | "addon.payment_failed" => {
                vec![AddonPurchased, AddonActivated, PaymentSettled]
            }
            "subscription.changed" => vec![Subscribed, SeatsChanged, PlanChanged, SubscriptionCancelled],
            _ => Vec::new(),
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// The endpoint's durable consumer: its tenant's (or every tenant's)
/// subjects of the kinds it wants, from just after its registration.
fn consumer_config(endpoint: &Endpoint, partition: u32) -> consumer::pull::Config {
    let tenant = endpoint.tenant.as_deref().unwrap_or("*");
    let after = crate::log::Position::unpack(endpoint.after(partition)).seq;
    consumer::pull::Config {
        durable_name: Some(consumer_name(&endpoint.id, partition)),
        description: Some(format!("webhook deliveries to {}", endpoint.id)),
        deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        filter_subjects: kinds_for(endpoint.types.as_deref())
            .into_iter()
            .map(|k| format!("{}.{tenant}.{}", events::partition_prefix(partition), k.name()))
            .collect(),
        // Retries waiting on their delay count as pending: room for many.
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

fn at_us(notification: &Notification) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&notification.timestamp).map_or(0, |t| t.timestamp_micros())
}

/// An embedded endpoint's place: notifications up to `after` are taken up;
/// `due` holds those with an attempt to come (position -> which attempt,
/// and when).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cursor {
    after: u64,
    due: BTreeMap<u64, Due>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Due {
    attempt: u32,
    at_us: i64,
}

fn read_cursor(path: &std::path::Path) -> anyhow::Result<Option<Cursor>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn write_cursor(path: &std::path::Path, cursor: &Cursor) -> anyhow::Result<()> {
    super::store::write_json(path, cursor)
}
