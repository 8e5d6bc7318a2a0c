//! `ledger-client`: the Rust client tenant applications and the control
//! panel use to talk to `ledger serve`.
//!
//! - Typed calls for every command and query of the spec's service contract.
//! - Retries reuse the same idempotency key (the token `request`, the
//!   upload's file id, the `purchase`), so a retried command is applied once.
//! - The offline fallback (tenant clients with a cache directory): the
//!   client keeps the last quota figures it read from the ledger in a local
//!   sled file. When the ledger cannot be reached it decides uploads and
//!   token use itself, but only
//!   - while those figures are at most `max_staleness` old (after that it
//!     fails closed: it denies, code `ledger_unreachable`), and
//!   - up to `offline_share` of the quota that was left when they were read
//!     (beyond that it denies, code `offline_limit_exceeded`).
//!
//!   What it admits goes into a durable local outbox (flushed to disk before
//!   the call returns), and is delivered with its original keys and
//!   `admitted_offline_at` once the ledger answers again, before any new
//!   upload or token use is decided online. The ledger records those events
//!   as admitted offline, past the quota if need be, but at most
//!   10% past it (the ledger's `OFFLINE_MARGIN_PERCENT`).
//!
//! The overshoot is bounded twice: a client admits at most
//! `offline_share x (quota - used)` of what it last read, and the ledger
//! records offline uses at most 10% past the quota, whatever a client claims.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sled::Transactional;

pub mod nats;
mod offline;
pub mod protocol;

use offline::Cache;
pub use offline::{OfflineConfig, QuotaSnapshot};

/// Whom a client speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `<tenant>:user`: usage and quota decisions.
    User,
    /// `<tenant>:admin`: also seats and add-ons.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `nats://user:password@host:port`.
    pub url: String,
    /// Per request attempt.
    pub request_timeout: Duration,
    /// Attempts per command before the ledger counts as unreachable.
    pub attempts: u32,
    /// The inbox prefix the credential may subscribe to (the shipped
    /// configuration gives each credential its own: `_INBOX_<user>`).
    pub inbox_prefix: Option<String>,
}

impl ClientConfig {
    /// Defaults: 5 s per attempt, 3 attempts, and the inbox prefix the
    /// shipped nats-server configuration gives the URL's user
    /// (`_INBOX_<user>`; the NATS default without a user).
    pub fn new(url: impl Into<String>) -> ClientConfig {
        let url = url.into();
        let inbox_prefix = nats::split_credentials(&url).1.map(|(user, _)| protocol::inbox_prefix(&user));
        ClientConfig { url, request_timeout: Duration::from_secs(5), attempts: 3, inbox_prefix }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No ledger answered (after every attempt). Retry later; commands
    /// with idempotency keys can be re-sent as they were.
    #[error("the ledger did not answer: {0}")]
    Unreachable(String),
    /// The reply was not what the service contract says: a version mismatch.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The local cache or outbox could not be read or written.
    #[error("local cache: {0}")]
    Cache(String),
}

/// The answer to a command: the object `ledger apply` prints for a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub ok: bool,
    /// The log partition of `seq` (0 on a ledger of one partition).
    pub partition: Option<u32>,
    pub seq: Option<u64>,
    pub duplicate: bool,
    pub code: Option<String>,
    pub message: Option<String>,
    /// Decided by this client from its cache while the ledger was
    /// unreachable (and queued for delivery).
    pub offline: bool,
    /// The whole reply.
    pub raw: Value,
}

impl Answer {
    pub(crate) fn from_reply(raw: Value) -> Result<Answer, ClientError> {
        let ok = raw["ok"].as_bool().ok_or_else(|| ClientError::Protocol(format!("no \"ok\" in {raw}")))?;
        Ok(Answer {
            ok,
            partition: raw["partition"].as_u64().and_then(|p| u32::try_from(p).ok()),
            seq: raw["seq"].as_u64(),
            duplicate: raw["duplicate"].as_bool().unwrap_or(false),
            code: raw["code"].as_str().map(str::to_string),
            message: raw["message"].as_str().map(str::to_string),
            offline: false,
            raw,
        })
    }

    /// The answer if the ledger decided; `unavailable` (it could not decide,
    /// e.g. its log failed) counts as no answer.
    fn decided(self) -> Result<Answer, ClientError> {
        if self.code.as_deref() == Some("unavailable") {
            return Err(ClientError::Unreachable(self.message.unwrap_or_default()));
        }
        Ok(self)
    }

