//! What a well-formed event is, checked before encoding and after decoding.

use rust_decimal::Decimal;

use crate::{Actor, Addon, Envelope, Event, Plan, TokenOverage, CATALOG_TENANT};

/// Longest identifier (file, request, purchase, plan, add-on) accepted.
pub const MAX_ID_LEN: usize = 256;
/// Most usage alert thresholds per meter, and the largest (percent).
pub const MAX_ALERTS: usize = 10;
pub const MAX_ALERT_PERCENT: u32 = 1000;

/// `[a-z0-9][a-z0-9-]{0,62}`: tenant ids appear inside NATS subjects, so no
/// dots, spaces or wildcards.
pub fn valid_tenant_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Identifiers chosen by callers (files, requests, purchases, plans, add-ons):
/// 1 to 256 bytes, no control characters.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

fn check_id(field: &str, id: &str) -> Result<(), String> {
    check(valid_id(id), || format!("{field} {id:?} is not a valid id"))
}

fn check_money(field: &str, amount: &Decimal) -> Result<(), String> {
    check(!amount.is_sign_negative(), || format!("{field} {amount} is negative"))
}

fn check_currency(currency: &str) -> Result<(), String> {
    check(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()), || {
        format!("currency {currency:?} is not an ISO 4217 code")
    })
}

fn check_plan(plan: &Plan) -> Result<(), String> {
    check_id("plan id", &plan.id)?;
    check_currency(&plan.currency)?;
    check_money("plan price", &plan.price)?;
    check_money("storage_quota_gb", &plan.storage_quota_gb)?;
    check(plan.min_seats >= 1, || "min_seats must be at least 1".into())?;
    if let Some(max) = plan.max_seats {
        check(max >= plan.min_seats, || format!("max_seats {max} is below min_seats"))?;
    }
    if let TokenOverage::BillPer1k { price } = &plan.token_overage {
        check_money("bill_per_1k", price)?;
    }
    plan.addons.iter().try_for_each(|a| check_id("add-on id", a))
}

fn check_addon(addon: &Addon) -> Result<(), String> {
    check_id("add-on id", &addon.id)?;
    check_currency(&addon.currency)?;
    check_money("add-on price", &addon.price)?;
    if let Some(gb) = &addon.grants.storage_gb {
        check_money("storage_gb", gb)?;
    }
    Ok(())
}

