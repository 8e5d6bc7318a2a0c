//! The spec's "Bounds": nothing a command carries can wrap a total, overflow
//! an amount, produce an event the codec refuses, or move ledger time into
//! the future. Each case runs the real engine over a real embedded log (sled
//! files in a temporary directory) and checks both the answer and that a
//! rejected command recorded nothing.

use events::Actor;
use ledger::apply::{apply_lines, Future};
use ledger::command::{parse_line, Command, MAX_COUNT};
use ledger::decide::{decide, Context};
use ledger::engine::Ledger;
use ledger::log::{EmbeddedLog, Source};
use projections::domain::{CatalogState, Fact, TenantState};
use projections::ViewStore;
use rust_decimal::Decimal;
use serde_json::Value;

struct Fixture {
    ledger: Ledger,
    log: EmbeddedLog,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log")).unwrap();
    let views = ViewStore::open(&dir.path().join("views")).unwrap();
    let ledger = Ledger::start(log.clone(), views).await.unwrap();
    Fixture { ledger, log, _dir: dir }
}

impl Fixture {
    /// Applies lines as `ledger apply --allow-future` would; returns each
    /// line's result object.
    async fn apply(&self, lines: &[String]) -> Vec<Value> {
        apply_lines(&self.ledger, lines, Future::Allow).await.unwrap().0
    }

    async fn one(&self, line: &str) -> Value {
        self.apply(&[line.to_string()]).await.remove(0)
    }

    async fn head(&self) -> u64 {
        self.log.head().await.unwrap()
    }

    /// Asserts `line` is rejected with `code` and appends nothing.
    async fn refused(&self, line: &str, code: &str) {
        let before = self.head().await;
        let result = self.one(line).await;
        assert_eq!(result["code"], code, "{line}: {result}");
        assert_eq!(result["ok"], false);
        assert_eq!(self.head().await, before, "a rejected command appended: {line}");
    }

    fn usage(&self, tenant: &str) -> Value {
        ledger::report::usage(self.ledger.views(), tenant, None).unwrap()
    }
}

const AT: &str = "2026-01-01T00:00:00Z";

fn plan_line(id: &str, fields: &str) -> String {
    format!(
        r#"{{"at":"{AT}","cmd":"define_plan","plan":{{"id":"{id}","currency":"USD","per_seat":false,"addons":[],{fields}}}}}"#
    )
}

