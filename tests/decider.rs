//! Given events, when a command, then events or a rejection: every rule and
//! every rejection code of the spec, at the decider.

use events::{Actor, Envelope, Event, Payment, PaymentOutcome, CATALOG_TENANT};
use ledger::command::{parse_at, parse_line, Command};
use ledger::decide::{decide, Context, Decision};
use projections::domain::{CatalogState, Fact, FileEntry, KeyEntry, RequestEntry, Spill, TenantState};

const CATALOG: &[&str] = &[
    r#"{"cmd":"define_addon","addon":{"id":"extra-storage","currency":"USD","price":"3.00","recurring":true,"grants":{"storage_gb":"5","tokens":1000}}}"#,
    r#"{"cmd":"define_addon","addon":{"id":"token-pack","currency":"USD","price":"10.00","recurring":false,"grants":{"tokens":50000}}}"#,
    r#"{"cmd":"define_addon","addon":{"id":"eur-pack","currency":"EUR","price":"9.00","recurring":false,"grants":{"tokens":100}}}"#,
    r#"{"cmd":"define_addon","addon":{"id":"support-call","currency":"USD","price":"50.00","recurring":false,"grants":{"feature":"call"}}}"#,
    r#"{"cmd":"define_plan","plan":{"id":"starter","currency":"USD","price":"20.00","per_seat":false,"storage_quota_gb":"2","monthly_token_limit":10000,"token_overage":"block","addons":["extra-storage","token-pack","eur-pack","support-call"]}}"#,
    r#"{"cmd":"define_plan","plan":{"id":"team","currency":"USD","price":"8.00","per_seat":true,"min_seats":2,"max_seats":10,"storage_quota_gb":"1","monthly_token_limit":1000,"token_overage":{"bill_per_1k":"0.02"},"addons":["token-pack"]}}"#,
    r#"{"cmd":"define_plan","plan":{"id":"eu","currency":"EUR","price":"7.00","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1000,"token_overage":"block","addons":[]}}"#,
];

/// The state a run of commands leaves, built by deciding and folding each.
struct World {
    catalog: CatalogState,
    state: TenantState,
    requests: Vec<(String, RequestEntry)>,
    /// Live files, as the view's file index would answer.
    files: std::collections::HashMap<String, FileEntry>,
    /// Command keys, as the view's key index would answer.
    keys: std::collections::HashMap<String, KeyEntry>,
    position: u64,
    now: i64,
}

fn at(t: &str) -> i64 {
    parse_at(t).unwrap()
}

