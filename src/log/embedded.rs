//! The embedded log: a sled tree in the data directory, for running on one
//! machine without a server.
//!
//! Keys in the one tree:
//! - `e` + position (u64 big-endian) -> `[subject length u16 LE][subject][payload]`
//! - `t` + tenant -> the tenant's last position (u64 big-endian)
//! - `h` -> the last position
//!
//! An append checks expectations and writes all three kinds of key in one
//! `sled::Batch` (atomic, also across a crash) under a mutex, then fsyncs
//! before it returns. Readers only see positions up to the durable head, so a
//! projection never folds an event that a crash could take back.

use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{AppendAck, AppendBatch, EventLog, LogError, LogRecord, RecordStream, Source};

/// How many records one scan of the tree yields to a reader.
const READ_CHUNK: usize = 1024;

#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    /// Serializes appenders: expectation checks and position assignment must
    /// see each other's writes.
    append_lock: Mutex<()>,
    /// The last position known to be on disk; readers stop here.
    durable_head: watch::Sender<u64>,
}

fn storage(e: sled::Error) -> LogError {
    LogError::Storage(e.to_string())
}

fn event_key(position: u64) -> [u8; 9] {
    let mut key = [b'e'; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

fn tenant_key(tenant: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + tenant.len());
    key.push(b't');
    key.extend_from_slice(tenant.as_bytes());
    key
}

fn read_u64(value: Option<sled::IVec>) -> u64 {
    value.map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().expect("8-byte position")))
}

fn encode_record(subject: &str, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(subject.len()).expect("subjects are short");
    let mut value = Vec::with_capacity(2 + subject.len() + payload.len());
    value.extend_from_slice(&len.to_le_bytes());
    value.extend_from_slice(subject.as_bytes());
    value.extend_from_slice(payload);
    value
}

fn decode_record(position: u64, value: &[u8]) -> Result<LogRecord, LogError> {
    let corrupt = || LogError::Storage(format!("record {position} is corrupt"));
    let len = u16::from_le_bytes(value.get(..2).ok_or_else(corrupt)?.try_into().unwrap()) as usize;
    let subject = value.get(2..2 + len).ok_or_else(corrupt)?;
    let subject = std::str::from_utf8(subject).map_err(|_| corrupt())?.to_string();
    let payload = Bytes::copy_from_slice(&value[2 + len..]);
    Ok(LogRecord { position, subject, payload })
}

impl EmbeddedLog {
    /// Opens (or creates) the log in `dir`. sled locks the directory, so one
    /// process at a time owns an embedded log.
    pub fn open(dir: &Path) -> Result<EmbeddedLog, LogError> {
        let config = sled::Config::new()
            .path(dir)
            // Appends fsync explicitly; the background flush only bounds what
            // an idle process leaves in memory.
            .flush_every_ms(Some(500))
            .mode(sled::Mode::HighThroughput);
        let db = projections::open_sled(&config).map_err(storage)?;
        let tree = db.open_tree("log").map_err(storage)?;
        let head = read_u64(tree.get(b"h").map_err(storage)?);
        let (durable_head, _) = watch::channel(head);
        Ok(EmbeddedLog { inner: Arc::new(Inner { db, tree, append_lock: Mutex::new(()), durable_head }) })
    }

    fn append_sync(&self, batch: &AppendBatch) -> Result<AppendAck, LogError> {
        let tree = &self.inner.tree;
        let _guard = self.inner.append_lock.lock().expect("append lock poisoned");
        for e in &batch.expectations {
            let actual = read_u64(tree.get(tenant_key(&e.tenant)).map_err(storage)?);
            if actual != e.last_position {
                return Err(LogError::Conflict {
                    tenant: e.tenant.clone(),
                    expected: e.last_position,
                    actual,
                });
            }
        }
        let head = read_u64(tree.get(b"h").map_err(storage)?);
        let first = head + 1;
        let mut write = sled::Batch::default();
        // Later messages of a tenant overwrite its last position; the final
        // value is the tenant's last message in the batch.
        for (i, m) in batch.messages.iter().enumerate() {
            let position = first + i as u64;
            write.insert(&event_key(position), encode_record(&m.subject(), &m.payload));
            write.insert(tenant_key(&m.tenant), &position.to_be_bytes());
        }
        let last = head + batch.messages.len() as u64;
        write.insert(b"h", &last.to_be_bytes());
        tree.apply_batch(write).map_err(storage)?;
        Ok(AppendAck { first, last })
    }
}

/// How long an append waits for its fsync (milliseconds when healthy).
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl EventLog for EmbeddedLog {
    async fn append(&self, batch: AppendBatch) -> Result<AppendAck, LogError> {
        batch.check()?;
        let ack = self.append_sync(&batch)?;
        // One fsync makes this batch and every batch applied before it
        // durable, so concurrent appenders share the cost (group commit).
        // sled's flush never completes once a write has failed (a full
        // disk): past FLUSH_TIMEOUT the outcome is unknown, and said so,
        // rather than the engine waiting forever.
        match tokio::time::timeout(FLUSH_TIMEOUT, self.inner.db.flush_async()).await {
            Ok(flushed) => {
                flushed.map_err(storage)?;
            }
            Err(_) => {
                return Err(LogError::Unavailable(format!(
                    "the embedded log could not make the batch durable within {} s (is its disk full?); \
                     its outcome is unknown",
                    FLUSH_TIMEOUT.as_secs()
                )))
            }
        }
        self.inner.durable_head.send_if_modified(|durable| {
            let advanced = ack.last > *durable;
            *durable = (*durable).max(ack.last);
            advanced
        });
        Ok(ack)
    }

    async fn tenant_head(&self, tenant: &str) -> Result<u64, LogError> {
        Ok(read_u64(self.inner.tree.get(tenant_key(tenant)).map_err(storage)?))
    }
}

impl Source for EmbeddedLog {
    type Error = LogError;

    async fn head(&self) -> Result<u64, LogError> {
        Ok(*self.inner.durable_head.borrow())
    }

    async fn read(&self, from: u64, tenant: Option<&str>) -> Result<RecordStream, LogError> {
        let tree = self.inner.tree.clone();
        let durable = self.inner.durable_head.subscribe();
        let prefix = tenant.map(|t| format!("{}.{t}.", events::SUBJECT_PREFIX));
        let state = (from.max(1), durable, tree, prefix);
        let chunks = futures_util::stream::unfold(state, |(next, mut durable, tree, prefix)| async move {
            loop {
                let head = *durable.borrow_and_update();
                if next <= head {
                    let end = head.min(next + READ_CHUNK as u64 - 1);
                    let mut records = Vec::with_capacity((end - next + 1) as usize);
                    for item in tree.range(event_key(next)..=event_key(end)) {
                        let record = item.map_err(storage).and_then(|(key, value)| {
                            let position = u64::from_be_bytes(key[1..].try_into().unwrap());
                            decode_record(position, &value)
                        });
                        let keep = match (&record, &prefix) {
                            (Ok(r), Some(p)) => r.subject.starts_with(p.as_str()),
                            _ => true,
                        };
                        if keep {
                            records.push(record);
                        }
                    }
                    return Some((records, (end + 1, durable, tree, prefix)));
                }
                if durable.changed().await.is_err() {
                    // The log was dropped: the stream ends.
                    return None;
                }
            }
        });
        Ok(chunks.flat_map(futures_util::stream::iter).boxed())
    }
}
