//! The subscription domain's state and its one fold. The decider keeps this
//! state in memory per tenant; the `ledger` view stores it in sled. Both
//! change it only through [`TenantState::apply`] and [`CatalogState::apply`].

use std::collections::BTreeMap;

use events::{Addon, Envelope, Event, Invoice, Meter, Payment, PaymentOutcome, Plan};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::period::period_index;

/// 2^30: the spec's GB.
pub const GB_BYTES: u64 = 1 << 30;

/// One log record as a fold sees it.
#[derive(Debug, Clone, Copy)]
pub struct Fact<'a> {
    pub position: u64,
    /// SHA-256 of the record's bytes: the next event's `prev_hash`.
    pub hash: [u8; 32],
    pub envelope: &'a Envelope,
}

/// Where a tenant's (or the catalog's) hash chain stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub last_position: u64,
    pub last_hash: [u8; 32],
    pub last_at_us: i64,
}

impl Chain {
    /// Whether `fact` continues this chain: its `prev_hash` is the hash of
    /// the last event accepted (all zeros before the first). An event that
    /// does not was not written by the ledger's decider (a raw publish, a
    /// forgery) and is never folded.
    pub fn continued_by(&self, fact: &Fact<'_>) -> bool {
        fact.envelope.prev_hash == self.last_hash
    }

    fn advance(&mut self, fact: &Fact<'_>) {
        assert!(fact.position > self.last_position, "positions go backwards");
        self.last_position = fact.position;
        self.last_hash = fact.hash;
        self.last_at_us = self.last_at_us.max(fact.envelope.at_us);
    }
}

/// An event that does not continue its tenant's (or the catalog's) hash
/// chain: not written by the ledger's decider (a raw publish, a forgery, a
/// replayed message). [`TenantState::fold`] and [`CatalogState::fold`]
/// never apply one; the caller logs or reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainBreak {
    pub position: u64,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the event at {} does not continue its hash chain", self.position)
    }
}

