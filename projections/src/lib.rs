//! Folding events into sled-stored views.
//!
//! A [`Projection`] is a pure fold: given the rows it touched and one event, it
//! updates rows. [`ViewStore::apply_batch`] runs a fold over a batch of log
//! records and writes every touched row **and** the projection's checkpoint
//! in one `sled::Batch`, which sled applies atomically, also across a crash.
//! So a projector killed at any point resumes from a checkpoint that matches
//! its rows exactly: no event applied twice, none skipped.
//!
//! This crate never talks to the log; the runtime in the `ledger` crate reads
//! the log and hands records here.

mod activity;
pub mod domain;
pub mod invoice;
mod ledger_view;
pub mod money;
pub mod notice;
pub mod period;

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

pub use activity::{Activity, ActivityRow};
pub use domain::Fact;
pub use ledger_view::{FinalInvoice, LedgerView, TenantRow, TenantWithKeys};

/// Row keys starting with this byte are reserved for bookkeeping.
const META_PREFIX: u8 = 0x00;
const CHECKPOINT_KEY: &[u8] = b"\x00checkpoint";

/// Where a position keeps its partition: the bits above these (the ledger
/// crate's `log::SEQ_BITS`). Partition 0's positions are plain sequences.
pub const SEQ_BITS: u32 = 48;

/// The partition a log position is in.
pub fn partition_of_position(position: u64) -> u32 {
    (position >> SEQ_BITS) as u32
}

/// The checkpoint row of a partition: partition 0's is the one every
/// ledger has always had, so a ledger of one partition is unchanged.
fn checkpoint_key(partition: u32) -> Vec<u8> {
    let mut key = CHECKPOINT_KEY.to_vec();
    if partition > 0 {
        key.push(b'/');
        key.extend_from_slice(&partition.to_be_bytes());
    }
    key
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// sled failed. Views are derived: delete the views directory and let the
    /// projectors rebuild it from the log.
    #[error("view storage: {0}")]
    Storage(#[from] sled::Error),
    /// A stored row does not decode: the view is damaged or from another
    /// version. Rebuild it from the log.
    #[error("view row in {view} does not decode: {reason}")]
    Corrupt { view: &'static str, reason: String },
    /// The store is being reopened after a write error: try again shortly.
    #[error("the views are being reopened after a storage error")]
    Reopening,
}

/// A pure fold of events into rows of one sled tree.
pub trait Projection: Send + Sync + 'static {
    /// The tree's name; also the view's name in commands and reports.
    const NAME: &'static str;

    /// Folds a batch of events, in order. No IO beyond `rows`, no clock, no
    /// randomness.
    fn apply_batch(&self, rows: &mut Rows<'_>, facts: &[Fact<'_>]) -> Result<(), ViewError>;
}

/// The rows a batch has touched, over the stored tree: reads see the batch's
/// own writes, and nothing reaches sled until the batch commits.
pub struct Rows<'a> {
    view: &'static str,
    tree: &'a sled::Tree,
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    memo: &'a mut Option<Memo>,
}

/// A view's decoded rows kept between batches, so a long fold does not read
/// and decode the same row again each batch. It only ever holds what this
/// store wrote, and it is dropped whenever a batch fails to commit.
type Memo = Box<dyn std::any::Any + Send>;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_variable_int_encoding()
}

