//! Audit as a property of the real ledger: random command streams (every
//! command of the spec, with duplicates, denials and rejections) go through
//! `ledger apply` in runs of random length (so a tenant's commands are often
//! decided in one batch, chained), on the embedded log and on JetStream;
//! then `ledger audit verify` must exit 0, and a `ledger replay --into`
//! must answer every view exactly as the live ledger does.
//!
//! `LEDGER_AUDIT_SEEDS` picks the seeds (`7`, `1,5,9` or `1..200`; default a
//! few fixed ones); `scripts/audit-soak N` runs seeds 1..=N on both backends
//! and prints how many held.

mod common;

use std::path::Path;

use common::JetStream;
use serde_json::{json, Value};

/// SplitMix64: a seeded generator small enough to write out, so a seed
/// means the same stream on every machine and version of the test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const TENANTS: &[&str] = &["acme", "globex", "initech", "umbrella"];
const ADDONS: &[&str] = &["disk", "tokens", "support", "disk-once", "eur-pack", "missing"];
const PLANS: &[&str] = &["starter", "team", "metered", "euro", "missing"];
const DAY_S: i64 = 86_400;

/// The catalog every stream starts from (then redefined now and then:
/// `plan_exists`, `addon_exists`, or a keyed duplicate).
fn catalog() -> Vec<Value> {
    vec![
        json!({"cmd": "define_addon", "addon": {"id": "disk", "currency": "USD", "price": "2.50", "recurring": true, "grants": {"storage_gb": "0.000001"}}}),
        json!({"cmd": "define_addon", "addon": {"id": "tokens", "currency": "USD", "price": "3.33", "recurring": true, "grants": {"tokens": 300}}}),
        json!({"cmd": "define_addon", "addon": {"id": "support", "currency": "USD", "price": "49.99", "recurring": true, "grants": {"feature": "support"}}}),
        json!({"cmd": "define_addon", "addon": {"id": "disk-once", "currency": "USD", "price": "1.99", "recurring": false, "grants": {"storage_gb": "0.000001", "tokens": 500}}}),
        json!({"cmd": "define_addon", "addon": {"id": "eur-pack", "currency": "EUR", "price": "9.00", "recurring": false, "grants": {"tokens": 100}}}),
        json!({"cmd": "define_plan", "plan": {"id": "starter", "currency": "USD", "price": "20.00", "per_seat": false, "storage_quota_gb": "0.000001", "monthly_token_limit": 1000, "token_overage": "block", "addons": ["disk", "tokens", "support", "disk-once", "eur-pack"]}}),
        json!({"cmd": "define_plan", "plan": {"id": "team", "currency": "USD", "price": "8.00", "per_seat": true, "min_seats": 2, "max_seats": 6, "storage_quota_gb": "0.000002", "monthly_token_limit": 800, "token_overage": {"bill_per_1k": "0.37"}, "addons": ["tokens", "disk-once"]}}),
        json!({"cmd": "define_plan", "plan": {"id": "metered", "currency": "USD", "price": "0.05", "per_seat": false, "storage_quota_gb": "0.0000005", "monthly_token_limit": 0, "token_overage": {"bill_per_1k": "1.25"}, "addons": ["disk", "disk-once"]}}),
        json!({"cmd": "define_plan", "plan": {"id": "euro", "currency": "EUR", "price": "7.00", "per_seat": false, "storage_quota_gb": "0.000001", "monthly_token_limit": 500, "token_overage": "block", "addons": ["eur-pack"]}}),
    ]
}