    pub(crate) fn local(ok: bool, code: Option<&str>, message: String) -> Answer {
        let mut raw = json!({"ok": ok, "offline": true});
        if let Some(code) = code {
            raw["code"] = json!(code);
            raw["message"] = json!(message);
        }
        Answer {
            ok,
            partition: None,
            seq: None,
            duplicate: false,
            code: code.map(str::to_string),
            message: code.map(|_| message),
            offline: true,
            raw,
        }
    }
}

/// Request/reply with retries.
#[derive(Clone)]
struct Transport {
    nats: async_nats::Client,
    config: ClientConfig,
}

impl Transport {
    async fn connect(config: ClientConfig) -> Result<Transport, ClientError> {
        let (address, options) =
            crate::nats::options(&config.url, "ledger-client", config.inbox_prefix.as_deref());
        // Connect even while the server is down: the client reconnects in
        // the background and the offline fallback covers the gap.
        let nats = options
            .retry_on_initial_connect()
            .max_reconnects(None)
            .request_timeout(Some(config.request_timeout))
            .connect(&address)
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        Ok(Transport { nats, config })
    }

    /// One attempt, no retry.
    async fn request_once(&self, subject: &str, body: &Value) -> Result<Value, ClientError> {
        let payload: bytes::Bytes = serde_json::to_vec(body).expect("JSON encodes").into();
        let message = crate::nats::request(&self.nats, subject.to_string(), payload)
            .await
            .map_err(ClientError::Unreachable)?;
        serde_json::from_slice(&message.payload)
            .map_err(|e| ClientError::Protocol(format!("reply is not JSON: {e}")))
    }

    /// A query: like [`Transport::request`], and an `unavailable` answer
    /// (the views are catching up, say after a restart) is asked again.
    async fn query(&self, subject: &str, body: &Value) -> Result<Value, ClientError> {
        let mut reply = self.request(subject, body).await?;
        for attempt in 1..self.config.attempts.max(1) {
            if reply["code"] != "unavailable" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250 << attempt.min(4))).await;
            reply = self.request(subject, body).await?;
        }
        Ok(reply)
    }

    /// Sends `body` to `subject` until a reply arrives, at most `attempts`
    /// times. The body is the same every time, idempotency key included.
    async fn request(&self, subject: &str, body: &Value) -> Result<Value, ClientError> {
        let payload: bytes::Bytes = serde_json::to_vec(body).expect("JSON encodes").into();
        let mut last_error = String::new();
        for attempt in 0..self.config.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
            }
            match crate::nats::request(&self.nats, subject.to_string(), payload.clone()).await {
                Ok(message) => {
                    return serde_json::from_slice(&message.payload)
                        .map_err(|e| ClientError::Protocol(format!("reply is not JSON: {e}")))
                }
                Err(error) => last_error = error,
            }
        }
        Err(ClientError::Unreachable(last_error))
    }
}