impl Rows<'_> {
    /// The view's memo (see [`Memo`]), created empty on first use.
    pub fn memo<T: Default + Send + 'static>(&mut self) -> &mut T {
        let memo = self.memo.get_or_insert_with(|| Box::new(T::default()));
        if !memo.is::<T>() {
            *memo = Box::new(T::default());
        }
        memo.downcast_mut::<T>().expect("just made this type")
    }

    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ViewError> {
        assert_ne!(key.first(), Some(&META_PREFIX), "row keys may not use the meta prefix");
        if let Some(value) = self.overlay.get(key) {
            return Ok(value.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    pub fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        assert_ne!(key.first(), Some(&META_PREFIX), "row keys may not use the meta prefix");
        self.overlay.insert(key, Some(value));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.overlay.insert(key, None);
    }

    /// Reads a row stored with [`Rows::put`].
    pub fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, ViewError> {
        match self.get_raw(key)? {
            None => Ok(None),
            Some(bytes) => decode_row(self.view, &bytes).map(Some),
        }
    }

    pub fn put<T: serde::Serialize>(&mut self, key: Vec<u8>, value: &T) {
        let bytes = bincode::serde::encode_to_vec(value, config()).expect("view rows always encode");
        self.put_raw(key, bytes);
    }
}

/// Decodes a row stored by a projection.
pub fn decode_row<T: serde::de::DeserializeOwned>(view: &'static str, bytes: &[u8]) -> Result<T, ViewError> {
    bincode::serde::decode_from_slice(bytes, config())
        .map(|(v, _)| v)
        .map_err(|e| ViewError::Corrupt { view, reason: e.to_string() })
}

/// A projection as a runtime drives it: object-safe, so one reader can feed
/// several views.
pub trait View: Send + Sync {
    fn name(&self) -> &'static str;
    /// Folds `records` (all after the view's checkpoint); returns the new checkpoint.
    fn fold(&self, store: &ViewStore, records: &[Record]) -> Result<u64, ViewError>;
}

impl<P: Projection> View for P {
    fn name(&self) -> &'static str {
        P::NAME
    }
    fn fold(&self, store: &ViewStore, records: &[Record]) -> Result<u64, ViewError> {
        store.apply_batch(self, records)
    }
}

/// Every view the ledger keeps.
pub const ALL_VIEWS: [&dyn View; 2] = [&LedgerView, &Activity];

