//! The `ledger` view: the domain state the decider and the queries read.
//!
//! Rows of the one tree:
//! - `c` -> [`CatalogState`] (plans, add-ons, the catalog's chain)
//! - `s/<tenant>` -> [`TenantRow`]: the [`TenantState`] plus the newest
//!   changes of the tenant's three key indexes (at most [`RECENT_KEYS`] each)
//! - `r/<tenant>/<bucket u32 BE>` -> accepted token requests (the tenant's
//!   idempotency keys for its whole history), `k/<tenant>/<bucket u32 BE>`
//!   -> accepted commands' `idempotency_key`s (the same, for every other
//!   command) and `f/<tenant>/<bucket u32 BE>` -> live files: hashed into a
//!   power-of-two number of buckets of about [`BUCKET_TARGET`] keys each
//!   ([`KeyIndex`]).
//!
//! Why buckets and not a row per key, nor everything in the state row: sled's
//! cost is per key written (a row per request made replays write ~0.8 rows
//! per event), and a state row holding every live file grows with the
//! tenant and is rewritten with every batch. Recent changes ride in the state
//! row (written once per batch anyway) and move to the buckets 64 at a time.
//! The layout is a function of the keys and their order alone, never of
//! batch boundaries, so a live view and a replay are byte-identical.
//! - `i/<tenant>/<period u32 BE>` -> [`FinalInvoice`], as recorded by `PeriodFinalized`
//! - `n/<position u64 BE>` -> the tenant, and `m/<tenant>/<position u64 BE>`
//!   -> [`NoticeRow`]: the notification the event at that position made
//!   (`crate::notice`), in log order and per tenant
//! - `t` -> ledger time: the largest `at` folded (i64 microseconds)

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::{CatalogState, FileEntry, KeyEntry, RequestEntry, Spill, TenantState};
use crate::notice::{notice, DeniedBefore, NoticeRow, NOTIFYING};
use crate::{Fact, Projection, Rows, ViewError, ViewStore};

pub struct LedgerView;

/// Decoded tenant rows as last written, kept between batches.
type TenantMemo = std::collections::HashMap<String, TenantRow>;

/// Changes of one index kept in the state row before moving to the buckets.
pub const RECENT_KEYS: usize = 64;
/// Keys per bucket the bucket count aims at. Moving [`RECENT_KEYS`]
/// changes rewrites up to that many buckets, so a busy tenant's view
/// writes about this many keys per key it adds: small buckets keep that
/// low (64 wrote 2.4x the bytes of 8, `docs/benchmarks.md`), at one small
/// row per 8 keys.
pub const BUCKET_TARGET: u64 = 8;

/// What [`LedgerView::tenant_with_keys`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantWithKeys {
    pub state: TenantState,
    /// The row holds token request keys (in it or in its buckets).
    pub has_requests: bool,
    /// The row holds file entries (in it or in its buckets).
    pub has_files: bool,
    /// The row holds command keys (in it or in its buckets).
    pub has_keys: bool,
}

/// The `s/<tenant>` row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRow {
    pub state: TenantState,
    /// Accepted token requests (`r/` buckets).
    pub requests: KeyIndex<RequestEntry>,
    /// Live files (`f/` buckets).
    pub files: KeyIndex<FileEntry>,
    /// Accepted commands' idempotency keys (`k/` buckets).
    pub keys: KeyIndex<KeyEntry>,
}

/// One tenant's keys of one kind: the newest changes here, in the state
/// row; the rest in bucket rows `<prefix>/<tenant>/<bucket u32 BE>`, each a
/// `BTreeMap<key, V>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyIndex<V> {
    /// Changes not in the buckets yet: `Some` sets a key, `None` removes it.
    pub recent: BTreeMap<String, Option<V>>,
    /// Changes moved to the buckets so far. It only grows: a lookup that
    /// sees it change between its reads starts again.
    pub bucketed: u64,
    /// Keys in the buckets now (stores and deletes churning leave it flat).
    pub keys: u64,
    /// Buckets in use: a power of two, never fewer than the keys need, and
    /// never shrinking.
    pub buckets: u32,
}

impl<V> KeyIndex<V> {
    /// No key in the row nor in its buckets.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty() && self.keys == 0
    }
}

