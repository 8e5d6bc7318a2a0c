//! API keys for the HTTP front end (`ledger keys add|list|revoke`, and
//! `/v1/keys` with the panel key).
//!
//! A key is `lk_<id>_<secret>`: `id` (12 hex digits) names it in lists and
//! revocations; `secret` is 128 random bits. The ledger keeps only the
//! SHA-256 of the whole key, so a copy of what it stores grants nothing. A
//! fast hash is enough: the secret is random, not a password a dictionary
//! could guess.
//!
//! Keys are stored with the ledger ([`KeyStore`]), so every `serve` of a
//! ledger knows the same ones: a JetStream ledger keeps them on the server
//! in the KV bucket `LEDGER_KEYS` (beside the webhook endpoints, readable
//! only with the ledger's credential); an embedded ledger in its data
//! directory's `keys.json` (readable by its owner only). A JetStream ledger
//! whose bucket never held a key imports the `keys.json` of the data
//! directory it is opened with, once, so keys added before keys moved to
//! the server keep working.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::kv;
use events::Actor;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::log::AnyLog;

/// The file in an embedded ledger's data directory.
pub const KEYS_FILE: &str = "keys.json";
/// The KV bucket of a JetStream ledger: key id -> [`KeyEntry`] JSON.
pub const KEYS_BUCKET: &str = "LEDGER_KEYS";
/// How long `serve` trusts a key it read from the bucket before reading it
/// again: a key revoked anywhere is refused everywhere within this.
const BUCKET_FRESH: Duration = Duration::from_secs(1);
/// How long a read of the bucket may take before the request is answered
/// `unavailable` (well within a client's patience).
const BUCKET_TIMEOUT: Duration = Duration::from_secs(2);

/// Who a key speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `<tenant>:user`.
    User,
    /// `<tenant>:admin`.
    Admin,
    /// The control panel (`admin`).
    Panel,
}

/// A stored key: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub id: String,
    /// `None` for the panel.
    pub tenant: Option<String>,
    pub role: Role,
    pub sha256: String,
    pub created: String,
}

impl KeyEntry {
    /// The actor a request with this key acts as.
    pub fn actor(&self) -> Actor {
        match (&self.role, &self.tenant) {
            (Role::User, Some(tenant)) => Actor::TenantUser { tenant: tenant.clone() },
            (Role::Admin, Some(tenant)) => Actor::TenantAdmin { tenant: tenant.clone() },
            _ => Actor::Admin,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

fn path(data: &Path) -> PathBuf {
    data.join(KEYS_FILE)
}

fn read(data: &Path) -> anyhow::Result<Vec<KeyEntry>> {
    match std::fs::read(path(data)) {
        Ok(bytes) => Ok(serde_json::from_slice::<KeyFile>(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is damaged: {e}", path(data).display()))?
            .keys),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path(data).display())),
    }
}

/// Replaces the file whole (write, then rename), readable by its owner only.
fn write(data: &Path, keys: Vec<KeyEntry>) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(data)?;
    let temporary = data.join(format!("{KEYS_FILE}.{}.tmp", std::process::id()));
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(&serde_json::to_vec_pretty(&KeyFile { keys })?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path(data))?;
    std::fs::File::open(data)?.sync_all()?;
    Ok(())
}

fn hash(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A key id as keys are made (hex digits), checked before it names a file
/// entry or a KV key: anything else is no key, and is never looked up.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The id a presented key names, when it is shaped like a key.
fn id_of(key: &str) -> Option<&str> {
    key.strip_prefix("lk_")?.split('_').next().filter(|id| valid_id(id))
}

/// Holds an exclusive lock on `keys.json.lock` while a change reads and
/// rewrites the file, so two `ledger keys` at once cannot undo each other
/// (a revoke lost to a concurrent add would revive the key).
/// The lock is the open descriptor: closing it on drop releases it.
struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    fn take(data: &Path) -> anyhow::Result<FileLock> {
        use std::os::unix::io::AsRawFd;
        std::fs::create_dir_all(data)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data.join(format!("{KEYS_FILE}.lock")))?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        #[allow(unsafe_code)]
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        anyhow::ensure!(locked == 0, "locking the key file: {}", std::io::Error::last_os_error());
        Ok(FileLock(file))
    }
}