/// A tenant application's client (`<tenant>:user` or `<tenant>:admin`).
#[derive(Clone)]
pub struct Client {
    transport: Transport,
    tenant: String,
    role: Role,
    cache: Option<Arc<Cache>>,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Client {
    /// Connects (or keeps trying in the background) as `tenant`'s `role`.
    /// With `offline`, a background task also delivers the outbox once the
    /// ledger answers again (it ends when the last clone is dropped).
    pub async fn connect(
        config: ClientConfig,
        tenant: &str,
        role: Role,
        offline: Option<OfflineConfig>,
    ) -> Result<Client, ClientError> {
        let cache = offline.map(Cache::open).transpose()?.map(Arc::new);
        let client =
            Client { transport: Transport::connect(config).await?, tenant: tenant.to_string(), role, cache };
        if let Some(cache) = &client.cache {
            let weak = Arc::downgrade(cache);
            let courier = Client { cache: None, ..client.clone() };
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(offline::OFFLINE_PROBE_INTERVAL).await;
                    let Some(cache) = weak.upgrade() else { return };
                    let pending = cache.outbox().map(|o| !o.is_empty()).unwrap_or(false);
                    if !pending {
                        continue;
                    }
                    let Some(probe) = cache.try_online() else { continue };
                    let _exclusive = cache.gate.write().await;
                    if let Err(error) = courier.deliver_locked(&cache).await {
                        tracing::debug!(%error, "outbox not delivered yet");
                    }
                    drop(probe);
                }
            });
        }
        Ok(client)
    }

    /// A client over a connection the application already has (many
    /// tenants' clients may share one), without the offline fallback.
    pub fn with_connection(
        nats: async_nats::Client,
        config: ClientConfig,
        tenant: &str,
        role: Role,
    ) -> Client {
        Client { transport: Transport { nats, config }, tenant: tenant.to_string(), role, cache: None }
    }

    fn subject(&self, command: &str) -> String {
        protocol::command_subject(&self.tenant, self.role.name(), command)
    }

    async fn command(&self, command: &str, body: Value) -> Result<Answer, ClientError> {
        Answer::from_reply(self.transport.request(&self.subject(command), &body).await?)
    }

    /// A command whose outcome must be known: an `unavailable` answer (the
    /// ledger could not decide, e.g. its log failed) counts as no answer.
    async fn decided(&self, command: &str, body: Value) -> Result<Answer, ClientError> {
        self.command(command, body).await?.decided()
    }

    /// Stores a file of `bytes` (the file id is the idempotency key).
    pub async fn upload(&self, file: &str, bytes: u64) -> Result<Answer, ClientError> {
        self.metered("upload", json!({"file": file, "bytes": bytes})).await
    }

    /// Deletes a file; an upload of it still in the outbox is delivered first.
    pub async fn delete_file(&self, file: &str) -> Result<Answer, ClientError> {
        let body = json!({ "file": file });
        let Some(cache) = &self.cache else { return self.command("delete_file", body).await };
        let _exclusive = cache.gate.write().await;
        self.deliver_locked(cache).await?;
        self.command("delete_file", body).await
    }

    /// Uses `tokens` under the idempotency key `request`.
    pub async fn consume_tokens(&self, request: &str, tokens: u64) -> Result<Answer, ClientError> {
        self.metered("consume_tokens", json!({"request": request, "tokens": tokens})).await
    }

    pub async fn set_seats(&self, seats: u32) -> Result<Answer, ClientError> {
        self.command("set_seats", json!({"seats": seats})).await
    }

    /// `payment`: `"invoice"` or `"card"`.
    pub async fn purchase_addon(
        &self,
        addon: &str,
        purchase: &str,
        quantity: u32,
        payment: &str,
    ) -> Result<Answer, ClientError> {
        self.command(
            "purchase_addon",
            json!({"addon": addon, "purchase": purchase, "quantity": quantity, "payment": payment}),
        )
        .await
    }

    pub async fn cancel_addon(&self, purchase: &str) -> Result<Answer, ClientError> {
        self.command("cancel_addon", json!({"purchase": purchase})).await
    }

    /// Several commands in one request (`{"cmd": ..., fields}` each); the
    /// answers come back in order. Not covered by the offline fallback.
    pub async fn batch(&self, commands: Vec<Value>) -> Result<Vec<Answer>, ClientError> {
        let reply = self.transport.request(&self.subject("batch"), &json!({ "commands": commands })).await?;
        match reply["results"].as_array() {
            Some(results) => results.iter().cloned().map(Answer::from_reply).collect(),
            None => Err(ClientError::Protocol(format!("batch reply without results: {reply}"))),
        }
    }

    async fn query(&self, view: &str, at: Option<&str>) -> Result<Value, ClientError> {
        let body = match at {
            Some(at) => json!({ "at": at }),
            None => json!({}),
        };
        self.transport.query(&protocol::query_subject(&self.tenant, view), &body).await
    }

    /// The `usage` object (`ledger usage --json`); refreshes the quota cache.
    pub async fn usage(&self, at: Option<&str>) -> Result<Value, ClientError> {
        let (Some(cache), None) = (&self.cache, at) else { return self.query("usage", at).await };
        // Exclusive while reading: no online use of this client is in flight
        // that the reading might miss, and none admitted offline can slip
        // between the reading and its storing.
        let _exclusive = cache.gate.write().await;
        let usage = self.query("usage", None).await?;
        if usage.get("tokens").is_some() {
            cache.remember(&usage)?;
        }
        Ok(usage)
    }

    pub async fn invoice(&self, at: Option<&str>) -> Result<Value, ClientError> {
        self.query("invoice", at).await
    }

    pub async fn invoices(&self) -> Result<Value, ClientError> {
        self.query("invoices", None).await
    }

    /// Reads the ledger's current quota figures into the cache.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        self.usage(None).await.map(|_| ())
    }

    /// What this client admitted offline and has not delivered yet.
    pub async fn outbox_len(&self) -> Result<usize, ClientError> {
        match &self.cache {
            None => Ok(0),
            Some(cache) => Ok(cache.outbox()?.len()),
        }
    }

    /// The cached quota figures, if any.
    pub async fn snapshot(&self) -> Result<Option<QuotaSnapshot>, ClientError> {
        match &self.cache {
            None => Ok(None),
            Some(cache) => cache.snapshot(),
        }
    }

    /// Delivers the outbox in order, with the original keys. Stops at the
    /// first command the ledger does not answer (kept for next time).
    /// Returns how many were delivered.
    pub async fn deliver_outbox(&self) -> Result<usize, ClientError> {
        let Some(cache) = &self.cache else { return Ok(0) };
        let _exclusive = cache.gate.write().await;
        self.deliver_locked(cache).await
    }

    /// Delivers the outbox; the caller holds the gate exclusively. One
    /// attempt per entry (others wait on the gate meanwhile); what is not
    /// answered stays for the next try. An entry the ledger refused (past
    /// its offline margin, say) moves to the refused list, which
    /// [`Client::refused_offline`] shows the application.
    async fn deliver_locked(&self, cache: &Cache) -> Result<usize, ClientError> {
        let mut delivered = 0;
        for (key, body) in cache.queued()? {
            let command = body["cmd"].as_str().unwrap_or_default().to_string();
            let reply = self.transport.request_once(&self.subject(&command), &body).await;
            let answer = match reply.and_then(Answer::from_reply) {
                Ok(answer) => answer.decided()?,
                Err(error) => {
                    if matches!(error, ClientError::Unreachable(_)) {
                        cache.went_offline();
                    }
                    return Err(error);
                }
            };
            cache.came_back();
            let outbox = cache.outbox()?;
            let refused = cache.refused()?;
            let record = serde_json::to_vec(&json!({"command": body, "answer": answer.raw})).expect("JSON");
            (&outbox, &refused)
                .transaction(|(queue, refusals)| {
                    queue.remove(&key)?;
                    if !answer.ok {
                        refusals.insert(&key, record.as_slice())?;
                    }
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| Cache::err(format!("{e:?}")))?;
            cache.db.flush_async().await.map_err(Cache::err)?;
            if !answer.ok {
                tracing::warn!(%command, code = ?answer.code, "the ledger refused a use admitted offline");
            }
            delivered += 1;
        }
        Ok(delivered)
    }

    /// Uses this client admitted offline that the ledger then refused (each
    /// `{"command", "answer"}`, oldest first): the application was told ok,
    /// so it may need to act on them. They stay until
    /// [`Client::forget_refused`].
    pub fn refused_offline(&self) -> Result<Vec<Value>, ClientError> {
        let Some(cache) = &self.cache else { return Ok(Vec::new()) };
        cache
            .refused()?
            .iter()
            .map(|item| {
                let (_, value) = item.map_err(Cache::err)?;
                serde_json::from_slice(&value).map_err(Cache::err)
            })
            .collect()
    }

    /// Clears the refused list.
    pub fn forget_refused(&self) -> Result<(), ClientError> {
        if let Some(cache) = &self.cache {
            cache.refused()?.clear().map_err(Cache::err)?;
        }
        Ok(())
    }

    /// Uploads and token use: online when the ledger answers (after the
    /// outbox is delivered), else decided from the cache.
    async fn metered(&self, command: &str, body: Value) -> Result<Answer, ClientError> {
        let Some(cache) = &self.cache else { return self.command(command, body).await };
        if let Some(probe) = cache.try_online() {
            // The common case: nothing to deliver, decide online, many at once.
            let online = {
                let _shared = cache.gate.read().await;
                if cache.outbox()?.is_empty() {
                    let online = self.decided(command, body.clone()).await;
                    // Counted before the gate opens, so no offline decision
                    // or reading misses it.
                    cache.count_online(&body, &online)?;
                    Some(online)
                } else {
                    None
                }
            };
            let online = match online {
                Some(online) => online,
                None => {
                    // Deliver first, then decide online; offline if either fails.
                    let _exclusive = cache.gate.write().await;
                    let online = async {
                        self.deliver_locked(cache).await?;
                        self.decided(command, body.clone()).await
                    }
                    .await;
                    cache.count_online(&body, &online)?;
                    online
                }
            };
            drop(probe);
            match online {
                Ok(answer) => {
                    self.refresh_if_old(cache).await;
                    return Ok(answer);
                }
                Err(ClientError::Unreachable(_)) => cache.went_offline(),
                Err(other) => return Err(other),
            }
        }
        let _exclusive = cache.gate.write().await;
        cache.decide(command, body, "the ledger did not answer").await
    }

    /// Re-reads the quota figures once they are a quarter of the staleness
    /// limit old, so an outage starts from a recent reading.
    async fn refresh_if_old(&self, cache: &Cache) {
        let read_at = cache.snapshot().ok().flatten().map_or(0, |s| s.read_at_us);
        if now_us() - read_at > (cache.config.max_staleness / 4).as_micros() as i64 {
            if let Err(error) = self.refresh().await {
                tracing::debug!(%error, "could not refresh the quota cache");
            }
        }
    }
}