/// The schema's rules. An `Err` names the first rule broken.
pub(crate) fn validate(envelope: &Envelope) -> Result<(), String> {
    let catalog = envelope.payload.is_catalog();
    if catalog {
        check(envelope.tenant == CATALOG_TENANT, || {
            format!("catalog event under tenant {:?}", envelope.tenant)
        })?;
        check(envelope.actor == Actor::Admin, || "catalog event not by admin".into())?;
    } else {
        check(valid_tenant_id(&envelope.tenant), || {
            format!("tenant {:?} is not a valid tenant id", envelope.tenant)
        })?;
    }
    match &envelope.actor {
        Actor::Admin => {}
        Actor::TenantAdmin { tenant } | Actor::TenantUser { tenant } => {
            check(*tenant == envelope.tenant, || {
                format!("actor of tenant {tenant:?} on an event of {:?}", envelope.tenant)
            })?;
        }
    }
    check(chrono::DateTime::from_timestamp_micros(envelope.at_us).is_some(), || {
        format!("at {} is out of range", envelope.at_us)
    })?;
    if let Some(offline) = &envelope.offline {
        check(matches!(envelope.payload, Event::FileStored { .. } | Event::TokensConsumed { .. }), || {
            format!("a {} event cannot be admitted offline", envelope.kind().name())
        })?;
        check(offline.admitted_at_us <= envelope.at_us, || "admitted offline after it was recorded".into())?;
        check(chrono::DateTime::from_timestamp_micros(offline.admitted_at_us).is_some(), || {
            format!("offline admission at {} is out of range", offline.admitted_at_us)
        })?;
    }
    if let Some(key) = &envelope.key {
        check_id("idempotency key", &key.key)?;
    }
    if let Event::TokensConsumed { offline, .. } = &envelope.payload {
        // v1 marked offline token use in the payload; v2 marks it on the
        // envelope (for uploads too). Writers keep the two in step.
        check(*offline == envelope.offline.is_some(), || {
            "the payload's offline flag disagrees with the envelope".into()
        })?;
    }
    match &envelope.payload {
        Event::PlanDefined { plan } => check_plan(plan),
        Event::AddonDefined { addon } => check_addon(addon),
        Event::Subscribed { plan, seats } => {
            check_id("plan", plan)?;
            check(*seats >= 1, || "seats must be at least 1".into())
        }
        Event::SeatsChanged { seats } => check(*seats >= 1, || "seats must be at least 1".into()),
        Event::PlanChanged { plan } => check_id("plan", plan),
        Event::SubscriptionCancelled => Ok(()),
        Event::FileStored { file, .. } | Event::FileDeleted { file, .. } => check_id("file", file),
        Event::UploadDenied { file, bytes, used_bytes, quota_bytes } => {
            check_id("file", file)?;
            check(used_bytes.saturating_add(*bytes) > *quota_bytes, || {
                "upload denied although it fits the quota".into()
            })
        }
        Event::TokensConsumed { request, tokens, .. } => {
            check_id("request", request)?;
            check(*tokens >= 1, || "tokens must be at least 1".into())
        }
        Event::TokensDenied { request, tokens, used, limit } => {
            check_id("request", request)?;
            check(*tokens >= 1, || "tokens must be at least 1".into())?;
            check(used.saturating_add(*tokens) > *limit, || {
                "tokens denied although they fit the limit".into()
            })
        }
        Event::AddonPurchased { purchase, addon, quantity, .. } => {
            check_id("purchase", purchase)?;
            check_id("add-on", addon)?;
            check(*quantity >= 1, || "quantity must be at least 1".into())
        }
        Event::PaymentSettled { purchase, reference, .. } => {
            check_id("purchase", purchase)?;
            match reference {
                Some(r) => check_id("reference", r),
                None => Ok(()),
            }
        }
        Event::AddonActivated { purchase } | Event::AddonCancelled { purchase } => {
            check_id("purchase", purchase)
        }
        Event::UsageAlertsSet { tokens, storage } => {
            for list in [tokens, storage].into_iter().flatten() {
                check(list.len() <= MAX_ALERTS, || format!("more than {MAX_ALERTS} thresholds"))?;
                check(list.iter().all(|t| (1..=MAX_ALERT_PERCENT).contains(t)), || {
                    format!("thresholds must be 1 to {MAX_ALERT_PERCENT} percent")
                })?;
                check(list.windows(2).all(|w| w[0] < w[1]), || "thresholds must ascend, once each".into())?;
            }
            Ok(())
        }
        Event::UsageThresholdCrossed { threshold, used, limit, start_us, end_us, .. } => {
            check((1..=MAX_ALERT_PERCENT).contains(threshold), || {
                format!("threshold {threshold} out of range")
            })?;
            check(*limit > 0, || "a limit of 0 crosses nothing".into())?;
            check(u128::from(*used) * 100 >= u128::from(*threshold) * u128::from(*limit), || {
                "crossing recorded below its threshold".into()
            })?;
            check(end_us > start_us, || "period ends before it starts".into())
        }
        Event::PeriodFinalized { start_us, end_us, invoice, .. } => {
            check(end_us > start_us, || "period ends before it starts".into())?;
            check_currency(&invoice.currency)?;
            // Checked: these bytes may be forged, and `Decimal`'s `Sum`
            // panics on overflow.
            let sum = |paid_only: bool| {
                invoice
                    .lines
                    .iter()
                    .filter(|l| !paid_only || l.paid)
                    .try_fold(Decimal::ZERO, |sum, l| sum.checked_add(l.amount))
                    .ok_or_else(|| "invoice lines overflow when added".to_string())
            };
            let (total, paid) = (sum(false)?, sum(true)?);
            check(invoice.total == total, || "invoice total is not the sum of its lines".into())?;
            check(invoice.paid == paid, || "invoice paid is not the sum of paid lines".into())?;
            check(total.checked_sub(paid) == Some(invoice.amount_due), || {
                "invoice amount_due is not total - paid".into()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by reading (then confirmed with the `events_decode` fuzz
    /// target): invoice lines whose amounts overflow when added made
    /// `decode` panic instead of refusing a forged event.
    #[test]
    fn invoice_lines_that_overflow_are_invalid_not_a_panic() {
        let mut envelope = crate::samples::sample(crate::EventKind::PeriodFinalized);
        if let Event::PeriodFinalized { invoice, .. } = &mut envelope.payload {
            for line in &mut invoice.lines {
                line.amount = Decimal::MAX;
            }
        }
        let error = validate(&envelope).expect_err("overflowing lines are not a valid invoice");
        assert!(error.contains("overflow"), "{error}");
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/seeds/events_decode/invoice_line_sum_overflow.bin"
        ))
        .unwrap();
        assert!(matches!(crate::decode(&bytes), Err(crate::EventError::Invalid(_))));
    }

    #[test]
    fn tenant_ids() {
        for ok in ["a", "acme", "0", "a-b-c", &"a".repeat(63)] {
            assert!(valid_tenant_id(ok), "{ok}");
        }
        for bad in ["", "-a", "A", "a.b", "a b", "a*", "a>", "_catalog", &"a".repeat(64)] {
            assert!(!valid_tenant_id(bad), "{bad}");
        }
    }
}
