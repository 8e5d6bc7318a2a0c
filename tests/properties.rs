//! Property tests over the decider and the fold, in memory (no IO).
//!
//! A catalog with a `block` plan and a `bill` (bill_per_1k) plan, one tenant
//! subscribed to one of them, then a generated run of commands (token use
//! with request keys from a small pool, uploads and deletes of a few files,
//! seats, add-on purchases and payments, period closes, time moving forward
//! across a few periods, sometimes a cancellation at the end). Every command
//! is decided against the state as it stands; what it produces is enveloped,
//! hash-chained, encoded, and folded with `TenantState::apply`.
//!
//! Properties:
//! (a) no over-admit: on `block`, the tokens used in every period stay within
//!     the limit in force; on either plan, used bytes stay within the quota;
//! (b) every priced or finalized invoice adds up: total = sum of lines,
//!     paid = sum of paid lines, amount_due = total - paid;
//! (c) the fold resumes: folding a prefix, storing the state (bincode, as the
//!     `ledger` view does) and folding the rest into it gives the state (and
//!     the bytes) of folding everything at once.
//!
//! Token and storage add-ons are never cancelled here: a cancellation lowers
//! the limit in force below what was rightly admitted before it, so (a)
//! would not hold as stated. Only the feature-only `support` add-on is.

use std::collections::HashMap;

use events::{Actor, Envelope, Event, Invoice, Payment, PaymentOutcome, CATALOG_TENANT};
use ledger::command::{parse_at, parse_line, Command, Rejection};
use ledger::decide::{decide, Context, Decision};
use projections::domain::{CatalogState, Fact, FileEntry, RequestEntry, Spill, TenantState};
use projections::invoice::price_period;
use projections::period::period_bounds_us;
use proptest::prelude::*;
use rust_decimal::Decimal;

const TENANT: &str = "acme";
/// Both plans' monthly token limit.
const LIMIT: u64 = 1000;
const DAY_US: i64 = 86_400_000_000;
const HOUR_US: i64 = 3_600_000_000;

/// Both plans list every add-on. Storage quotas are tiny (0.000001 GB =
/// 1073 bytes) so that uploads from `FILE_SIZES` reach them.
const CATALOG: &[&str] = &[
    r#"{"cmd":"define_addon","addon":{"id":"tok-pack","currency":"USD","price":"10.00","recurring":false,"grants":{"tokens":500}}}"#,
    r#"{"cmd":"define_addon","addon":{"id":"tok-rec","currency":"USD","price":"3.33","recurring":true,"grants":{"tokens":300}}}"#,
    r#"{"cmd":"define_addon","addon":{"id":"disk","currency":"USD","price":"2.50","recurring":true,"grants":{"storage_gb":"0.0000005"}}}"#,
    r#"{"cmd":"define_addon","addon":{"id":"disk-pack","currency":"USD","price":"1.99","recurring":false,"grants":{"storage_gb":"0.000001"}}}"#,
    r#"{"cmd":"define_addon","addon":{"id":"support","currency":"USD","price":"49.99","recurring":true,"grants":{"feature":"support"}}}"#,
    r#"{"cmd":"define_plan","plan":{"id":"block","currency":"USD","price":"8.00","per_seat":true,"min_seats":1,"max_seats":5,"storage_quota_gb":"0.000001","monthly_token_limit":1000,"token_overage":"block","addons":["tok-pack","tok-rec","disk","disk-pack","support"]}}"#,
    r#"{"cmd":"define_plan","plan":{"id":"bill","currency":"USD","price":"20.00","per_seat":false,"min_seats":1,"max_seats":3,"storage_quota_gb":"0.000001","monthly_token_limit":1000,"token_overage":{"bill_per_1k":"0.37"},"addons":["tok-pack","tok-rec","disk","disk-pack","support"]}}"#,
];

const ADDONS: &[&str] = &["tok-pack", "tok-rec", "disk", "disk-pack", "support"];
const FILE_SIZES: &[i64] = &[0, 1, 100, 256, 700, 1000];
/// Anchors: a plain one, a month end (clamped periods), a leap February.
const ANCHORS: &[&str] = &["2026-03-01T00:00:00Z", "2026-01-31T12:00:00Z", "2028-01-30T15:45:00Z"];

