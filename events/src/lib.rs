//! The ledger's event model: what is recorded, how it is encoded, and what a
//! well-formed event is.
//!
//! This crate knows nothing of sled, NATS or tokio. Folds elsewhere only ever
//! see the current shapes re-exported here; older persisted versions are
//! upcast in [`codec`] at the decode boundary.

pub mod codec;
pub mod samples;
pub mod v1;
pub mod v2;
pub mod v3;
mod validate;

pub use codec::{canonical_bytes, decode, encode, event_hash, EventError, MAX_EVENT_BYTES, SCHEMA_VERSION};
pub use validate::{valid_id, valid_tenant_id, MAX_ALERTS, MAX_ALERT_PERCENT};

/// The current event shapes: the v3 envelope around the v1 payloads. `codec`
/// upcasts v1 and v2 bytes.
pub type Envelope = v3::EnvelopeV3;
pub type Offline = v2::OfflineV2;
pub type CommandKey = v3::CommandKeyV3;
pub type Event = v1::EventV1;
pub type Actor = v1::ActorV1;
pub type Plan = v1::PlanV1;
pub type Addon = v1::AddonV1;
pub type Grants = v1::GrantsV1;
pub type TokenOverage = v1::TokenOverageV1;
pub type Payment = v1::PaymentV1;
pub type PaymentOutcome = v1::PaymentOutcomeV1;
pub type Invoice = v1::InvoiceV1;
pub type InvoiceLine = v1::InvoiceLineV1;
pub type Meter = v1::MeterV1;

/// The pseudo-tenant that catalog facts (plans, add-ons) are recorded under.
/// It cannot collide with a real tenant: tenant ids never start with `_`.
pub const CATALOG_TENANT: &str = "_catalog";

/// The stable name of each kind of event: the last token of its log subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    PlanDefined,
    AddonDefined,
    Subscribed,
    SeatsChanged,
    PlanChanged,
    SubscriptionCancelled,
    FileStored,
    FileDeleted,
    UploadDenied,
    TokensConsumed,
    TokensDenied,
    AddonPurchased,
    PaymentSettled,
    AddonActivated,
    AddonCancelled,
    PeriodFinalized,
    UsageAlertsSet,
    UsageThresholdCrossed,
}

impl EventKind {
    pub const ALL: [EventKind; 18] = [
        EventKind::PlanDefined,
        EventKind::AddonDefined,
        EventKind::Subscribed,
        EventKind::SeatsChanged,
        EventKind::PlanChanged,
        EventKind::SubscriptionCancelled,
        EventKind::FileStored,
        EventKind::FileDeleted,
        EventKind::UploadDenied,
        EventKind::TokensConsumed,
        EventKind::TokensDenied,
        EventKind::AddonPurchased,
        EventKind::PaymentSettled,
        EventKind::AddonActivated,
        EventKind::AddonCancelled,
        EventKind::PeriodFinalized,
        EventKind::UsageAlertsSet,
        EventKind::UsageThresholdCrossed,
    ];