/// The views named (all when `names` is empty), or the first unknown name.
pub fn select_views(names: &[String]) -> Result<Vec<&'static dyn View>, String> {
    if names.is_empty() {
        return Ok(ALL_VIEWS.to_vec());
    }
    names
        .iter()
        .map(|name| {
            ALL_VIEWS.iter().copied().find(|v| v.name() == name).ok_or_else(|| {
                let known: Vec<&str> = ALL_VIEWS.iter().map(|v| v.name()).collect();
                format!("unknown view {name:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// One log record as the fold sees it: decoded, or why it could not be.
pub struct Record {
    pub position: u64,
    /// SHA-256 of the record's bytes.
    pub hash: [u8; 32],
    pub event: Result<events::Envelope, events::EventError>,
}

impl Record {
    /// Decodes a record read from the log and checks it sits on the subject
    /// its envelope names, so a message published under another tenant's
    /// subject is refused too.
    pub fn decode(position: u64, subject: &str, payload: &[u8]) -> Record {
        let event = events::decode(payload).and_then(|envelope| {
            // In its position's partition: `ledger.v1.` for partition 0,
            // `ledger.p<P>.v1.` for the others.
            let partition = partition_of_position(position);
            let expected = if partition == 0 {
                envelope.subject()
            } else {
                format!(
                    "{}.{}.{}",
                    events::partition_prefix(partition),
                    envelope.tenant,
                    envelope.kind().name()
                )
            };
            if expected == subject {
                Ok(envelope)
            } else {
                Err(events::EventError::Invalid(format!(
                    "event for {} found on subject {subject}",
                    envelope.subject()
                )))
            }
        });
        Record { position, hash: events::event_hash(payload), event }
    }
}

/// Opens a sled database, waiting up to 5 s for its directory lock: a
/// process that just ended (or a handle just dropped, whose background
/// flusher is still finishing) may hold it a moment longer.
pub fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match config.open() {
            // sled reports a held lock as ErrorKind::Other with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The layout of the view rows this build writes. Bumped whenever a row's
/// shape or key scheme changes; views of another layout are dropped at open
/// and rebuilt from the log (views are derived, the log is the truth).
/// 2: `s/<tenant>` holds a `TenantRow`, request keys in hashed buckets.
/// 3: live files indexed like request keys (`f/` buckets), not in the state.
/// 4: buckets of about 8 keys rather than 64 (the bucket of a key changed).
/// 5: commands' idempotency keys (`k/` buckets; the catalog's in its row),
/// usage alerts in the state, notifications (`n/`, `m/` rows).
pub const VIEW_LAYOUT: u64 = 5;

fn rebuild_if_other_layout(db: &sled::Db) -> Result<(), ViewError> {
    let meta = db.open_tree("meta")?;
    let found = meta.get(b"layout")?.map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])));
    if found == Some(VIEW_LAYOUT) {
        return Ok(());
    }
    // Only the views' own trees: anything else in this database is not ours
    // to drop.
    let views: Vec<sled::IVec> = db
        .tree_names()
        .into_iter()
        .filter(|name| ALL_VIEWS.iter().any(|v| v.name().as_bytes() == name.as_ref()))
        .collect();
    if !views.is_empty() {
        tracing::warn!(
            ?found,
            expected = VIEW_LAYOUT,
            "views of another layout: dropping them to rebuild from the log"
        );
        for name in views {
            db.drop_tree(name)?;
        }
    }
    meta.insert(b"layout", &VIEW_LAYOUT.to_be_bytes())?;
    meta.flush()?;
    Ok(())
}

/// A partition's claim on a store by one fold loop; released on drop.
pub struct FoldLease(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u32>>>, u32);

impl Drop for FoldLease {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

/// Locks serializing the folds of one view (by name, hashed).
const FOLD_LOCKS: usize = 8;

fn fold_lock(view: &str) -> usize {
    view.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % FOLD_LOCKS
}

/// The sled database holding every view.
#[derive(Clone)]
pub struct ViewStore {
    /// `None` while [`ViewStore::reopen`] replaces a failed database. sled
    /// keeps the first write error it meets (a full disk, say) and returns
    /// it for every later operation until the database is opened again, so
    /// recovering from one means reopening, which every clone must see.
    db: std::sync::Arc<std::sync::RwLock<Option<sled::Db>>>,
    dir: std::path::PathBuf,
    /// Counts reopenings (see [`ViewStore::generation`]).
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The partitions a fold loop runs over now (see [`ViewStore::begin_fold`]).
    folding: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u32>>>,
    /// One writer per view at a time: the folds of different partitions
    /// share rows (the ledger time, the catalog, the memo).
    fold_locks: std::sync::Arc<[std::sync::Mutex<()>; FOLD_LOCKS]>,
    memos: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<&'static str, Memo>>>,
}

/// The views' page cache (see [`ViewStore::open`]). 64 MiB holds the rows
/// of the tenants in use (10,000 busy tenants' rows are a few MiB); past
/// them it only grows resident memory with every tenant ever seen
/// (`bench decide`'s memory row: 1.22-1.42 x from 100,000 to 1,000,000
/// tenants, against up to 1.52 x with 128 MiB), and `bench replay` is the
/// same with either.
pub const VIEWS_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl ViewStore {
    pub fn open(dir: &Path) -> Result<ViewStore, ViewError> {
        let db = ViewStore::open_db(dir)?;
        Ok(ViewStore {
            db: std::sync::Arc::new(std::sync::RwLock::new(Some(db))),
            dir: dir.to_path_buf(),
            generation: Default::default(),
            memos: Default::default(),
            folding: Default::default(),
            fold_locks: Default::default(),
        })
    }

    fn open_db(dir: &Path) -> Result<sled::Db, ViewError> {
        let config = sled::Config::new()
            .path(dir)
            // Views are derived and carry their checkpoint, so they need no
            // fsync per batch: after a crash sled recovers a consistent
            // prefix of batches and the projector resumes from its checkpoint.
            .flush_every_ms(Some(500))
            // sled's page cache defaults to 1 GiB and fills with the views
            // as they grow: resident memory would grow with every tenant
            // ever seen. Bounded; rows missing from it are read from disk.
            .cache_capacity(VIEWS_CACHE_BYTES)
            .mode(sled::Mode::HighThroughput);
        let db = open_sled(&config)?;
        rebuild_if_other_layout(&db)?;
        Ok(db)
    }

    /// Whether the database takes writes: false once sled has met a write
    /// error (it then fails every operation until reopened).
    pub fn writable(&self) -> bool {
        self.tree("meta").and_then(|meta| Ok(meta.insert(b"probe", &[1u8])?)).is_ok()
    }

    /// Whether the store's directory has room again (a 1 MiB file can be
    /// written, synced and removed). Until it has, reopening would only
    /// fail, and the failed database still answers reads, so it is kept.
    pub fn has_room(&self) -> bool {
        use std::io::Write;
        let probe = self.dir.join("room.probe");
        let written = std::fs::File::create(&probe)
            .and_then(|mut file| file.write_all(&vec![0u8; 1 << 20]).and_then(|()| file.sync_all()));
        let _ = std::fs::remove_file(&probe);
        written.is_ok()
    }

    /// Replaces a database that met a write error with a fresh, empty one
    /// in the same place, which the projectors then rebuild from the log.
    /// Not the same files opened again: after a failed write (not a crash)
    /// sled's files are not known to hold a consistent prefix of batches
    /// (found in `tests/faults.rs`: a view row newer than its checkpoint
    /// after a full disk), and views are derived, so rebuilding is the sure
    /// way back. The failed files are deleted (on a disk that was full, a
    /// copy would cost the space just regained). Between the two, every
    /// operation answers [`ViewError::Reopening`].
    pub fn reopen(&self) -> Result<(), ViewError> {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let old = self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(old);
        self.memos.lock().expect("memo lock").clear();
        let failed = self.dir.with_extension("failed");
        let _ = std::fs::remove_dir_all(&failed);
        // A handle still open on the old files (a fold finishing) writes
        // into the renamed directory, never into the new one.
        std::fs::rename(&self.dir, &failed).map_err(|e| ViewError::Storage(e.into()))?;
        let _ = std::fs::remove_dir_all(&failed);
        let db = ViewStore::open_db(&self.dir)?;
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tracing::warn!(dir = %self.dir.display(), "views replaced after a storage error; rebuilding them from the log");
        Ok(())
    }

    /// Moves when the store is reopened: a reader that read a checkpoint
    /// and then rows compares it before and after, since a reopened store
    /// may hold an older prefix than the one the checkpoint came from.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn db(&self) -> Result<sled::Db, ViewError> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or(ViewError::Reopening)
    }

    /// Claims partition 0 of the store for one fold loop (see
    /// [`ViewStore::begin_fold_partition`]).
    pub fn begin_fold(&self) -> Option<FoldLease> {
        self.begin_fold_partition(0)
    }

    /// Claims a partition of the store for one fold loop; `None` while
    /// another holds it. Two loops folding one partition would each fold
    /// from checkpoints the other has moved. The claim ends when the lease
    /// is dropped.
    pub fn begin_fold_partition(&self, partition: u32) -> Option<FoldLease> {
        let mut folding = self.folding.lock().unwrap_or_else(|e| e.into_inner());
        folding.insert(partition).then(|| FoldLease(self.folding.clone(), partition))
    }

    /// Whether any fold loop holds a partition of the store.
    pub fn folding(&self) -> bool {
        !self.folding.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    pub fn tree(&self, view: &str) -> Result<sled::Tree, ViewError> {
        Ok(self.db()?.open_tree(view)?)
    }

    /// The last log position of partition 0 folded into the view (0: none).
    pub fn checkpoint(&self, view: &str) -> Result<u64, ViewError> {
        self.checkpoint_in(view, 0)
    }

    /// The last log position of `partition` folded into the view (0: none).
    pub fn checkpoint_in(&self, view: &str, partition: u32) -> Result<u64, ViewError> {
        let tree = self.tree(view)?;
        Ok(tree
            .get(checkpoint_key(partition))?
            .map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().expect("8-byte checkpoint"))))
    }

    /// Folds `records` (ascending positions, all after the checkpoint) and
    /// commits rows and checkpoint together. Records that did not decode are
    /// skipped (never applied) but still move the checkpoint, so a forged
    /// message can neither crash nor stall a projector.
    ///
    /// The records are one partition's (the partition of the first); the
    /// view's checkpoint for that partition moves.
    pub fn apply_batch<P: Projection>(&self, projection: &P, records: &[Record]) -> Result<u64, ViewError> {
        let partition = records.first().map_or(0, |r| partition_of_position(r.position));
        let lock = &self.fold_locks[fold_lock(P::NAME)];
        let _writing = lock.lock().unwrap_or_else(|e| e.into_inner());
        let tree = self.tree(P::NAME)?;
        let mut checkpoint = self.checkpoint_in(P::NAME, partition)?;
        let mut memo = self.memos.lock().expect("memo lock").remove(P::NAME);
        let mut rows = Rows { view: P::NAME, tree: &tree, overlay: BTreeMap::new(), memo: &mut memo };
        let mut facts = Vec::with_capacity(records.len());
        for record in records {
            assert!(
                record.position > checkpoint && partition_of_position(record.position) == partition,
                "{}: position {} does not follow checkpoint {checkpoint}",
                P::NAME,
                record.position
            );
            checkpoint = record.position;
            match &record.event {
                Ok(envelope) => facts.push(Fact { position: record.position, hash: record.hash, envelope }),
                Err(reason) => {
                    tracing::warn!(view = P::NAME, position = record.position, %reason, "skipping undecodable event")
                }
            }
        }
        projection.apply_batch(&mut rows, &facts)?;
        let mut write = sled::Batch::default();
        for (key, value) in rows.overlay {
            match value {
                Some(v) => write.insert(key, v),
                None => write.remove(key),
            }
        }
        write.insert(checkpoint_key(partition), &checkpoint.to_be_bytes());
        tree.apply_batch(write)?;
        // Only a committed batch keeps its memo; a failed one drops it (the `?`s above).
        if let Some(memo) = memo {
            self.memos.lock().expect("memo lock").insert(P::NAME, memo);
        }
        Ok(checkpoint)
    }

    /// Every row of a view (checkpoint included), in key order.
    pub fn dump(&self, view: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ViewError> {
        self.tree(view)?
            .iter()
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(ViewError::from))
            .collect()
    }

    /// SHA-256 over a view's rows and checkpoint, in key order.
    pub fn digest(&self, view: &str) -> Result<[u8; 32], ViewError> {
        let mut hasher = Sha256::new();
        for (key, value) in self.dump(view)? {
            hasher.update((key.len() as u64).to_le_bytes());
            hasher.update(&key);
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(&value);
        }
        Ok(hasher.finalize().into())
    }

    pub async fn flush(&self) -> Result<(), ViewError> {
        self.db()?.flush_async().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::samples::sample;
    use events::EventKind;

    /// Sample events as the ledger writes them: chained per tenant.
    fn records(kinds: &[EventKind], from: u64) -> Vec<Record> {
        let mut last: std::collections::HashMap<String, [u8; 32]> = Default::default();
        kinds
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut envelope = sample(*k);
                envelope.prev_hash = last.get(&envelope.tenant).copied().unwrap_or([0; 32]);
                let hash = events::event_hash(&events::encode(&envelope).unwrap());
                last.insert(envelope.tenant.clone(), hash);
                Record { position: from + i as u64, hash, event: Ok(envelope) }
            })
            .collect()
    }

    #[test]
    fn open_waits_for_a_lock_that_is_about_to_be_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = ViewStore::open(dir.path()).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = ViewStore::open(dir.path());
        releaser.join().unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
    }

    #[test]
    fn views_of_another_layout_are_dropped_to_be_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = ViewStore::open(dir.path()).unwrap();
            store.apply_batch(&Activity, &records(&[EventKind::Subscribed], 1)).unwrap();
            store.tree("meta").unwrap().insert(b"layout", &1u64.to_be_bytes()).unwrap();
        }
        let store = ViewStore::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint(Activity::NAME).unwrap(), 0, "rebuilt from the start");
        assert!(store.dump(Activity::NAME).unwrap().is_empty());
        drop(store);
        // The same layout is kept as it is.
        let store = ViewStore::open(dir.path()).unwrap();
        store.apply_batch(&Activity, &records(&[EventKind::Subscribed], 1)).unwrap();
        drop(store);
        assert_eq!(ViewStore::open(dir.path()).unwrap().checkpoint(Activity::NAME).unwrap(), 1);
    }

    #[test]
    fn events_that_break_the_chain_are_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = ViewStore::open(dir.path()).unwrap();
        store.apply_batch(&Activity, &records(&[EventKind::Subscribed], 1)).unwrap();
        // A well-formed event whose prev_hash is not the tenant's last hash.
        let forged = Record { position: 2, hash: [9; 32], event: Ok(sample(EventKind::TokensConsumed)) };
        store.apply_batch(&Activity, &[forged]).unwrap();
        let row: ActivityRow =
            decode_row("activity", &store.tree("activity").unwrap().get(b"acme").unwrap().unwrap()).unwrap();
        assert_eq!(row.events, 1);
        assert_eq!(store.checkpoint("activity").unwrap(), 2);
    }

    #[test]
    fn batch_writes_rows_and_checkpoint_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = ViewStore::open(dir.path()).unwrap();
        let kinds = [EventKind::Subscribed, EventKind::FileStored, EventKind::FileStored];
        assert_eq!(store.apply_batch(&Activity, &records(&kinds, 1)).unwrap(), 3);
        assert_eq!(store.checkpoint(Activity::NAME).unwrap(), 3);
        let row: ActivityRow =
            decode_row("activity", &store.tree("activity").unwrap().get(b"acme").unwrap().unwrap()).unwrap();
        assert_eq!(row.events, 3);
        assert_eq!(row.events_by_kind["file_stored"], 2);
        assert_eq!((row.first_position, row.last_position), (1, 3));
    }

    #[test]
    fn undecodable_records_move_the_checkpoint_but_change_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = ViewStore::open(dir.path()).unwrap();
        store.apply_batch(&Activity, &records(&[EventKind::Subscribed], 1)).unwrap();
        let before = store.dump("activity").unwrap();
        let forged = Record { position: 2, hash: [0; 32], event: events::decode(b"\x01\x00garbage") };
        assert_eq!(store.apply_batch(&Activity, &[forged]).unwrap(), 2);
        let after = store.dump("activity").unwrap();
        assert_eq!(before.len(), after.len());
        assert_eq!(before[1..], after[1..], "only the checkpoint row changed");
    }

    #[test]
    #[should_panic(expected = "does not follow checkpoint")]
    fn replaying_a_position_twice_is_a_bug() {
        let dir = tempfile::tempdir().unwrap();
        let store = ViewStore::open(dir.path()).unwrap();
        store.apply_batch(&Activity, &records(&[EventKind::Subscribed], 1)).unwrap();
        store.apply_batch(&Activity, &records(&[EventKind::Subscribed], 1)).unwrap();
    }

    #[test]
    fn folding_in_different_batch_sizes_gives_identical_bytes() {
        let kinds: Vec<EventKind> = EventKind::ALL.iter().cycle().take(200).copied().collect();
        let one = tempfile::tempdir().unwrap();
        let many = tempfile::tempdir().unwrap();
        let a = ViewStore::open(one.path()).unwrap();
        let b = ViewStore::open(many.path()).unwrap();
        let all = records(&kinds, 1);
        a.apply_batch(&Activity, &all).unwrap();
        for chunk in all.chunks(7) {
            b.apply_batch(&Activity, chunk).unwrap();
        }
        assert_eq!(a.digest("activity").unwrap(), b.digest("activity").unwrap());
    }
}
