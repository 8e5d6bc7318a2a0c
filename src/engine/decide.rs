//! The decider: `decide(state, command, at) -> events | rejection`. Pure: no
//! IO, no clock. Whatever it needs from storage (an idempotency key's
//! earlier use) the caller looks up first and passes in [`Context`].

use events::{Actor, Event, Meter, Payment, PaymentOutcome, TokenOverage};
use projections::domain::{
    CatalogState, Fact, FileEntry, KeyEntry, PurchaseStatus, RequestEntry, TenantState,
};
use projections::invoice::price_period;
use projections::period::period_bounds_us;

use super::command::{Command, Rejection};

/// What a decision produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Accepted: append these events.
    Accept(Vec<Event>),
    /// The same command was accepted before: nothing to append. `seq` is the
    /// position of the earlier event.
    Duplicate { seq: u64 },
    /// A business denial: append `event` for the audit, answer `rejection`.
    Deny { event: Event, rejection: Rejection },
}

/// Inputs the decider cannot compute purely.
pub struct Context<'a> {
    pub catalog: &'a CatalogState,
    /// The tenant's state (default when it has no events yet).
    pub state: &'a TenantState,
    pub actor: &'a Actor,
    pub at_us: i64,
    /// For `consume_tokens`: the request key's earlier accepted use, if any.
    pub earlier_request: Option<RequestEntry>,
    /// For `upload` and `delete_file`: the tenant's live file by that id.
    pub existing_file: Option<FileEntry>,
    /// A client already admitted this upload or token use offline: record
    /// it past the quota, up to [`OFFLINE_MARGIN_PERCENT`] (the use has
    /// happened).
    pub admitted_offline: bool,
    /// For a command that carries an `idempotency_key`: its fingerprint
    /// ([`Command::fingerprint`]), and the key's earlier accepted use, if any.
    pub fingerprint: Option<[u8; 32]>,
    pub earlier_key: Option<KeyEntry>,
}

/// How far past a quota or token limit uses admitted offline may take a
/// tenant, in percent. A client that admitted a use while the ledger was
/// unreachable has already let it happen, so the ledger records it past the
/// limit, but only this far: the overshoot is bounded by the ledger, not by
/// trust in the client (which may be the tenant's own code). Beyond it an
/// offline use is denied (and recorded) like any other.
pub const OFFLINE_MARGIN_PERCENT: u64 = 10;

fn with_offline_margin(limit: u64, admitted_offline: bool) -> u64 {
    if admitted_offline {
        limit
            .saturating_add(limit / 100 * OFFLINE_MARGIN_PERCENT + limit % 100 * OFFLINE_MARGIN_PERCENT / 100)
    } else {
        limit
    }
}

/// Who may send a command.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    /// The control panel only.
    Admin,
    /// The control panel and the tenant's admins.
    Admins,
    /// Anyone of the tenant, and the control panel.
    Anyone,
}

fn authorize(actor: &Actor, tenant: Option<&str>, who: Who) -> Result<(), Rejection> {
    let allowed = match (actor, tenant) {
        (Actor::Admin, _) => true,
        (Actor::TenantAdmin { tenant: own }, Some(t)) => own == t && who != Who::Admin,
        (Actor::TenantUser { tenant: own }, Some(t)) => own == t && who == Who::Anyone,
        (_, None) => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Rejection::new(
            "forbidden",
            format!(
                "{} may not do this{}",
                actor.label(),
                match tenant {
                    Some(t) => format!(" for tenant {t}"),
                    None => String::new(),
                }
            ),
        ))
    }
}

fn invalid_amount(what: &str, value: i64) -> Rejection {
    Rejection::new("invalid_amount", format!("{what} must be at least 1, got {value}"))
}

fn not_subscribed(tenant: &str) -> Rejection {
    Rejection::new("not_subscribed", format!("tenant {tenant} has no active subscription"))
}

fn require_active<'s>(
    state: &'s TenantState,
    tenant: &str,
) -> Result<&'s projections::domain::Subscription, Rejection> {
    match &state.subscription {
        Some(sub) if sub.cancelled_at_us.is_none() => Ok(sub),
        _ => Err(not_subscribed(tenant)),
    }
}