impl<V> Default for KeyIndex<V> {
    fn default() -> Self {
        KeyIndex { recent: BTreeMap::new(), bucketed: 0, keys: 0, buckets: 0 }
    }
}

/// The number of buckets `keys` keys need: a power of two.
fn bucket_count(keys: u64) -> u32 {
    if keys == 0 {
        0
    } else {
        keys.div_ceil(BUCKET_TARGET).next_power_of_two() as u32
    }
}

/// FNV-1a (64-bit), written out because it decides persisted layout: it must
/// never change with a library version.
fn key_hash(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn bucket_of(key: &str, buckets: u32) -> u32 {
    (key_hash(key) & u64::from(buckets - 1)) as u32
}

fn bucket_key(prefix: char, tenant: &str, bucket: u32) -> Vec<u8> {
    let mut key = format!("{prefix}/{tenant}/").into_bytes();
    key.extend_from_slice(&bucket.to_be_bytes());
    key
}

impl<V: Clone + Serialize + DeserializeOwned> KeyIndex<V> {
    /// Records a change; moves the recent changes to the buckets once there
    /// are [`RECENT_KEYS`] of them.
    fn change(
        &mut self,
        rows: &mut Rows<'_>,
        prefix: char,
        tenant: &str,
        key: String,
        value: Option<V>,
    ) -> Result<(), ViewError> {
        self.recent.insert(key, value);
        if self.recent.len() >= RECENT_KEYS {
            self.move_to_buckets(rows, prefix, tenant)?;
        }
        Ok(())
    }

    /// Applies the recent changes to the buckets, re-hashing every bucket
    /// when their number grows.
    fn move_to_buckets(&mut self, rows: &mut Rows<'_>, prefix: char, tenant: &str) -> Result<(), ViewError> {
        let before = self.buckets;
        // Sized for the most keys there can be once these changes apply.
        let stores = self.recent.values().filter(|v| v.is_some()).count() as u64;
        let after = before.max(bucket_count(self.keys + stores));
        let mut touched: BTreeMap<u32, BTreeMap<String, V>> = BTreeMap::new();
        if after != before {
            for b in 0..after {
                touched.insert(b, BTreeMap::new());
            }
            for b in 0..before {
                let old: BTreeMap<String, V> = rows.get(&bucket_key(prefix, tenant, b))?.unwrap_or_default();
                for (key, value) in old {
                    touched.get_mut(&bucket_of(&key, after)).expect("all buckets present").insert(key, value);
                }
            }
        }
        let changes = std::mem::take(&mut self.recent);
        self.bucketed += changes.len() as u64;
        for (key, value) in changes {
            let b = bucket_of(&key, after);
            if !touched.contains_key(&b) {
                touched.insert(b, rows.get(&bucket_key(prefix, tenant, b))?.unwrap_or_default());
            }
            let bucket = touched.get_mut(&b).expect("just loaded");
            match value {
                Some(value) => {
                    if bucket.insert(key, value).is_none() {
                        self.keys += 1;
                    }
                }
                None => {
                    if bucket.remove(&key).is_some() {
                        self.keys -= 1;
                    }
                }
            }
        }
        for (b, bucket) in &touched {
            rows.put(bucket_key(prefix, tenant, *b), bucket);
        }
        self.buckets = after;
        Ok(())
    }

    /// Looks a key up in the stored view. The state row and the bucket are
    /// two reads while a projector may be committing: if changes moved into
    /// the buckets in between, the row's count changed, and the lookup
    /// starts again, so it never reads a bucket layout the row does not
    /// describe.
    fn lookup(
        store: &ViewStore,
        prefix: char,
        tenant: &str,
        key: &str,
        index: fn(&TenantRow) -> &KeyIndex<V>,
    ) -> Result<Option<V>, ViewError> {
        loop {
            let Some(row) = LedgerView::get::<TenantRow>(store, &LedgerView::state_key(tenant))? else {
                return Ok(None);
            };
            let keys = index(&row);
            if let Some(change) = keys.recent.get(key) {
                return Ok(change.clone());
            }
            let buckets = keys.buckets;
            if buckets == 0 {
                return Ok(None);
            }
            let bucket: Option<BTreeMap<String, V>> =
                LedgerView::get(store, &bucket_key(prefix, tenant, bucket_of(key, buckets)))?;
            let found = bucket.and_then(|mut b| b.remove(key));
            let again = LedgerView::get::<TenantRow>(store, &LedgerView::state_key(tenant))?;
            if again.is_some_and(|r| index(&r).bucketed == keys.bucketed) {
                return Ok(found);
            }
        }
    }
}

/// Tenants kept decoded between batches (a few KB each: the state plus up
/// to 63 recent changes of each key index).
const MAX_MEMO_TENANTS: usize = 50_000;

/// A finalized invoice as its `PeriodFinalized` event recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalInvoice {
    pub start_us: i64,
    pub end_us: i64,
    pub invoice: events::Invoice,
    pub position: u64,
}