/// Rejections a well-formed run can meet; anything else is a finding.
const EXPECTED_REJECTIONS: &[&str] = &[
    "idempotency_conflict",
    "file_exists",
    "unknown_file",
    "invalid_seats",
    "period_not_ended",
    "not_subscribed",
    "unknown_purchase",
    "payment_not_pending",
    "unsupported_payment",
];

#[derive(Debug, Clone)]
enum Op {
    Consume { request: u8, tokens: u64 },
    Upload { file: u8, bytes: i64 },
    Delete { file: u8 },
    SetSeats { seats: i64 },
    Purchase { purchase: u8, addon: usize, quantity: i64, card: bool },
    Settle { purchase: u8, paid: bool },
    CancelAddon { purchase: u8 },
    ClosePeriod,
}

#[derive(Debug, Clone)]
struct Scenario {
    block: bool,
    anchor: &'static str,
    seats: i64,
    /// (time advance in microseconds, command), in order.
    steps: Vec<(i64, Op)>,
    cancel_at_end: bool,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // A key's usual size (retries are duplicates) or any size (conflicts).
        4 => (0..REQUESTS).prop_map(|request| Op::Consume { request, tokens: usual_tokens(request) }),
        4 => (0..REQUESTS, 1..=2 * LIMIT).prop_map(|(request, tokens)| Op::Consume { request, tokens }),
        4 => (0..4u8, prop::sample::select(FILE_SIZES)).prop_map(|(file, bytes)| Op::Upload { file, bytes }),
        2 => (0..4u8).prop_map(|file| Op::Delete { file }),
        1 => (0..=6i64).prop_map(|seats| Op::SetSeats { seats }),
        3 => (0..4u8, 0..ADDONS.len(), 1..=3i64, any::<bool>())
            .prop_map(|(purchase, addon, quantity, card)| Op::Purchase { purchase, addon, quantity, card }),
        1 => (0..4u8, any::<bool>()).prop_map(|(purchase, paid)| Op::Settle { purchase, paid }),
        1 => (0..4u8).prop_map(|purchase| Op::CancelAddon { purchase }),
        2 => Just(Op::ClosePeriod),
    ]
}

/// Size of the pool of request keys.
const REQUESTS: u8 = 12;

fn usual_tokens(request: u8) -> u64 {
    50 + 97 * u64::from(request)
}

fn advance() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => Just(0i64),
        3 => 1..HOUR_US,
        3 => DAY_US..=3 * DAY_US,
        1 => 10 * DAY_US..=20 * DAY_US,
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        any::<bool>(),
        prop::sample::select(ANCHORS),
        1..=3i64,
        prop::collection::vec((advance(), op()), 1..=40),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(block, anchor, seats, steps, cancel_at_end)| Scenario {
            block,
            anchor,
            seats,
            steps,
            cancel_at_end,
        })
}

/// One tenant event as it went to the log.
struct Recorded {
    position: u64,
    bytes: Vec<u8>,
}

/// The decider's world: catalog, one tenant, the indexes the view keeps
/// outside the state (request keys, live files), and the tenant's log.
struct World {
    catalog: CatalogState,
    state: TenantState,
    requests: HashMap<String, RequestEntry>,
    files: HashMap<String, FileEntry>,
    position: u64,
    now: i64,
    log: Vec<Recorded>,
    finalized: Vec<(u32, Invoice)>,
    accepted_tokens: u64,
}

impl World {
    fn new(at_us: i64) -> World {
        let mut w = World {
            catalog: CatalogState::default(),
            state: TenantState::default(),
            requests: HashMap::new(),
            files: HashMap::new(),
            position: 0,
            now: at_us,
            log: Vec::new(),
            finalized: Vec::new(),
            accepted_tokens: 0,
        };
        for line in CATALOG {
            let submission = parse_line(line).expect("catalog lines parse");
            match w.run(&submission.actor, &submission.command) {
                Ok(Decision::Accept(_)) => {}
                other => panic!("{line}: {other:?}"),
            }
        }
        w
    }