/// `seats` within the plan's range. Below 1 or past `u32::MAX` no plan
/// allows, so that is the request's fault; otherwise the plan's.
fn check_seats(plan: &events::Plan, seats: i64) -> Result<u32, Rejection> {
    let Some(seats) = u32::try_from(seats).ok().filter(|s| *s >= 1) else {
        return Err(Rejection::new(
            "invalid_seats",
            format!("seats must be from 1 to {}, not {seats}", u32::MAX),
        )
        .from_request());
    };
    if seats >= plan.min_seats && plan.max_seats.is_none_or(|max| seats <= max) {
        return Ok(seats);
    }
    Err(Rejection::new(
        "invalid_seats",
        format!(
            "plan {} allows {} to {} seats, not {seats}",
            plan.id,
            plan.min_seats,
            plan.max_seats.map_or("unlimited".to_string(), |m| m.to_string())
        ),
    ))
}

fn unknown_plan(plan: &str) -> Rejection {
    Rejection::new("unknown_plan", format!("no plan {plan}"))
}

/// The plan a subscription is on. The engine loads the catalog again when
/// a tenant names a plan it lacks (another writer defined it), so this
/// fails only for a history the ledger did not write.
fn plan_of<'c>(
    catalog: &'c CatalogState,
    sub: &projections::domain::Subscription,
) -> Result<&'c events::Plan, Rejection> {
    catalog.plans.get(&sub.plan).ok_or_else(|| {
        Rejection::new("unknown_plan", format!("the subscription's plan {} is not in the catalog", sub.plan))
    })
}

/// Past what the ledger's totals can hold: `invalid_amount`, caused by the
/// state the command would add to.
fn too_large(what: &str) -> Rejection {
    Rejection::new(
        "invalid_amount",
        format!("this would make {what} too large to record exactly; nothing was changed"),
    )
    .from_state()
}

/// An envelope around `payload` as the tenant's next event, for deciding
/// what the state would be after it (never encoded for the log).
fn scratch_envelope(ctx: &Context<'_>, tenant: &str, payload: Event) -> events::Envelope {
    events::Envelope {
        event_id: 0,
        tenant: tenant.to_string(),
        at_us: ctx.at_us,
        actor: ctx.actor.clone(),
        prev_hash: [0; 32],
        payload,
        offline: None,
        key: None,
    }
}

fn scratch_apply(state: &mut TenantState, envelope: &events::Envelope) {
    let position = state.chain.last_position + 1;
    state.apply(&Fact { position, hash: [0; 32], envelope });
}

/// The spec's Bounds: a command whose effect cannot be represented is
/// rejected and changes nothing. After `events`, the tenant's storage
/// quota and token limit must fit a u64 and its current period must price
/// with amounts that fit a `Decimal`; with `whole_invoice`, the period's
/// invoice must also still fit one event (the codec's size limit), so
/// `close_period` can always record it.
fn representable(
    ctx: &Context<'_>,
    tenant: &str,
    events: &[Event],
    whole_invoice: bool,
) -> Result<(), Rejection> {
    let mut after = ctx.state.clone();
    for payload in events {
        scratch_apply(&mut after, &scratch_envelope(ctx, tenant, payload.clone()));
    }
    after.try_quota_bytes(ctx.catalog).ok_or_else(|| too_large("the storage quota"))?;
    after.try_token_limit_at(ctx.catalog, ctx.at_us).ok_or_else(|| too_large("the token limit"))?;
    let Some(k) = after.period_at(ctx.at_us) else { return Ok(()) };
    let finalized = finalize(&after, ctx.catalog, k).map_err(|_| too_large("the period's invoice"))?;
    if whole_invoice {
        events::encode(&scratch_envelope(ctx, tenant, finalized)).map_err(|e| {
            Rejection::new(
                "invalid_amount",
                format!("the period's invoice would no longer fit one event ({e}); nothing was changed"),
            )
            .from_state()
        })?;
    }
    Ok(())
}

/// Accepts `events` once [`representable`].
fn accept(ctx: &Context<'_>, tenant: &str, events: Vec<Event>) -> Result<Decision, Rejection> {
    representable(ctx, tenant, &events, true)?;
    Ok(Decision::Accept(events))
}