/// Where a ledger keeps its keys: the one implementation the command line
/// and `serve` share.
#[derive(Clone)]
pub enum KeyStore {
    /// An embedded ledger: `DATA/keys.json`.
    Dir(PathBuf),
    /// A JetStream ledger: the KV bucket [`KEYS_BUCKET`].
    JetStream(kv::Store),
}

fn store_error(what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{what} (the KV bucket {KEYS_BUCKET}): {e}")
}

impl KeyStore {
    /// The keys of the ledger `log` is: the data directory's file for an
    /// embedded log; the server's bucket for JetStream (created when
    /// needed, with the replicas of the ledger's stream), into which a
    /// bucket that never held a key first imports `DATA/keys.json`.
    pub async fn open(data: &Path, log: &AnyLog) -> anyhow::Result<KeyStore> {
        let AnyLog::JetStream(js) = log else { return Ok(KeyStore::Dir(data.to_path_buf())) };
        let replicas = js.ledger_stream().cached_info().config.num_replicas;
        let bucket = crate::notify::store::bucket(
            js.context(),
            KEYS_BUCKET,
            "the ledger's API keys (hashes)",
            replicas,
        )
        .await?;
        import(data, &bucket).await?;
        Ok(KeyStore::JetStream(bucket))
    }

    /// Adds a key for `tenant` (`None`: the panel) and returns its entry
    /// and the key: the only time the key is ever shown.
    pub async fn add(&self, tenant: Option<&str>, role: Role) -> anyhow::Result<(KeyEntry, String)> {
        if let Some(tenant) = tenant {
            crate::engine::command::tenant_id(tenant).map_err(|r| anyhow::anyhow!(r.message))?;
        }
        anyhow::ensure!(
            (role == Role::Panel) == tenant.is_none(),
            "a tenant key names its tenant; the panel's names none"
        );
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let key = format!("lk_{id}_{}", uuid::Uuid::new_v4().simple());
        let entry = KeyEntry {
            id,
            tenant: tenant.map(str::to_string),
            role,
            sha256: hash(&key),
            created: crate::report::rfc3339(chrono::Utc::now().timestamp_micros()),
        };
        match self {
            KeyStore::Dir(data) => {
                let _lock = FileLock::take(data)?;
                let mut keys = read(data)?;
                keys.push(entry.clone());
                write(data, keys)?;
            }
            KeyStore::JetStream(bucket) => {
                bucket
                    .create(&entry.id, serde_json::to_vec(&entry)?.into())
                    .await
                    .map_err(|e| store_error("storing the key", e))?;
            }
        }
        Ok((entry, key))
    }

    /// Every stored key (ids, never secrets), oldest first.
    pub async fn list(&self) -> anyhow::Result<Vec<KeyEntry>> {
        match self {
            KeyStore::Dir(data) => read(data),
            KeyStore::JetStream(bucket) => {
                let mut out = Vec::new();
                let mut ids = bucket.keys().await.map_err(|e| store_error("listing the keys", e))?;
                while let Some(id) = ids.next().await {
                    let id = id.map_err(|e| store_error("listing the keys", e))?;
                    if let Some(entry) = entry(bucket, &id).await? {
                        out.push(entry);
                    }
                }
                out.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
                Ok(out)
            }
        }
    }

    /// Removes the key with `id`; false when there is none.
    pub async fn revoke(&self, id: &str) -> anyhow::Result<bool> {
        if !valid_id(id) {
            return Ok(false);
        }
        match self {
            KeyStore::Dir(data) => {
                let _lock = FileLock::take(data)?;
                let mut keys = read(data)?;
                let before = keys.len();
                keys.retain(|k| k.id != id);
                if keys.len() == before {
                    return Ok(false);
                }
                write(data, keys)?;
                Ok(true)
            }
            KeyStore::JetStream(bucket) => {
                if entry(bucket, id).await?.is_none() {
                    return Ok(false);
                }
                bucket.purge(id).await.map_err(|e| store_error("revoking the key", e))?;
                Ok(true)
            }
        }
    }
}

async fn entry(bucket: &kv::Store, id: &str) -> anyhow::Result<Option<KeyEntry>> {
    match bucket.get(id).await.map_err(|e| store_error("reading a key", e))? {
        Some(bytes) if !bytes.is_empty() => Ok(Some(
            serde_json::from_slice(&bytes)
                .map_err(|e| store_error(&format!("the key {id} is damaged"), e))?,
        )),
        _ => Ok(None),
    }
}