fn subscribe(tenant: &str, plan: &str, seats: u64) -> String {
    format!(r#"{{"at":"{AT}","cmd":"subscribe","tenant":"{tenant}","plan":"{plan}","seats":{seats}}}"#)
}

fn tokens(tenant: &str, request: &str, tokens: &str) -> String {
    format!(
        r#"{{"at":"2026-01-02T00:00:00Z","actor":"{tenant}:user","cmd":"consume_tokens","tenant":"{tenant}","request":"{request}","tokens":{tokens}}}"#
    )
}

/// The issue's scenario: 2^63 - 1 tokens twice then 2 were all accepted and
/// wrapped to 0. Now a count past 2^53 - 1 is `invalid_amount`, totals are
/// exact up to u64, and the one that would pass u64 is refused.
#[tokio::test]
async fn token_totals_never_wrap() {
    let f = fixture().await;
    let setup = [
        plan_line(
            "metered",
            r#""price":"5.00","storage_quota_gb":"1","monthly_token_limit":1000,"token_overage":{"bill_per_1k":"0.002"}"#,
        ),
        subscribe("big", "metered", 1),
    ];
    for result in f.apply(&setup).await {
        assert_eq!(result["ok"], true, "{result}");
    }
    f.refused(&tokens("big", "huge", "9223372036854775807"), "invalid_amount").await;
    f.refused(&tokens("big", "huger", "1e30"), "invalid_amount").await;
    f.refused(&tokens("big", "over", &(MAX_COUNT + 1).to_string()), "invalid_amount").await;

    // 2048 x (2^53 - 1) = 2^64 - 2048: the most that fits a u64 count.
    let max = MAX_COUNT as u64;
    let lines: Vec<String> = (0..2048).map(|i| tokens("big", &format!("r{i}"), &max.to_string())).collect();
    for result in f.apply(&lines).await {
        assert_eq!(result["ok"], true, "{result}");
    }
    let used = 2048 * max;
    f.ledger.sync().await.unwrap();
    assert_eq!(f.usage("big")["tokens"]["used"], used);
    // One more would pass u64: refused, and the figure stays exact.
    f.refused(&tokens("big", "one-more", &max.to_string()), "invalid_amount").await;
    f.refused(&tokens("big", "and-two", "2048"), "invalid_amount").await;
    assert_eq!(f.one(&tokens("big", "fits", "2047")).await["ok"], true);
    f.ledger.sync().await.unwrap();
    assert_eq!(f.usage("big")["tokens"]["used"], u64::MAX);

    // The overage is billed exactly: (used - 1000) x 0.002 / 1000.
    let invoice = ledger::report::invoice(f.ledger.views(), "big", None).unwrap();
    let overage =
        invoice["lines"].as_array().unwrap().iter().find(|l| l["code"] == "tokens:overage").unwrap();
    let expected = (Decimal::from(u64::MAX - 1000) * Decimal::new(2, 3) / Decimal::from(1000)).round_dp(2);
    assert_eq!(overage["amount"], expected.to_string());
}

/// Decimal products that used to panic (price x seat-seconds, GB x 2^30)
/// are refused as `invalid_amount`; nothing is recorded and the engine
/// keeps answering.
#[tokio::test]
async fn amounts_that_cannot_be_represented_are_refused() {
    let f = fixture().await;
    let setup = [
        plan_line(
            "vast",
            r#""price":"1.00","storage_quota_gb":"1000000000000","monthly_token_limit":1,"token_overage":"block""#,
        ),
        format!(
            r#"{{"at":"{AT}","cmd":"define_plan","plan":{{"id":"dear","currency":"USD","per_seat":true,"max_seats":4294967295,"addons":["gb"],"price":"1000000000000","storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block"}}}}"#
        ),
        format!(
            r#"{{"at":"{AT}","cmd":"define_addon","addon":{{"id":"gb","currency":"USD","price":"1.00","recurring":true,"grants":{{"storage_gb":"1000000000000","tokens":9007199254740991}}}}}}"#
        ),
    ];
    // The add-on is defined after the plan that lists it: unknown_addon.
    let results = f.apply(&setup).await;
    assert_eq!(results[0]["ok"], true, "{}", results[0]);
    assert_eq!(results[1]["code"], "unknown_addon", "{}", results[1]);
    assert_eq!(results[2]["ok"], true, "{}", results[2]);
    assert_eq!(f.one(&setup[1]).await["ok"], true);

    // 10^12 GB x 2^30 does not fit a u64 byte count.
    f.refused(&subscribe("t1", "vast", 1), "invalid_amount").await;
    // 10^12 per seat x 2^32 seats x a month of microseconds overflows.
    f.refused(&subscribe("t2", "dear", 4_294_967_295), "invalid_amount").await;
    assert_eq!(f.one(&subscribe("t2", "dear", 1)).await["ok"], true);
    // 10^12 GB x 2^53 - 1 of them: the quota cannot be represented.
    let purchase = |id: &str, quantity: &str| {
        format!(
            r#"{{"at":"2026-01-02T00:00:00Z","cmd":"purchase_addon","tenant":"t2","addon":"gb","purchase":"{id}","quantity":{quantity},"payment":"invoice"}}"#
        )
    };
    f.refused(&purchase("p1", "9007199254740991"), "invalid_amount").await;
    // Even one: 10^12 + 1 GB is past a u64 byte count.
    f.refused(&purchase("p2", "1"), "invalid_amount").await;
    // The engine still decides, and the tenant is as it was.
    let ok = f.one(&tokens("t2", "r1", "1")).await;
    assert_eq!(ok["ok"], true, "{ok}");
    f.ledger.sync().await.unwrap();
    assert_eq!(f.usage("t2")["storage"]["quota_bytes"], 1u64 << 30);
    assert_eq!(f.usage("t2")["addons"], serde_json::json!([]));
}

/// An event over the codec's 64 KiB limit used to panic the engine
/// (`encode(..).expect`). Now the command that would produce it is refused
/// before anything is appended: a plan listing hundreds of long add-on ids,
/// or the add-on purchase whose invoice line would no longer let the
/// period's invoice fit one event. The period still closes.
#[tokio::test]
async fn events_over_the_size_limit_are_refused_before_appending() {
    let f = fixture().await;
    let name = "n".repeat(256);
    let long_id = |i: usize| format!("{i:0>120}");
    let mut setup: Vec<String> = (0..600)
        .map(|i| {
            format!(
                r#"{{"at":"{AT}","cmd":"define_addon","addon":{{"id":"{}","name":"{name}","currency":"USD","price":"1.00","recurring":false,"grants":{{}}}}}}"#,
                long_id(i)
            )
        })
        .collect();
    for result in f.apply(&setup).await {
        assert_eq!(result["ok"], true, "{result}");
    }
    let all: Vec<String> = (0..600).map(|i| format!("\"{}\"", long_id(i))).collect();
    let huge_plan = format!(
        r#"{{"at":"{AT}","cmd":"define_plan","plan":{{"id":"everything","currency":"USD","per_seat":false,"price":"1.00","storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[{}]}}}}"#,
        all.join(",")
    );
    f.refused(&huge_plan, "malformed").await;

    setup = vec![
        format!(
            r#"{{"at":"{AT}","cmd":"define_plan","plan":{{"id":"shop","currency":"USD","per_seat":false,"price":"1.00","storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":["{}"]}}}}"#,
            long_id(0)
        ),
        subscribe("buyer", "shop", 1),
    ];
    for result in f.apply(&setup).await {
        assert_eq!(result["ok"], true, "{result}");
    }
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..400 {
        let line = format!(
            r#"{{"at":"2026-01-02T00:00:00Z","cmd":"purchase_addon","tenant":"buyer","addon":"{}","purchase":"{}","payment":"invoice"}}"#,
            long_id(0),
            format!("{i:p>128}")
        );
        let before = f.head().await;
        let result = f.one(&line).await;
        if result["ok"] == true {
            accepted += 1;
            continue;
        }
        assert_eq!(result["code"], "invalid_amount", "{result}");
        assert_eq!(f.head().await, before);
        refused = Some(i);
        break;
    }
    assert!(refused.is_some(), "400 long invoice lines were all accepted");
    assert!(accepted >= 100, "only {accepted} purchases fit one invoice");
    // The period closes: its invoice is recorded, with every line.
    let close = f.one(r#"{"at":"2026-02-01T00:00:00Z","cmd":"close_period","tenant":"buyer"}"#).await;
    assert_eq!(close["ok"], true, "{close}");
    f.ledger.sync().await.unwrap();
    let invoice = ledger::report::invoice(
        f.ledger.views(),
        "buyer",
        Some(ledger::command::parse_at("2026-01-15T00:00:00Z").unwrap()),
    )
    .unwrap();
    assert_eq!(invoice["status"], "final");
    assert_eq!(invoice["lines"].as_array().unwrap().len(), accepted + 1);
}

/// Ids, names, counts and decimals past the spec's bounds: `malformed` or
/// `invalid_amount`, decided at parse time.
#[test]
fn input_bounds() {
    let check = |line: String, code: &str| {
        let rejection = parse_line(&line).expect_err(&line);
        assert_eq!(rejection.code, code, "{line}: {}", rejection.message);
        assert!(rejection.message.len() < 400, "an error echoes its input back: {}", rejection.message);
    };
    let ok = |line: String| {
        parse_line(&line).unwrap_or_else(|r| panic!("{line}: {r}"));
    };
    let tokens = |request: &str, n: &str| {
        format!(r#"{{"cmd":"consume_tokens","tenant":"t","request":"{request}","tokens":{n}}}"#)
    };
    ok(tokens(&"r".repeat(128), "1"));
    check(tokens(&"r".repeat(129), "1"), "malformed");
    check(tokens(&"r".repeat(100_000), "1"), "malformed");
    check(tokens("has space", "1"), "malformed");
    check(tokens("", "1"), "malformed");
    check(tokens("caf\u{e9}", "1"), "malformed");
    ok(tokens("r", &MAX_COUNT.to_string()));
    check(tokens("r", &(MAX_COUNT + 1).to_string()), "invalid_amount");
    check(tokens("r", "18446744073709551615"), "invalid_amount");
    check(tokens("r", "1e300"), "invalid_amount");
    check(tokens("r", "1.5"), "malformed");
    // A number with no fraction is an integer, as JSON Schema reads it.
    ok(tokens("r", "2.0"));
    ok(tokens("r", "1e3"));
    // Read exactly (the fast float parser once read this one as ...18.5).
    ok(tokens("r", "3740547019430118.0"));
    // Seats and quantities are stored as u32: larger is the request's fault.
    let seats = |n: &str| format!(r#"{{"cmd":"set_seats","tenant":"t","seats":{n}}}"#);
    ok(seats("4294967295"));
    check(seats("4294967296"), "invalid_seats");
    let quantity = |n: &str| {
        format!(
            r#"{{"cmd":"purchase_addon","tenant":"t","addon":"a","purchase":"p","quantity":{n},"payment":"card"}}"#
        )
    };
    ok(quantity("4294967295"));
    check(quantity("4294967296"), "invalid_amount");
    // Instants up to the year 9998, so every period the ledger answers
    // with ends in a four-digit year.
    let at = |at: &str| format!(r#"{{"at":"{at}","cmd":"cancel","tenant":"t"}}"#);
    ok(at("9998-12-31T23:59:59.999999-23:59"));
    ok(at("0001-01-01T00:00:00Z"));
    check(at("9999-01-01T00:00:00Z"), "malformed");
    check(at("2026-03-15"), "malformed");
    let plan = |price: &str, name: &str| {
        format!(
            r#"{{"cmd":"define_plan","plan":{{"id":"p","name":"{name}","currency":"USD","price":"{price}","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[]}}}}"#
        )
    };
    ok(plan("1000000000000", "n"));
    ok(plan("1000000000000.000000000000", "n"));
    ok(plan("0.000000000001", "n"));
    ok(plan("000000000000000000007.5", "n")); // leading zeros are not size
                                              // Places count as written (the OpenAPI document's pattern can only
                                              // count characters), trailing zeros included.
    check(plan("1.5000000000000", "n"), "invalid_amount");
    check(plan("1000000000000.01", "n"), "invalid_amount");
    check(plan("0.0000000000001", "n"), "invalid_amount");
    check(plan("99999999999999999999999999999999999999", "n"), "invalid_amount");
    check(plan("-1.00", "n"), "invalid_amount");
    check(plan("-0", "n"), "invalid_amount");
    for shape in ["ten", "", ".5", "5.", "+5", "1e3", " 1", "1 ", "1,5", "--1", "0x10", "1.2.3", "\u{661}"] {
        check(plan(shape, "n"), "malformed");
    }
    ok(plan("1", &"n".repeat(256)));
    check(plan("1", &"n".repeat(257)), "malformed");
}

/// Another writer's catalog change used to panic the decider (an index
/// into a catalog that lacked the tenant's plan). Whatever state it is
/// handed, the decider answers.
#[test]
fn a_plan_missing_from_the_catalog_is_an_answer_not_a_panic() {
    let envelope = events::Envelope {
        event_id: 1,
        tenant: "ghost".into(),
        at_us: 1_700_000_000_000_000,
        actor: Actor::Admin,
        prev_hash: [0; 32],
        payload: events::Event::Subscribed { plan: "unseen".into(), seats: 1 },
        offline: None,
        key: None,
    };
    let mut state = TenantState::default();
    state.apply(&Fact { position: 1, hash: [1; 32], envelope: &envelope });
    let catalog = CatalogState::default();
    assert!(!catalog.covers(&state));
    let actor = Actor::Admin;
    for line in [
        r#"{"cmd":"consume_tokens","tenant":"ghost","request":"r","tokens":1}"#,
        r#"{"cmd":"set_seats","tenant":"ghost","seats":2}"#,
        r#"{"cmd":"purchase_addon","tenant":"ghost","addon":"a","purchase":"p","payment":"invoice"}"#,
        r#"{"cmd":"upload","tenant":"ghost","file":"f","bytes":1}"#,
        r#"{"cmd":"close_period","tenant":"ghost"}"#,
        r#"{"cmd":"cancel","tenant":"ghost"}"#,
        r#"{"cmd":"change_plan","tenant":"ghost","plan":"other"}"#,
    ] {
        let command: Command = parse_line(line).unwrap().command;
        let ctx = Context {
            catalog: &catalog,
            state: &state,
            actor: &actor,
            at_us: 1_800_000_000_000_000,
            earlier_request: None,
            existing_file: None,
            admitted_offline: false,
            fingerprint: None,
            earlier_key: None,
        };
        // Any answer will do; what matters is that there is one.
        let _ = decide(&ctx, &command);
    }
}

/// `apply` refuses an `at` more than 24 hours ahead (`future_at`) unless
/// `--allow-future`; the refused line records nothing, so ledger time is
/// not poisoned and later commands are stamped as before.
#[test]
fn future_at_is_refused_without_allow_future() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str], input: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
            .arg("--data")
            .arg(data.path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let now = chrono::Utc::now();
    let soon = (now + chrono::Duration::hours(23)).to_rfc3339();
    let plan = |id: &str, at: &str| {
        format!(
            r#"{{"at":"{at}","cmd":"define_plan","plan":{{"id":"{id}","currency":"USD","price":"1","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[]}}}}"#
        )
    };
    let input = [plan("typo", "2206-01-01T00:00:00Z"), plan("soon", &soon), plan("now", &now.to_rfc3339())]
        .join("\n");
    let (code, out) = run(&["apply", "-"], &input);
    assert_eq!(code, Some(0), "{out}");
    let results: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results[0]["code"], "future_at", "{out}");
    assert_eq!(results[1]["ok"], true, "{out}");
    // Ledger time is the wall clock's (plus at most a day), not 2206: an
    // `at` just after now is still in order.
    assert_eq!(results[2]["code"], "clock_regression", "{out}");
    let (_, events) = run(&["events", "--json"], "");
    assert!(!events.contains("typo"), "the refused line was recorded: {events}");
    assert!(events.contains("soon"));
    // With the flag a simulation may run ahead.
    let (code, out) = run(&["apply", "--allow-future", "-"], &plan("later", "2206-01-01T00:00:00Z"));
    assert_eq!(code, Some(0));
    assert!(out.contains(r#""ok":true"#), "{out}");
}