impl LedgerView {
    pub const CATALOG_KEY: &'static [u8] = b"c";
    pub const TIME_KEY: &'static [u8] = b"t";

    pub fn state_key(tenant: &str) -> Vec<u8> {
        format!("s/{tenant}").into_bytes()
    }

    pub fn invoice_prefix(tenant: &str) -> Vec<u8> {
        format!("i/{tenant}/").into_bytes()
    }

    pub fn invoice_key(tenant: &str, period: u32) -> Vec<u8> {
        let mut key = LedgerView::invoice_prefix(tenant);
        key.extend_from_slice(&period.to_be_bytes());
        key
    }

    pub fn notice_key(position: u64) -> Vec<u8> {
        let mut key = b"n/".to_vec();
        key.extend_from_slice(&position.to_be_bytes());
        key
    }

    pub fn tenant_notice_prefix(tenant: &str) -> Vec<u8> {
        format!("m/{tenant}/").into_bytes()
    }

    pub fn tenant_notice_key(tenant: &str, position: u64) -> Vec<u8> {
        let mut key = LedgerView::tenant_notice_prefix(tenant);
        key.extend_from_slice(&position.to_be_bytes());
        key
    }

    /// The notification the event at `position` made, if it made one.
    pub fn notice_at(store: &ViewStore, position: u64) -> Result<Option<NoticeRow>, ViewError> {
        let Some(tenant) = Self::get::<String>(store, &Self::notice_key(position))? else { return Ok(None) };
        Self::get(store, &Self::tenant_notice_key(&tenant, position))
    }

    /// The positions of notifications from `position` on, in log order.
    pub fn notices_from(store: &ViewStore, position: u64) -> Result<Vec<u64>, ViewError> {
        let tree = store.tree(Self::NAME)?;
        let mut out = Vec::new();
        for item in tree.range(Self::notice_key(position)..Self::notice_key(u64::MAX)) {
            let (key, _) = item?;
            out.push(u64::from_be_bytes(key[2..10].try_into().expect("n/ keys hold a u64")));
        }
        Ok(out)
    }

    /// A tenant's newest notifications, newest first, at most `limit`.
    pub fn tenant_notices(
        store: &ViewStore,
        tenant: &str,
        limit: usize,
    ) -> Result<Vec<NoticeRow>, ViewError> {
        let tree = store.tree(Self::NAME)?;
        let mut out = Vec::new();
        for item in tree.scan_prefix(Self::tenant_notice_prefix(tenant)).rev().take(limit) {
            let (_, value) = item?;
            out.push(crate::decode_row(Self::NAME, &value)?);
        }
        Ok(out)
    }

    fn get<T: serde::de::DeserializeOwned>(store: &ViewStore, key: &[u8]) -> Result<Option<T>, ViewError> {
        match store.tree(Self::NAME)?.get(key)? {
            None => Ok(None),
            Some(bytes) => crate::decode_row(Self::NAME, &bytes).map(Some),
        }
    }

    pub fn catalog(store: &ViewStore) -> Result<CatalogState, ViewError> {
        Ok(Self::get(store, Self::CATALOG_KEY)?.unwrap_or_default())
    }