/// Copies `DATA/keys.json` into a bucket that has never held a key (so a
/// revoke, which leaves the bucket written, is never undone by a later
/// import). The file stays as it was; the bucket is what counts from now on.
async fn import(data: &Path, bucket: &kv::Store) -> anyhow::Result<()> {
    let old = read(data)?;
    if old.is_empty() {
        return Ok(());
    }
    let info = bucket.stream.clone().info().await.map_err(|e| store_error("reading", e))?.clone();
    if info.state.last_sequence > 0 {
        return Ok(());
    }
    for key in &old {
        // Another instance importing the same file at once stored it first.
        let _ = bucket.create(&key.id, serde_json::to_vec(key)?.into()).await;
    }
    tracing::info!(
        keys = old.len(),
        "imported the API keys of {} into the KV bucket {KEYS_BUCKET}; the file is no longer read",
        path(data).display()
    );
    Ok(())
}

/// What identifies one version of the file: a rewrite is a new inode (a
/// rename), and a change within one clock tick still changes the length
/// or the inode.
type Version = (u64, SystemTime, u64);

/// The keys as `serve` checks them.
///
/// From a data directory, the file's entries, read again whenever the file
/// changes. From a bucket, each key's entry as read at most
/// [`BUCKET_FRESH`] ago: a short-lived cache refreshed from the bucket
/// rather than a KV watch, because a watch that has quietly stalled (its
/// ordered consumer resumes after a reconnect by itself, and a stalled
/// watch looks like a quiet one) would keep a revoked key alive with
/// nothing to show for it, while a read that fails is seen at once and
/// refuses the request. The cost is one read per key in use a second.
pub struct KeyRing {
    store: KeyStore,
    file: RwLock<(Option<Version>, Vec<KeyEntry>)>,
    bucket: RwLock<HashMap<String, (Instant, KeyEntry)>>,
    /// Revocations through this ring: a read that began before one is not
    /// cached, so a key revoked here is refused here at once.
    revocations: AtomicU64,
}

impl KeyRing {
    pub fn new(store: KeyStore) -> KeyRing {
        KeyRing {
            store,
            file: RwLock::new((None, Vec::new())),
            bucket: RwLock::new(HashMap::new()),
            revocations: AtomicU64::new(0),
        }
    }

    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// The entry a presented key belongs to; `None` for an unknown,
    /// revoked or ill-formed key; an error while the keys cannot be read
    /// (every key is refused then).
    pub async fn check(&self, key: &str) -> anyhow::Result<Option<KeyEntry>> {
        let Some(id) = id_of(key) else { return Ok(None) };
        let entry = match &self.store {
            KeyStore::Dir(data) => self.from_file(data, id)?,
            KeyStore::JetStream(bucket) => self.from_bucket(bucket, id).await?,
        };
        Ok(entry.filter(|entry| matches(entry, key)))
    }

    /// Revokes the key with `id` (false when there is none); this ring
    /// refuses it from now on.
    pub async fn revoke(&self, id: &str) -> anyhow::Result<bool> {
        let revoked = self.store.revoke(id).await?;
        // After the store forgot it: a read that began before now may have
        // seen the key, and is not cached (see `from_bucket`).
        self.revocations.fetch_add(1, Ordering::SeqCst);
        self.bucket.write().unwrap_or_else(|e| e.into_inner()).remove(id);
        Ok(revoked)
    }

    fn from_file(&self, data: &Path, id: &str) -> anyhow::Result<Option<KeyEntry>> {
        use std::os::unix::fs::MetadataExt;
        let modified =
            std::fs::metadata(path(data)).ok().and_then(|m| Some((m.ino(), m.modified().ok()?, m.len())));
        {
            let cache = self.file.read().unwrap_or_else(|e| e.into_inner());
            // A version seen before is trusted only once it is a few
            // seconds old: two rewrites within one clock tick can look
            // alike (same length, a reused inode).
            let settled =
                modified.is_some_and(|(_, at, _)| at.elapsed().is_ok_and(|age| age > Duration::from_secs(2)));
            if cache.0 == modified && settled {
                return Ok(cache.1.iter().find(|k| k.id == id).cloned());
            }
        }
        let keys = read(data)?;
        let found = keys.iter().find(|k| k.id == id).cloned();
        *self.file.write().unwrap_or_else(|e| e.into_inner()) = (modified, keys);
        Ok(found)
    }

