//! The `ledger` view: the domain state the decider and the queries read.
//!
//! Rows of the one tree:
//! - `c` -> [`CatalogState`] (plans, add-ons, the catalog's chain)
//! - `s/<tenant>` -> [`TenantState`]
//! - `r/<tenant>/<request>` -> [`RequestEntry`]: accepted token requests, kept
//!   for the tenant's whole history as idempotency keys, outside the state
//!   row so the row stays small however long the history grows
//! - `i/<tenant>/<period u32 BE>` -> [`FinalInvoice`], as recorded by `PeriodFinalized`
//! - `t` -> ledger time: the largest `at` folded (i64 microseconds)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{CatalogState, RequestEntry, Spill, TenantState};
use crate::{Fact, Projection, Rows, ViewError, ViewStore};

pub struct LedgerView;

/// Decoded tenant rows as last written, kept between batches.
type TenantMemo = std::collections::HashMap<String, TenantState>;

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

    pub fn request_key(tenant: &str, request: &str) -> Vec<u8> {
        format!("r/{tenant}/{request}").into_bytes()
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
        Self::get(store, &Self::state_key(tenant))
    }

    pub fn request(
        store: &ViewStore,
        tenant: &str,
        request: &str,
    ) -> Result<Option<RequestEntry>, ViewError> {
        Self::get(store, &Self::request_key(tenant, request))
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
        let mut tenants: BTreeMap<String, TenantState> = BTreeMap::new();
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
            let state = tenants.get_mut(&envelope.tenant).expect("loaded");
            if !state.chain.continued_by(fact) {
                tracing::warn!(tenant = %envelope.tenant, position = fact.position, "skipping an event that breaks the tenant's hash chain");
                continue;
            }
            match state.apply(fact) {
                None => {}
                Some(Spill::Request { request, entry }) => {
                    rows.put(Self::request_key(&envelope.tenant, &request), &entry);
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
        for (tenant, state) in &tenants {
            rows.put(Self::state_key(tenant), state);
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