/// One random command about `tenant` (or the catalog), as an `apply` line
/// without `at`. `keys` collects idempotency keys used so far, to resend.
fn command(rng: &mut Rng, tenant: &str, keys: &mut Vec<Value>, late: bool) -> Value {
    let user = json!(format!("{tenant}:user"));
    let admin = json!(format!("{tenant}:admin"));
    let mut line = match rng.below(100) {
        0..=1 => {
            json!({"cmd": "subscribe", "tenant": tenant, "plan": rng.pick(PLANS), "seats": rng.below(5) + 1})
        }
        2..=5 if late && rng.chance(15) => json!({"cmd": "cancel", "tenant": tenant}),
        6..=10 => {
            json!({"cmd": "set_seats", "tenant": tenant, "seats": rng.below(8), "actor": if rng.chance(50) { admin } else { json!("admin") }})
        }
        11..=13 => json!({"cmd": "change_plan", "tenant": tenant, "plan": rng.pick(PLANS)}),
        14 => json!({"cmd": "close_period", "tenant": tenant}),
        15..=30 => {
            json!({"cmd": "upload", "tenant": tenant, "file": format!("f{}", rng.below(6)), "bytes": rng.pick(&[0, 1, 200, 512, 900, 1500]), "actor": user})
        }
        31..=37 => {
            json!({"cmd": "delete_file", "tenant": tenant, "file": format!("f{}", rng.below(6)), "actor": user})
        }
        38..=58 => {
            json!({"cmd": "consume_tokens", "tenant": tenant, "request": format!("r{}", rng.below(120)), "tokens": rng.pick(&[1, 50, 300, 700, 1200]), "actor": user})
        }
        59..=66 => {
            json!({"cmd": "purchase_addon", "tenant": tenant, "addon": rng.pick(ADDONS), "purchase": format!("p{}", rng.below(6)), "quantity": rng.below(3) + 1, "payment": if rng.chance(40) { "card" } else { "invoice" }, "actor": if rng.chance(50) { admin } else { json!("admin") }})
        }
        67..=71 => {
            json!({"cmd": "settle_payment", "tenant": tenant, "purchase": format!("p{}", rng.below(6)), "outcome": if rng.chance(75) { "paid" } else { "failed" }, "reference": format!("ch_{}", rng.below(1000))})
        }
        72..=74 => {
            json!({"cmd": "cancel_addon", "tenant": tenant, "purchase": format!("p{}", rng.below(6)), "actor": admin})
        }
        75..=80 => json!({"cmd": "close_period", "tenant": tenant}),
        // Who may not: a user's admin command is `forbidden`, nothing recorded.
        81..=82 => json!({"cmd": "set_seats", "tenant": tenant, "seats": 2, "actor": user}),
        83 => catalog()[rng.below(9) as usize].clone(),
        90..=92 => {
            let list =
                |rng: &mut Rng| -> Vec<u64> { (0..rng.below(4)).map(|_| 1 + rng.below(150)).collect() };
            let actor = if rng.chance(50) { admin } else { json!("admin") };
            let mut line = json!({"cmd": "set_usage_alerts", "tenant": tenant, "actor": actor});
            if rng.chance(70) {
                line["tokens"] = json!(list(rng));
            }
            if rng.chance(50) || line.get("tokens").is_none() {
                line["storage"] = json!(list(rng));
            }
            line
        }
        84..=89 if !keys.is_empty() => {
            // A resend of a keyed command (a duplicate, or a conflict when
            // its content was changed).
            let mut again = rng.pick(keys).clone();
            if rng.chance(30) {
                if let Some(seats) = again.get("seats").and_then(Value::as_u64) {
                    again["seats"] = json!(seats + 1);
                }
            }
            again
        }
        _ => {
            json!({"cmd": "consume_tokens", "tenant": tenant, "request": format!("r{}", rng.below(40)), "tokens": 25, "actor": user})
        }
    };
    let keyable = !matches!(line["cmd"].as_str(), Some("upload" | "consume_tokens" | "purchase_addon"));
    if keyable && line.get("idempotency_key").is_none() && rng.chance(25) {
        line["idempotency_key"] = json!(format!("k{}", rng.below(1_000_000)));
        keys.push(line.clone());
    }
    line
}

