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

/// Prices period `k`. `None` when the tenant never subscribed, or when an
/// amount does not fit a `Decimal` (the decider rejects any command that
/// would make its tenant's invoice so: see `decide`'s representability
/// check; arithmetic here is checked, never wrapping or panicking).
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
        let plan = catalog.plans.get(&id)?; // present: checked when accumulated
        let units = Decimal::try_from_i128_with_scale(units, 0).ok()?;
        let exact = plan.price.checked_mul(units)?.checked_div(period_us)?;
        let (what, unit) =
            if plan.per_seat { ("seat-seconds", "seat") } else { ("active seconds", "period") };
        let arithmetic = format!(
            "{} per {unit} x {} {what} / {} period seconds",
            plan.price,
            units / Decimal::from(1_000_000),
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
            let exact = addon
                .price
                .checked_mul(quantity)?
                .checked_mul(Decimal::from(active_us))?
                .checked_div(period_us)?;
            let arithmetic = format!(
                "{} x {} x {} active seconds / {} period seconds",
                addon.price,
                p.quantity,
                Decimal::from(active_us) / Decimal::from(1_000_000),
                period_us / Decimal::from(1_000_000)
            );
            push(format!("addon:{purchase_id}"), name, exact, false, arithmetic);
        } else if (start_us..end_us).contains(&activated_us) && p.status != PurchaseStatus::Failed {
            let exact = addon.price.checked_mul(quantity)?;
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
                let exact = Decimal::from(over).checked_mul(*price)?.checked_div(Decimal::from(1000))?;
                let arithmetic = format!("({used} used - {limit} limit) x {price} / 1000");
                push("tokens:overage".into(), "Token overage".into(), exact, false, arithmetic);
            }
        }
    }

    let sum = |paid_only: bool| {
        lines
            .iter()
            .filter(|l| !paid_only || l.line.paid)
            .try_fold(money::zero(&currency), |sum, l| sum.checked_add(l.line.amount))
    };
    let (total, paid) = (sum(false)?, sum(true)?);
    let invoice = Invoice {
        currency: currency.clone(),
        lines: lines.iter().map(|l| l.line.clone()).collect(),
        total,
        paid,
        amount_due: total.checked_sub(paid)?,
        inputs_digest: inputs_digest(state, catalog, k),
    };
    Some(PricedPeriod { period: k, start_us, end_us, lines, invoice })
}

/// SHA-256 over what the invoice was derived from: the tenant's chain hash
/// (which fixes every event before it), the period, and the definitions of
/// the plans and add-ons the tenant used, in the format new invoices record
/// ([`DigestVersion::CURRENT`]; byte layout in docs/audit-format.md).
/// Verification accepts every version: see [`recorded_digest_version`].
fn inputs_digest(state: &TenantState, catalog: &CatalogState, k: u32) -> [u8; 32] {
    inputs_digest_versioned(state, catalog, k, DigestVersion::CURRENT)
}

// The inputs digest, versioned. A recorded digest never depends on `Debug`
// output or field names: each version below is a fixed byte layout, written
// out in docs/audit-format.md, and verification accepts every version.

use std::fmt::Write as _;

use events::v1::{AddonV1, GrantsV1, PlanV1, TokenOverageV1};

/// The formats of [`Invoice::inputs_digest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestVersion {
    /// The first format: the chain head and period as fixed-width integers,
    /// then the plans and add-ons as the text their `Debug` output had when
    /// it was frozen (now written out by hand). Still verified, never written.
    V1,
    /// [`INPUTS_TAG_V2`], then the canonical bincode encoding
    /// ([`events::canonical_bytes`]) of the chain head (position and hash),
    /// the period and the frozen v1 definitions of the plans and add-ons
    /// used. Still verified, never written: a writer that decides before
    /// its append does not know the position (docs/audit-format.md).
    V2,
    /// [`INPUTS_TAG_V3`], then the canonical bincode encoding of the chain
    /// hash, the period and the frozen v1 definitions: v2 without the
    /// position, which only the log assigns (the hash already fixes the
    /// tenant's whole history).
    V3,
}