impl Chain {
    /// `Ok` when `fact` continues this chain (see [`Chain::continued_by`]).
    fn check(&self, fact: &Fact<'_>) -> Result<(), ChainBreak> {
        if self.continued_by(fact) {
            Ok(())
        } else {
            Err(ChainBreak { position: fact.position })
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogState {
    pub plans: BTreeMap<String, Plan>,
    pub addons: BTreeMap<String, Addon>,
    pub chain: Chain,
    /// The idempotency keys of accepted catalog commands (the catalog's are
    /// per ledger; catalog commands are few, so they live in the state).
    pub keys: BTreeMap<String, KeyEntry>,
}

impl CatalogState {
    /// The one chain-checked fold of the catalog: what every reader of the
    /// log (engine loads, views, audit, explain) calls. Applies `fact` if
    /// it continues the catalog's chain.
    pub fn fold(&mut self, fact: &Fact<'_>) -> Result<(), ChainBreak> {
        self.chain.check(fact)?;
        self.apply(fact);
        Ok(())
    }

    /// Applies `fact` unchecked: for events the caller made itself (the
    /// decider's scratch states), never for events read from the log.
    pub fn apply(&mut self, fact: &Fact<'_>) {
        self.chain.advance(fact);
        if let Some((key, entry)) = KeyEntry::of(fact) {
            self.keys.entry(key).or_insert(entry);
        }
        match &fact.envelope.payload {
            Event::PlanDefined { plan } => {
                self.plans.entry(plan.id.clone()).or_insert_with(|| plan.clone());
            }
            Event::AddonDefined { addon } => {
                self.addons.entry(addon.id.clone()).or_insert_with(|| addon.clone());
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub plan: String,
    pub seats: u32,
    pub anchor_us: i64,
    pub cancelled_at_us: Option<i64>,
    /// Periods `0..closed_periods` are finalized.
    pub closed_periods: u32,
}

/// From `start_us` on (until the next segment or the cancellation), the
/// tenant was on `plan` with `seats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub start_us: i64,
    pub plan: String,
    pub seats: u32,
    pub position: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub position: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PurchaseStatus {
    /// Card payment not settled yet: grants nothing, charges nothing.
    Pending,
    Active,
    /// Card payment failed: no grant, no charge.
    Failed,
    /// A recurring add-on stopped by `cancel_addon`.
    Cancelled,
}

impl PurchaseStatus {
    pub fn name(self) -> &'static str {
        match self {
            PurchaseStatus::Pending => "pending",
            PurchaseStatus::Active => "active",
            PurchaseStatus::Failed => "failed",
            PurchaseStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    pub addon: String,
    pub quantity: u32,
    pub payment: Payment,
    pub status: PurchaseStatus,
    pub purchased_at_us: i64,
    pub activated_at_us: Option<i64>,
    pub ended_at_us: Option<i64>,
    pub paid_by_card: bool,
    pub reference: Option<String>,
    /// Position of the `AddonPurchased` event.
    pub position: u64,
}

/// An accepted `consume_tokens`, kept for the tenant's whole history as an
/// idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEntry {
    pub tokens: u64,
    pub position: u64,
}

/// An accepted command's `idempotency_key`, kept for the tenant's (or the
/// catalog's) whole history: what the command was and where its answer lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// The command's fingerprint ([`events::CommandKey::fingerprint`]).
    pub fingerprint: [u8; 32],
    /// Position of the command's last event: the `seq` it was answered.
    pub position: u64,
}

impl KeyEntry {
    /// The key `fact` records, if it carries one.
    fn of(fact: &Fact<'_>) -> Option<(String, KeyEntry)> {
        let key = fact.envelope.key.as_ref()?;
        Some((key.key.clone(), KeyEntry { fingerprint: key.fingerprint, position: fact.position }))
    }
}

/// What one fold leaves outside the tenant's state: its payload's
/// [`Spill`], and the command key its envelope carries. Iterate it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spills {
    pub payload: Option<Spill>,
    pub key: Option<Spill>,
}

impl IntoIterator for Spills {
    type Item = Spill;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Spill>, std::option::IntoIter<Spill>>;

    fn into_iter(self) -> Self::IntoIter {
        self.payload.into_iter().chain(self.key)
    }
}

/// Facts a fold produces that do not live in the tenant's state: the stored
/// view indexes them by key (token requests, live files, command keys) or
/// writes them as rows of their own (final invoices); the engine keeps
/// requests, files and command keys in memory until the view has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spill {
    Request {
        request: String,
        entry: RequestEntry,
    },
    /// A file stored (`Some`) or deleted (`None`).
    File {
        file: String,
        entry: Option<FileEntry>,
    },
    Invoice {
        period: u32,
        start_us: i64,
        end_us: i64,
        invoice: Invoice,
        position: u64,
    },
    /// An accepted command's idempotency key.
    Key {
        key: String,
        entry: KeyEntry,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantState {
    pub chain: Chain,
    pub subscription: Option<Subscription>,
    pub segments: Vec<Segment>,
    /// Live files: their number and total bytes. The files themselves are
    /// indexed outside the state (see [`Spill::File`]), so the state stays
    /// small however many files a tenant keeps.
    pub live_files: u64,
    pub used_bytes: u64,
    pub purchases: BTreeMap<String, Purchase>,
    /// Tokens consumed per period index: there is no reset job, a new period
    /// simply has no entry yet.
    pub tokens_by_period: BTreeMap<u32, u64>,
    /// Usage alerts: the thresholds, which have fired, and whether a
    /// meter's last recorded decision was a denial.
    pub alerts: Alerts,
}

/// The thresholds a tenant set with `set_usage_alerts` and where they stand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alerts {
    /// Percent of the token limit; `None`: never set ([`DEFAULT_ALERTS`]).
    pub tokens: Option<Vec<u32>>,
    /// Percent of the storage quota; `None`: never set.
    pub storage: Option<Vec<u32>>,
    /// The period whose token crossings have fired, and those thresholds:
    /// each fires once per period.
    pub tokens_fired: Option<(u32, Vec<u32>)>,
    /// Storage thresholds that fired, with the live bytes they fired at:
    /// one is armed again once live bytes fall below that level.
    pub storage_fired: Vec<(u32, u64)>,
    /// The meter's newest recorded decision was a denial (so the next
    /// denial is no news: `usage.denied` fires on the first after an
    /// admitted use).
    pub tokens_denied: bool,
    pub storage_denied: bool,
}

/// The thresholds of a meter whose tenant never set any (percent).
pub const DEFAULT_ALERTS: [u32; 2] = [80, 100];

impl Alerts {
    /// The meter's thresholds, ascending.
    pub fn thresholds(&self, meter: Meter) -> &[u32] {
        let set = match meter {
            Meter::Tokens => &self.tokens,
            Meter::Storage => &self.storage,
        };
        set.as_deref().unwrap_or(&DEFAULT_ALERTS)
    }

    /// Whether `threshold` has fired (for tokens: in period `k`) and is not
    /// armed again.
    pub fn fired(&self, meter: Meter, threshold: u32, k: u32) -> bool {
        match meter {
            Meter::Tokens => {
                self.tokens_fired.as_ref().is_some_and(|(p, t)| *p == k && t.contains(&threshold))
            }
            Meter::Storage => self.storage_fired.iter().any(|(t, _)| *t == threshold),
        }
    }

    /// Whether the meter's newest recorded decision was a denial.
    pub fn denied(&self, meter: Meter) -> bool {
        match meter {
            Meter::Tokens => self.tokens_denied,
            Meter::Storage => self.storage_denied,
        }
    }
}

impl TenantState {
    /// The one chain-checked fold of a tenant: what every reader of the log
    /// (engine loads, views, audit, explain) calls. Applies `fact` if it
    /// continues the tenant's chain and returns what does not belong in
    /// the state row.
    pub fn fold(&mut self, fact: &Fact<'_>) -> Result<Spills, ChainBreak> {
        self.chain.check(fact)?;
        Ok(self.apply(fact))
    }

    /// Applies `fact` unchecked: for events the caller made itself (the
    /// decider's scratch states, a consumer that checked the chain), never
    /// for events read from the log. Returns what does not belong in the
    /// state row.
    pub fn apply(&mut self, fact: &Fact<'_>) -> Spills {
        let key = KeyEntry::of(fact).map(|(key, entry)| Spill::Key { key, entry });
        Spills { payload: self.apply_payload(fact), key }
    }

    fn apply_payload(&mut self, fact: &Fact<'_>) -> Option<Spill> {
        self.chain.advance(fact);
        let at_us = fact.envelope.at_us;
        let position = fact.position;
        match &fact.envelope.payload {
            Event::Subscribed { plan, seats } => {
                self.subscription = Some(Subscription {
                    plan: plan.clone(),
                    seats: *seats,
                    anchor_us: at_us,
                    cancelled_at_us: None,
                    closed_periods: 0,
                });
                self.segments.push(Segment { start_us: at_us, plan: plan.clone(), seats: *seats, position });
            }
            Event::SeatsChanged { seats } => {
                if let Some(sub) = &mut self.subscription {
                    sub.seats = *seats;
                    self.segments.push(Segment {
                        start_us: at_us,
                        plan: sub.plan.clone(),
                        seats: *seats,
                        position,
                    });
                }
            }
            Event::PlanChanged { plan } => {
                if let Some(sub) = &mut self.subscription {
                    sub.plan = plan.clone();
                    self.segments.push(Segment {
                        start_us: at_us,
                        plan: plan.clone(),
                        seats: sub.seats,
                        position,
                    });
                }
            }
            Event::SubscriptionCancelled => {
                if let Some(sub) = &mut self.subscription {
                    sub.cancelled_at_us = Some(at_us);
                }
            }
            Event::FileStored { file, bytes } => {
                // The decider keeps live bytes and per-period tokens within
                // u64 (it rejects a command whose totals would not fit);
                // saturating keeps the fold total for anything else.
                self.live_files = self.live_files.saturating_add(1);
                self.used_bytes = self.used_bytes.saturating_add(*bytes);
                self.alerts.storage_denied = false;
                let entry = FileEntry { bytes: *bytes, position };
                return Some(Spill::File { file: file.clone(), entry: Some(entry) });
            }
            Event::FileDeleted { file, bytes } => {
                // The decider deletes only live files, with their bytes, so
                // these never go below zero for events the ledger wrote. They
                // saturate rather than assert because the fold must be total:
                // a message forged by someone able to write the stream and
                // continue the (unkeyed) chain must not stop a projector.
                self.live_files = self.live_files.saturating_sub(1);
                self.used_bytes = self.used_bytes.saturating_sub(*bytes);
                // Below the level a storage threshold fired at, it is armed
                // again.
                let used = self.used_bytes;
                self.alerts.storage_fired.retain(|(_, level)| used >= *level);
                return Some(Spill::File { file: file.clone(), entry: None });
            }
            Event::TokensConsumed { request, tokens, .. } => {
                if let Some(k) = self.period_at(at_us) {
                    let used = self.tokens_by_period.entry(k).or_default();
                    *used = used.saturating_add(*tokens);
                }
                self.alerts.tokens_denied = false;
                let entry = RequestEntry { tokens: *tokens, position };
                return Some(Spill::Request { request: request.clone(), entry });
            }
            Event::AddonPurchased { purchase, addon, quantity, payment } => {
                self.purchases.insert(
                    purchase.clone(),
                    Purchase {
                        addon: addon.clone(),
                        quantity: *quantity,
                        payment: *payment,
                        status: PurchaseStatus::Pending,
                        purchased_at_us: at_us,
                        activated_at_us: None,
                        ended_at_us: None,
                        paid_by_card: false,
                        reference: None,
                        position,
                    },
                );
            }
            Event::PaymentSettled { purchase, outcome, reference } => {
                if let Some(p) = self.purchases.get_mut(purchase) {
                    p.reference = reference.clone();
                    match outcome {
                        PaymentOutcome::Paid => p.paid_by_card = true,
                        PaymentOutcome::Failed => {
                            p.status = PurchaseStatus::Failed;
                            p.ended_at_us = Some(at_us);
                        }
                    }
                }
            }
            Event::AddonActivated { purchase } => {
                if let Some(p) = self.purchases.get_mut(purchase) {
                    p.status = PurchaseStatus::Active;
                    p.activated_at_us = Some(at_us);
                }
            }
            Event::AddonCancelled { purchase } => {
                if let Some(p) = self.purchases.get_mut(purchase) {
                    p.status = PurchaseStatus::Cancelled;
                    p.ended_at_us = Some(at_us);
                }
            }
            Event::PeriodFinalized { period, start_us, end_us, invoice } => {
                if let Some(sub) = &mut self.subscription {
                    sub.closed_periods = sub.closed_periods.max(period + 1);
                }
                return Some(Spill::Invoice {
                    period: *period,
                    start_us: *start_us,
                    end_us: *end_us,
                    invoice: invoice.clone(),
                    position,
                });
            }
            Event::UploadDenied { .. } => self.alerts.storage_denied = true,
            Event::TokensDenied { .. } => self.alerts.tokens_denied = true,
            Event::UsageAlertsSet { tokens, storage } => {
                if let Some(tokens) = tokens {
                    self.alerts.tokens = Some(tokens.clone());
                }
                if let Some(storage) = storage {
                    self.alerts.storage = Some(storage.clone());
                }
            }
            Event::UsageThresholdCrossed { meter: Meter::Tokens, threshold, period, .. } => {
                match &mut self.alerts.tokens_fired {
                    Some((k, fired)) if k == period => fired.push(*threshold),
                    other => *other = Some((*period, vec![*threshold])),
                }
            }
            Event::UsageThresholdCrossed { meter: Meter::Storage, threshold, limit, .. } => {
                // The live bytes at the threshold: re-armed below them.
                let level = (u128::from(*threshold) * u128::from(*limit)).div_ceil(100);
                self.alerts.storage_fired.push((*threshold, u64::try_from(level).unwrap_or(u64::MAX)));
            }
            Event::PlanDefined { .. } | Event::AddonDefined { .. } => {
                unreachable!("catalog events are folded into CatalogState")
            }
        }
        None
    }

    pub fn is_active(&self) -> bool {
        self.subscription.as_ref().is_some_and(|s| s.cancelled_at_us.is_none())
    }

    /// The period holding `t_us`, if subscribed by then.
    pub fn period_at(&self, t_us: i64) -> Option<u32> {
        self.subscription.as_ref().and_then(|s| period_index(s.anchor_us, t_us))
    }

    /// The plan segment in force at `t_us` (ignoring cancellation).
    pub fn segment_at(&self, t_us: i64) -> Option<&Segment> {
        self.segments.iter().rev().find(|s| s.start_us <= t_us)
    }

    /// Tokens consumed in period `k`.
    pub fn tokens_used(&self, k: u32) -> u64 {
        self.tokens_by_period.get(&k).copied().unwrap_or(0)
    }

    /// Whether a purchase grants at `t_us`: recurring while active, one-off
    /// from activation on.
    fn grants_at(p: &Purchase, t_us: i64) -> bool {
        p.activated_at_us.is_some_and(|a| a <= t_us) && p.ended_at_us.is_none_or(|e| t_us < e)
    }

    /// quota_bytes = floor((plan GB + active add-on GB x quantity) x 2^30),
    /// as of the current state; `u64::MAX` when it does not fit (the
    /// decider never lets a state get there: see [`Self::try_quota_bytes`]).
    pub fn quota_bytes(&self, catalog: &CatalogState) -> u64 {
        self.try_quota_bytes(catalog).unwrap_or(u64::MAX)
    }

    /// The storage quota computed exactly, `None` when it does not fit in
    /// a u64 byte count.
    pub fn try_quota_bytes(&self, catalog: &CatalogState) -> Option<u64> {
        let Some(sub) = &self.subscription else { return Some(0) };
        let Some(plan) = catalog.plans.get(&sub.plan) else { return Some(0) };
        let mut gb = plan.storage_quota_gb;
        for p in self.purchases.values().filter(|p| p.status == PurchaseStatus::Active) {
            if let Some(extra) = catalog.addons.get(&p.addon).and_then(|a| a.grants.storage_gb) {
                gb = gb.checked_add(extra.checked_mul(Decimal::from(p.quantity))?)?;
            }
        }
        gb.checked_mul(Decimal::from(GB_BYTES))?.floor().to_u64()
    }

    /// The token limit in force at `t_us`: the plan's monthly limit plus
    /// tokens granted by add-ons active then (a one-off grant counts only in
    /// the period it was activated). `u64::MAX` when it does not fit (the
    /// decider never lets a state get there).
    pub fn token_limit_at(&self, catalog: &CatalogState, t_us: i64) -> u64 {
        self.try_token_limit_at(catalog, t_us).unwrap_or(u64::MAX)
    }

    /// The token limit computed exactly, `None` when it does not fit a u64.
    pub fn try_token_limit_at(&self, catalog: &CatalogState, t_us: i64) -> Option<u64> {
        let Some(segment) = self.segment_at(t_us) else { return Some(0) };
        let Some(plan) = catalog.plans.get(&segment.plan) else { return Some(0) };
        let period = self.period_at(t_us);
        let mut limit = plan.monthly_token_limit;
        for p in self.purchases.values() {
            let Some(addon) = catalog.addons.get(&p.addon) else { continue };
            let Some(tokens) = addon.grants.tokens else { continue };
            let counts = if addon.recurring {
                Self::grants_at(p, t_us)
            } else {
                Self::grants_at(p, t_us) && p.activated_at_us.and_then(|a| self.period_at(a)) == period
            };
            if counts {
                limit = limit.checked_add(tokens.checked_mul(u64::from(p.quantity))?)?;
            }
        }
        Some(limit)
    }

    /// Every plan and add-on this tenant's history names: a catalog that
    /// lacks one is older than the tenant (another writer defined it).
    pub fn catalog_ids(&self) -> impl Iterator<Item = CatalogId<'_>> {
        self.segments
            .iter()
            .map(|s| CatalogId::Plan(s.plan.as_str()))
            .chain(self.purchases.values().map(|p| CatalogId::Addon(p.addon.as_str())))
    }
}

/// A plan or add-on a tenant refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogId<'a> {
    Plan(&'a str),
    Addon(&'a str),
}

impl CatalogState {
    /// Whether this catalog knows everything `state` refers to.
    pub fn covers(&self, state: &TenantState) -> bool {
        state.catalog_ids().all(|id| match id {
            CatalogId::Plan(p) => self.plans.contains_key(p),
            CatalogId::Addon(a) => self.addons.contains_key(a),
        })
    }
}
