//! Deterministic sample events, one per kind: the golden-byte fixtures, and
//! realistic payloads for tests and benchmarks.

use rust_decimal::Decimal;

use crate::v1::*;
use crate::{EventKind, CATALOG_TENANT};

fn dec(s: &str) -> Decimal {
    s.parse().expect("sample decimal")
}

/// 2026-03-01T00:00:00Z in microseconds.
pub const SAMPLE_AT_US: i64 = 1_772_323_200_000_000;

/// One fixed envelope of the given kind, in the current shape.
pub fn sample(kind: EventKind) -> crate::Envelope {
    sample_v2(kind).into()
}

/// One fixed envelope of the given kind, as schema version 2 shaped it.
pub fn sample_v2(kind: EventKind) -> crate::v2::EnvelopeV2 {
    sample_v1(kind).into()
}

/// A seat change recorded by a command that carried an idempotency key.
pub fn sample_keyed() -> crate::Envelope {
    let mut envelope = sample(EventKind::SeatsChanged);
    envelope.key = Some(crate::CommandKey { key: "panel-op-7".into(), fingerprint: [9; 32] });
    envelope
}

/// A token use a client admitted offline an hour before it was recorded.
pub fn sample_offline() -> crate::Envelope {
    let mut envelope = sample(EventKind::TokensConsumed);
    if let crate::Event::TokensConsumed { offline, .. } = &mut envelope.payload {
        *offline = true;
    }
    envelope.offline = Some(crate::Offline { admitted_at_us: SAMPLE_AT_US - 3_600_000_000 });
    envelope
}

/// One fixed envelope of the given kind, as schema version 1 shaped it
/// (kinds appended later take the v1 envelope too: only the envelope grew).
pub fn sample_v1(kind: EventKind) -> EnvelopeV1 {
    let tenant = "acme".to_string();
    let payload = match kind {
        EventKind::PlanDefined => EventV1::PlanDefined {
            plan: PlanV1 {
                id: "starter".into(),
                name: Some("Starter".into()),
                currency: "USD".into(),
                price: dec("20.00"),
                per_seat: false,
                min_seats: 1,
                max_seats: Some(50),
                storage_quota_gb: dec("2"),
                monthly_token_limit: 10_000,
                token_overage: TokenOverageV1::BillPer1k { price: dec("0.02") },
                addons: vec!["extra-storage".into()],
            },
        },
        EventKind::AddonDefined => EventV1::AddonDefined {
            addon: AddonV1 {
                id: "extra-storage".into(),
                name: None,
                currency: "USD".into(),
                price: dec("3.00"),
                recurring: true,
                grants: GrantsV1 { storage_gb: Some(dec("5")), tokens: Some(1000), feature: None },
            },
        },
        EventKind::Subscribed => EventV1::Subscribed { plan: "starter".into(), seats: 2 },
        EventKind::SeatsChanged => EventV1::SeatsChanged { seats: 5 },
        EventKind::PlanChanged => EventV1::PlanChanged { plan: "pro".into() },
        EventKind::SubscriptionCancelled => EventV1::SubscriptionCancelled,
        EventKind::FileStored => EventV1::FileStored { file: "reports/q1.pdf".into(), bytes: 1_048_576 },
        EventKind::FileDeleted => EventV1::FileDeleted { file: "reports/q1.pdf".into(), bytes: 1_048_576 },
        EventKind::UploadDenied => EventV1::UploadDenied {
            file: "video.mp4".into(),
            bytes: 3_000_000_000,
            used_bytes: 1_048_576,
            quota_bytes: 2_147_483_648,
        },
        EventKind::TokensConsumed => {
            EventV1::TokensConsumed { request: "req-000001".into(), tokens: 1200, offline: false }
        }
        EventKind::TokensDenied => {
            EventV1::TokensDenied { request: "req-000002".into(), tokens: 5000, used: 6000, limit: 10_000 }
        }
        EventKind::AddonPurchased => EventV1::AddonPurchased {
            purchase: "p-1".into(),
            addon: "extra-storage".into(),
            quantity: 1,
            payment: PaymentV1::Card,
        },
        EventKind::PaymentSettled => EventV1::PaymentSettled {
            purchase: "p-1".into(),
            outcome: PaymentOutcomeV1::Paid,
            reference: Some("ch_123".into()),
        },
        EventKind::AddonActivated => EventV1::AddonActivated { purchase: "p-1".into() },
        EventKind::AddonCancelled => EventV1::AddonCancelled { purchase: "p-1".into() },
        EventKind::UsageAlertsSet => {
            EventV1::UsageAlertsSet { tokens: Some(vec![50, 80, 100]), storage: None }
        }
        EventKind::UsageThresholdCrossed => EventV1::UsageThresholdCrossed {
            meter: MeterV1::Tokens,
            threshold: 80,
            used: 8_200,
            limit: 10_000,
            period: 0,
            start_us: SAMPLE_AT_US,
            end_us: SAMPLE_AT_US + 31 * 86_400 * 1_000_000,
        },
        EventKind::PeriodFinalized => EventV1::PeriodFinalized {
            period: 0,
            start_us: SAMPLE_AT_US,
            end_us: SAMPLE_AT_US + 31 * 86_400 * 1_000_000,
            invoice: InvoiceV1 {
                currency: "USD".into(),
                lines: vec![
                    InvoiceLineV1 {
                        code: "plan:starter".into(),
                        description: "Starter".into(),
                        amount: dec("20.00"),
                        paid: false,
                    },
                    InvoiceLineV1 {
                        code: "addon:p-1".into(),
                        description: "extra-storage".into(),
                        amount: dec("2.03"),
                        paid: true,
                    },
                ],
                total: dec("22.03"),
                paid: dec("2.03"),
                amount_due: dec("20.00"),
                inputs_digest: [7; 32],
            },
        },
    };
    let catalog = payload.is_catalog();
    EnvelopeV1 {
        event_id: 0x0192_0000_0000_7000_8000_0000_0000_0000 + kind as u128,
        tenant: if catalog { CATALOG_TENANT.into() } else { tenant.clone() },
        at_us: SAMPLE_AT_US,
        actor: if catalog { ActorV1::Admin } else { ActorV1::TenantUser { tenant } },
        prev_hash: [kind as u8; 32],
        payload,
    }
}