impl DigestVersion {
    /// The version new invoices record.
    pub const CURRENT: DigestVersion = DigestVersion::V3;
    /// Every version verification accepts, newest first.
    pub const ALL: [DigestVersion; 3] = [DigestVersion::V3, DigestVersion::V2, DigestVersion::V1];

    /// The version's name as reports print it (`v3`).
    pub fn name(self) -> &'static str {
        match self {
            DigestVersion::V1 => "v1",
            DigestVersion::V2 => "v2",
            DigestVersion::V3 => "v3",
        }
    }
}

/// Domain and version tag: the first bytes of every v2 preimage.
pub const INPUTS_TAG_V2: &[u8] = b"ledger/invoice-inputs/v2\0";
/// The same for v3.
pub const INPUTS_TAG_V3: &[u8] = b"ledger/invoice-inputs/v3\0";

/// What a v2 digest covers, in encoding order. The definitions are the
/// frozen v1 shapes, never the current aliases: if `events::Plan` or
/// `events::Addon` ever stops being the v1 type this stops compiling, and
/// the new shape must be converted down (or a v3 defined), so the bytes of
/// recorded digests never move. An id the catalog lacks is encoded with
/// `None`, never skipped.
#[derive(serde::Serialize)]
struct InputsV2<'a> {
    last_position: u64,
    last_hash: [u8; 32],
    period: u32,
    plans: Vec<(&'a str, Option<&'a PlanV1>)>,
    addons: Vec<(&'a str, Option<&'a AddonV1>)>,
}

/// What a v3 digest covers, in encoding order: [`InputsV2`] without the
/// position.
#[derive(serde::Serialize)]
struct InputsV3<'a> {
    last_hash: [u8; 32],
    period: u32,
    plans: Vec<(&'a str, Option<&'a PlanV1>)>,
    addons: Vec<(&'a str, Option<&'a AddonV1>)>,
}

/// The ids of the plans the tenant was ever on, sorted (bytewise), once each.
fn used_plans(state: &TenantState) -> Vec<&str> {
    let mut plans: Vec<&str> = state.segments.iter().map(|s| s.plan.as_str()).collect();
    plans.sort_unstable();
    plans.dedup();
    plans
}

/// The ids of the add-ons the tenant ever purchased, sorted, once each.
fn used_addons(state: &TenantState) -> Vec<&str> {
    let mut addons: Vec<&str> = state.purchases.values().map(|p| p.addon.as_str()).collect();
    addons.sort_unstable();
    addons.dedup();
    addons
}

/// The bytes a digest of `version` hashes (docs/audit-format.md).
pub fn inputs_preimage(
    state: &TenantState,
    catalog: &CatalogState,
    k: u32,
    version: DigestVersion,
) -> Vec<u8> {
    match version {
        DigestVersion::V1 => inputs_preimage_v1(state, catalog, k),
        DigestVersion::V2 => inputs_preimage_v2(state, catalog, k),
        DigestVersion::V3 => inputs_preimage_v3(state, catalog, k),
    }
}

/// SHA-256 of [`inputs_preimage`].
pub fn inputs_digest_versioned(
    state: &TenantState,
    catalog: &CatalogState,
    k: u32,
    version: DigestVersion,
) -> [u8; 32] {
    Sha256::digest(inputs_preimage(state, catalog, k, version)).into()
}

/// The version under which `recorded` is the digest of these inputs, if any
/// (newest first).
pub fn recorded_digest_version(
    recorded: &[u8; 32],
    state: &TenantState,
    catalog: &CatalogState,
    k: u32,
) -> Option<DigestVersion> {
    DigestVersion::ALL.into_iter().find(|v| inputs_digest_versioned(state, catalog, k, *v) == *recorded)
}

/// Whether `recorded` is the digest of these inputs under any version.
pub fn digest_verifies(recorded: &[u8; 32], state: &TenantState, catalog: &CatalogState, k: u32) -> bool {
    recorded_digest_version(recorded, state, catalog, k).is_some()
}

/// Whether two invoices charge the same, bit for bit: currency, lines,
/// total, paid and amount due have the same canonical bytes (so `20.0` is
/// not `20.00`: a final invoice re-derives exactly, scale included). The
/// digest is not compared.
pub fn same_charges(a: &Invoice, b: &Invoice) -> bool {
    let charges = |i: &Invoice| {
        let Invoice { currency, lines, total, paid, amount_due, inputs_digest: _ } = i;
        events::canonical_bytes(&(currency, lines, total, paid, amount_due))
    };
    charges(a) == charges(b)
}