    async fn from_bucket(&self, bucket: &kv::Store, id: &str) -> anyhow::Result<Option<KeyEntry>> {
        if let Some((read_at, entry)) = self.bucket.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            if read_at.elapsed() < BUCKET_FRESH {
                return Ok(Some(entry.clone()));
            }
        }
        let (started, revocations) = (Instant::now(), self.revocations.load(Ordering::SeqCst));
        let found = tokio::time::timeout(BUCKET_TIMEOUT, entry(bucket, id))
            .await
            .map_err(|_| store_error("reading a key", "no answer in time"))??;
        let mut cache = self.bucket.write().unwrap_or_else(|e| e.into_inner());
        // Only keys that exist are kept, so presenting made-up ids cannot
        // grow the cache; and none read across a revocation here.
        match &found {
            Some(entry) if self.revocations.load(Ordering::SeqCst) == revocations => {
                cache.insert(id.to_string(), (started, entry.clone()));
            }
            _ => {
                cache.remove(id);
            }
        }
        Ok(found)
    }
}

/// Whether `key` is the key `entry` stores the hash of.
fn matches(entry: &KeyEntry, key: &str) -> bool {
    // A tenant role without a tenant (a hand-edited file) is no key at all,
    // never the panel.
    if (entry.role == Role::Panel) != entry.tenant.is_none() {
        return false;
    }
    // Compare every byte, whatever the first difference.
    let (stored, presented) = (entry.sha256.as_bytes(), hash(key));
    stored.len() == presented.len()
        && stored.iter().zip(presented.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_stored_hashed_checked_and_revoked() {
        let data = tempfile::tempdir().unwrap();
        let store = KeyStore::Dir(data.path().to_path_buf());
        let ring = KeyRing::new(store.clone());
        let (entry, key) = store.add(Some("acme"), Role::User).await.unwrap();
        let stored = std::fs::read_to_string(data.path().join(KEYS_FILE)).unwrap();
        assert!(!stored.contains(&key), "the key itself is never stored");
        assert_eq!(ring.check(&key).await.unwrap(), Some(entry.clone()));
        assert_eq!(entry.actor(), Actor::TenantUser { tenant: "acme".into() });
        // One character off, or another key's id with this secret: refused.
        let mut wrong = key.clone();
        wrong.pop();
        wrong.push('x');
        assert!(ring.check(&wrong).await.unwrap().is_none());
        let (_, panel) = store.add(None, Role::Panel).await.unwrap();
        let forged = format!("lk_{}_{}", &panel[3..15], &key[16..]);
        assert!(ring.check(&forged).await.unwrap().is_none());
        assert_eq!(ring.check(&panel).await.unwrap().unwrap().actor(), Actor::Admin);
        // An id that is no id is never looked up.
        assert!(ring.check("lk_../x_00").await.unwrap().is_none());
        assert!(ring.revoke(&entry.id).await.unwrap());
        assert!(ring.check(&key).await.unwrap().is_none());
        assert!(!ring.revoke(&entry.id).await.unwrap());
        assert!(ring.check(&panel).await.unwrap().is_some());
        // A role and a tenant that do not go together are refused.
        assert!(store.add(Some("acme"), Role::Panel).await.is_err());
        assert!(store.add(None, Role::Admin).await.is_err());
    }

    #[tokio::test]
    async fn a_damaged_file_refuses_every_key_until_it_is_mended() {
        let data = tempfile::tempdir().unwrap();
        let store = KeyStore::Dir(data.path().to_path_buf());
        let (_, key) = store.add(Some("acme"), Role::Admin).await.unwrap();
        let ring = KeyRing::new(store);
        assert!(ring.check(&key).await.unwrap().is_some());
        let good = std::fs::read(data.path().join(KEYS_FILE)).unwrap();
        std::fs::write(data.path().join(KEYS_FILE), b"{not json").unwrap();
        assert!(ring.check(&key).await.is_err());
        std::fs::write(data.path().join(KEYS_FILE), good).unwrap();
        assert!(ring.check(&key).await.unwrap().is_some());
    }
}