    /// Decides `command` as `actor` at `self.now` and folds what it produced.
    fn run(&mut self, actor: &Actor, command: &Command) -> Result<Decision, Rejection> {
        let earlier_request = match command {
            Command::ConsumeTokens { request, .. } => self.requests.get(request).copied(),
            _ => None,
        };
        let existing_file = match command {
            Command::Upload { file, .. } | Command::DeleteFile { file, .. } => self.files.get(file).copied(),
            _ => None,
        };
        let ctx = Context {
            catalog: &self.catalog,
            state: &self.state,
            actor,
            at_us: self.now,
            earlier_request,
            existing_file,
            admitted_offline: false,
            fingerprint: None,
            earlier_key: None,
        };
        let decision = decide(&ctx, command);
        // The idempotency rules, as a model.
        match (command, &decision) {
            (Command::ConsumeTokens { tokens, .. }, _)
                if earlier_request.is_some() && self.state.is_active() =>
            {
                let earlier = earlier_request.unwrap();
                if earlier.tokens == *tokens as u64 {
                    assert_eq!(decision, Ok(Decision::Duplicate { seq: earlier.position }), "{command:?}");
                } else {
                    assert_eq!(decision.as_ref().map_err(|r| r.code), Err("idempotency_conflict"));
                }
            }
            (Command::Upload { bytes, .. }, _) if existing_file.is_some() && self.state.is_active() => {
                let existing = existing_file.unwrap();
                if existing.bytes as i64 == *bytes {
                    assert_eq!(decision, Ok(Decision::Duplicate { seq: existing.position }), "{command:?}");
                } else {
                    assert_eq!(decision.as_ref().map_err(|r| r.code), Err("file_exists"));
                }
            }
            _ => {}
        }
        let produced = match &decision {
            Ok(Decision::Accept(events)) => events.clone(),
            Ok(Decision::Deny { event, .. }) => vec![event.clone()],
            Ok(Decision::Duplicate { .. }) | Err(_) => vec![],
        };
        for payload in produced {
            self.append(actor, payload);
        }
        decision
    }

    /// Envelopes, chains, encodes and folds one event.
    fn append(&mut self, actor: &Actor, payload: Event) {
        self.position += 1;
        let catalog = payload.is_catalog();
        let chain = if catalog { self.catalog.chain } else { self.state.chain };
        let envelope = Envelope {
            event_id: u128::from(self.position),
            tenant: if catalog { CATALOG_TENANT.into() } else { TENANT.into() },
            at_us: self.now,
            actor: actor.clone(),
            prev_hash: chain.last_hash,
            payload,
            offline: None,
            key: None,
        };
        let bytes = events::encode(&envelope).expect("the decider emits valid events");
        assert_eq!(events::decode(&bytes).expect("encoded events decode"), envelope);
        let fact = Fact { position: self.position, hash: events::event_hash(&bytes), envelope: &envelope };
        assert!(chain.continued_by(&fact));
        if catalog {
            self.catalog.apply(&fact);
            return;
        }
        // These streams carry no idempotency keys: only the payload spills.
        match self.state.apply(&fact).payload {
            Some(Spill::Request { request, entry }) => {
                self.accepted_tokens += entry.tokens;
                let before = self.requests.insert(request.clone(), entry);
                assert!(before.is_none(), "request {request} accepted twice");
            }
            Some(Spill::File { file, entry: Some(entry) }) => {
                let before = self.files.insert(file.clone(), entry);
                assert!(before.is_none(), "file {file} stored twice");
            }
            Some(Spill::File { file, entry: None }) => {
                assert!(self.files.remove(&file).is_some(), "file {file} deleted but not live");
            }
            Some(Spill::Invoice { period, invoice, .. }) => self.finalized.push((period, invoice)),
            Some(Spill::Key { .. }) => unreachable!("a payload spills no command key"),
            None => {}
        }
        self.log.push(Recorded { position: self.position, bytes });
    }