/// Why a recorded invoice is not the one its inputs re-derive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceMismatch {
    /// Currency, lines, total, paid or amount due differ.
    Charges,
    /// The charges agree, but the recorded inputs digest is not the digest
    /// of these inputs under any [`DigestVersion`].
    Digest,
}

impl std::fmt::Display for InvoiceMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InvoiceMismatch::Charges => "charges differ",
            InvoiceMismatch::Digest => "inputs digest matches no digest version",
        })
    }
}

/// How a recorded digest verified: under which version, and for a v2
/// digest of a chained decision, at which provisional position (see
/// [`check_recorded_invoice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestMatch {
    pub version: DigestVersion,
    pub provisional_position: Option<u64>,
}

/// Checks a recorded invoice against `derived`, the one
/// [`price_period`]`(state, catalog, k)` re-derives: the same charges
/// ([`same_charges`]) and a recorded digest that verifies under some
/// version (`derived`'s own digest, always the current version, is not
/// compared). Returns how the recorded digest verified.
///
/// `provisional` lists the positions a writer could have hashed into a v2
/// digest in place of the real one: before v3, a finalize decided in the
/// same append as earlier events of its tenant (a chained decision) hashed
/// the position its scratch state counted, not the one the log assigned
/// (docs/audit-format.md). The hash, which fixes the history, must still
/// match.
pub fn check_recorded_invoice(
    recorded: &Invoice,
    derived: &Invoice,
    state: &TenantState,
    catalog: &CatalogState,
    k: u32,
    provisional: &[u64],
) -> Result<DigestMatch, InvoiceMismatch> {
    if !same_charges(recorded, derived) {
        return Err(InvoiceMismatch::Charges);
    }
    if let Some(version) = recorded_digest_version(&recorded.inputs_digest, state, catalog, k) {
        return Ok(DigestMatch { version, provisional_position: None });
    }
    let chained_v2 = |position: &&u64| {
        let digest: [u8; 32] = Sha256::digest(inputs_preimage_v2_at(**position, state, catalog, k)).into();
        digest == recorded.inputs_digest
    };
    match provisional.iter().find(chained_v2) {
        Some(position) => {
            Ok(DigestMatch { version: DigestVersion::V2, provisional_position: Some(*position) })
        }
        None => Err(InvoiceMismatch::Digest),
    }
}

/// v2: [`INPUTS_TAG_V2`] then `events::canonical_bytes(&InputsV2 { .. })`.
fn inputs_preimage_v2(state: &TenantState, catalog: &CatalogState, k: u32) -> Vec<u8> {
    inputs_preimage_v2_at(state.chain.last_position, state, catalog, k)
}

/// v2 with the chain's position given (see [`check_recorded_invoice`]).
fn inputs_preimage_v2_at(last_position: u64, state: &TenantState, catalog: &CatalogState, k: u32) -> Vec<u8> {
    let inputs = InputsV2 {
        last_position,
        last_hash: state.chain.last_hash,
        period: k,
        plans: used_plans(state).into_iter().map(|id| (id, catalog.plans.get(id))).collect(),
        addons: used_addons(state).into_iter().map(|id| (id, catalog.addons.get(id))).collect(),
    };
    let mut bytes = INPUTS_TAG_V2.to_vec();
    bytes.extend_from_slice(&events::canonical_bytes(&inputs));
    bytes
}

/// v3: [`INPUTS_TAG_V3`] then `events::canonical_bytes(&InputsV3 { .. })`.
fn inputs_preimage_v3(state: &TenantState, catalog: &CatalogState, k: u32) -> Vec<u8> {
    let inputs = InputsV3 {
        last_hash: state.chain.last_hash,
        period: k,
        plans: used_plans(state).into_iter().map(|id| (id, catalog.plans.get(id))).collect(),
        addons: used_addons(state).into_iter().map(|id| (id, catalog.addons.get(id))).collect(),
    };
    let mut bytes = INPUTS_TAG_V3.to_vec();
    bytes.extend_from_slice(&events::canonical_bytes(&inputs));
    bytes
}