/// A stream of `apply` lines with non-decreasing `at`, split into runs.
fn stream(seed: u64) -> Vec<Vec<String>> {
    let mut rng = Rng(seed);
    // A whole second, so anchors on the 29th-31st clamp in short months too.
    let mut t = chrono::DateTime::parse_from_rfc3339("2026-01-29T10:00:00Z").unwrap().timestamp();
    let mut lines: Vec<String> = Vec::new();
    let mut keys = Vec::new();
    let at = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    for mut line in catalog() {
        line["at"] = json!(at(t));
        lines.push(line.to_string());
    }
    for tenant in TENANTS {
        t += rng.below(DAY_S as u64) as i64;
        let plan = rng.pick(&PLANS[..4]);
        let line = json!({"at": at(t), "cmd": "subscribe", "tenant": tenant, "plan": plan, "seats": 2 + rng.below(3)});
        lines.push(line.to_string());
    }
    let commands = 150 + rng.below(150);
    for i in 0..commands {
        t += match rng.below(10) {
            0..=3 => 0,
            4..=6 => rng.below(6 * 3600) as i64,
            _ => rng.below(4 * DAY_S as u64) as i64,
        };
        let tenant = *rng.pick(TENANTS);
        let mut line = command(&mut rng, tenant, &mut keys, i > commands * 4 / 5);
        line["at"] = json!(at(t));
        lines.push(line.to_string());
    }
    // A tail that meets what every stream must: for each tenant a user's
    // admin command (forbidden), a file stored and sent again (a
    // duplicate), and uses past any quota or limit (recorded denials).
    t += 3600;
    for tenant in TENANTS {
        let user = format!("{tenant}:user");
        for tail in [
            json!({"cmd": "set_seats", "tenant": tenant, "seats": 3, "actor": user}),
            json!({"cmd": "upload", "tenant": tenant, "file": "tail", "bytes": 1, "actor": user}),
            json!({"cmd": "upload", "tenant": tenant, "file": "tail", "bytes": 1, "actor": user}),
            json!({"cmd": "upload", "tenant": tenant, "file": "huge", "bytes": 1u64 << 40, "actor": user}),
            json!({"cmd": "consume_tokens", "tenant": tenant, "request": "tail", "tokens": 1_000_000, "actor": user}),
        ] {
            let mut line = tail;
            line["at"] = json!(at(t));
            lines.push(line.to_string());
        }
    }
    // Runs of 1 to 40 lines: one `ledger apply` each.
    let mut runs = Vec::new();
    let mut rest = &lines[..];
    while !rest.is_empty() {
        let n = (1 + rng.below(40) as usize).min(rest.len());
        runs.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    runs
}

/// `ledger ARGS...` with nothing on its input.
fn ledger(data: &Path, nats: Option<&str>, args: &[&str]) -> (i32, String, String) {
    common::cli::ledger(data, nats, args, None)
}

/// Every answer a tenant's views give: usage now, the invoice now and at
/// the middle of each of its periods so far, the list of invoices.
fn answers(data: &Path, nats: Option<&str>, tenants: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for tenant in tenants {
        let (_, usage, _) = ledger(data, nats, &["usage", tenant, "--json"]);
        out.push((format!("usage {tenant}"), usage));
        let (_, invoice, _) = ledger(data, nats, &["invoice", tenant, "--json"]);
        out.push((format!("invoice {tenant}"), invoice));
        for month in 1..=6 {
            let at = format!("2026-{month:02}-15T00:00:00Z");
            let (_, invoice, _) = ledger(data, nats, &["invoice", tenant, "--at", &at, "--json"]);
            out.push((format!("invoice {tenant} at {at}"), invoice));
        }
    }
    let (_, tenants, _) = ledger(data, nats, &["tenants", "--json"]);
    out.push(("tenants".into(), tenants));
    out
}

/// Runs one seed; `Err` says what did not hold.
fn check_seed(seed: u64, nats: Option<&str>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("live");
    let input = dir.path().join("run.jsonl");
    let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
    for run in stream(seed) {
        std::fs::write(&input, run.join("\n")).unwrap();
        let (code, out, err) = ledger(&data, nats, &["apply", "--allow-future", input.to_str().unwrap()]);
        if code != 0 {
            return Err(format!("apply exited {code}: {err}{out}"));
        }
        for answer in out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()) {
            let outcome = match (&answer["ok"], &answer["duplicate"]) {
                (Value::Bool(true), Value::Bool(true)) => "duplicate".to_string(),
                (Value::Bool(true), _) => "accepted".to_string(),
                _ => answer["code"].as_str().unwrap_or("?").to_string(),
            };
            *outcomes.entry(outcome).or_default() += 1;
        }
    }
    // The stream must reach what it is meant to test.
    for needed in ["accepted", "duplicate", "forbidden"] {
        if !outcomes.contains_key(needed) {
            return Err(format!("the stream never met {needed}: {outcomes:?}"));
        }
    }
    // A recorded denial of one meter or the other (which, depends on the
    // plans the tenants ended on).
    if !outcomes.contains_key("token_limit_exceeded") && !outcomes.contains_key("storage_quota_exceeded") {
        return Err(format!("the stream never met a recorded denial: {outcomes:?}"));
    }
    let (code, out, err) = ledger(&data, nats, &["audit", "verify"]);
    if code != 0 {
        return Err(format!("audit verify exited {code}:\n{out}{err}"));
    }
    let rebuilt = dir.path().join("rebuilt");
    let (code, _, err) = ledger(&data, nats, &["replay", "--into", rebuilt.to_str().unwrap()]);
    if code != 0 {
        return Err(format!("replay exited {code}: {err}"));
    }
    let live = answers(&data, nats, TENANTS);
    let replayed = answers(&rebuilt, nats, TENANTS);
    for ((what, a), (_, b)) in live.iter().zip(&replayed) {
        if a != b {
            return Err(format!("{what}: live {a} but replayed {b}"));
        }
    }
    Ok(())
}

