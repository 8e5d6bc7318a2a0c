//! Pricing one period of one tenant from its folded state.
//!
//! Lines, as the spec defines them:
//! - plan (one per plan active in the period): per-seat plans bill
//!   price x seat-seconds / period seconds, flat plans price x active seconds
//!   / period seconds;
//! - recurring add-on: price x quantity x active seconds / period seconds;
//! - one-off add-on: price x quantity in the period it was activated, `paid`
//!   when settled by card;
//! - token overage when the plan in force at the end of the period bills it:
//!   max(0, used - limit) x bill_per_1k / 1000.
//!
//! Intervals are measured in microseconds: the ratio to the period is the
//! same as in seconds, and exact for `at`s with fractions of a second. A
//! draft extends whatever is still running to the period's end ("what the
//! period would cost if nothing more happened").

use events::{Invoice, InvoiceLine, TokenOverage};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use crate::domain::{CatalogState, PurchaseStatus, TenantState};
use crate::money;
use crate::period::period_bounds_us;

/// One line with the arithmetic behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub line: InvoiceLine,
    /// The amount before rounding.
    pub exact: Decimal,
    /// How the amount was reached, for people.
    pub arithmetic: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedPeriod {
    pub period: u32,
    pub start_us: i64,
    pub end_us: i64,
    pub lines: Vec<PricedLine>,
    pub invoice: Invoice,
}

fn overlap(a: (i64, i64), b: (i64, i64)) -> i64 {
    (a.1.min(b.1) - a.0.max(b.0)).max(0)
}

/// Prices period `k`. `None` when the tenant never subscribed.
pub fn price_period(state: &TenantState, catalog: &CatalogState, k: u32) -> Option<PricedPeriod> {
    let sub = state.subscription.as_ref()?;
    let (start_us, end_us) = period_bounds_us(sub.anchor_us, k);
    let period_us = Decimal::from(end_us - start_us);
    // Nothing accrues after a cancellation.
    let stop_us = sub.cancelled_at_us.unwrap_or(i64::MAX);
    let window = (start_us, end_us.min(stop_us));
    let currency = catalog.plans.get(&sub.plan).map(|p| p.currency.clone())?;
    let mut lines: Vec<PricedLine> = Vec::new();
    let mut push = |code: String, description: String, exact: Decimal, paid: bool, arithmetic: String| {
        let amount = money::round(exact, &currency);
        lines.push(PricedLine { line: InvoiceLine { code, description, amount, paid }, exact, arithmetic });
    };

    // Plan lines: accumulate seat-microseconds (or active microseconds) per
    // plan, in the order plans were first used in the period.
    let mut per_plan: Vec<(String, i128)> = Vec::new();
    for (i, segment) in state.segments.iter().enumerate() {
        let next_us = state.segments.get(i + 1).map_or(i64::MAX, |n| n.start_us);
        let active_us = overlap((segment.start_us, next_us), window);
        if active_us == 0 {
            continue;
        }
        let Some(plan) = catalog.plans.get(&segment.plan) else { continue };
        let units =
            if plan.per_seat { i128::from(segment.seats) * active_us as i128 } else { active_us as i128 };
        match per_plan.iter_mut().find(|(id, _)| *id == segment.plan) {
            Some((_, total)) => *total += units,
            None => per_plan.push((segment.plan.clone(), units)),
        }
    }
    for (id, units) in per_plan {
        let plan = &catalog.plans[&id]; // present: checked when accumulated
        let exact = plan.price * Decimal::from(units) / period_us;
        let (what, unit) =
            if plan.per_seat { ("seat-seconds", "seat") } else { ("active seconds", "period") };
        let arithmetic = format!(
            "{} per {unit} x {} {what} / {} period seconds",
            plan.price,
            Decimal::from(units) / Decimal::from(1_000_000),
            period_us / Decimal::from(1_000_000)
        );
        push(format!("plan:{id}"), plan.name.clone().unwrap_or(id.clone()), exact, false, arithmetic);
    }

    for (purchase_id, p) in &state.purchases {
        let Some(addon) = catalog.addons.get(&p.addon) else { continue };
        let Some(activated_us) = p.activated_at_us else { continue };
        let quantity = Decimal::from(p.quantity);
        let name = addon.name.clone().unwrap_or(addon.id.clone());
        if addon.recurring {
            let active_us = overlap((activated_us, p.ended_at_us.unwrap_or(i64::MAX)), window);
            if active_us == 0 {
                continue;
            }
            let exact = addon.price * quantity * Decimal::from(active_us) / period_us;
            let arithmetic = format!(
                "{} x {} x {} active seconds / {} period seconds",
                addon.price,
                p.quantity,
                Decimal::from(active_us) / Decimal::from(1_000_000),
                period_us / Decimal::from(1_000_000)
            );
            push(format!("addon:{purchase_id}"), name, exact, false, arithmetic);
        } else if (start_us..end_us).contains(&activated_us) && p.status != PurchaseStatus::Failed {
            let exact = addon.price * quantity;
            let arithmetic = format!("{} x {} (one-off)", addon.price, p.quantity);
            push(format!("addon:{purchase_id}"), name, exact, p.paid_by_card, arithmetic);
        }
    }

    // Token overage: the plan and limit in force at the end of the period
    // (or at the cancellation, when that came first).
    let last_us = window.1.min(end_us) - 1;
    let plan_at_end = state.segment_at(last_us).and_then(|s| catalog.plans.get(&s.plan));
    if let Some(plan) = plan_at_end {
        if let TokenOverage::BillPer1k { price } = &plan.token_overage {
            let used = state.tokens_used(k);
            let limit = state.token_limit_at(catalog, last_us);
            let over = used.saturating_sub(limit);
            if over > 0 {
                let exact = Decimal::from(over) * price / Decimal::from(1000);
                let arithmetic = format!("({used} used - {limit} limit) x {price} / 1000");
                push("tokens:overage".into(), "Token overage".into(), exact, false, arithmetic);
            }
        }
    }

    let total: Decimal = lines.iter().map(|l| l.line.amount).sum::<Decimal>() + money::zero(&currency);
    let paid: Decimal =
        lines.iter().filter(|l| l.line.paid).map(|l| l.line.amount).sum::<Decimal>() + money::zero(&currency);
    let invoice = Invoice {
        currency: currency.clone(),
        lines: lines.iter().map(|l| l.line.clone()).collect(),
        total,
        paid,
        amount_due: total - paid,
        inputs_digest: inputs_digest(state, catalog, k),
    };
    Some(PricedPeriod { period: k, start_us, end_us, lines, invoice })
}

/// SHA-256 over what the invoice was derived from: the tenant's chain head
/// (which fixes every event before it), the period, and the definitions of
/// the plans and add-ons the tenant used.
fn inputs_digest(state: &TenantState, catalog: &CatalogState, k: u32) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(state.chain.last_position.to_le_bytes());
    hasher.update(state.chain.last_hash);
    hasher.update(k.to_le_bytes());
    let mut plans: Vec<&str> = state.segments.iter().map(|s| s.plan.as_str()).collect();
    plans.sort_unstable();
    plans.dedup();
    for id in plans {
        hasher.update(format!("{:?}", catalog.plans.get(id)).as_bytes());
    }
    let mut addons: Vec<&str> = state.purchases.values().map(|p| p.addon.as_str()).collect();
    addons.sort_unstable();
    addons.dedup();
    for id in addons {
        hasher.update(format!("{:?}", catalog.addons.get(id)).as_bytes());
    }
    hasher.finalize().into()
}
