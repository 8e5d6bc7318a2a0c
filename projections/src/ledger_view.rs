//! The `ledger` view: the domain state the decider and the queries read.
//!
//! Rows of the one tree:
//! - `c` -> [`CatalogState`] (plans, add-ons, the catalog's chain)
//! - `s/<tenant>` -> [`TenantRow`]: the [`TenantState`] plus the tenant's
//!   newest accepted token requests (at most [`RECENT_REQUESTS`])
//! - `r/<tenant>/<bucket u32 BE>` -> [`RequestBucket`]: older accepted token
//!   requests, hashed into a power-of-two number of buckets of about
//!   [`BUCKET_TARGET`] each. Together with the recent ones they are the
//!   tenant's idempotency keys for its whole history.
//!
//! Why buckets and not a row per request: sled's cost is per key written,
//! and a row per request made replays write ~0.8 rows per event. Recent keys
//! ride in the state row (written once per batch anyway) and move to the
//! buckets 64 at a time, so a replay writes a bucket row per tenant only
//! every 64 requests. The layout is a function of the set of keys and their
//! order alone, never of batch boundaries, so a live view and a replay are
//! byte-identical.
//! - `i/<tenant>/<period u32 BE>` -> [`FinalInvoice`], as recorded by `PeriodFinalized`
//! - `t` -> ledger time: the largest `at` folded (i64 microseconds)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{CatalogState, RequestEntry, Spill, TenantState};
use crate::{Fact, Projection, Rows, ViewError, ViewStore};

pub struct LedgerView;

/// Decoded tenant rows as last written, kept between batches.
type TenantMemo = std::collections::HashMap<String, TenantRow>;

/// Accepted requests kept in the state row before moving to the buckets.
pub const RECENT_REQUESTS: usize = 64;
/// Requests per bucket the bucket count aims at.
pub const BUCKET_TARGET: u64 = 64;

/// The `s/<tenant>` row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRow {
    pub state: TenantState,
    /// Accepted requests not yet in the buckets.
    pub recent_requests: BTreeMap<String, RequestEntry>,
    /// Requests moved to the buckets so far.
    pub bucketed_requests: u64,
}

/// One `r/<tenant>/<bucket>` row.
pub type RequestBucket = BTreeMap<String, RequestEntry>;

/// The number of buckets holding `bucketed` requests: a power of two.
fn bucket_count(bucketed: u64) -> u32 {
    if bucketed == 0 {
        0
    } else {
        bucketed.div_ceil(BUCKET_TARGET).next_power_of_two() as u32
    }
}

