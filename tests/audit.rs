//! Replay and audit: a rebuild equals the live views on both backends;
//! `audit verify` catches a view altered behind its back and raw publishes
//! that did not come from the ledger (which no view applies); point-in-time
//! answers equal what `usage` printed at that moment.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Backend, Embedded, JetStream};
use ledger::apply::apply_lines;
use ledger::engine::Ledger;
use ledger::log::{EventLog, Position};
use projections::{ViewStore, ALL_VIEWS};
use serde_json::Value;

fn ledger_bin(data: &Path, nats: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledger"));
    command.arg("--data").arg(data).env("LEDGER_LOG", "warn");
    if let Some(url) = nats {
        command.arg("--nats").arg(url);
    }
    let out = command.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn scenario() -> Vec<String> {
    ledger::demo::SCENARIO.lines().map(str::to_string).collect()
}

async fn replay_equals_live<B: Backend>(mut backend: B) {
    let dir = tempfile::tempdir().unwrap();
    let log = backend.open().await;
    let live = ViewStore::open(&dir.path().join("live")).unwrap();
    let engine = Ledger::start(log.clone(), live.clone()).await.unwrap();
    apply_lines(&engine, &scenario(), ledger::apply::Future::Allow).await.unwrap();
    engine.shutdown().await;
    let rebuilt_dir = dir.path().join("rebuilt");
    let (reached, rebuilt) = ledger::audit::replay_into(&log, &rebuilt_dir, None, &ALL_VIEWS).await.unwrap();
    // Every partition to its head; what it reports is partition 0's (the
    // catalog's), and the partitions hold the whole scenario between them.
    let heads = ledger::log::heads(&log).await.unwrap();
    assert_eq!(reached, heads[0]);
    assert!(heads.iter().map(|h| Position::unpack(*h).seq).sum::<u64>() > 20);
    for view in ALL_VIEWS {
        assert_eq!(live.dump(view.name()).unwrap(), rebuilt.dump(view.name()).unwrap(), "{}", view.name());
    }
    // --to-seq stops where asked (a position in acme's partition).
    let partial_dir = dir.path().join("partial");
    let seven = Position::pack(log.partition_of("acme"), 7);
    let (reached, partial) =
        ledger::audit::replay_into(&log, &partial_dir, Some(seven), &ALL_VIEWS).await.unwrap();
    assert_eq!(reached, seven);
    drop(partial);
    assert!(
        ledger::audit::replay_into(&log, &partial_dir, None, &ALL_VIEWS).await.is_err(),
        "refuses a used dir"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_replay_equals_live_views() {
    replay_equals_live(Embedded::new()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_replay_equals_live_views() {
    replay_equals_live(JetStream::new()).await;
}

#[test]
fn verify_catches_a_view_altered_behind_its_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let (code, _, err) = ledger_bin(&data, None, &["demo"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = ledger_bin(&data, None, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("finalized invoices re-derived: 3"), "{out}");

    // Give acme 5 more bytes of storage in the stored view.
    {
        let views = ViewStore::open(&data.join("views")).unwrap();
        let tree = views.tree("ledger").unwrap();
        let mut state: projections::TenantRow =
            projections::decode_row("ledger", &tree.get(b"s/acme").unwrap().unwrap()).unwrap();
        state.state.used_bytes += 5;
        let bytes = bincode::serde::encode_to_vec(&state, bincode::config::standard()).unwrap();
        tree.insert(b"s/acme", bytes).unwrap();
        tree.flush().unwrap();
    }
    let (code, out, _) = ledger_bin(&data, None, &["audit", "verify", "--json"]);
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], false);
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["kind"], "view_differs");
    assert_eq!(findings[0]["view"], "ledger");
    assert_eq!(findings[0]["key"], "s/acme");
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_publishes_are_never_applied_and_are_reported() {
    let backend = JetStream::new();
    let url = backend.url();
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("demo.jsonl");
    std::fs::write(&input, ledger::demo::SCENARIO).unwrap();
    let (code, _, err) = ledger_bin(data.path(), Some(&url), &["apply", input.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (_, before, _) = ledger_bin(data.path(), Some(&url), &["usage", "acme", "--json"]);

    // Straight to the stream, around the ledger: garbage, and a well-formed
    // event that claims 1,000,000 tokens but does not continue acme's chain.
    // (On the subject of acme's partition, `ledger.v1` or `ledger.p<P>.v1`.)
    let partition = common::connect(&url).await.partition_of("acme");
    let subject = format!("{}.acme.tokens_consumed", events::partition_prefix(partition));
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let garbage = js.publish(subject.clone(), "not an event".into()).await.unwrap().await.unwrap();
    let forged_event = events::Envelope {
        event_id: 42,
        tenant: "acme".into(),
        at_us: ledger::command::parse_at("2026-04-03T00:00:00Z").unwrap(),
        actor: events::Actor::TenantUser { tenant: "acme".into() },
        prev_hash: [0; 32],
        offline: None,
        key: None,
        payload: events::Event::TokensConsumed {
            request: "forged".into(),
            tokens: 1_000_000,
            offline: false,
        },
    };
    let forged =
        js.publish(subject, events::encode(&forged_event).unwrap().into()).await.unwrap().await.unwrap();
    // On a ledger of several partitions, the same forgery on another
    // partition's subject for acme: read there, it is no ledger event (a
    // fold of that partition must not take it for acme's first event).
    let partitions = common::test_partitions();
    let misplaced = if partitions > 1 {
        let other = (partition + 1) % partitions;
        let subject = format!("{}.acme.tokens_consumed", events::partition_prefix(other));
        let ack =
            js.publish(subject, events::encode(&forged_event).unwrap().into()).await.unwrap().await.unwrap();
        Some((u64::from(other), ack.sequence))
    } else {
        None
    };

    // Views skip both (and the projector keeps going); the ledger still decides.
    let (code, after, err) = ledger_bin(data.path(), Some(&url), &["usage", "acme", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(before, after, "a raw publish changed the view");
    let more = r#"{"at":"2026-04-04T00:00:00Z","actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"after","tokens":5}"#;
    std::fs::write(&input, more).unwrap();
    let (code, out, err) = ledger_bin(data.path(), Some(&url), &["apply", input.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#""ok":true"#), "{out}");
    let (_, usage, _) = ledger_bin(data.path(), Some(&url), &["usage", "acme", "--json"]);
    let usage: Value = serde_json::from_str(&usage).unwrap();
    assert_eq!(usage["tokens"]["used"], 1005, "1000 before, 5 now, none forged");

    let (code, out, err) = ledger_bin(data.path(), Some(&url), &["audit", "verify", "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let found: Vec<(String, u64, u64)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let kind = f["kind"].as_str().unwrap().to_string();
            (kind, f["partition"].as_u64().unwrap(), f["position"].as_u64().unwrap())
        })
        .collect();
    let partition = u64::from(partition);
    let mut expected = vec![
        ("undecodable".to_string(), partition, garbage.sequence),
        ("chain_break".to_string(), partition, forged.sequence),
    ];
    expected.extend(misplaced.map(|(p, seq)| ("undecodable".to_string(), p, seq)));
    let mut found = found;
    found.sort_by_key(|f| (f.1, f.2));
    expected.sort_by_key(|f| (f.1, f.2));
    assert_eq!(found, expected);

    // A fresh fold of the whole log (a new data directory) agrees.
    let fresh = tempfile::tempdir().unwrap();
    let (code, usage_fresh, err) = ledger_bin(fresh.path(), Some(&url), &["usage", "acme", "--json"]);
    assert_eq!(code, 0, "{err}");
    let usage_fresh: Value = serde_json::from_str(&usage_fresh).unwrap();
    assert_eq!(usage_fresh["tokens"]["used"], 1005, "{usage_fresh}");
}

#[tokio::test(flavor = "multi_thread")]
async fn point_in_time_answers_match_what_usage_printed_then() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let lines = scenario();
    let mut snapshots: Vec<(u64, String, Value)> = Vec::new();
    for chunk in lines.chunks(6) {
        let input = data.join("chunk.jsonl");
        std::fs::write(&input, chunk.join("\n")).unwrap();
        let (code, out, err) = ledger_bin(data, None, &["apply", input.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let seq = out.lines().filter_map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64()).max();
        let (code, usage, _) = ledger_bin(data, None, &["usage", "acme", "--json"]);
        if code == 0 {
            let usage: Value = serde_json::from_str(&usage).unwrap();
            let (_, events, _) = ledger_bin(data, None, &["events", "--json"]);
            let last = events.lines().last().map(|l| serde_json::from_str::<Value>(l).unwrap()).unwrap();
            snapshots.push((
                last["position"].as_u64().unwrap(),
                last["at"].as_str().unwrap().to_string(),
                usage,
            ));
        }
        let _ = seq;
    }
    assert!(snapshots.len() >= 3);
    for (position, at, usage) in &snapshots {
        let (code, then, err) =
            ledger_bin(data, None, &["usage", "acme", "--json", "--as-of-seq", &position.to_string()]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(&serde_json::from_str::<Value>(&then).unwrap(), usage, "as of seq {position}");
        let (code, then, err) = ledger_bin(data, None, &["usage", "acme", "--json", "--as-of", at]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(&serde_json::from_str::<Value>(&then).unwrap(), usage, "as of {at}");
    }
}

#[test]
fn explain_adds_up_and_what_if_reprices() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let (code, _, err) = ledger_bin(&data, None, &["demo"]);
    assert_eq!(code, 0, "{err}");
    for tenant in ["demo", "acme", "globex"] {
        let (code, out, err) = ledger_bin(
            &data,
            None,
            &["invoice", tenant, "--at", "2026-03-10T00:00:00Z", "--explain", "--json"],
        );
        assert_eq!(code, 0, "{err}");
        let invoice: Value = serde_json::from_str(&out).unwrap();
        let explained = invoice["explain"].as_array().unwrap();
        assert_eq!(explained.len(), invoice["lines"].as_array().unwrap().len(), "{tenant}");
        let sum: rust_decimal::Decimal = explained
            .iter()
            .map(|l| l["amount"].as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap())
            .sum();
        assert_eq!(
            sum.to_string(),
            invoice["total"].as_str().unwrap(),
            "{tenant}: lines add up to the total"
        );
        for line in explained {
            let exact: rust_decimal::Decimal = line["exact"].as_str().unwrap().parse().unwrap();
            let rounded =
                exact.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
            let amount: rust_decimal::Decimal = line["amount"].as_str().unwrap().parse().unwrap();
            assert_eq!(rounded, amount, "{tenant} {}", line["code"]);
            assert!(!line["events"].as_array().unwrap().is_empty(), "{tenant} {}: no events", line["code"]);
        }
    }
    let (_, out, _) =
        ledger_bin(&data, None, &["invoice", "acme", "--at", "2026-03-10T00:00:00Z", "--explain", "--json"]);
    let invoice: Value = serde_json::from_str(&out).unwrap();
    let plan_line = &invoice["explain"][0];
    assert_eq!(plan_line["code"], "plan:team");
    let kinds: Vec<&str> =
        plan_line["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["subscribed", "seats_changed"]);
    assert!(plan_line["arithmetic"].as_str().unwrap().contains("17539200 seat-seconds"), "{plan_line}");

    let (code, out, err) = ledger_bin(&data, None, &["usage", "demo", "--explain", "--json"]);
    assert_eq!(code, 0, "{err}");
    let usage: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(usage["explain"]["storage"]["files"].as_array().unwrap().len(), 2, "two live files");

    let (code, out, err) = ledger_bin(
        &data,
        None,
        &["audit", "what-if", "demo", "--plan", "team", "--at", "2026-03-10T00:00:00Z", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["actual"]["total"], "22.03");
    assert_eq!(report["what_if"]["total"], "18.03", "team: 8.00 x 2 seats + the same add-on");
    assert_eq!(report["difference"], "-4.00");
    let (code, _, err) = ledger_bin(&data, None, &["audit", "what-if", "demo", "--plan", "team-eu"]);
    assert_ne!(code, 0);
    assert!(err.contains("currency_mismatch"), "{err}");
}