/// The seeds to run: `LEDGER_AUDIT_SEEDS` (`7`, `1,5,9`, `1..200`) or these.
fn seeds(default: &[u64]) -> Vec<u64> {
    let Ok(text) = std::env::var("LEDGER_AUDIT_SEEDS") else { return default.to_vec() };
    if let Some((a, b)) = text.split_once("..") {
        let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
        return (a..=b).collect();
    }
    text.split(',').map(|s| s.trim().parse().unwrap()).collect()
}

/// Runs every seed (not stopping at the first failure, so a soak counts
/// them all) and prints one line per seed and a summary.
fn run_seeds(backend: &str, seeds: &[u64], nats: impl Fn() -> Option<JetStream>) {
    let mut failed = Vec::new();
    for seed in seeds {
        let server = nats();
        let url = server.as_ref().map(JetStream::url);
        match check_seed(*seed, url.as_deref()) {
            Ok(()) => println!("audit-stream {backend} seed {seed}: held"),
            Err(why) => {
                println!("audit-stream {backend} seed {seed}: FAILED: {why}");
                failed.push(*seed);
            }
        }
    }
    println!("audit-stream {backend}: held for {} of {} seeds", seeds.len() - failed.len(), seeds.len());
    assert!(failed.is_empty(), "{backend}: seeds {failed:?} failed (see above)");
}

#[test]
fn random_streams_audit_clean_on_the_embedded_log() {
    run_seeds("embedded", &seeds(&[1, 2, 3]), || None);
}

#[test]
fn random_streams_audit_clean_on_jetstream() {
    run_seeds("jetstream", &seeds(&[4, 5]), || Some(JetStream::new()));
}

/// The issue's three lines: a finalize decided in the same batch as its
/// tenant's earlier events (chained) recorded a digest that verified under
/// no version.
#[test]
fn a_cancel_in_the_same_batch_as_the_subscription_audits_clean_on_both_backends() {
    let lines = [
        r#"{"at":"2025-12-01T00:00:00Z","cmd":"define_plan","plan":{"id":"micro","currency":"USD","price":"0.05","per_seat":false,"storage_quota_gb":"0.5","monthly_token_limit":1000,"token_overage":"block","addons":[]}}"#,
        r#"{"at":"2026-03-01T00:00:00Z","cmd":"subscribe","tenant":"initech","plan":"micro","seats":1}"#,
    ];
    for last in [
        r#"{"at":"2026-03-16T12:00:00Z","cmd":"cancel","tenant":"initech"}"#,
        r#"{"at":"2026-04-01T00:00:00Z","cmd":"close_period","tenant":"initech"}"#,
    ] {
        let server = JetStream::new();
        for nats in [None, Some(server.url())] {
            let dir = tempfile::tempdir().unwrap();
            let input = dir.path().join("in.jsonl");
            std::fs::write(&input, [lines[0], lines[1], last].join("\n")).unwrap();
            let data = dir.path().join("d");
            let (code, out, err) = ledger(&data, nats.as_deref(), &["apply", input.to_str().unwrap()]);
            assert_eq!(code, 0, "{out}{err}");
            let (code, out, err) = ledger(&data, nats.as_deref(), &["audit", "verify", "--json"]);
            assert_eq!(code, 0, "{last} on {nats:?}: {out}{err}");
            let report: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(report["invoices_checked"], 1, "{out}");
            // Recorded in the current format, which holds no log position.
            assert_eq!(report["digests"], json!({"v3": 1}), "{out}");
        }
    }
}
