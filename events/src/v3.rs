//! Schema version 3 of the persisted event shapes: the v2 envelope plus the
//! idempotency key of the command that recorded the event.
//!
//! FROZEN like `v1` and `v2`: these types are the bytes on the log. The
//! payload, actor and offline shapes are unchanged; only the envelope grew a
//! field. v2 envelopes upcast to v3 with `key: None`.

use serde::{Deserialize, Serialize};

use crate::v1::{ActorV1, EventV1};
use crate::v2::{EnvelopeV2, OfflineV2};

/// The envelope every persisted event travels in (schema version 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeV3 {
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
    /// quota while the ledger was unreachable (see `v2`).
    pub offline: Option<OfflineV2>,
    /// On the last event a keyed command recorded: the `idempotency_key` it
    /// carried, so a resend of the same command answers as the first time
    /// and a different command under the same key is refused, for the
    /// tenant's (or the catalog's) whole history.
    pub key: Option<CommandKeyV3>,
}

/// An accepted command's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandKeyV3 {
    pub key: String,
    /// SHA-256 of the command as the ledger parsed it (its name and fields,
    /// not who sent it nor when): equal for a resend, different for another
    /// command under the same key.
    pub fingerprint: [u8; 32],
}

impl From<EnvelopeV2> for EnvelopeV3 {
    fn from(v2: EnvelopeV2) -> EnvelopeV3 {
        EnvelopeV3 {
            event_id: v2.event_id,
            tenant: v2.tenant,
            at_us: v2.at_us,
            actor: v2.actor,
            prev_hash: v2.prev_hash,
            payload: v2.payload,
            offline: v2.offline,
            key: None,
        }
    }
}