    /// Every tenant's state, in tenant-id order. An unreadable row is an
    /// `Err` item naming its tenant, so a caller can skip it and go on.
    pub fn tenants(
        store: &ViewStore,
    ) -> Result<impl Iterator<Item = Result<(String, TenantState), (String, ViewError)>>, ViewError> {
        Ok(store.tree(Self::NAME)?.scan_prefix(b"s/").map(|item| {
            let (key, value) = item.map_err(|e| (String::new(), ViewError::from(e)))?;
            let tenant = String::from_utf8_lossy(&key[2..]).into_owned();
            match crate::decode_row::<TenantRow>(Self::NAME, &value) {
                Ok(row) => Ok((tenant, row.state)),
                Err(error) => Err((tenant, error)),
            }
        }))
    }

    pub fn tenant(store: &ViewStore, tenant: &str) -> Result<Option<TenantState>, ViewError> {
        Ok(Self::tenant_with_keys(store, tenant)?.map(|row| row.state))
    }

    /// A tenant's state as [`LedgerView::tenant`], and whether its row holds
    /// any token request keys or file entries: a writer that loads a row
    /// holding none has every later one in memory (they come from events
    /// after the row), so it need not look them up here.
    pub fn tenant_with_keys(store: &ViewStore, tenant: &str) -> Result<Option<TenantWithKeys>, ViewError> {
        Ok(Self::get::<TenantRow>(store, &Self::state_key(tenant))?.map(|row| TenantWithKeys {
            has_requests: !row.requests.is_empty(),
            has_files: !row.files.is_empty(),
            has_keys: !row.keys.is_empty(),
            state: row.state,
        }))
    }

    /// The earlier accepted use of a token request key, if any.
    pub fn request(
        store: &ViewStore,
        tenant: &str,
        request: &str,
    ) -> Result<Option<RequestEntry>, ViewError> {
        KeyIndex::lookup(store, 'r', tenant, request, |row| &row.requests)
    }

    /// An accepted command of the tenant under this idempotency key, if any.
    pub fn command_key(store: &ViewStore, tenant: &str, key: &str) -> Result<Option<KeyEntry>, ViewError> {
        KeyIndex::lookup(store, 'k', tenant, key, |row| &row.keys)
    }

    /// A live file of the tenant, if it has one by that id.
    pub fn file(store: &ViewStore, tenant: &str, file: &str) -> Result<Option<FileEntry>, ViewError> {
        KeyIndex::lookup(store, 'f', tenant, file, |row| &row.files)
    }

    pub fn final_invoice(
        store: &ViewStore,
        tenant: &str,
        period: u32,
    ) -> Result<Option<FinalInvoice>, ViewError> {
        Self::get(store, &Self::invoice_key(tenant, period))
    }

    /// The `at` of the newest event folded (0 when none).
    pub fn ledger_time_us(store: &ViewStore) -> Result<i64, ViewError> {
        Ok(Self::get(store, Self::TIME_KEY)?.unwrap_or(0))
    }
}

impl Projection for LedgerView {
    const NAME: &'static str = "ledger";