    /// The first schema version whose log may hold this kind.
    pub fn since_schema(self) -> u16 {
        match self {
            EventKind::UsageAlertsSet | EventKind::UsageThresholdCrossed => 3,
            _ => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EventKind::PlanDefined => "plan_defined",
            EventKind::AddonDefined => "addon_defined",
            EventKind::Subscribed => "subscribed",
            EventKind::SeatsChanged => "seats_changed",
            EventKind::PlanChanged => "plan_changed",
            EventKind::SubscriptionCancelled => "subscription_cancelled",
            EventKind::FileStored => "file_stored",
            EventKind::FileDeleted => "file_deleted",
            EventKind::UploadDenied => "upload_denied",
            EventKind::TokensConsumed => "tokens_consumed",
            EventKind::TokensDenied => "tokens_denied",
            EventKind::AddonPurchased => "addon_purchased",
            EventKind::PaymentSettled => "payment_settled",
            EventKind::AddonActivated => "addon_activated",
            EventKind::AddonCancelled => "addon_cancelled",
            EventKind::PeriodFinalized => "period_finalized",
            EventKind::UsageAlertsSet => "usage_alerts_set",
            EventKind::UsageThresholdCrossed => "usage_threshold_crossed",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::PlanDefined { .. } => EventKind::PlanDefined,
            Event::AddonDefined { .. } => EventKind::AddonDefined,
            Event::Subscribed { .. } => EventKind::Subscribed,
            Event::SeatsChanged { .. } => EventKind::SeatsChanged,
            Event::PlanChanged { .. } => EventKind::PlanChanged,
            Event::SubscriptionCancelled => EventKind::SubscriptionCancelled,
            Event::FileStored { .. } => EventKind::FileStored,
            Event::FileDeleted { .. } => EventKind::FileDeleted,
            Event::UploadDenied { .. } => EventKind::UploadDenied,
            Event::TokensConsumed { .. } => EventKind::TokensConsumed,
            Event::TokensDenied { .. } => EventKind::TokensDenied,
            Event::AddonPurchased { .. } => EventKind::AddonPurchased,
            Event::PaymentSettled { .. } => EventKind::PaymentSettled,
            Event::AddonActivated { .. } => EventKind::AddonActivated,
            Event::AddonCancelled { .. } => EventKind::AddonCancelled,
            Event::PeriodFinalized { .. } => EventKind::PeriodFinalized,
            Event::UsageAlertsSet { .. } => EventKind::UsageAlertsSet,
            Event::UsageThresholdCrossed { .. } => EventKind::UsageThresholdCrossed,
        }
    }

    /// Catalog facts are global; everything else belongs to one tenant.
    pub fn is_catalog(&self) -> bool {
        matches!(self, Event::PlanDefined { .. } | Event::AddonDefined { .. })
    }
}

impl Actor {
    /// The spec's spelling: `admin`, `<tenant>:admin`, `<tenant>:user`.
    pub fn label(&self) -> String {
        match self {
            Actor::Admin => "admin".to_string(),
            Actor::TenantAdmin { tenant } => format!("{tenant}:admin"),
            Actor::TenantUser { tenant } => format!("{tenant}:user"),
        }
    }

    /// Parses the spec's spelling; `None` for anything else.
    pub fn parse(label: &str) -> Option<Actor> {
        if label == "admin" {
            return Some(Actor::Admin);
        }
        let (tenant, role) = label.split_once(':')?;
        if !valid_tenant_id(tenant) {
            return None;
        }
        let tenant = tenant.to_string();
        match role {
            "admin" => Some(Actor::TenantAdmin { tenant }),
            "user" => Some(Actor::TenantUser { tenant }),
            _ => None,
        }
    }
}

impl Envelope {
    pub fn kind(&self) -> EventKind {
        self.payload.kind()
    }

    /// The log subject this event is published on: `ledger.v1.<tenant>.<kind>`.
    pub fn subject(&self) -> String {
        subject(&self.tenant, self.kind())
    }

    pub fn at(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_micros(self.at_us).expect("at_us validated in range")
    }
}

/// `ledger.v1.<tenant>.<kind>`.
pub fn subject(tenant: &str, kind: EventKind) -> String {
    format!("{SUBJECT_PREFIX}.{tenant}.{}", kind.name())
}

/// Prefix of every event subject; the stream captures `ledger.v1.>`.
pub const SUBJECT_PREFIX: &str = "ledger.v1";

/// The subject prefix of a partition's events: [`SUBJECT_PREFIX`] for
/// partition 0 (a ledger of one partition is unchanged), `ledger.p<P>.v1`
/// for partition P of a partitioned ledger.
pub fn partition_prefix(partition: u32) -> String {
    if partition == 0 {
        SUBJECT_PREFIX.to_string()
    } else {
        format!("ledger.p{partition}.v1")
    }
}

/// Splits an event subject of any partition into (tenant, kind name).
/// `None` if it is not one.
pub fn parse_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = match subject.strip_prefix("ledger.p") {
        Some(rest) => {
            let (partition, rest) = rest.split_once('.')?;
            if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            rest.strip_prefix("v1.")?
        }
        None => subject.strip_prefix(SUBJECT_PREFIX)?.strip_prefix('.')?,
    };
    let (tenant, kind) = rest.split_once('.')?;
    if kind.contains('.') {
        return None;
    }
    Some((tenant, kind))
}