    fn anchor_us(&self) -> i64 {
        self.state.subscription.as_ref().expect("subscribed").anchor_us
    }

    /// (a): after every step.
    fn check_no_over_admit(&self, block: bool) {
        let quota = self.state.quota_bytes(&self.catalog);
        assert!(self.state.used_bytes <= quota, "{} bytes used > {quota} quota", self.state.used_bytes);
        assert_eq!(self.state.used_bytes, self.files.values().map(|f| f.bytes).sum::<u64>());
        assert_eq!(self.state.live_files, self.files.len() as u64);
        assert_eq!(self.state.tokens_by_period.values().sum::<u64>(), self.accepted_tokens);
        if block {
            for (&k, &used) in &self.state.tokens_by_period {
                let (_, end_us) = period_bounds_us(self.anchor_us(), k);
                // Without token add-on cancellations the limit only grows
                // within a period: its last instant (or now) has the highest.
                let limit = self.state.token_limit_at(&self.catalog, self.now.min(end_us - 1));
                assert!(used <= limit, "period {k}: {used} tokens used > {limit} limit");
            }
        }
    }

    fn current_period(&self) -> u32 {
        self.state.period_at(self.now).expect("now is after the anchor")
    }
}

/// (b).
fn check_invoice(what: &str, invoice: &Invoice) {
    let total: Decimal = invoice.lines.iter().map(|l| l.amount).sum();
    let paid: Decimal = invoice.lines.iter().filter(|l| l.paid).map(|l| l.amount).sum();
    assert_eq!(invoice.total, total, "{what}: total is not the sum of the lines: {invoice:?}");
    assert_eq!(invoice.paid, paid, "{what}: paid is not the sum of the paid lines: {invoice:?}");
    assert_eq!(invoice.amount_due, invoice.total - invoice.paid, "{what}: amount_due: {invoice:?}");
    for line in &invoice.lines {
        assert!(!line.amount.is_sign_negative(), "{what}: negative line {line:?}");
        assert_eq!(line.amount.scale(), 2, "{what}: {line:?} is not in cents");
    }
    assert_eq!(invoice.total.scale(), 2, "{what}: total {} is not in cents", invoice.total);
}

fn price(w: &World, k: u32) {
    let priced = price_period(&w.state, &w.catalog, k).expect("a subscribed tenant prices");
    let lines: Vec<_> = priced.lines.iter().map(|l| l.line.clone()).collect();
    assert_eq!(priced.invoice.lines, lines);
    check_invoice(&format!("period {k}"), &priced.invoice);
}

/// The view's row encoding (projections' bincode config).
fn row_bytes(state: &TenantState) -> Vec<u8> {
    let config = bincode::config::standard().with_little_endian().with_variable_int_encoding();
    bincode::serde::encode_to_vec(state, config).expect("state encodes")
}

fn fold(state: &mut TenantState, records: &[Recorded]) {
    for record in records {
        let envelope = events::decode(&record.bytes).expect("recorded events decode");
        let fact =
            Fact { position: record.position, hash: events::event_hash(&record.bytes), envelope: &envelope };
        assert!(state.chain.continued_by(&fact), "event at {} breaks the chain", record.position);
        state.apply(&fact);
    }
}

/// (c).
fn check_fold_resumes(w: &World) {
    let mut full = TenantState::default();
    fold(&mut full, &w.log);
    assert_eq!(full, w.state, "replaying the log differs from the live state");
    let full_bytes = row_bytes(&full);
    for split in 0..=w.log.len() {
        let mut prefix = TenantState::default();
        fold(&mut prefix, &w.log[..split]);
        let stored: TenantState =
            projections::decode_row("ledger", &row_bytes(&prefix)).expect("row decodes");
        assert_eq!(stored, prefix, "the state row does not round-trip after {split} events");
        let mut resumed = stored;
        fold(&mut resumed, &w.log[split..]);
        assert_eq!(resumed, full, "resuming after {split} events differs");
        assert_eq!(row_bytes(&resumed), full_bytes, "resuming after {split} events: other bytes");
    }
}