/// The control panel's client: `ledger.admin.<command>`.
#[derive(Clone)]
pub struct AdminClient {
    transport: Transport,
}

impl AdminClient {
    pub async fn connect(config: ClientConfig) -> Result<AdminClient, ClientError> {
        Ok(AdminClient { transport: Transport::connect(config).await? })
    }

    /// Any command by name with its fields (`tenant` included where it has one).
    pub async fn command(&self, command: &str, fields: Value) -> Result<Answer, ClientError> {
        Answer::from_reply(self.transport.request(&protocol::admin_subject(command), &fields).await?)
    }

    /// `plan`: the `define_plan` plan object of the spec.
    pub async fn define_plan(&self, plan: Value) -> Result<Answer, ClientError> {
        self.command("define_plan", json!({ "plan": plan })).await
    }

    pub async fn define_addon(&self, addon: Value) -> Result<Answer, ClientError> {
        self.command("define_addon", json!({ "addon": addon })).await
    }

    pub async fn subscribe(&self, tenant: &str, plan: &str, seats: u32) -> Result<Answer, ClientError> {
        self.command("subscribe", json!({"tenant": tenant, "plan": plan, "seats": seats})).await
    }

    pub async fn change_plan(&self, tenant: &str, plan: &str) -> Result<Answer, ClientError> {
        self.command("change_plan", json!({"tenant": tenant, "plan": plan})).await
    }

