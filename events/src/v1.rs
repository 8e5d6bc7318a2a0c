//! Schema version 1 of the persisted event shapes.
//!
//! FROZEN: these types are the bytes on the log. bincode does not describe
//! itself, so reordering variants or adding, removing or reordering fields
//! silently breaks every stored event. A change of shape is a new module
//! (`v2`) plus an upcast in `codec.rs`; new variants may only be appended at
//! the end of an enum. `tests/golden.rs` holds committed bytes for every kind.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Who issued the command that produced an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActorV1 {
    /// The control panel.
    Admin,
    /// `<tenant>:admin`.
    TenantAdmin { tenant: String },
    /// `<tenant>:user`.
    TenantUser { tenant: String },
}

/// The envelope every persisted event travels in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeV1 {
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenOverageV1 {
    Block,
    BillPer1k { price: Decimal },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanV1 {
    pub id: String,
    pub name: Option<String>,
    pub currency: String,
    pub price: Decimal,
    pub per_seat: bool,
    pub min_seats: u32,
    pub max_seats: Option<u32>,
    pub storage_quota_gb: Decimal,
    pub monthly_token_limit: u64,
    pub token_overage: TokenOverageV1,
    pub addons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantsV1 {
    pub storage_gb: Option<Decimal>,
    pub tokens: Option<u64>,
    pub feature: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddonV1 {
    pub id: String,
    pub name: Option<String>,
    pub currency: String,
    pub price: Decimal,
    pub recurring: bool,
    pub grants: GrantsV1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentV1 {
    /// Charged on the period's invoice; active at once.
    Invoice,
    /// Paid by card; pending until settled.
    Card,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentOutcomeV1 {
    Paid,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLineV1 {
    pub code: String,
    pub description: String,
    pub amount: Decimal,
    pub paid: bool,
}

/// A finalized invoice as recorded on the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceV1 {
    pub currency: String,
    pub lines: Vec<InvoiceLineV1>,
    pub total: Decimal,
    pub paid: Decimal,
    pub amount_due: Decimal,
    /// SHA-256 over the inputs the invoice was derived from (event positions,
    /// plan and add-on definitions), so an audit can re-derive it.
    pub inputs_digest: [u8; 32],
}

/// Every fact the ledger records. Append new variants at the end only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventV1 {
    PlanDefined {
        plan: PlanV1,
    },
    AddonDefined {
        addon: AddonV1,
    },
    Subscribed {
        plan: String,
        seats: u32,
    },
    SeatsChanged {
        seats: u32,
    },
    PlanChanged {
        plan: String,
    },
    SubscriptionCancelled,
    FileStored {
        file: String,
        bytes: u64,
    },
    FileDeleted {
        file: String,
        bytes: u64,
    },
    /// A quota denial: a business decision, recorded for audit.
    UploadDenied {
        file: String,
        bytes: u64,
        used_bytes: u64,
        quota_bytes: u64,
    },
    TokensConsumed {
        request: String,
        tokens: u64,
        /// Admitted by a client's offline fallback and delivered later.
        offline: bool,
    },
    /// A token-limit denial, recorded for audit.
    TokensDenied {
        request: String,
        tokens: u64,
        used: u64,
        limit: u64,
    },
    AddonPurchased {
        purchase: String,
        addon: String,
        quantity: u32,
        payment: PaymentV1,
    },
    PaymentSettled {
        purchase: String,
        outcome: PaymentOutcomeV1,
        reference: Option<String>,
    },
    /// The purchase starts granting (and, when recurring, accruing charges).
    AddonActivated {
        purchase: String,
    },
    AddonCancelled {
        purchase: String,
    },
    PeriodFinalized {
        /// Index k of the period [anchor + k months, anchor + (k+1) months).
        period: u32,
        start_us: i64,
        end_us: i64,
        invoice: InvoiceV1,
    },
    // Appended with schema version 3 (older logs never hold these).
    /// The tenant's usage alert thresholds (percent) for each meter given;
    /// `None` leaves a meter's list as it was.
    UsageAlertsSet {
        tokens: Option<Vec<u32>>,
        storage: Option<Vec<u32>>,
    },
    /// A recorded use brought a meter to `threshold` percent of its limit
    /// (the token limit in force, or the storage quota): decided with that
    /// use and recorded in the same append.
    UsageThresholdCrossed {
        meter: MeterV1,
        threshold: u32,
        /// The meter's use after the command that crossed it.
        used: u64,
        limit: u64,
        /// The period holding the crossing.
        period: u32,
        start_us: i64,
        end_us: i64,
    },
}

/// What a usage alert watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MeterV1 {
    Tokens,
    Storage,
}