/// v1, frozen: the last position (u64 LE), the last hash, the period (u32
/// LE), then for each used plan and then each used add-on (sorted ids) the
/// text `{:?}` gave for `Option<&PlanV1>` / `Option<&AddonV1>` when v1 was
/// written, with no separators. Written out by hand so that no derive,
/// rename or std formatting change can move it; only string escaping is
/// std's (`{:?}` of a `str`) and decimals print as their `Display`.
fn inputs_preimage_v1(state: &TenantState, catalog: &CatalogState, k: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&state.chain.last_position.to_le_bytes());
    bytes.extend_from_slice(&state.chain.last_hash);
    bytes.extend_from_slice(&k.to_le_bytes());
    let mut text = String::new();
    for id in used_plans(state) {
        v1_option(&mut text, catalog.plans.get(id), v1_plan);
    }
    for id in used_addons(state) {
        v1_option(&mut text, catalog.addons.get(id), v1_addon);
    }
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// `"..."` with std's string escaping.
fn v1_str(out: &mut String, s: &str) {
    let _ = write!(out, "{s:?}");
}

/// `None`, or `Some(` the value `)`.
fn v1_option<T>(out: &mut String, value: Option<T>, some: impl FnOnce(&mut String, T)) {
    match value {
        None => out.push_str("None"),
        Some(v) => {
            out.push_str("Some(");
            some(out, v);
            out.push(')');
        }
    }
}

/// rust_decimal's `Debug` is its `Display`: sign, digits, the scale kept
/// (`20.00`), never an exponent.
fn v1_decimal(out: &mut String, d: &Decimal) {
    let _ = write!(out, "{d}");
}

fn v1_plan(out: &mut String, plan: &PlanV1) {
    // Exhaustive, so a field added to the frozen type cannot go unnoticed.
    let PlanV1 {
        id,
        name,
        currency,
        price,
        per_seat,
        min_seats,
        max_seats,
        storage_quota_gb,
        monthly_token_limit,
        token_overage,
        addons,
    } = plan;
    out.push_str("PlanV1 { id: ");
    v1_str(out, id);
    out.push_str(", name: ");
    v1_option(out, name.as_deref(), v1_str);
    out.push_str(", currency: ");
    v1_str(out, currency);
    out.push_str(", price: ");
    v1_decimal(out, price);
    let _ = write!(out, ", per_seat: {per_seat}, min_seats: {min_seats}, max_seats: ");
    v1_option(out, *max_seats, |out, n| {
        let _ = write!(out, "{n}");
    });
    out.push_str(", storage_quota_gb: ");
    v1_decimal(out, storage_quota_gb);
    let _ = write!(out, ", monthly_token_limit: {monthly_token_limit}, token_overage: ");
    match token_overage {
        TokenOverageV1::Block => out.push_str("Block"),
        TokenOverageV1::BillPer1k { price } => {
            out.push_str("BillPer1k { price: ");
            v1_decimal(out, price);
            out.push_str(" }");
        }
    }
    out.push_str(", addons: [");
    for (i, addon) in addons.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        v1_str(out, addon);
    }
    out.push_str("] }");
}

fn v1_addon(out: &mut String, addon: &AddonV1) {
    let AddonV1 { id, name, currency, price, recurring, grants } = addon;
    let GrantsV1 { storage_gb, tokens, feature } = grants;
    out.push_str("AddonV1 { id: ");
    v1_str(out, id);
    out.push_str(", name: ");
    v1_option(out, name.as_deref(), v1_str);
    out.push_str(", currency: ");
    v1_str(out, currency);
    out.push_str(", price: ");
    v1_decimal(out, price);
    let _ = write!(out, ", recurring: {recurring}, grants: GrantsV1 {{ storage_gb: ");
    v1_option(out, storage_gb.as_ref(), v1_decimal);
    out.push_str(", tokens: ");
    v1_option(out, *tokens, |out, n| {
        let _ = write!(out, "{n}");
    });
    out.push_str(", feature: ");
    v1_option(out, feature.as_deref(), v1_str);
    out.push_str(" } }");
}