impl World {
    /// The catalog above, and `acme` subscribed to `plan` on 2026-03-01.
    fn subscribed(plan: &str, seats: u32) -> World {
        let mut w = World::empty();
        w.ok(
            &format!(r#"{{"cmd":"subscribe","tenant":"acme","plan":"{plan}","seats":{seats}}}"#),
            "2026-03-01T00:00:00Z",
        );
        w
    }

    fn empty() -> World {
        let mut w = World {
            catalog: CatalogState::default(),
            state: TenantState::default(),
            requests: Vec::new(),
            files: Default::default(),
            keys: Default::default(),
            position: 0,
            now: at("2026-02-01T00:00:00Z"),
        };
        for line in CATALOG {
            w.ok(line, "2026-02-01T00:00:00Z");
        }
        w
    }

    fn when(&self, line: &str, t: &str) -> Result<Decision, ledger::command::Rejection> {
        let submission = parse_line(line).expect("test commands parse");
        let earlier_request = match &submission.command {
            Command::ConsumeTokens { request, .. } => {
                self.requests.iter().find(|(r, _)| r == request).map(|(_, e)| *e)
            }
            _ => None,
        };
        let ctx = Context {
            catalog: &self.catalog,
            state: &self.state,
            actor: &submission.actor,
            at_us: at(t),
            earlier_request,
            existing_file: match &submission.command {
                Command::Upload { file, .. } | Command::DeleteFile { file, .. } => {
                    self.files.get(file).copied()
                }
                _ => None,
            },
            admitted_offline: submission.admitted_offline_at_us.is_some(),
            fingerprint: submission.idempotency_key.as_ref().map(|_| submission.command.fingerprint()),
            earlier_key: submission.idempotency_key.as_ref().and_then(|key| {
                let catalog = submission.command.tenant().is_none();
                if catalog { self.catalog.keys.get(key) } else { self.keys.get(key) }.copied()
            }),
        };
        decide(&ctx, &submission.command)
    }

    /// Decides and folds; returns the decision.
    fn run(&mut self, line: &str, t: &str) -> Result<Decision, ledger::command::Rejection> {
        let decision = self.when(line, t)?;
        let events = match &decision {
            Decision::Accept(events) => events.clone(),
            Decision::Deny { event, .. } => vec![event.clone()],
            Decision::Duplicate { .. } => vec![],
        };
        let submission = parse_line(line).unwrap();
        let actor = submission.actor;
        let last = events.len().saturating_sub(1);
        for (i, payload) in events.into_iter().enumerate() {
            self.position += 1;
            let catalog = payload.is_catalog();
            let envelope = Envelope {
                event_id: self.position as u128,
                tenant: if catalog { CATALOG_TENANT.into() } else { "acme".into() },
                at_us: at(t),
                actor: actor.clone(),
                prev_hash: [0; 32],
                offline: parse_line(line).unwrap().admitted_offline_at_us.and_then(|admitted_at_us| {
                    matches!(payload, Event::FileStored { .. } | Event::TokensConsumed { .. })
                        .then_some(events::Offline { admitted_at_us: admitted_at_us.min(at(t)) })
                }),
                key: submission
                    .idempotency_key
                    .clone()
                    .filter(|_| i == last)
                    .map(|key| events::CommandKey { key, fingerprint: submission.command.fingerprint() }),
                payload,
            };
            events::encode(&envelope).expect("the decider emits valid events");
            let fact = Fact { position: self.position, hash: [0; 32], envelope: &envelope };
            if catalog {
                self.catalog.apply(&fact);
            } else {
                for spill in self.state.apply(&fact) {
                    match spill {
                        Spill::Request { request, entry } => self.requests.push((request, entry)),
                        Spill::File { file, entry: Some(entry) } => {
                            self.files.insert(file, entry);
                        }
                        Spill::File { file, entry: None } => {
                            self.files.remove(&file);
                        }
                        Spill::Key { key, entry } => {
                            self.keys.insert(key, entry);
                        }
                        Spill::Invoice { .. } => {}
                    }
                }
            }
        }
        self.now = at(t);
        Ok(decision)
    }

    fn ok(&mut self, line: &str, t: &str) -> Vec<Event> {
        match self.run(line, t) {
            Ok(Decision::Accept(events)) => events,
            other => panic!("{line}: expected acceptance, got {other:?}"),
        }
    }

    fn rejects(&self, line: &str, t: &str, code: &str) {
        match self.when(line, t) {
            Err(rejection) => assert_eq!(rejection.code, code, "{line}: {}", rejection.message),
            Ok(other) => panic!("{line}: expected {code}, got {other:?}"),
        }
    }

    fn denies(&mut self, line: &str, t: &str, code: &str) -> Vec<(&'static str, u64)> {
        match self.run(line, t) {
            Ok(Decision::Deny { rejection, .. }) => {
                assert_eq!(rejection.code, code);
                rejection.details
            }
            other => panic!("{line}: expected denial {code}, got {other:?}"),
        }
    }
}

const T: &str = "2026-03-10T00:00:00Z";

#[test]
fn catalog_is_admin_only_and_immutable() {
    let w = World::empty();
    let plan = r#"{"cmd":"define_plan","plan":{"id":"starter","currency":"USD","price":"1.00","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[]}}"#;
    w.rejects(plan, T, "plan_exists");
    let addon = r#"{"cmd":"define_addon","addon":{"id":"token-pack","currency":"USD","price":"1.00","recurring":false,"grants":{}}}"#;
    w.rejects(addon, T, "addon_exists");
    let by_tenant = r#"{"actor":"acme:admin","cmd":"define_plan","plan":{"id":"x","currency":"USD","price":"1.00","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[]}}"#;
    w.rejects(by_tenant, T, "forbidden");
    let negative = r#"{"cmd":"define_plan","plan":{"id":"x","currency":"USD","price":"-1.00","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[]}}"#;
    // A sign is the parser's to refuse (decimals are never negative); the
    // decider's own check stays for commands built in code.
    assert_eq!(parse_line(negative).unwrap_err().code, "invalid_amount");
    let negative_gb = r#"{"cmd":"define_addon","addon":{"id":"y","currency":"USD","price":"1.00","recurring":true,"grants":{"storage_gb":"-2"}}}"#;
    assert_eq!(parse_line(negative_gb).unwrap_err().code, "invalid_amount");
    let dangling = r#"{"cmd":"define_plan","plan":{"id":"x","currency":"USD","price":"1.00","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":["nope"]}}"#;
    w.rejects(dangling, T, "unknown_addon");
}

#[test]
fn malformed_input_is_refused_before_deciding() {
    for line in [
        "not json",
        "[1]",
        r#"{"tenant":"acme"}"#,
        r#"{"cmd":"explode","tenant":"acme"}"#,
        r#"{"cmd":"subscribe","tenant":"Acme.Corp","plan":"starter","seats":1}"#,
        r#"{"cmd":"subscribe","tenant":"acme","plan":"starter"}"#,
        r#"{"cmd":"subscribe","tenant":"acme","plan":"starter","seats":"two"}"#,
        r#"{"actor":"root","cmd":"cancel","tenant":"acme"}"#,
        r#"{"at":"yesterday","cmd":"cancel","tenant":"acme"}"#,
        r#"{"cmd":"purchase_addon","tenant":"acme","addon":"a","purchase":"p","payment":"cash"}"#,
        r#"{"cmd":"define_plan","plan":{"id":"x","currency":"XXX","price":"1","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[]}}"#,
        r#"{"cmd":"define_plan","plan":{"id":"x","currency":"USD","price":"lots","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[]}}"#,
        r#"{"cmd":"upload","tenant":"acme","file":"","bytes":1}"#,
    ] {
        let rejection = parse_line(line).expect_err(line);
        assert_eq!(rejection.code, "malformed", "{line}");
    }
    let ok = parse_line(r#"{"cmd":"cancel","tenant":"acme"}"#).unwrap();
    assert_eq!((ok.actor, ok.at_us), (Actor::Admin, None), "actor defaults to admin, at to now");
}

#[test]
fn subscribe_rules() {
    let mut w = World::empty();
    let sub = |plan: &str, seats: i64| {
        format!(r#"{{"cmd":"subscribe","tenant":"acme","plan":"{plan}","seats":{seats}}}"#)
    };
    w.rejects(&sub("gold", 1), T, "unknown_plan");
    w.rejects(&sub("team", 1), T, "invalid_seats");
    w.rejects(&sub("team", 11), T, "invalid_seats");
    w.rejects(&sub("team", -3), T, "invalid_seats");
    w.rejects(
        r#"{"actor":"acme:admin","cmd":"subscribe","tenant":"acme","plan":"team","seats":2}"#,
        T,
        "forbidden",
    );
    assert_eq!(w.ok(&sub("team", 2), T), [Event::Subscribed { plan: "team".into(), seats: 2 }]);
    w.rejects(&sub("starter", 1), T, "already_subscribed");
}

#[test]
fn seats_are_set_by_admins_within_the_plan() {
    let mut w = World::subscribed("team", 3);
    let seats = |actor: &str, n: i64| {
        format!(r#"{{"actor":"{actor}","cmd":"set_seats","tenant":"acme","seats":{n}}}"#)
    };
    w.rejects(&seats("acme:user", 4), T, "forbidden");
    w.rejects(&seats("beta:admin", 4), T, "forbidden");
    w.rejects(&seats("acme:admin", 1), T, "invalid_seats");
    w.rejects(&seats("acme:admin", 11), T, "invalid_seats");
    assert_eq!(w.ok(&seats("acme:admin", 10), T), [Event::SeatsChanged { seats: 10 }]);
    let fresh = World::empty();
    fresh.rejects(&seats("admin", 4), T, "not_subscribed");
}

#[test]
fn change_plan_rules() {
    let mut w = World::subscribed("starter", 1);
    let change = |plan: &str| format!(r#"{{"cmd":"change_plan","tenant":"acme","plan":"{plan}"}}"#);
    w.rejects(&change("eu"), T, "currency_mismatch");
    w.rejects(&change("team"), T, "invalid_seats"); // 1 seat, team needs 2
    w.rejects(&change("nope"), T, "unknown_plan");
    w.rejects(r#"{"actor":"acme:admin","cmd":"change_plan","tenant":"acme","plan":"team"}"#, T, "forbidden");
    w.ok(r#"{"cmd":"set_seats","tenant":"acme","seats":2}"#, T);
    w.ok(r#"{"cmd":"purchase_addon","tenant":"acme","addon":"extra-storage","purchase":"s1","payment":"invoice"}"#, T);
    // extra-storage is recurring, active, and not on team: cancel it first.
    w.rejects(&change("team"), T, "addon_not_available_on_plan");
    // One-off add-ons already bought do not block, even if the new plan
    // does not offer them.
    w.ok(r#"{"cmd":"purchase_addon","tenant":"acme","addon":"support-call","purchase":"c1","payment":"invoice"}"#, T);
    w.ok(r#"{"cmd":"cancel_addon","tenant":"acme","purchase":"s1"}"#, T);
    assert_eq!(w.ok(&change("team"), T), [Event::PlanChanged { plan: "team".into() }]);
}

#[test]
fn add_on_purchase_and_payment_flow() {
    let mut w = World::subscribed("starter", 1);
    let buy_as = |actor: &str, purchase: &str, addon: &str, payment: &str, quantity: i64| {
        format!(
            r#"{{"actor":"{actor}","cmd":"purchase_addon","tenant":"acme","addon":"{addon}","purchase":"{purchase}","quantity":{quantity},"payment":"{payment}"}}"#
        )
    };
    let buy = |purchase: &str, addon: &str, payment: &str, quantity: i64| {
        buy_as("acme:admin", purchase, addon, payment, quantity)
    };
    w.rejects(&buy("p", "nope", "invoice", 1), T, "unknown_addon");
    w.rejects(&buy("p", "token-pack", "invoice", 0), T, "invalid_amount");
    w.rejects(&buy("p", "extra-storage", "card", 1), T, "unsupported_payment");
    w.rejects(&buy("p", "eur-pack", "invoice", 1), T, "currency_mismatch");
    w.rejects(&buy_as("acme:user", "p", "token-pack", "card", 1), T, "forbidden");
    w.rejects(&buy_as("beta:admin", "p", "token-pack", "card", 1), T, "forbidden");

    // Card: pending, grants nothing until paid.
    assert_eq!(
        w.ok(&buy("c1", "token-pack", "card", 2), T),
        [Event::AddonPurchased {
            purchase: "c1".into(),
            addon: "token-pack".into(),
            quantity: 2,
            payment: Payment::Card
        }]
    );
    assert_eq!(w.state.token_limit_at(&w.catalog, at(T)), 10_000, "pending grants nothing");
    let settle = |p: &str, outcome: &str| {
        format!(
            r#"{{"cmd":"settle_payment","tenant":"acme","purchase":"{p}","outcome":"{outcome}","reference":"ch_1"}}"#
        )
    };
    w.rejects(&settle("zz", "paid"), T, "unknown_purchase");
    w.rejects(
        r#"{"actor":"acme:admin","cmd":"settle_payment","tenant":"acme","purchase":"c1","outcome":"paid"}"#,
        T,
        "forbidden",
    );
    assert_eq!(
        w.ok(&settle("c1", "paid"), T),
        [
            Event::PaymentSettled {
                purchase: "c1".into(),
                outcome: PaymentOutcome::Paid,
                reference: Some("ch_1".into())
            },
            Event::AddonActivated { purchase: "c1".into() }
        ]
    );
    assert_eq!(w.state.token_limit_at(&w.catalog, at(T)), 110_000);
    w.rejects(&settle("c1", "paid"), T, "payment_not_pending");

    // A failed card payment ends the purchase with no grant.
    w.ok(&buy("c2", "token-pack", "card", 1), T);
    w.ok(&settle("c2", "failed"), T);
    w.rejects(&settle("c2", "paid"), T, "payment_not_pending");
    assert_eq!(w.state.token_limit_at(&w.catalog, at(T)), 110_000);

    // Invoice: active at once; an invoice purchase is never pending.
    w.ok(&buy("i1", "extra-storage", "invoice", 1), T);
    w.rejects(&settle("i1", "paid"), T, "payment_not_pending");
    assert_eq!(w.state.quota_bytes(&w.catalog), 7 * (1 << 30));

    // Idempotency: the same purchase again is a duplicate, other content a conflict.
    assert!(matches!(w.when(&buy("i1", "extra-storage", "invoice", 1), T), Ok(Decision::Duplicate { .. })));
    w.rejects(&buy("i1", "extra-storage", "invoice", 2), T, "idempotency_conflict");

    // Plan restriction: team only offers token-pack.
    let mut team = World::subscribed("team", 2);
    team.rejects(&buy("x", "extra-storage", "invoice", 1), T, "addon_not_available_on_plan");
    team.ok(&buy("x", "token-pack", "invoice", 1), T);

    // cancel_addon stops a recurring add-on and its grants.
    w.rejects(r#"{"cmd":"cancel_addon","tenant":"acme","purchase":"c1"}"#, T, "unknown_purchase");
    w.rejects(
        r#"{"actor":"acme:user","cmd":"cancel_addon","tenant":"acme","purchase":"i1"}"#,
        T,
        "forbidden",
    );
    w.ok(r#"{"actor":"acme:admin","cmd":"cancel_addon","tenant":"acme","purchase":"i1"}"#, T);
    assert_eq!(w.state.quota_bytes(&w.catalog), 2 * (1 << 30));
}

#[test]
fn storage_quota_decisions() {
    let mut w = World::subscribed("starter", 1);
    let gb = 1u64 << 30;
    let up_as = |actor: &str, file: &str, bytes: u64| {
        format!(r#"{{"actor":"{actor}","cmd":"upload","tenant":"acme","file":"{file}","bytes":{bytes}}}"#)
    };
    let up = |file: &str, bytes: u64| up_as("acme:user", file, bytes);
    w.rejects(r#"{"cmd":"upload","tenant":"acme","file":"f","bytes":-1}"#, T, "invalid_amount");
    w.rejects(&up_as("beta:user", "a", 1), T, "forbidden");
    w.ok(&up("a", gb), T);
    w.ok(&up("b", gb), T); // exactly at the quota: allowed
    let details = w.denies(&up("c", 1), T, "storage_quota_exceeded");
    assert_eq!(details, [("used", 2 * gb), ("quota", 2 * gb), ("requested", 1)]);
    assert!(matches!(w.when(&up("a", gb), T), Ok(Decision::Duplicate { .. })), "same file, same bytes");
    w.rejects(&up("a", 5), T, "file_exists");
    w.rejects(r#"{"cmd":"delete_file","tenant":"acme","file":"zz"}"#, T, "unknown_file");
    w.ok(r#"{"actor":"acme:user","cmd":"delete_file","tenant":"acme","file":"a"}"#, T);
    assert_eq!(w.state.used_bytes, gb);
    // The denied key is not used up: decided afresh once space is free.
    w.ok(&up("c", 1), T);
    // After a downgrade a tenant may be over quota: files stay, uploads denied, deletes work.
    w.ok(r#"{"cmd":"purchase_addon","tenant":"acme","addon":"extra-storage","purchase":"s","payment":"invoice"}"#, T);
    w.ok(&up("big", 5 * gb), T);
    w.ok(r#"{"cmd":"cancel_addon","tenant":"acme","purchase":"s"}"#, T);
    w.denies(&up("d", 1), T, "storage_quota_exceeded");
    w.ok(r#"{"cmd":"delete_file","tenant":"acme","file":"big"}"#, T);
    w.ok(&up("d", 1), T);
}

#[test]
fn token_decisions_per_period_without_a_reset_job() {
    let mut w = World::subscribed("starter", 1);
    let use_ = |r: &str, n: i64| {
        format!(
            r#"{{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"{r}","tokens":{n}}}"#
        )
    };
    w.rejects(&use_("z", 0), T, "invalid_amount");
    w.ok(&use_("a", 6000), T);
    let details = w.denies(&use_("b", 5000), T, "token_limit_exceeded");
    assert_eq!(details, [("used", 6000), ("limit", 10_000), ("requested", 5000)]);
    w.ok(&use_("c", 4000), T); // 10,000 exactly
    assert!(matches!(w.when(&use_("a", 6000), T), Ok(Decision::Duplicate { .. })));
    w.rejects(&use_("a", 7000), T, "idempotency_conflict");
    // A new period starts at zero; the denied key "b" is decided afresh.
    w.ok(&use_("b", 5000), "2026-04-01T00:00:00Z");
    // A one-off grant counts only in the period it was activated.
    w.ok(r#"{"cmd":"purchase_addon","tenant":"acme","addon":"token-pack","purchase":"tp","payment":"invoice"}"#, "2026-04-02T00:00:00Z");
    assert_eq!(w.state.token_limit_at(&w.catalog, at("2026-04-02T00:00:00Z")), 60_000);
    assert_eq!(w.state.token_limit_at(&w.catalog, at("2026-05-02T00:00:00Z")), 10_000);
    // With bill_per_1k consumption is always allowed.
    let mut team = World::subscribed("team", 2);
    team.ok(&use_("big", 1_000_000), T);
}

#[test]
fn close_period_and_cancel() {
    let mut w = World::subscribed("starter", 1);
    w.rejects(r#"{"cmd":"close_period","tenant":"acme"}"#, "2026-03-31T23:59:59Z", "period_not_ended");
    w.rejects(
        r#"{"actor":"acme:admin","cmd":"close_period","tenant":"acme"}"#,
        "2026-04-01T00:00:00Z",
        "forbidden",
    );
    let closed = w.ok(r#"{"cmd":"close_period","tenant":"acme"}"#, "2026-04-05T00:00:00Z");
    assert!(
        matches!(&closed[..], [Event::PeriodFinalized { period: 0, invoice, .. }] if invoice.total.to_string() == "20.00")
    );
    // The next close finalizes period 1 (April), which has not ended.
    w.rejects(r#"{"cmd":"close_period","tenant":"acme"}"#, "2026-04-05T00:00:00Z", "period_not_ended");
    // Cancel finalizes every unclosed period, the last one partial.
    let cancelled = w.ok(r#"{"cmd":"cancel","tenant":"acme"}"#, "2026-05-16T00:00:00Z");
    let finalized: Vec<(u32, String)> = cancelled
        .iter()
        .filter_map(|e| match e {
            Event::PeriodFinalized { period, invoice, .. } => Some((*period, invoice.total.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled[0], Event::SubscriptionCancelled);
    // April full (20.00); May 1 - May 16 of 31 days: 20 x 15/31 = 9.677... -> 9.68.
    assert_eq!(finalized, [(1, "20.00".to_string()), (2, "9.68".to_string())]);
    for line in [
        r#"{"cmd":"cancel","tenant":"acme"}"#,
        r#"{"cmd":"close_period","tenant":"acme"}"#,
        r#"{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"x","tokens":1}"#,
        r#"{"actor":"acme:user","cmd":"upload","tenant":"acme","file":"x","bytes":1}"#,
    ] {
        w.rejects(line, "2026-05-17T00:00:00Z", "not_subscribed");
    }
}

#[test]
fn uses_admitted_offline_are_recorded_past_the_limit_up_to_the_margin() {
    let mut w = World::subscribed("starter", 1);
    let gb = 1u64 << 30;
    let offline = r#""admitted_offline_at":"2026-03-09T23:00:00Z""#;
    let late = |request: &str, tokens: u64| {
        format!(
            r#"{{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"{request}","tokens":{tokens},{offline}}}"#
        )
    };
    w.ok(r#"{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"a","tokens":9000}"#, T);
    // Over the 10,000 limit, but a client already admitted it while the
    // ledger was unreachable: recorded (marked offline), within 10% over.
    // (9,000 was past the 80% alert already; this use crosses 100%.)
    let events = w.ok(&late("o1", 1500), T);
    assert_eq!(events[0], Event::TokensConsumed { request: "o1".into(), tokens: 1500, offline: true });
    assert!(
        matches!(events[1..], [Event::UsageThresholdCrossed { threshold: 100, used: 10_500, .. }]),
        "{events:?}"
    );
    assert_eq!(w.state.tokens_used(0), 10_500);
    // Delivered twice (a retry): the same key, a duplicate.
    assert!(matches!(w.when(&late("o1", 1500), T), Ok(Decision::Duplicate { .. })));
    // Online decisions still hold the line at the limit itself.
    w.denies(
        r#"{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"b","tokens":1}"#,
        T,
        "token_limit_exceeded",
    );
    // Offline ones at the margin: 11,000 and no further.
    w.denies(&late("o2", 600), T, "token_limit_exceeded");
    w.ok(&late("o3", 500), T);
    assert_eq!(w.state.tokens_used(0), 11_000);
    let upload = |file: &str, bytes: u64| {
        format!(
            r#"{{"actor":"acme:user","cmd":"upload","tenant":"acme","file":"{file}","bytes":{bytes},{offline}}}"#
        )
    };
    let hundred_mb = 100 << 20;
    let events = w.ok(&upload("big", 2 * gb + hundred_mb), T);
    assert_eq!(events[0], Event::FileStored { file: "big".into(), bytes: 2 * gb + hundred_mb });
    let thresholds: Vec<u32> = events[1..]
        .iter()
        .map(|e| match e {
            Event::UsageThresholdCrossed { threshold, .. } => *threshold,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(thresholds, [80, 100], "past the quota: both alerts at once");
    w.denies(&upload("more", 2 * hundred_mb), T, "storage_quota_exceeded");
    // Authorization and subscription rules are not relaxed offline.
    w.rejects(
        &format!(r#"{{"actor":"beta:user","cmd":"consume_tokens","tenant":"acme","request":"x","tokens":1,{offline}}}"#),
        T,
        "forbidden",
    );
    // Only uploads and token use can be admitted offline.
    let seats = format!(r#"{{"cmd":"set_seats","tenant":"acme","seats":2,{offline}}}"#);
    assert_eq!(parse_line(&seats).expect_err("refused").code, "malformed");
}

#[test]
fn an_idempotency_key_answers_a_resend_as_the_first_time() {
    let mut w = World::subscribed("team", 2);
    let seats = r#"{"cmd":"set_seats","tenant":"acme","seats":3,"idempotency_key":"op-1"}"#;
    w.ok(seats, "2026-03-02T00:00:00Z");
    let first = w.position;
    // The same command again: nothing appended, the first answer's seq.
    assert_eq!(w.run(seats, "2026-03-03T00:00:00Z"), Ok(Decision::Duplicate { seq: first }));
    assert_eq!(w.position, first);
    // Another command under the key, even another kind of command.
    w.rejects(
        r#"{"cmd":"set_seats","tenant":"acme","seats":4,"idempotency_key":"op-1"}"#,
        "2026-03-03T00:00:00Z",
        "idempotency_conflict",
    );
    w.rejects(
        r#"{"cmd":"cancel","tenant":"acme","idempotency_key":"op-1"}"#,
        "2026-03-03T00:00:00Z",
        "idempotency_conflict",
    );
    // Who may send it is checked before the key: a user learns nothing.
    w.rejects(
        r#"{"actor":"acme:user","cmd":"set_seats","tenant":"acme","seats":3,"idempotency_key":"op-1"}"#,
        "2026-03-03T00:00:00Z",
        "forbidden",
    );
    // A resent close_period never closes a second period.
    let close = r#"{"cmd":"close_period","tenant":"acme","idempotency_key":"close-1"}"#;
    w.ok(close, "2026-04-01T00:00:00Z");
    let closed = w.position;
    assert_eq!(w.run(close, "2026-05-02T00:00:00Z"), Ok(Decision::Duplicate { seq: closed }));
    assert_eq!(w.state.subscription.as_ref().unwrap().closed_periods, 1);
    // The catalog keeps its keys per ledger.
    let plan = r#"{"cmd":"define_plan","idempotency_key":"p","plan":{"id":"solo","currency":"USD","price":"1.00","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[]}}"#;
    w.ok(plan, "2026-05-02T00:00:00Z");
    assert!(matches!(w.run(plan, "2026-05-02T00:00:00Z"), Ok(Decision::Duplicate { .. })));
}

/// A usage alert crossing as the decider records it.
fn crossed(
    meter: events::Meter,
    threshold: u32,
    used: u64,
    limit: u64,
    period: u32,
    start: &str,
    end: &str,
) -> Event {
    Event::UsageThresholdCrossed {
        meter,
        threshold,
        used,
        limit,
        period,
        start_us: at(start),
        end_us: at(end),
    }
}

#[test]
fn token_thresholds_fire_once_per_period_against_the_limit_in_force() {
    use events::v1::MeterV1::Tokens;
    let mut w = World::subscribed("starter", 1); // 10,000 tokens, block
    let use_ = |r: &str, n: i64| {
        format!(
            r#"{{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"{r}","tokens":{n}}}"#
        )
    };
    let (march, april, may) = ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z");
    let consumed = |r: &str, n: u64| Event::TokensConsumed { request: r.into(), tokens: n, offline: false };
    assert_eq!(w.ok(&use_("a", 7999), T), [consumed("a", 7999)], "79.99%: no threshold yet");
    // 80.00% exactly: used x 100 >= 80 x limit.
    assert_eq!(
        w.ok(&use_("b", 1), T),
        [consumed("b", 1), crossed(Tokens, 80, 8000, 10_000, 0, march, april)]
    );
    assert_eq!(w.ok(&use_("c", 100), T), [consumed("c", 100)], "80 fired once this period");
    // One use may cross several; a denial crosses nothing.
    w.denies(&use_("d", 5000), T, "token_limit_exceeded");
    assert_eq!(
        w.ok(&use_("e", 1900), T),
        [consumed("e", 1900), crossed(Tokens, 100, 10_000, 10_000, 0, march, april)]
    );
    // A new period: armed again.
    let t2 = "2026-04-02T00:00:00Z";
    assert_eq!(
        w.ok(&use_("f", 10_000), t2),
        [
            consumed("f", 10_000),
            crossed(Tokens, 80, 10_000, 10_000, 1, april, may),
            crossed(Tokens, 100, 10_000, 10_000, 1, april, may)
        ]
    );
    // A limit raised by an add-on fires nothing by itself; the next use
    // checks against the limit in force (10,000 + 50,000).
    let t3 = "2026-05-02T00:00:00Z";
    w.ok(&use_("g", 9_000), t3);
    w.ok(r#"{"cmd":"purchase_addon","tenant":"acme","addon":"token-pack","purchase":"tp","payment":"invoice"}"#, t3);
    assert_eq!(w.ok(&use_("h", 1_000), t3), [consumed("h", 1_000)], "10,000 of 60,000: below 80%");
    // Thresholds the tenant sets; an empty list silences the meter.
    w.rejects(
        r#"{"actor":"acme:user","cmd":"set_usage_alerts","tenant":"acme","tokens":[50]}"#,
        t3,
        "forbidden",
    );
    // The request alone shows these wrong: refused by the parser.
    let parsed =
        |fields: &str| parse_line(&format!(r#"{{"cmd":"set_usage_alerts","tenant":"acme"{fields}}}"#));
    for bad in [r#"[0]"#, r#"[1001]"#, r#"[1,2,3,4,5,6,7,8,9,10,11]"#, r#"[-5]"#] {
        assert_eq!(parsed(&format!(r#","tokens":{bad}"#)).unwrap_err().code, "invalid_amount", "{bad}");
    }
    assert_eq!(parsed("").unwrap_err().code, "malformed", "neither meter");
    assert_eq!(parsed(r#","tokens":[1.5]"#).unwrap_err().code, "malformed");
    assert_eq!(
        w.ok(r#"{"actor":"acme:admin","cmd":"set_usage_alerts","tenant":"acme","tokens":[90,25,90],"storage":[]}"#, t3),
        [Event::UsageAlertsSet { tokens: Some(vec![25, 90]), storage: Some(vec![]) }]
    );
    let june = "2026-06-01T00:00:00Z";
    assert_eq!(
        w.ok(&use_("i", 5_000), t3),
        [consumed("i", 5_000), crossed(Tokens, 25, 15_000, 60_000, 2, may, june)]
    );
}

#[test]
fn storage_thresholds_fire_on_each_upward_crossing_and_arm_again_below() {
    use events::v1::MeterV1::Storage;
    let mut w = World::subscribed("starter", 1); // 2 GB
    let gb: u64 = 1 << 30;
    let upload = |f: &str, bytes: u64| {
        format!(r#"{{"actor":"acme:user","cmd":"upload","tenant":"acme","file":"{f}","bytes":{bytes}}}"#)
    };
    let delete =
        |f: &str| format!(r#"{{"actor":"acme:user","cmd":"delete_file","tenant":"acme","file":"{f}"}}"#);
    let stored = |f: &str, bytes: u64| Event::FileStored { file: f.into(), bytes };
    let (march, april) = ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let quota = 2 * gb;
    // The first byte count at 80%: used x 100 >= 80 x quota.
    let level = (quota * 80).div_ceil(100);
    assert_eq!(
        w.ok(&upload("a", level), T),
        [stored("a", level), crossed(Storage, 80, level, quota, 0, march, april)]
    );
    assert_eq!(w.ok(&upload("b", 1), T), [stored("b", 1)], "fired, not armed again");
    // Down to exactly the level it fired at: still not armed.
    w.ok(&delete("b"), T);
    assert_eq!(w.ok(&upload("c", 1), T), [stored("c", 1)]);
    // Below it: armed; the next upward crossing fires again, in any period.
    w.ok(&delete("a"), T);
    let t = "2026-04-05T00:00:00Z";
    assert_eq!(
        w.ok(&upload("d", level), t),
        [stored("d", level), crossed(Storage, 80, level + 1, quota, 1, april, "2026-05-01T00:00:00Z")]
    );
    // The first denial after an admitted use is news; the next is not
    // (checked where notifications are derived); a denial crosses nothing.
    w.denies(&upload("e", quota), t, "storage_quota_exceeded");
    assert!(w.state.alerts.storage_denied);
    w.ok(&upload("f", 1), t);
    assert!(!w.state.alerts.storage_denied);
}
