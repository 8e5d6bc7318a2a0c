//! Schema version 2 of the persisted event shapes: the v1 envelope plus the
//! mark of a fact a client admitted while the ledger was unreachable.
//!
//! FROZEN like `v1`: these types are the bytes on the log. The payload and
//! actor shapes are v1's, unchanged; only the envelope grew a field. v1
//! envelopes upcast to v2 with `offline: None`.

use serde::{Deserialize, Serialize};

use crate::v1::{ActorV1, EnvelopeV1, EventV1};

/// The envelope every persisted event travels in (schema version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeV2 {
    /// Unique id (a UUIDv7 chosen by the writer).
    pub event_id: u128,
    /// Tenant the event belongs to, or [`crate::CATALOG_TENANT`] for catalog facts.
    pub tenant: String,
    /// Ledger time of the event, microseconds since the Unix epoch (UTC).
    pub at_us: i64,
    pub actor: ActorV1,
    /// SHA-256 of the tenant's previous event's encoded bytes; all zeros for a
    /// tenant's first event. Makes each tenant's history a hash chain.
    pub prev_hash: [u8; 32],
    pub payload: EventV1,
    /// Set when a client admitted this upload or token use from its cached
    /// quota while the ledger was unreachable, and delivered it later: the
    /// ledger recorded it without a quota check (see `docs/domain.md`).
    pub offline: Option<OfflineV2>,
}

/// How a fact admitted offline came to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineV2 {
    /// When the client admitted it (its clock), microseconds since the epoch.
    pub admitted_at_us: i64,
}

impl From<EnvelopeV1> for EnvelopeV2 {
    fn from(v1: EnvelopeV1) -> EnvelopeV2 {
        // v1 could mark only token use as offline, without the admission time.
        let offline = match v1.payload {
            EventV1::TokensConsumed { offline: true, .. } => Some(OfflineV2 { admitted_at_us: v1.at_us }),
            _ => None,
        };
        EnvelopeV2 {
            event_id: v1.event_id,
            tenant: v1.tenant,
            at_us: v1.at_us,
            actor: v1.actor,
            prev_hash: v1.prev_hash,
            payload: v1.payload,
            offline,
        }
    }
}
