//! The client's offline fallback: the last quota reading and the outbox in
//! a local sled file, the gate that orders online and offline decisions,
//! and the circuit breaker that decides when to try the ledger again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sled::Transactional;
use tokio::sync::RwLock;

use super::{now_us, Answer, ClientError};

#[derive(Debug, Clone)]
pub struct OfflineConfig {
    /// Directory of the local quota cache and outbox (a sled database).
    pub dir: PathBuf,
    /// Quota figures older than this are not trusted: offline, deny.
    pub max_staleness: Duration,
    /// Share (0 to 1) of the quota left at the last reading that may be
    /// admitted while offline.
    pub offline_share: f64,
}

/// The quota figures last read from the ledger, and what was admitted
/// offline against them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QuotaSnapshot {
    pub read_at_us: i64,
    pub period_end_us: i64,
    pub storage_used_bytes: u64,
    pub storage_quota_bytes: u64,
    pub tokens_used: u64,
    pub tokens_limit: u64,
    /// Admitted offline since the reading (reset by the next reading).
    pub offline_bytes: u64,
    pub offline_tokens: u64,
}

/// The local sled database of an offline-capable client, and what orders
/// the client's uses of it.
pub(super) struct Cache {
    pub(super) db: sled::Db,
    pub(super) config: OfflineConfig,
    /// Online decisions hold it shared (many at once); delivering the
    /// outbox and deciding offline hold it exclusively. So nothing is
    /// decided online while the outbox has something to deliver, and
    /// nothing is admitted offline while an online decision is in flight.
    pub(super) gate: RwLock<()>,
    /// Serializes read-modify-writes of the snapshot.
    pub(super) snapshot_lock: std::sync::Mutex<()>,
    /// After the ledger failed to answer, decide offline without waiting
    /// for the network until then (a circuit breaker).
    pub(super) offline_until: std::sync::Mutex<Option<Instant>>,
    /// Set while one caller probes a ledger that failed to answer.
    pub(super) probing: std::sync::atomic::AtomicBool,
}