fn negative(what: &str, value: &rust_decimal::Decimal) -> Result<(), Rejection> {
    if value.is_sign_negative() {
        Err(Rejection::new("invalid_amount", format!("{what} {value} is negative")))
    } else {
        Ok(())
    }
}

/// Who may send each command (the spec's command table).
fn who(command: &Command) -> Who {
    match command {
        Command::DefinePlan(_)
        | Command::DefineAddon(_)
        | Command::Subscribe { .. }
        | Command::ChangePlan { .. }
        | Command::Cancel { .. }
        | Command::SettlePayment { .. }
        | Command::ClosePeriod { .. } => Who::Admin,
        Command::SetSeats { .. }
        | Command::PurchaseAddon { .. }
        | Command::CancelAddon { .. }
        | Command::SetUsageAlerts { .. } => Who::Admins,
        Command::Upload { .. } | Command::DeleteFile { .. } | Command::ConsumeTokens { .. } => Who::Anyone,
    }
}

/// Decides one command against the state as it stands: who may send it,
/// then its idempotency key's earlier use (the same command again answers
/// as the first time; another command under the key is refused), then the
/// command's own rules.
pub fn decide(ctx: &Context<'_>, command: &Command) -> Result<Decision, Rejection> {
    authorize(ctx.actor, command.tenant(), who(command))?;
    if let (Some(fingerprint), Some(earlier)) = (ctx.fingerprint, ctx.earlier_key) {
        return if earlier.fingerprint == fingerprint {
            Ok(Decision::Duplicate { seq: earlier.position })
        } else {
            Err(Rejection::new(
                "idempotency_conflict",
                format!(
                    "idempotency_key was used for another {} command (answered at seq {}); use a new key",
                    command.name(),
                    earlier.position
                ),
            ))
        };
    }
    decide_command(ctx, command)
}

