//! The spec's command line contract, end to end through the `ledger` binary,
//! on both backends; and folding the same log twice gives identical views.

mod common;

use std::path::Path;

use common::{Backend, JetStream};
use projections::{LedgerView, Projection, ViewStore};
use serde_json::{json, Value};

const WORKED_EXAMPLE: &str = r#"{"at":"2026-02-01T00:00:00Z","cmd":"define_addon","addon":{"id":"extra-storage","currency":"USD","price":"3.00","recurring":true,"grants":{"storage_gb":"5"}}}
{"at":"2026-02-01T00:00:00Z","cmd":"define_plan","plan":{"id":"starter","currency":"USD","price":"20.00","per_seat":false,"storage_quota_gb":"2","monthly_token_limit":10000,"token_overage":"block","addons":["extra-storage"]}}
{"at":"2026-03-01T00:00:00Z","cmd":"subscribe","tenant":"demo","plan":"starter","seats":2}
{"at":"2026-03-02T00:00:00Z","actor":"demo:user","cmd":"consume_tokens","tenant":"demo","request":"a","tokens":6000}
{"at":"2026-03-03T00:00:00Z","actor":"demo:user","cmd":"consume_tokens","tenant":"demo","request":"b","tokens":5000}
{"at":"2026-03-11T00:00:00Z","actor":"demo:admin","cmd":"purchase_addon","tenant":"demo","addon":"extra-storage","purchase":"x1","payment":"invoice"}
{"at":"2026-04-01T00:00:00Z","cmd":"close_period","tenant":"demo"}
"#;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ledger(data: &Path, nats: Option<&str>, args: &[&str], stdin: Option<&str>) -> Run {
    let (code, stdout, stderr) = common::cli::ledger(data, nats, args, stdin);
    Run { code, stdout, stderr }
}

fn lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Where the worked example's events land: the catalog's (lines 1 and 2)
/// in partition 0, demo's in its partition, after the catalog's when that
/// is partition 0 too (as on a ledger of one partition).
struct Layout {
    partitions: u32,
    demo: u32,
    /// demo's seq k is `base + k` (k from 1).
    base: u64,
}

impl Layout {
    fn of(nats: Option<&str>) -> Layout {
        let partitions = if nats.is_some() { common::test_partitions() } else { 1 };
        let demo = ledger::log::partition_of("demo", partitions);
        Layout { partitions, demo, base: if demo == 0 { 2 } else { 0 } }
    }

    /// demo's k-th event, as a command line position `P:SEQ`.
    fn at(&self, k: u64) -> String {
        format!("{}:{}", self.demo, self.base + k)
    }
}