    pub async fn cancel(&self, tenant: &str) -> Result<Answer, ClientError> {
        self.command("cancel", json!({ "tenant": tenant })).await
    }

    /// `outcome`: `"paid"` or `"failed"`.
    pub async fn settle_payment(
        &self,
        tenant: &str,
        purchase: &str,
        outcome: &str,
        reference: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let mut fields = Map::new();
        fields.insert("tenant".into(), json!(tenant));
        fields.insert("purchase".into(), json!(purchase));
        fields.insert("outcome".into(), json!(outcome));
        if let Some(reference) = reference {
            fields.insert("reference".into(), json!(reference));
        }
        self.command("settle_payment", Value::Object(fields)).await
    }

    pub async fn close_period(&self, tenant: &str) -> Result<Answer, ClientError> {
        self.command("close_period", json!({ "tenant": tenant })).await
    }

    pub async fn batch(&self, commands: Vec<Value>) -> Result<Vec<Answer>, ClientError> {
        let reply = self
            .transport
            .request(&protocol::admin_subject("batch"), &json!({ "commands": commands }))
            .await?;
        match reply["results"].as_array() {
            Some(results) => results.iter().cloned().map(Answer::from_reply).collect(),
            None => Err(ClientError::Protocol(format!("batch reply without results: {reply}"))),
        }
    }

    /// A tenant's `usage`, `invoice` or `invoices` view.
    pub async fn query(&self, tenant: &str, view: &str, at: Option<&str>) -> Result<Value, ClientError> {
        let body = match at {
            Some(at) => json!({ "at": at }),
            None => json!({}),
        };
        self.transport.query(&protocol::query_subject(tenant, view), &body).await
    }
}