    fn apply_batch(&self, rows: &mut Rows<'_>, facts: &[Fact<'_>]) -> Result<(), ViewError> {
        if facts.is_empty() {
            return Ok(());
        }
        // Decode each touched row once per batch, write it once at the end.
        let mut catalog: Option<CatalogState> = None;
        let mut tenants: BTreeMap<String, TenantRow> = BTreeMap::new();
        let mut time_us: i64 = rows.get(Self::TIME_KEY)?.unwrap_or(0);
        for fact in facts {
            let envelope = fact.envelope;
            time_us = time_us.max(envelope.at_us);
            if envelope.payload.is_catalog() {
                if catalog.is_none() {
                    catalog = Some(rows.get(Self::CATALOG_KEY)?.unwrap_or_default());
                }
                if let Err(error) = catalog.get_or_insert_default().fold(fact) {
                    tracing::warn!(%error, "skipping a catalog event");
                }
                continue;
            }
            if !tenants.contains_key(&envelope.tenant) {
                let memo: &mut TenantMemo = rows.memo();
                let state = match memo.remove(&envelope.tenant) {
                    Some(state) => state,
                    None => rows.get(&Self::state_key(&envelope.tenant))?.unwrap_or_default(),
                };
                tenants.insert(envelope.tenant.clone(), state);
            }
            let row = tenants.get_mut(&envelope.tenant).expect("loaded");
            let denied_before = DeniedBefore::of(&row.state);
            let spills = match row.state.fold(fact) {
                Ok(spills) => spills,
                Err(error) => {
                    tracing::warn!(tenant = %envelope.tenant, %error, "skipping an event");
                    continue;
                }
            };
            for spill in spills {
                match spill {
                    Spill::Request { request, entry } => {
                        row.requests.change(rows, 'r', &envelope.tenant, request, Some(entry))?;
                    }
                    Spill::File { file, entry } => {
                        row.files.change(rows, 'f', &envelope.tenant, file, entry)?;
                    }
                    Spill::Key { key, entry } => {
                        row.keys.change(rows, 'k', &envelope.tenant, key, Some(entry))?;
                    }
                    Spill::Invoice { period, start_us, end_us, invoice, position } => {
                        let row = FinalInvoice { start_us, end_us, invoice, position };
                        rows.put(Self::invoice_key(&envelope.tenant, period), &row);
                    }
                }
            }
            if NOTIFYING.contains(&envelope.kind()) {
                if catalog.is_none() {
                    catalog = Some(rows.get(Self::CATALOG_KEY)?.unwrap_or_default());
                }
                let catalog = catalog.as_ref().expect("just loaded");
                if let Some(made) = notice(&row.state, catalog, envelope, denied_before) {
                    let stored = NoticeRow {
                        tenant: envelope.tenant.clone(),
                        event_id: envelope.event_id,
                        at_us: envelope.at_us,
                        position: fact.position,
                        notice: made,
                    };
                    rows.put(Self::notice_key(fact.position), &envelope.tenant);
                    rows.put(Self::tenant_notice_key(&envelope.tenant, fact.position), &stored);
                }
            }
        }
        if let Some(catalog) = catalog {
            rows.put(Self::CATALOG_KEY.to_vec(), &catalog);
        }
        for (tenant, row) in &tenants {
            rows.put(Self::state_key(tenant), row);
        }
        let memo: &mut TenantMemo = rows.memo();
        if memo.len() + tenants.len() > MAX_MEMO_TENANTS {
            memo.clear();
        }
        memo.extend(tenants);
        rows.put(Self::TIME_KEY.to_vec(), &time_us);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use events::samples::sample;
    use events::{Event, EventKind};

    /// Folds `records` in one batch and, into a second store, in batches of
    /// `chunk`; asserts both views are byte-identical and returns the first.
    fn fold_both_ways(records: &[Record], chunk: usize) -> (tempfile::TempDir, ViewStore) {
        let (one, many) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = ViewStore::open(one.path()).unwrap();
        let b = ViewStore::open(many.path()).unwrap();
        a.apply_batch(&LedgerView, records).unwrap();
        for part in records.chunks(chunk) {
            b.apply_batch(&LedgerView, part).unwrap();
        }
        assert_eq!(a.dump(LedgerView::NAME).unwrap(), b.dump(LedgerView::NAME).unwrap());
        (one, a)
    }

    /// `n` chained token uses of tenant acme, keys `req-0..n`.
    fn token_uses(n: usize) -> Vec<Record> {
        chained(
            (0..n as u64)
                .map(|i| Event::TokensConsumed { request: format!("req-{i}"), tokens: i + 1, offline: false })
                .collect(),
        )
    }

    #[test]
    fn request_keys_survive_moves_into_buckets_and_rehashing_whatever_the_batches() {
        // 1,000 keys: 15 moves of 64 into buckets, the bucket count growing
        // 8 -> 16 -> 32 -> 64 -> 128, 40 keys still recent.
        let (_dir, a) = fold_both_ways(&token_uses(1000), 37);
        let row: TenantRow = LedgerView::get(&a, &LedgerView::state_key("acme")).unwrap().unwrap();
        assert_eq!((row.requests.recent.len(), row.requests.bucketed, row.requests.keys), (40, 960, 960));
        assert_eq!(row.requests.buckets, 128);
        let buckets = a.tree(LedgerView::NAME).unwrap().scan_prefix(b"r/acme/").count();
        assert_eq!(buckets, 128);
        for i in 0..1000u64 {
            let entry = LedgerView::request(&a, "acme", &format!("req-{i}")).unwrap();
            assert_eq!(entry, Some(RequestEntry { tokens: i + 1, position: i + 1 }), "req-{i}");
        }
        assert_eq!(LedgerView::request(&a, "acme", "req-1000").unwrap(), None);
        assert_eq!(LedgerView::request(&a, "beta", "req-1").unwrap(), None);
    }

    /// Chained events of tenant acme with the given payloads.
    fn chained(payloads: Vec<Event>) -> Vec<Record> {
        let mut last = [0; 32];
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let mut envelope = sample(EventKind::FileStored);
                envelope.payload = payload;
                envelope.prev_hash = last;
                last = events::event_hash(&events::encode(&envelope).unwrap());
                Record { position: i as u64 + 1, hash: last, event: Ok(envelope) }
            })
            .collect()
    }

    #[test]
    fn live_files_are_indexed_outside_the_state_row_whatever_the_batches() {
        // 300 files stored, every third deleted again (some while recent,
        // some after moving to the buckets), then file 0 stored anew.
        let mut payloads = Vec::new();
        for i in 0..300u64 {
            payloads.push(Event::FileStored { file: format!("f{i}"), bytes: i + 1 });
            if i % 3 == 0 && i >= 30 {
                let gone = i - 30;
                payloads.push(Event::FileDeleted { file: format!("f{gone}"), bytes: gone + 1 });
            }
        }
        payloads.push(Event::FileStored { file: "f0".into(), bytes: 7 });
        let (_dir, a) = fold_both_ways(&chained(payloads), 23);
        let mut live_bytes = 0;
        let mut live = 0;
        for i in 0..300u64 {
            let deleted = i < 270 && i % 3 == 0;
            let found = LedgerView::file(&a, "acme", &format!("f{i}")).unwrap();
            match (i, deleted) {
                (0, _) => assert_eq!(found.map(|f| f.bytes), Some(7)),
                (_, true) => assert_eq!(found, None, "f{i} was deleted"),
                (_, false) => assert_eq!(found.map(|f| f.bytes), Some(i + 1), "f{i}"),
            }
            if let Some(f) = found {
                live_bytes += f.bytes;
                live += 1;
            }
        }
        let state = LedgerView::tenant(&a, "acme").unwrap().unwrap();
        assert_eq!((state.live_files, state.used_bytes), (live, live_bytes));
        assert!(
            a.tree(LedgerView::NAME).unwrap().scan_prefix(b"f/acme/").count() >= 4,
            "files were bucketed"
        );
    }

    #[test]
    fn churning_files_do_not_grow_the_buckets() {
        // 2,000 files stored and deleted again: the index ends empty and small.
        let mut payloads = Vec::new();
        for i in 0..2000u64 {
            payloads.push(Event::FileStored { file: format!("f{i}"), bytes: 10 });
            if i >= 5 {
                payloads.push(Event::FileDeleted { file: format!("f{}", i - 5), bytes: 10 });
            }
        }
        let store_dir = tempfile::tempdir().unwrap();
        let store = ViewStore::open(store_dir.path()).unwrap();
        for chunk in chained(payloads).chunks(100) {
            store.apply_batch(&LedgerView, chunk).unwrap();
        }
        let row: TenantRow = LedgerView::get(&store, &LedgerView::state_key("acme")).unwrap().unwrap();
        assert_eq!(row.state.live_files, 5);
        // Buckets hold live files plus deletes still waiting in the row.
        assert!(row.files.keys <= 5 + RECENT_KEYS as u64, "{} keys", row.files.keys);
        // Sized by what is in them (at most 5 live plus one move of changes),
        // not by 3,995 changes (which would need bucket_count(2000) = 256).
        assert!(row.files.buckets <= bucket_count(5 + RECENT_KEYS as u64), "{} buckets", row.files.buckets);
        assert_eq!(LedgerView::file(&store, "acme", "f1999").unwrap().map(|f| f.bytes), Some(10));
        assert_eq!(LedgerView::file(&store, "acme", "f10").unwrap(), None);
    }

    #[test]
    fn the_bucket_hash_is_fixed() {
        // Persisted layout depends on it: these values must never change.
        assert_eq!(key_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(bucket_count(0), 0);
        assert_eq!(bucket_count(8), 1);
        assert_eq!(bucket_count(9), 2);
        assert_eq!(bucket_count(64), 8);
        assert_eq!(bucket_count(65), 16);
        assert_eq!(bucket_count(960), 128);
    }
}
