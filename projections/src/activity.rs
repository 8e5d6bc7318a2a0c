//! Per-tenant activity: how many events of each kind a tenant has, and its
//! latest position and time. The catalog pseudo-tenant is counted too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Fact, Projection, Rows, ViewError};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRow {
    /// Event kind name -> count. A BTreeMap so the encoded row is the same
    /// whatever order events arrived in.
    pub events_by_kind: BTreeMap<String, u64>,
    pub events: u64,
    pub first_position: u64,
    pub last_position: u64,
    pub last_at_us: i64,
    /// Hash of the last event counted: events that do not continue the
    /// tenant's chain are not counted.
    pub last_hash: [u8; 32],
}

pub struct Activity;

impl Activity {
    pub fn key(tenant: &str) -> Vec<u8> {
        tenant.as_bytes().to_vec()
    }
}

impl Projection for Activity {
    const NAME: &'static str = "activity";

    fn apply_batch(&self, rows: &mut Rows<'_>, facts: &[Fact<'_>]) -> Result<(), ViewError> {
        // Each touched row is decoded once and written once per batch.
        let mut touched: std::collections::HashMap<&str, ActivityRow> = std::collections::HashMap::new();
        for fact in facts {
            let event = fact.envelope;
            let row = match touched.entry(event.tenant.as_str()) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(rows.get(&Activity::key(&event.tenant))?.unwrap_or_default())
                }
            };
            assert!(fact.position > row.last_position, "activity: positions go backwards");
            if event.prev_hash != row.last_hash {
                continue;
            }
            row.last_hash = fact.hash;
            if row.events == 0 {
                row.first_position = fact.position;
            }
            let kind = event.kind().name();
            match row.events_by_kind.get_mut(kind) {
                Some(count) => *count += 1,
                None => {
                    row.events_by_kind.insert(kind.to_string(), 1);
                }
            }
            row.events += 1;
            row.last_position = fact.position;
            row.last_at_us = row.last_at_us.max(event.at_us);
        }
        for (tenant, row) in touched {
            rows.put(Activity::key(tenant), &row);
        }
        Ok(())
    }
}