/// A caller's turn to try the ledger (`Some`: the one prober after a failure).
pub(super) struct Probe<'a>(Option<&'a std::sync::atomic::AtomicBool>);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if let Some(probing) = self.0 {
            probing.store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

const SNAPSHOT_KEY: &[u8] = b"snapshot";

/// Opens the sled file, retrying for up to 5 s while another handle (a
/// client of this process that is closing, its flusher finishing) still
/// holds the directory lock. sled reports that lock as an I/O error.
fn open_waiting(config: &sled::Config) -> sled::Result<sled::Db> {
    let give_up = Instant::now() + Duration::from_secs(5);
    let mut result = config.open();
    while matches!(&result, Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock"))
        && Instant::now() < give_up
    {
        std::thread::sleep(Duration::from_millis(20));
        result = config.open();
    }
    result
}
/// How long the client decides offline before trying the ledger again.
pub(super) const OFFLINE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

impl Cache {
    /// Opens the cache directory (waiting briefly for a client that is
    /// still closing it).
    pub(super) fn open(config: OfflineConfig) -> Result<Cache, ClientError> {
        let db = open_waiting(&sled::Config::new().path(&config.dir)).map_err(Cache::err)?;
        Ok(Cache {
            db,
            config,
            gate: RwLock::new(()),
            snapshot_lock: std::sync::Mutex::new(()),
            offline_until: std::sync::Mutex::new(None),
            probing: Default::default(),
        })
    }

    pub(super) fn err(e: impl std::fmt::Display) -> ClientError {
        ClientError::Cache(e.to_string())
    }

    pub(super) fn snapshot(&self) -> Result<Option<QuotaSnapshot>, ClientError> {
        match self.db.get(SNAPSHOT_KEY).map_err(Self::err)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(Self::err),
        }
    }

    pub(super) fn put_snapshot(&self, snapshot: &QuotaSnapshot) -> Result<(), ClientError> {
        self.db
            .insert(SNAPSHOT_KEY, serde_json::to_vec(snapshot).expect("JSON encodes"))
            .map_err(Self::err)?;
        Ok(())
    }

    /// Changes the snapshot, if there is one, atomically with respect to
    /// other changes.
    pub(super) fn update_snapshot(&self, change: impl FnOnce(&mut QuotaSnapshot)) -> Result<(), ClientError> {
        let _serial = self.snapshot_lock.lock().expect("snapshot lock");
        if let Some(mut snapshot) = self.snapshot()? {
            change(&mut snapshot);
            self.put_snapshot(&snapshot)?;
        }
        Ok(())
    }

    pub(super) fn outbox(&self) -> Result<sled::Tree, ClientError> {
        self.db.open_tree("outbox").map_err(Self::err)
    }

    pub(super) fn refused(&self) -> Result<sled::Tree, ClientError> {
        self.db.open_tree("refused").map_err(Self::err)
    }

    /// Queued commands in the order they were admitted.
    pub(super) fn queued(&self) -> Result<Vec<(sled::IVec, Value)>, ClientError> {
        self.outbox()?
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(Self::err)?;
                Ok((key, serde_json::from_slice(&value).map_err(Self::err)?))
            })
            .collect()
    }

    /// Whether to try the ledger now: always while it answers; after it
    /// failed, not until the probe interval has passed, and then only one
    /// caller at a time (the others decide offline meanwhile).
    pub(super) fn try_online(&self) -> Option<Probe<'_>> {
        use std::sync::atomic::Ordering;
        let until = *self.offline_until.lock().expect("circuit lock");
        match until {
            None => Some(Probe(None)),
            Some(until) if Instant::now() < until => None,
            Some(_) => self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .ok()
                .map(|_| Probe(Some(&self.probing))),
        }
    }

    pub(super) fn went_offline(&self) {
        *self.offline_until.lock().expect("circuit lock") = Some(Instant::now() + OFFLINE_PROBE_INTERVAL);
    }

    pub(super) fn came_back(&self) {
        *self.offline_until.lock().expect("circuit lock") = None;
    }

    /// Stores a reading; the caller holds the gate exclusively.
    pub(super) fn remember(&self, usage: &Value) -> Result<(), ClientError> {
        let number = |v: &Value| v.as_u64().ok_or_else(|| ClientError::Protocol(format!("not a count: {v}")));
        let end = usage["period"]["end"].as_str().unwrap_or("");
        let period_end_us = crate::protocol::parse_rfc3339(end)
            .ok_or_else(|| ClientError::Protocol(format!("period end {end:?} is not an RFC 3339 instant")))?;
        let snapshot = QuotaSnapshot {
            read_at_us: now_us(),
            period_end_us,
            storage_used_bytes: number(&usage["storage"]["used_bytes"])?,
            storage_quota_bytes: number(&usage["storage"]["quota_bytes"])?,
            tokens_used: number(&usage["tokens"]["used"])?,
            tokens_limit: number(&usage["tokens"]["limit"])?,
            offline_bytes: 0,
            offline_tokens: 0,
        };
        let _serial = self.snapshot_lock.lock().expect("snapshot lock");
        // Only a reading taken with the outbox empty includes everything
        // this client admitted; otherwise keep counting against the old one.
        if self.outbox()?.is_empty() {
            self.put_snapshot(&snapshot)?;
        }
        Ok(())
    }

    /// Records an online answer in the circuit breaker and the reading; the
    /// caller holds the gate.
    pub(super) fn count_online(
        &self,
        body: &Value,
        online: &Result<Answer, ClientError>,
    ) -> Result<(), ClientError> {
        let Ok(answer) = online else { return Ok(()) };
        self.came_back();
        if answer.ok && !answer.duplicate {
            // Keep the reading current between refreshes.
            let (tokens, bytes) = (body["tokens"].as_u64().unwrap_or(0), body["bytes"].as_u64().unwrap_or(0));
            self.update_snapshot(|s| {
                s.tokens_used += tokens;
                s.storage_used_bytes += bytes;
            })?;
        }
        Ok(())
    }

    /// Decides an upload or token use from the cache; the caller holds the
    /// gate exclusively.
    pub(super) async fn decide(
        &self,
        command: &str,
        mut body: Value,
        reason: &str,
    ) -> Result<Answer, ClientError> {
        let now = now_us();
        let _serial = self.snapshot_lock.lock().expect("snapshot lock");
        let Some(mut snapshot) = self.snapshot()? else {
            return Ok(Answer::local(
                false,
                Some("ledger_unreachable"),
                format!("{reason}; no cached quota"),
            ));
        };
        let age = Duration::from_micros((now - snapshot.read_at_us).max(0) as u64);
        if age > self.config.max_staleness || now >= snapshot.period_end_us {
            return Ok(Answer::local(
                false,
                Some("ledger_unreachable"),
                format!("{reason}; the cached quota is {}s old or from an ended period", age.as_secs()),
            ));
        }
        // The same key queued already: the same answer (idempotent).
        let key_field = if command == "upload" { "file" } else { "request" };
        let amount_field = if command == "upload" { "bytes" } else { "tokens" };
        for (_, queued) in self.queued()? {
            if queued["cmd"] == command && queued[key_field] == body[key_field] {
                if queued[amount_field] != body[amount_field] {
                    let code = if command == "upload" { "file_exists" } else { "idempotency_conflict" };
                    return Ok(Answer::local(
                        false,
                        Some(code),
                        format!(
                            "{} was admitted offline with {} {amount_field}",
                            body[key_field], queued[amount_field]
                        ),
                    ));
                }
                let mut answer = Answer::local(true, None, String::new());
                answer.duplicate = true;
                return Ok(answer);
            }
        }
        // In parts per million, so the arithmetic is exact for any quota.
        let share_ppm = (self.config.offline_share.clamp(0.0, 1.0) * 1e6).round() as u128;
        let budget =
            |quota: u64, used: u64| (u128::from(quota.saturating_sub(used)) * share_ppm / 1_000_000) as u64;
        let (amount, admitted, allowed, what) = if command == "upload" {
            let amount = body["bytes"].as_u64().unwrap_or(0);
            let allowed = budget(snapshot.storage_quota_bytes, snapshot.storage_used_bytes);
            (amount, snapshot.offline_bytes, allowed, "bytes")
        } else {
            let amount = body["tokens"].as_u64().unwrap_or(0);
            (amount, snapshot.offline_tokens, budget(snapshot.tokens_limit, snapshot.tokens_used), "tokens")
        };
        if admitted.saturating_add(amount) > allowed {
            return Ok(Answer::local(
                false,
                Some("offline_limit_exceeded"),
                format!("{reason}; {admitted} + {amount} {what} is over the offline allowance of {allowed}"),
            ));
        }
        body["cmd"] = json!(command);
        body["admitted_offline_at"] = json!(crate::protocol::rfc3339(now));
        if command == "upload" {
            snapshot.offline_bytes += amount;
        } else {
            snapshot.offline_tokens += amount;
        }
        let id = self.db.generate_id().map_err(Cache::err)?;
        // The queued command and the new allowance in one atomic write.
        let outbox = self.outbox()?;
        let snapshot_bytes = serde_json::to_vec(&snapshot).expect("JSON encodes");
        let body_bytes = serde_json::to_vec(&body).expect("JSON encodes");
        let default_tree: &sled::Tree = &self.db;
        (default_tree, &outbox)
            .transaction(|(meta, queue)| {
                queue.insert(&id.to_be_bytes(), body_bytes.as_slice())?;
                meta.insert(SNAPSHOT_KEY, snapshot_bytes.as_slice())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| Cache::err(format!("{e:?}")))?;
        drop(_serial);
        // Durable before the caller is told yes.
        self.db.flush_async().await.map_err(Cache::err)?;
        Ok(Answer::local(true, None, String::new()))
    }
}