fn decide_command(ctx: &Context<'_>, command: &Command) -> Result<Decision, Rejection> {
    let Context { catalog, state, at_us, .. } = ctx;
    let at_us = *at_us;
    match command {
        Command::DefinePlan(plan) => {
            negative("price", &plan.price)?;
            negative("storage_quota_gb", &plan.storage_quota_gb)?;
            if let TokenOverage::BillPer1k { price } = &plan.token_overage {
                negative("bill_per_1k", price)?;
            }
            if plan.min_seats < 1 || plan.max_seats.is_some_and(|m| m < plan.min_seats) {
                let rejection =
                    Rejection::new("invalid_seats", "min_seats must be >= 1 and max_seats >= min_seats");
                // Below 1 is a bound; above max_seats is a comparison of two fields.
                let bound = plan.min_seats < 1 || plan.max_seats == Some(0);
                return Err(if bound { rejection.from_request() } else { rejection.from_combination() });
            }
            if catalog.plans.contains_key(&plan.id) {
                return Err(Rejection::new(
                    "plan_exists",
                    format!("plan {} exists; plans are immutable", plan.id),
                ));
            }
            for addon in &plan.addons {
                if !catalog.addons.contains_key(addon) {
                    return Err(Rejection::new(
                        "unknown_addon",
                        format!("plan lists add-on {addon}, which is not defined"),
                    ));
                }
            }
            Ok(Decision::Accept(vec![Event::PlanDefined { plan: plan.clone() }]))
        }
        Command::DefineAddon(addon) => {
            negative("price", &addon.price)?;
            if let Some(gb) = &addon.grants.storage_gb {
                negative("storage_gb", gb)?;
            }
            if catalog.addons.contains_key(&addon.id) {
                return Err(Rejection::new(
                    "addon_exists",
                    format!("add-on {} exists; add-ons are immutable", addon.id),
                ));
            }
            Ok(Decision::Accept(vec![Event::AddonDefined { addon: addon.clone() }]))
        }
        Command::Subscribe { tenant, plan, seats } => {
            if state.subscription.is_some() {
                return Err(Rejection::new(
                    "already_subscribed",
                    format!("tenant {tenant} already has a subscription"),
                ));
            }
            let p = catalog.plans.get(plan).ok_or_else(|| unknown_plan(plan))?;
            let seats = check_seats(p, *seats)?;
            accept(ctx, tenant, vec![Event::Subscribed { plan: plan.clone(), seats }])
        }
        Command::SetSeats { tenant, seats } => {
            let sub = require_active(state, tenant)?;
            let seats = check_seats(plan_of(catalog, sub)?, *seats)?;
            accept(ctx, tenant, vec![Event::SeatsChanged { seats }])
        }
        Command::ChangePlan { tenant, plan } => {
            let sub = require_active(state, tenant)?;
            let new = catalog.plans.get(plan).ok_or_else(|| unknown_plan(plan))?;
            let old = plan_of(catalog, sub)?;
            if new.currency != old.currency {
                return Err(Rejection::new(
                    "currency_mismatch",
                    format!(
                        "plan {} bills in {}, the subscription in {}",
                        new.id, new.currency, old.currency
                    ),
                ));
            }
            check_seats(new, i64::from(sub.seats))?;
            for (purchase, p) in &state.purchases {
                let recurring = catalog.addons.get(&p.addon).is_some_and(|a| a.recurring);
                if recurring && p.status == PurchaseStatus::Active && !new.addons.contains(&p.addon) {
                    return Err(Rejection::new(
                        "addon_not_available_on_plan",
                        format!(
                            "active add-on {} ({purchase}) is not available on plan {}; cancel it first",
                            p.addon, new.id
                        ),
                    ));
                }
            }
            accept(ctx, tenant, vec![Event::PlanChanged { plan: plan.clone() }])
        }
        Command::Cancel { tenant } => {
            let sub = require_active(state, tenant)?;
            let last = period_of(state, at_us)?;
            let first = sub.closed_periods;
            let cancel = Event::SubscriptionCancelled;
            // Price the unclosed periods as they stand once cancelled.
            let mut after = (*state).clone();
            scratch_apply(&mut after, &scratch_envelope(ctx, tenant, cancel.clone()));
            // The digest covers the history before this command, which a
            // replay sees the same way.
            after.chain = state.chain;
            let mut events = vec![cancel];
            for k in first..=last {
                events.push(finalize(&after, catalog, k)?);
            }
            Ok(Decision::Accept(events))
        }
        Command::Upload { tenant, file, bytes } => {
            let bytes = u64::try_from(*bytes).map_err(|_| {
                Rejection::new("invalid_amount", format!("bytes must not be negative, got {bytes}"))
            })?;
            require_active(state, tenant)?;
            if let Some(existing) = ctx.existing_file {
                return if existing.bytes == bytes {
                    Ok(Decision::Duplicate { seq: existing.position })
                } else {
                    Err(Rejection::new(
                        "file_exists",
                        format!("file {file} is stored with {} bytes, not {bytes}", existing.bytes),
                    ))
                };
            }
            let used = state.used_bytes;
            let quota = state.quota_bytes(catalog);
            // Exact: a sum past u64 is past any quota, so it is denied.
            let fits = used
                .checked_add(bytes)
                .is_some_and(|after| after <= with_offline_margin(quota, ctx.admitted_offline));
            if fits {
                let mut events = vec![Event::FileStored { file: file.clone(), bytes }];
                let k = period_of(state, at_us)?;
                events.extend(crossings(state, Meter::Storage, used.saturating_add(bytes), quota, k));
                Ok(Decision::Accept(events))
            } else {
                Ok(Decision::Deny {
                    event: Event::UploadDenied {
                        file: file.clone(),
                        bytes,
                        used_bytes: used,
                        quota_bytes: quota,
                    },
                    rejection: Rejection::new(
                        "storage_quota_exceeded",
                        format!("{used} bytes used + {bytes} requested > {quota} bytes quota"),
                    )
                    .with("used", used)
                    .with("quota", quota)
                    .with("requested", bytes),
                })
            }
        }
        Command::DeleteFile { tenant, file } => {
            require_active(state, tenant)?;
            let entry = ctx.existing_file.ok_or_else(|| {
                Rejection::new("unknown_file", format!("tenant {tenant} has no file {file}"))
            })?;
            Ok(Decision::Accept(vec![Event::FileDeleted { file: file.clone(), bytes: entry.bytes }]))
        }
        Command::ConsumeTokens { tenant, request, tokens } => {
            if *tokens < 1 {
                return Err(invalid_amount("tokens", *tokens));
            }
            let tokens = *tokens as u64;
            let sub = require_active(state, tenant)?;
            if let Some(earlier) = ctx.earlier_request {
                return if earlier.tokens == tokens {
                    Ok(Decision::Duplicate { seq: earlier.position })
                } else {
                    Err(Rejection::new(
                        "idempotency_conflict",
                        format!("request {request} was accepted for {} tokens, not {tokens}", earlier.tokens),
                    ))
                };
            }
            let plan = plan_of(catalog, sub)?;
            let accepted =
                Event::TokensConsumed { request: request.clone(), tokens, offline: ctx.admitted_offline };
            let period = period_of(state, at_us)?;
            let used = state.tokens_used(period);
            let limit = state.token_limit_at(catalog, at_us);
            if let TokenOverage::BillPer1k { .. } = plan.token_overage {
                // Always allowed, so the total must stay exact: the period's
                // count and its overage line must still be representable.
                let after = used.checked_add(tokens).ok_or_else(|| too_large("the period's token count"))?;
                let mut events = vec![accepted];
                events.extend(crossings(state, Meter::Tokens, after, limit, period));
                representable(ctx, tenant, &events, false)?;
                return Ok(Decision::Accept(events));
            }
            let fits = used
                .checked_add(tokens)
                .is_some_and(|after| after <= with_offline_margin(limit, ctx.admitted_offline));
            if fits {
                let mut events = vec![accepted];
                events.extend(crossings(state, Meter::Tokens, used + tokens, limit, period));
                Ok(Decision::Accept(events))
            } else {
                Ok(Decision::Deny {
                    event: Event::TokensDenied { request: request.clone(), tokens, used, limit },
                    rejection: Rejection::new(
                        "token_limit_exceeded",
                        format!("{used} tokens used + {tokens} requested > {limit} limit this period"),
                    )
                    .with("used", used)
                    .with("limit", limit)
                    .with("requested", tokens),
                })
            }
        }
        Command::PurchaseAddon { tenant, addon, purchase, quantity, payment } => {
            if *quantity < 1 {
                return Err(invalid_amount("quantity", *quantity));
            }
            let quantity = u32::try_from(*quantity).map_err(|_| {
                Rejection::new("invalid_amount", format!("quantity {quantity} is out of range"))
            })?;
            let sub = require_active(state, tenant)?;
            if let Some(earlier) = state.purchases.get(purchase) {
                return if earlier.addon == *addon
                    && earlier.quantity == quantity
                    && earlier.payment == *payment
                {
                    Ok(Decision::Duplicate { seq: earlier.position })
                } else {
                    Err(Rejection::new(
                        "idempotency_conflict",
                        format!(
                            "purchase {purchase} was made for {} x {} by {:?}",
                            earlier.quantity, earlier.addon, earlier.payment
                        ),
                    ))
                };
            }
            let a = catalog
                .addons
                .get(addon)
                .ok_or_else(|| Rejection::new("unknown_addon", format!("no add-on {addon}")))?;
            let plan = plan_of(catalog, sub)?;
            if !plan.addons.contains(addon) {
                return Err(Rejection::new(
                    "addon_not_available_on_plan",
                    format!("add-on {addon} is not available on plan {}", plan.id),
                ));
            }
            if a.currency != plan.currency {
                return Err(Rejection::new(
                    "currency_mismatch",
                    format!(
                        "add-on {addon} is priced in {}, the subscription in {}",
                        a.currency, plan.currency
                    ),
                ));
            }
            let purchased = Event::AddonPurchased {
                purchase: purchase.clone(),
                addon: addon.clone(),
                quantity,
                payment: *payment,
            };
            match payment {
                Payment::Invoice => {
                    accept(ctx, tenant, vec![purchased, Event::AddonActivated { purchase: purchase.clone() }])
                }
                Payment::Card if a.recurring => Err(Rejection::new(
                    "unsupported_payment",
                    format!("add-on {addon} is recurring; card payment is for one-off add-ons"),
                )),
                Payment::Card => accept(ctx, tenant, vec![purchased]),
            }
        }
        Command::SettlePayment { tenant, purchase, outcome, reference } => {
            require_active(state, tenant)?;
            let p = state.purchases.get(purchase).ok_or_else(|| {
                Rejection::new("unknown_purchase", format!("tenant {tenant} has no purchase {purchase}"))
            })?;
            if p.status != PurchaseStatus::Pending || p.paid_by_card {
                return Err(Rejection::new(
                    "payment_not_pending",
                    format!("purchase {purchase} is {}, not awaiting payment", p.status.name()),
                ));
            }
            let settled = Event::PaymentSettled {
                purchase: purchase.clone(),
                outcome: *outcome,
                reference: reference.clone(),
            };
            let events = match outcome {
                PaymentOutcome::Paid => vec![settled, Event::AddonActivated { purchase: purchase.clone() }],
                PaymentOutcome::Failed => vec![settled],
            };
            accept(ctx, tenant, events)
        }
        Command::CancelAddon { tenant, purchase } => {
            require_active(state, tenant)?;
            let p = state.purchases.get(purchase).ok_or_else(|| {
                Rejection::new("unknown_purchase", format!("tenant {tenant} has no purchase {purchase}"))
            })?;
            let recurring = catalog.addons.get(&p.addon).is_some_and(|a| a.recurring);
            if !recurring || p.status != PurchaseStatus::Active {
                return Err(Rejection::new(
                    "unknown_purchase",
                    format!("purchase {purchase} is not an active recurring add-on ({})", p.status.name()),
                ));
            }
            Ok(Decision::Accept(vec![Event::AddonCancelled { purchase: purchase.clone() }]))
        }
        Command::SetUsageAlerts { tenant, tokens, storage } => {
            require_active(state, tenant)?;
            Ok(Decision::Accept(vec![Event::UsageAlertsSet {
                tokens: tokens.clone(),
                storage: storage.clone(),
            }]))
        }
        Command::ClosePeriod { tenant } => {
            let sub = require_active(state, tenant)?;
            let k = sub.closed_periods;
            let (_, end_us) = period_bounds_us(sub.anchor_us, k);
            if at_us < end_us {
                return Err(Rejection::new(
                    "period_not_ended",
                    format!("period {k} ends at {}", ledger_client::protocol::rfc3339(end_us)),
                ));
            }
            Ok(Decision::Accept(vec![finalize(state, catalog, k)?]))
        }
    }
}

