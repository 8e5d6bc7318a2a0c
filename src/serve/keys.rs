//! API keys for the HTTP front end (`ledger keys add|list|revoke`).
//!
//! A key is `lk_<id>_<secret>`: `id` (12 hex digits) names it in lists and
//! revocations; `secret` is 128 random bits. The data directory keeps only
//! the SHA-256 of the whole key, in `keys.json` (readable by its owner
//! only), so a copy of the directory grants nothing. A fast hash is enough:
//! the secret is random, not a password a dictionary could guess.
//!
//! `ledger serve` re-reads the file when it changes, so a key added or
//! revoked while it runs takes effect at the next request.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

/// What identifies one version of the file: a rewrite is a new inode (a
/// rename), and a change within one clock tick still changes the length
/// or the inode.
type Version = (u64, SystemTime, u64);

use events::Actor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file in the data directory.
pub const KEYS_FILE: &str = "keys.json";

/// Who a key speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Adds a key for `tenant` (`None`: the panel) and returns it: the only
/// time it is ever shown.
pub fn add(data: &Path, tenant: Option<&str>, role: Role) -> anyhow::Result<String> {
    if let Some(tenant) = tenant {
        crate::engine::command::tenant_id(tenant).map_err(|r| anyhow::anyhow!(r.message))?;
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let key = format!("lk_{id}_{}", uuid::Uuid::new_v4().simple());
    let _lock = FileLock::take(data)?;
    let mut keys = read(data)?;
    keys.push(KeyEntry {
        id,
        tenant: tenant.map(str::to_string),
        role,
        sha256: hash(&key),
        created: crate::report::rfc3339(chrono::Utc::now().timestamp_micros()),
    });
    write(data, keys)?;
    Ok(key)
}

/// Every stored key (ids, never secrets).
pub fn list(data: &Path) -> anyhow::Result<Vec<KeyEntry>> {
    read(data)
}

/// Removes the key with `id`; false when there is none.
pub fn revoke(data: &Path, id: &str) -> anyhow::Result<bool> {
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

/// The keys as `serve` checks them: the file's entries, read again
/// whenever the file changes.
pub struct KeyRing {
    data: PathBuf,
    cache: RwLock<(Option<Version>, Vec<KeyEntry>)>,
}

impl KeyRing {
    pub fn new(data: &Path) -> KeyRing {
        KeyRing { data: data.to_path_buf(), cache: RwLock::new((None, Vec::new())) }
    }

    /// The entry a presented key belongs to, or `None` for an unknown,
    /// revoked or ill-formed key.
    pub fn check(&self, key: &str) -> Option<KeyEntry> {
        let id = key.strip_prefix("lk_")?.split('_').next()?;
        use std::os::unix::fs::MetadataExt;
        let modified = std::fs::metadata(path(&self.data))
            .ok()
            .and_then(|m| Some((m.ino(), m.modified().ok()?, m.len())));
        {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            // A version seen before is trusted only once it is a few
            // seconds old: two rewrites within one clock tick can look
            // alike (same length, a reused inode).
            let settled = modified.is_some_and(|(_, at, _)| {
                at.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(2))
            });
            if cache.0 == modified && settled {
                return find(&cache.1, id, key);
            }
        }
        let keys = match read(&self.data) {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!(%error, "cannot read the API keys; refusing every key until it can");
                Vec::new()
            }
        };
        let found = find(&keys, id, key);
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = (modified, keys);
        found
    }
}

fn find(keys: &[KeyEntry], id: &str, key: &str) -> Option<KeyEntry> {
    let entry = keys.iter().find(|k| k.id == id)?;
    // A tenant role without a tenant (a hand-edited file) is no key at all,
    // never the panel.
    if (entry.role == Role::Panel) != entry.tenant.is_none() {
        return None;
    }
    // Compare every byte, whatever the first difference.
    let (stored, presented) = (entry.sha256.as_bytes(), hash(key));
    let same = stored.len() == presented.len()
        && stored.iter().zip(presented.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    same.then(|| entry.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_stored_hashed_checked_and_revoked() {
        let data = tempfile::tempdir().unwrap();
        let ring = KeyRing::new(data.path());
        let key = add(data.path(), Some("acme"), Role::User).unwrap();
        let stored = std::fs::read_to_string(data.path().join(KEYS_FILE)).unwrap();
        assert!(!stored.contains(&key), "the key itself is never stored");
        let entry = ring.check(&key).unwrap();
        assert_eq!(entry.actor(), Actor::TenantUser { tenant: "acme".into() });
        // One character off, or another key's id with this secret: refused.
        let mut wrong = key.clone();
        wrong.pop();
        wrong.push('x');
        assert!(ring.check(&wrong).is_none());
        let panel = add(data.path(), None, Role::Panel).unwrap();
        let forged = format!("lk_{}_{}", &panel[3..15], &key[16..]);
        assert!(ring.check(&forged).is_none());
        assert_eq!(ring.check(&panel).unwrap().actor(), Actor::Admin);
        assert!(revoke(data.path(), &entry.id).unwrap());
        assert!(ring.check(&key).is_none());
        assert!(!revoke(data.path(), &entry.id).unwrap());
        assert!(ring.check(&panel).is_some());
    }
}