fn worked_example(data: &Path, nats: Option<&str>) {
    let layout = Layout::of(nats);
    let (demo, base) = (layout.demo, layout.base);
    let file = data.join("example.jsonl");
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(&file, WORKED_EXAMPLE).unwrap();
    let run = ledger(data, nats, &["apply", file.to_str().unwrap()], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = lines(&run.stdout);
    assert_eq!(out.len(), 7);
    assert_eq!(out[0], json!({"line": 1, "ok": true, "partition": 0, "seq": 1, "duplicate": false}));
    assert_eq!(
        out[3],
        json!({"line": 4, "ok": true, "partition": demo, "seq": base + 2, "duplicate": false})
    );
    assert_eq!(out[4]["ok"], false);
    assert_eq!(out[4]["code"], "token_limit_exceeded");
    assert_eq!((out[4]["used"].clone(), out[4]["limit"].clone()), (json!(6000), json!(10000)));
    // The denial was recorded (seq 5), so the purchase lands on 6 and 7
    // (on one partition; demo's events 3, 4 and 5 in its own).
    assert_eq!(
        out[5],
        json!({"line": 6, "ok": true, "partition": demo, "seq": base + 5, "duplicate": false})
    );
    assert_eq!(
        out[6],
        json!({"line": 7, "ok": true, "partition": demo, "seq": base + 6, "duplicate": false})
    );

    let run = ledger(data, nats, &["invoice", "demo", "--at", "2026-03-15T00:00:00Z", "--json"], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap(),
        json!({
            "tenant": "demo",
            "period": {"start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z"},
            "currency": "USD",
            "status": "final",
            "lines": [
                {"code": "plan:starter", "description": "starter", "amount": "20.00", "paid": false},
                {"code": "addon:x1", "description": "extra-storage", "amount": "2.03", "paid": false}
            ],
            "total": "22.03",
            "paid": "0.00",
            "amount_due": "22.03"
        })
    );

    let run = ledger(data, nats, &["usage", "demo", "--at", "2026-03-20T00:00:00Z", "--json"], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap(),
        json!({
            "tenant": "demo",
            "plan": "starter",
            "seats": 2,
            "status": "active",
            "period": {"start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z"},
            "storage": {"used_bytes": 0, "quota_bytes": 7516192768u64},
            "tokens": {"used": 6000, "limit": 10000},
            "addons": [{"purchase": "x1", "addon": "extra-storage", "quantity": 1, "status": "active"}]
        })
    );
    positions(data, nats, &layout);

    // Default: ledger time (April 1), a new period at zero.
    let run = ledger(data, nats, &["usage", "demo", "--json"], None);
    let usage: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(usage["period"]["start"], "2026-04-01T00:00:00Z");
    assert_eq!(usage["tokens"]["used"], 0);

    // Readable tables.
    let run = ledger(data, nats, &["invoice", "demo", "--at", "2026-03-15T00:00:00Z"], None);
    assert!(run.stdout.contains("22.03") && run.stdout.contains("[final]"), "{}", run.stdout);
    let run = ledger(data, nats, &["usage", "demo"], None);
    assert!(run.stdout.contains("7516192768"), "{}", run.stdout);

    // Malformed lines: exit 2, nothing of them applied, the rest applied.
    let input = r#"{"at":"2026-04-02T00:00:00Z","actor":"demo:user","cmd":"consume_tokens","tenant":"demo","request":"c","tokens":10}
{"at":"2026-04-02T00:00:00Z","cmd":"consume_tokens","tenant":"demo","request":"d"}
this is not json
{"at":"2026-03-01T00:00:00Z","actor":"demo:user","cmd":"consume_tokens","tenant":"demo","request":"e","tokens":10}
{"at":"2026-04-03T00:00:00Z","actor":"demo:user","cmd":"consume_tokens","tenant":"demo","request":"c","tokens":10}
"#;
    let run = ledger(data, nats, &["apply", "-"], Some(input));
    assert_eq!(run.code, 2, "{}", run.stderr);
    let out = lines(&run.stdout);
    let codes: Vec<&str> = out.iter().map(|o| o["code"].as_str().unwrap_or("ok")).collect();
    assert_eq!(codes, ["ok", "malformed", "malformed", "clock_regression", "ok"]);
    assert_eq!(out[4]["duplicate"], true, "the same request again is a duplicate");
    assert_eq!(out[1]["line"], 2);
    let run = ledger(data, nats, &["usage", "demo", "--json"], None);
    let usage: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(usage["tokens"]["used"], 10);

    let run = ledger(data, nats, &["usage", "nobody", "--json"], None);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("nobody has no subscription"), "{}", run.stderr);

    // One result per input line: a blank one changes nothing.
    let input = "\n{\"at\":\"2026-04-03T00:00:00Z\",\"cmd\":\"consume_tokens\",\"actor\":\"demo:user\",\"tenant\":\"demo\",\"request\":\"f\",\"tokens\":1}\n   \n";
    let out = lines(&ledger(data, nats, &["apply", "-"], Some(input)).stdout);
    assert_eq!(out[0], json!({"line": 1, "ok": true, "blank": true}));
    assert_eq!((out[1]["line"].clone(), out[1]["ok"].clone()), (json!(2), json!(true)));
    assert_eq!(out[2], json!({"line": 3, "ok": true, "blank": true}));
    assert_eq!(out.len(), 3);
    // An unknown command names the ones there are.
    let run = ledger(data, nats, &["apply", "-"], Some(r#"{"cmd":"consume_token","tenant":"demo"}"#));
    assert!(
        run.stdout.contains("the commands are define_plan,") && run.stdout.contains("close_period"),
        "{}",
        run.stdout
    );

    // A cancelled tenant's figures stop at its last period: its final
    // invoice, and no draft after it, whenever asked.
    let cancel = r#"{"cmd":"cancel","tenant":"demo","at":"2026-04-16T12:00:00Z"}"#;
    let run = ledger(data, nats, &["apply", "--allow-future", "-"], Some(cancel));
    assert_eq!(run.code, 0, "{}", run.stdout);
    for at in [None, Some("2026-04-20T00:00:00Z"), Some("2027-01-01T00:00:00Z")] {
        let mut args = vec!["invoice", "demo", "--json"];
        args.extend(at.iter().flat_map(|t| ["--at", t]));
        let invoice: Value = serde_json::from_str(&ledger(data, nats, &args, None).stdout).unwrap();
        assert_eq!(invoice["status"], "final", "{at:?}: {invoice}");
        assert_eq!(invoice["period"]["start"], "2026-04-01T00:00:00Z", "{at:?}");
        assert_ne!(invoice["total"], "0.00", "the partial period is charged: {invoice}");
    }
    let usage: Value =
        serde_json::from_str(&ledger(data, nats, &["usage", "demo", "--json"], None).stdout).unwrap();
    assert_eq!(
        (usage["status"].clone(), usage["period"]["start"].clone()),
        (json!("cancelled"), json!("2026-04-01T00:00:00Z"))
    );
}

/// Positions are `P:SEQ` (a bare number: partition 0), and `info` shows the
/// ledger's partitions (one on the embedded log), at the worked example's
/// head (8 on one partition).
fn positions(data: &Path, nats: Option<&str>, layout: &Layout) {
    let usage = |position: &str| {
        let run = ledger(data, nats, &["usage", "demo", "--as-of-seq", position, "--json"], None);
        assert_eq!(run.code, 0, "{position}: {}", run.stderr);
        serde_json::from_str::<Value>(&run.stdout).unwrap()
    };
    // After line 4 (seq 4) and before the denial: 6000 tokens.
    assert_eq!(usage(&layout.at(2))["tokens"]["used"], 6000);
    let bare = (layout.base + 2).to_string();
    if layout.demo == 0 {
        assert_eq!(usage(&layout.at(2)), usage(&bare));
    } else {
        // A bare number is partition 0's, not demo's.
        let run = ledger(data, nats, &["usage", "demo", "--as-of-seq", &bare], None);
        assert!(run.code != 0 && run.stderr.contains("lives in partition"), "{}", run.stderr);
    }
    assert_eq!(usage(&layout.at(1))["tokens"]["used"], 0);
    let n = layout.partitions;
    let run = ledger(data, nats, &["usage", "demo", "--as-of-seq", &format!("{n}:4")], None);
    assert_ne!(run.code, 0);
    let s = if n == 1 { "" } else { "s" };
    let missing = format!("partition {n} does not exist (this ledger has {n} partition{s}");
    assert!(run.stderr.contains(&missing), "{}", run.stderr);
    let run = ledger(data, nats, &["usage", "demo", "--as-of-seq", "0:x"], None);
    assert!(run.code != 0 && run.stderr.contains("PARTITION:SEQ"), "{}", run.stderr);

    let into = data.join("at-0-4");
    let run =
        ledger(data, nats, &["replay", "--into", into.to_str().unwrap(), "--to-seq", &layout.at(2)], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(&format!("at position {}", layout.at(2))), "{}", run.stdout);

    // Every event in its tenant's partition, partition by partition.
    let events = lines(&ledger(data, nats, &["events", "--json"], None).stdout);
    let place = |e: &Value| (e["partition"].as_u64().unwrap(), e["position"].as_u64().unwrap());
    assert!(
        events.iter().all(|e| {
            let tenant = e["tenant"].as_str().unwrap();
            e["partition"] == ledger::log::partition_of(tenant, n)
        }),
        "{events:?}"
    );
    assert!(events.windows(2).all(|w| place(&w[0]) < place(&w[1])), "{events:?}");
    let from = (u64::from(layout.demo), layout.base + 5);
    let tail = lines(&ledger(data, nats, &["events", "--json", "--from", &layout.at(5)], None).stdout);
    assert_eq!(tail.first().map(place), Some(from), "{tail:?}");
    assert_eq!(tail.len(), events.iter().filter(|e| place(e) >= from).count());
    let explained =
        ledger(data, nats, &["invoice", "demo", "--at", "2026-03-15T00:00:00Z", "--explain", "--json"], None);
    let explained: Value = serde_json::from_str(&explained.stdout).unwrap();
    let behind = &explained["explain"][0]["events"];
    assert!(
        behind.as_array().is_some_and(|e| !e.is_empty() && e.iter().all(|e| e["partition"] == layout.demo)),
        "{behind}"
    );

    let run = ledger(data, nats, &["info", "--json"], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let info: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(info["partitions"], n, "{info}");
    let streams = info["streams"].as_array().unwrap();
    assert_eq!(streams.len(), n as usize, "{info}");
    // The catalog's 2 events in partition 0, demo's 6 in its own.
    for (partition, stream) in (0..n).zip(streams) {
        let last_seq = (if partition == 0 { 2 } else { 0 }) + (if partition == layout.demo { 6 } else { 0 });
        assert_eq!(
            (stream["partition"].clone(), stream["last_seq"].clone()),
            (json!(partition), json!(last_seq))
        );
        if nats.is_some() {
            assert_eq!(stream["stream"], ledger::log::stream_name(partition), "{info}");
        }
    }
    let expected = if nats.is_some() { json!(["jetstream", "LEDGER"]) } else { json!(["embedded", null]) };
    assert_eq!(json!([info["backend"], streams[0]["stream"]]), expected, "{info}");
    let table = ledger(data, nats, &["info"], None).stdout;
    let title = format!("{n} partition{s} on the");
    assert!(table.starts_with(&title) && table.contains("LAST SEQ"), "{table}");
}

#[test]
fn embedded_cli_contract() {
    let dir = tempfile::tempdir().unwrap();
    worked_example(dir.path(), None);
}

#[test]
fn jetstream_cli_contract() {
    let backend = JetStream::new();
    let dir = tempfile::tempdir().unwrap();
    worked_example(dir.path(), Some(&backend.url()));
}

#[test]
fn demo_runs_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let run = ledger(dir.path(), None, &["demo"], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for expected in
        ["22.03", "token_limit_exceeded", "storage_quota_exceeded", "forbidden", "paid", "[final]"]
    {
        assert!(run.stdout.contains(expected), "demo output lacks {expected}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn folding_the_same_log_twice_gives_identical_views() {
    let mut backend = JetStream::new();
    let data = tempfile::tempdir().unwrap();
    let scenario: Vec<String> = ledger::demo::SCENARIO.lines().map(str::to_string).collect();
    let log = backend.open().await;
    let live = ViewStore::open(&data.path().join("live")).unwrap();
    let engine = ledger::engine::Ledger::start(log.clone(), live.clone()).await.unwrap();
    ledger::apply::apply_lines(&engine, &scenario, ledger::apply::Future::Allow).await.unwrap();
    let mut dumps = Vec::new();
    for name in ["one", "two"] {
        let store = ViewStore::open(&data.path().join(name)).unwrap();
        // Every partition, the catalog's (partition 0) first.
        for partition in 0..log.partitions() {
            ledger::projector::catch_up(&log.in_partition(partition), &store, &[&LedgerView]).await.unwrap();
        }
        dumps.push(store.dump(LedgerView::NAME).unwrap());
    }
    // Catalog, ledger time, checkpoint, three tenants, their final invoices.
    let keys: Vec<String> = dumps[0].iter().map(|(k, _)| String::from_utf8_lossy(k).into_owned()).collect();
    for tenant in ["acme", "demo", "globex"] {
        assert!(keys.contains(&format!("s/{tenant}")), "{keys:?}");
    }
    assert!(keys.iter().any(|k| k.starts_with("i/")), "{keys:?}");
    assert_eq!(dumps[0], dumps[1], "two folds of one log differ");
    assert_eq!(dumps[0], live.dump(LedgerView::NAME).unwrap(), "the live view differs from a clean fold");
}