/// The usage alert crossings a recorded use of `meter` makes, bringing it
/// to `used` of `limit` in period `k`: each of the tenant's thresholds
/// reached (`used x 100 >= threshold x limit`, exactly) that has not fired
/// (tokens: in this period; storage: since it was armed again), ascending.
/// A limit of 0 crosses nothing; nor does a change of limit by itself: only
/// a use calls this.
fn crossings(state: &TenantState, meter: Meter, used: u64, limit: u64, k: u32) -> Vec<Event> {
    let Some(sub) = &state.subscription else { return Vec::new() };
    if limit == 0 {
        return Vec::new();
    }
    let (start_us, end_us) = period_bounds_us(sub.anchor_us, k);
    state
        .alerts
        .thresholds(meter)
        .iter()
        .filter(|t| u128::from(used) * 100 >= u128::from(**t) * u128::from(limit))
        .filter(|t| !state.alerts.fired(meter, **t, k))
        .map(|t| Event::UsageThresholdCrossed {
            meter,
            threshold: *t,
            used,
            limit,
            period: k,
            start_us,
            end_us,
        })
        .collect()
}

/// The period holding `at_us`. Ledger time keeps commands after the anchor;
/// only a command retried after another writer's conflict could carry an
/// older `at`, and it is refused rather than priced before the subscription.
fn period_of(state: &TenantState, at_us: i64) -> Result<u32, Rejection> {
    state.period_at(at_us).ok_or_else(|| {
        Rejection::new(
            "clock_regression",
            format!("at {} is before the subscription began", ledger_client::protocol::rfc3339(at_us)),
        )
    })
}

/// The event finalizing period `k`. Fails only for a history the ledger's
/// checks would not have let through (an amount past `Decimal`).
fn finalize(state: &TenantState, catalog: &CatalogState, k: u32) -> Result<Event, Rejection> {
    let priced = price_period(state, catalog, k).ok_or_else(|| too_large("the period's invoice"))?;
    Ok(Event::PeriodFinalized {
        period: k,
        start_us: priced.start_us,
        end_us: priced.end_us,
        invoice: priced.invoice,
    })
}