fn command(op: &Op, w: &World) -> Option<(Actor, Command)> {
    let tenant = TENANT.to_string();
    let user = Actor::TenantUser { tenant: tenant.clone() };
    let admin = Actor::TenantAdmin { tenant: tenant.clone() };
    Some(match *op {
        Op::Consume { request, tokens } => {
            (user, Command::ConsumeTokens { tenant, request: format!("r{request}"), tokens: tokens as i64 })
        }
        Op::Upload { file, bytes } => (user, Command::Upload { tenant, file: format!("f{file}"), bytes }),
        Op::Delete { file } => (user, Command::DeleteFile { tenant, file: format!("f{file}") }),
        Op::SetSeats { seats } => (admin, Command::SetSeats { tenant, seats }),
        Op::Purchase { purchase, addon, quantity, card } => (
            admin,
            Command::PurchaseAddon {
                tenant,
                addon: ADDONS[addon].to_string(),
                purchase: format!("p{purchase}"),
                quantity,
                payment: if card { Payment::Card } else { Payment::Invoice },
            },
        ),
        Op::Settle { purchase, paid } => (
            Actor::Admin,
            Command::SettlePayment {
                tenant,
                purchase: format!("p{purchase}"),
                outcome: if paid { PaymentOutcome::Paid } else { PaymentOutcome::Failed },
                reference: paid.then(|| format!("ch_{purchase}")),
            },
        ),
        Op::CancelAddon { purchase } => {
            let purchase = format!("p{purchase}");
            // Only the feature add-on: see the module comment.
            if w.state.purchases.get(&purchase).is_some_and(|p| p.addon != "support") {
                return None;
            }
            (admin, Command::CancelAddon { tenant, purchase })
        }
        Op::ClosePeriod => (Actor::Admin, Command::ClosePeriod { tenant }),
    })
}

fn run_scenario(s: &Scenario) {
    let anchor = parse_at(s.anchor).unwrap();
    let mut w = World::new(anchor - DAY_US);
    w.now = anchor;
    let plan = if s.block { "block" } else { "bill" };
    let subscribe = Command::Subscribe { tenant: TENANT.into(), plan: plan.into(), seats: s.seats };
    assert!(matches!(w.run(&Actor::Admin, &subscribe), Ok(Decision::Accept(_))));

    for (delta, op) in &s.steps {
        w.now += delta;
        let Some((actor, command)) = command(op, &w) else { continue };
        let decision = w.run(&actor, &command);
        match &decision {
            Err(rejection) => assert!(
                EXPECTED_REJECTIONS.contains(&rejection.code),
                "{command:?}: unexpected rejection {rejection}"
            ),
            Ok(Decision::Deny { event: Event::TokensDenied { .. }, .. }) => {
                assert!(s.block, "a bill_per_1k plan denied tokens: {decision:?}")
            }
            Ok(_) => {}
        }
        w.check_no_over_admit(s.block);
        price(&w, w.current_period());
    }
    if s.cancel_at_end {
        let decision = w.run(&Actor::Admin, &Command::Cancel { tenant: TENANT.into() });
        assert!(matches!(decision, Ok(Decision::Accept(_))), "cancel: {decision:?}");
        w.check_no_over_admit(s.block);
        // Every period up to the cancellation is final now.
        let closed = w.state.subscription.as_ref().unwrap().closed_periods;
        assert_eq!(closed, w.current_period() + 1);
    }

    for k in 0..=w.current_period() + 1 {
        price(&w, k);
    }
    let mut periods = Vec::new();
    for (k, invoice) in &w.finalized {
        check_invoice(&format!("finalized period {k}"), invoice);
        periods.push(*k);
    }
    let expected: Vec<u32> = (0..periods.len() as u32).collect();
    assert_eq!(periods, expected, "periods are finalized once each, in order");
    check_fold_resumes(&w);
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
}

proptest! {
    // No regression files: failures print the shrunk scenario instead.
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decide_and_fold_keep_the_ledger_invariants(s in scenario()) {
        run_scenario(&s);
    }
}
