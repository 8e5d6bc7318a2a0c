//! Notifications: what a recorded fact tells the control panel and the
//! tenant's site. Each is derived from one event and the tenant's state
//! right after it (plus the catalog, whose definitions never change), so it
//! is as much a function of the log as any view: replaying the log derives
//! the same notifications, with the same ids (the event's). The `ledger`
//! view stores them as it folds; delivery (webhooks, NATS) is elsewhere.

use events::{Envelope, Event, Invoice, Meter, Payment, PaymentOutcome};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::{CatalogState, TenantState};

/// A notification's content (its `type` is [`Notice::kind`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// `invoice.finalized`: a period's invoice became final.
    InvoiceFinalized { period: u32, start_us: i64, end_us: i64, invoice: Invoice },
    /// `usage.threshold_crossed`.
    ThresholdCrossed { meter: Meter, threshold: u32, used: u64, limit: u64, start_us: i64, end_us: i64 },
    /// `usage.denied`: the first denial of a meter after an admitted use.
    Denied { meter: Meter, used: u64, limit: u64, requested: u64 },
    /// `addon.payment_pending`, `addon.activated`, `addon.payment_failed`.
    Addon {
        state: AddonState,
        purchase: String,
        addon: String,
        quantity: u32,
        amount: Option<Decimal>,
        currency: Option<String>,
    },
    /// `subscription.changed`: `subscribe`, `set_seats`, `change_plan`, `cancel`.
    SubscriptionChanged { command: SubscriptionCommand, plan: String, seats: u32, cancelled: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddonState {
    PaymentPending,
    Activated,
    PaymentFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionCommand {
    Subscribe,
    SetSeats,
    ChangePlan,
    Cancel,
}

impl SubscriptionCommand {
    pub fn name(self) -> &'static str {
        match self {
            SubscriptionCommand::Subscribe => "subscribe",
            SubscriptionCommand::SetSeats => "set_seats",
            SubscriptionCommand::ChangePlan => "change_plan",
            SubscriptionCommand::Cancel => "cancel",
        }
    }
}

/// Every notification type, as webhooks and NATS subjects name them.
pub const KINDS: [&str; 7] = [
    "invoice.finalized",
    "usage.threshold_crossed",
    "usage.denied",
    "addon.payment_pending",
    "addon.activated",
    "addon.payment_failed",
    "subscription.changed",
];

impl Notice {
    /// The notification's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::InvoiceFinalized { .. } => "invoice.finalized",
            Notice::ThresholdCrossed { .. } => "usage.threshold_crossed",
            Notice::Denied { .. } => "usage.denied",
            Notice::Addon { state: AddonState::PaymentPending, .. } => "addon.payment_pending",
            Notice::Addon { state: AddonState::Activated, .. } => "addon.activated",
            Notice::Addon { state: AddonState::PaymentFailed, .. } => "addon.payment_failed",
            Notice::SubscriptionChanged { .. } => "subscription.changed",
        }
    }
}

/// The event kinds that can make a notification (the subjects a delivery
/// consumer filters on).
pub const NOTIFYING: [events::EventKind; 11] = [
    events::EventKind::PeriodFinalized,
    events::EventKind::UsageThresholdCrossed,
    events::EventKind::TokensDenied,
    events::EventKind::UploadDenied,
    events::EventKind::AddonPurchased,
    events::EventKind::AddonActivated,
    events::EventKind::PaymentSettled,
    events::EventKind::Subscribed,
    events::EventKind::SeatsChanged,
    events::EventKind::PlanChanged,
    events::EventKind::SubscriptionCancelled,
];

/// What the tenant's meters' last decisions were before an event: a denial
/// is news only after an admitted use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeniedBefore {
    pub tokens: bool,
    pub storage: bool,
}

impl DeniedBefore {
    pub fn of(state: &TenantState) -> DeniedBefore {
        DeniedBefore { tokens: state.alerts.tokens_denied, storage: state.alerts.storage_denied }
    }
}

/// The notification `envelope` makes, given the tenant's state right after
/// it (`after`) and whether each meter's newest decision before it was a
/// denial.
pub fn notice(
    after: &TenantState,
    catalog: &CatalogState,
    envelope: &Envelope,
    before: DeniedBefore,
) -> Option<Notice> {
    let addon = |purchase: &str, state: AddonState| {
        let p = after.purchases.get(purchase)?;
        let definition = catalog.addons.get(&p.addon);
        Some(Notice::Addon {
            state,
            purchase: purchase.to_string(),
            addon: p.addon.clone(),
            quantity: p.quantity,
            amount: definition.and_then(|a| a.price.checked_mul(Decimal::from(p.quantity))),
            currency: definition.map(|a| a.currency.clone()),
        })
    };
    let subscription = |command: SubscriptionCommand| {
        let sub = after.subscription.as_ref()?;
        Some(Notice::SubscriptionChanged {
            command,
            plan: sub.plan.clone(),
            seats: sub.seats,
            cancelled: sub.cancelled_at_us.is_some(),
        })
    };
    match &envelope.payload {
        Event::PeriodFinalized { period, start_us, end_us, invoice } => Some(Notice::InvoiceFinalized {
            period: *period,
            start_us: *start_us,
            end_us: *end_us,
            invoice: invoice.clone(),
        }),
        Event::UsageThresholdCrossed { meter, threshold, used, limit, start_us, end_us, .. } => {
            Some(Notice::ThresholdCrossed {
                meter: *meter,
                threshold: *threshold,
                used: *used,
                limit: *limit,
                start_us: *start_us,
                end_us: *end_us,
            })
        }
        Event::TokensDenied { tokens, used, limit, .. } if !before.tokens => {
            Some(Notice::Denied { meter: Meter::Tokens, used: *used, limit: *limit, requested: *tokens })
        }
        Event::UploadDenied { bytes, used_bytes, quota_bytes, .. } if !before.storage => {
            Some(Notice::Denied {
                meter: Meter::Storage,
                used: *used_bytes,
                limit: *quota_bytes,
                requested: *bytes,
            })
        }
        Event::AddonPurchased { purchase, payment: Payment::Card, .. } => {
            addon(purchase, AddonState::PaymentPending)
        }
        Event::AddonActivated { purchase } => addon(purchase, AddonState::Activated),
        Event::PaymentSettled { purchase, outcome: PaymentOutcome::Failed, .. } => {
            addon(purchase, AddonState::PaymentFailed)
        }
        Event::Subscribed { .. } => subscription(SubscriptionCommand::Subscribe),
        Event::SeatsChanged { .. } => subscription(SubscriptionCommand::SetSeats),
        Event::PlanChanged { .. } => subscription(SubscriptionCommand::ChangePlan),
        Event::SubscriptionCancelled => subscription(SubscriptionCommand::Cancel),
        _ => None,
    }
}

/// A notification as the `ledger` view stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRow {
    pub tenant: String,
    /// The event's id: the notification's id.
    pub event_id: u128,
    /// The event's `at`.
    pub at_us: i64,
    /// The event's position on the log.
    pub position: u64,
    pub notice: Notice,
}