/// FNV-1a (64-bit), written out because it decides persisted layout: it must
/// never change with a library version.
fn request_hash(request: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in request.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn bucket_of(request: &str, buckets: u32) -> u32 {
    (request_hash(request) & u64::from(buckets - 1)) as u32
}

/// Moves a tenant's recent requests into its buckets, re-hashing every
/// bucket when their number grows.
fn move_to_buckets(rows: &mut Rows<'_>, tenant: &str, row: &mut TenantRow) -> Result<(), ViewError> {
    let before = bucket_count(row.bucketed_requests);
    let total = row.bucketed_requests + row.recent_requests.len() as u64;
    let after = bucket_count(total);
    let mut touched: BTreeMap<u32, RequestBucket> = BTreeMap::new();
    let recent = std::mem::take(&mut row.recent_requests);
    if after != before {
        for b in 0..after {
            touched.insert(b, RequestBucket::new());
        }
        for b in 0..before {
            let old: RequestBucket = rows.get(&LedgerView::bucket_key(tenant, b))?.unwrap_or_default();
            for (request, entry) in old {
                touched
                    .get_mut(&bucket_of(&request, after))
                    .expect("all buckets present")
                    .insert(request, entry);
            }
        }
    }
    for (request, entry) in recent {
        let b = bucket_of(&request, after);
        if !touched.contains_key(&b) {
            touched.insert(b, rows.get(&LedgerView::bucket_key(tenant, b))?.unwrap_or_default());
        }
        touched.get_mut(&b).expect("just loaded").insert(request, entry);
    }
    for (b, bucket) in &touched {
        rows.put(LedgerView::bucket_key(tenant, *b), bucket);
    }
    row.bucketed_requests = total;
    Ok(())
}

/// Tenants kept decoded between batches (about 1 KB each).
const MAX_MEMO_TENANTS: usize = 200_000;

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

    pub fn bucket_key(tenant: &str, bucket: u32) -> Vec<u8> {
        let mut key = format!("r/{tenant}/").into_bytes();
        key.extend_from_slice(&bucket.to_be_bytes());
        key
    }

    pub fn invoice_prefix(tenant: &str) -> Vec<u8> {
        format!("i/{tenant}/").into_bytes()
    }

    pub fn invoice_key(tenant: &str, period: u32) -> Vec<u8> {
        let mut key = LedgerView::invoice_prefix(tenant);
        key.extend_from_slice(&period.to_be_bytes());
        key
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

    pub fn tenant(store: &ViewStore, tenant: &str) -> Result<Option<TenantState>, ViewError> {
        Ok(Self::get::<TenantRow>(store, &Self::state_key(tenant))?.map(|row| row.state))
    }

    /// The earlier accepted use of a token request key, if any.
    ///
    /// The state row and the bucket are two reads while a projector may be
    /// committing: if keys moved into the buckets (or the buckets were
    /// rehashed) in between, the state row's count changed, and the lookup
    /// starts again, so it never reads a bucket layout the row does not
    /// describe.
    pub fn request(
        store: &ViewStore,
        tenant: &str,
        request: &str,
    ) -> Result<Option<RequestEntry>, ViewError> {
        loop {
            let Some(row) = Self::get::<TenantRow>(store, &Self::state_key(tenant))? else { return Ok(None) };
            if let Some(entry) = row.recent_requests.get(request) {
                return Ok(Some(*entry));
            }
            let buckets = bucket_count(row.bucketed_requests);
            if buckets == 0 {
                return Ok(None);
            }
            let key = Self::bucket_key(tenant, bucket_of(request, buckets));
            let found = Self::get::<RequestBucket>(store, &key)?.and_then(|b| b.get(request).copied());
            let again = Self::get::<TenantRow>(store, &Self::state_key(tenant))?;
            if again.is_some_and(|r| r.bucketed_requests == row.bucketed_requests) {
                return Ok(found);
            }
        }
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
                let catalog = catalog.as_mut().expect("loaded");
                if catalog.chain.continued_by(fact) {
                    catalog.apply(fact);
                } else {
                    tracing::warn!(
                        position = fact.position,
                        "skipping a catalog event that breaks the hash chain"
                    );
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
            let state = &mut row.state;
            if !state.chain.continued_by(fact) {
                tracing::warn!(tenant = %envelope.tenant, position = fact.position, "skipping an event that breaks the tenant's hash chain");
                continue;
            }
            match state.apply(fact) {
                None => {}
                Some(Spill::Request { request, entry }) => {
                    // The decider accepts a key once; were one recorded
                    // twice, the newer entry wins (here and in the buckets).
                    row.recent_requests.insert(request, entry);
                    if row.recent_requests.len() >= RECENT_REQUESTS {
                        move_to_buckets(rows, &envelope.tenant, row)?;
                    }
                }
                Some(Spill::Invoice { period, start_us, end_us, invoice, position }) => {
                    let row = FinalInvoice { start_us, end_us, invoice, position };
                    rows.put(Self::invoice_key(&envelope.tenant, period), &row);
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

    /// `n` chained token uses of tenant acme, keys `req-0..n`.
    fn token_uses(n: usize) -> Vec<Record> {
        let mut last = [0; 32];
        (0..n)
            .map(|i| {
                let mut envelope = sample(EventKind::TokensConsumed);
                envelope.payload = Event::TokensConsumed {
                    request: format!("req-{i}"),
                    tokens: i as u64 + 1,
                    offline: false,
                };
                envelope.prev_hash = last;
                last = events::event_hash(&events::encode(&envelope).unwrap());
                Record { position: i as u64 + 1, hash: last, event: Ok(envelope) }
            })
            .collect()
    }

    #[test]
    fn request_keys_survive_moves_into_buckets_and_rehashing_whatever_the_batches() {
        // 1,000 keys: 15 moves of 64 into buckets, the bucket count growing
        // 1 -> 2 -> 4 -> 8 -> 16, 40 keys still recent.
        let records = token_uses(1000);
        let one = tempfile::tempdir().unwrap();
        let many = tempfile::tempdir().unwrap();
        let a = ViewStore::open(one.path()).unwrap();
        let b = ViewStore::open(many.path()).unwrap();
        a.apply_batch(&LedgerView, &records).unwrap();
        for chunk in records.chunks(37) {
            b.apply_batch(&LedgerView, chunk).unwrap();
        }
        assert_eq!(a.dump(LedgerView::NAME).unwrap(), b.dump(LedgerView::NAME).unwrap());
        let row: TenantRow = LedgerView::get(&a, &LedgerView::state_key("acme")).unwrap().unwrap();
        assert_eq!((row.recent_requests.len(), row.bucketed_requests), (40, 960));
        let buckets = a.tree(LedgerView::NAME).unwrap().scan_prefix(b"r/acme/").count();
        assert_eq!(buckets, 16);
        for i in 0..1000u64 {
            let entry = LedgerView::request(&a, "acme", &format!("req-{i}")).unwrap();
            assert_eq!(entry, Some(RequestEntry { tokens: i + 1, position: i + 1 }), "req-{i}");
        }
        assert_eq!(LedgerView::request(&a, "acme", "req-1000").unwrap(), None);
        assert_eq!(LedgerView::request(&a, "beta", "req-1").unwrap(), None);
    }

    #[test]
    fn the_bucket_hash_is_fixed() {
        // Persisted layout depends on it: these values must never change.
        assert_eq!(request_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(request_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(bucket_count(0), 0);
        assert_eq!(bucket_count(64), 1);
        assert_eq!(bucket_count(65), 2);
        assert_eq!(bucket_count(960), 16);
    }
}
