//! Usage alerts are facts decided once: a crossing is recorded in the same
//! append as the use that makes it, by whichever writer decides that use,
//! so a 64-way race over two writers on one stream records each threshold
//! exactly once per period; the notifications derived from the log are
//! the same on every writer's views and after a replay; `audit verify`
//! holds.

mod common;

use std::collections::BTreeMap;

use common::JetStream;
use events::Event;
use futures_util::StreamExt;
use ledger::command::parse_line;
use ledger::engine::{Ledger, Reply};
use ledger::log::{EventLog, Source};
use projections::{LedgerView, ViewStore};

const CATALOG: [&str; 2] = [
    r#"{"cmd":"define_plan","plan":{"id":"capped","currency":"USD","price":"5.00","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":6400,"token_overage":"block","addons":[]}}"#,
    r#"{"cmd":"subscribe","tenant":"acme","plan":"capped","seats":1}"#,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossings_are_decided_once_under_a_64_way_race_across_two_writers() {
    let js = JetStream::new();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut engines = Vec::new();
    for dir in &dirs {
        let views = ViewStore::open(dir.path()).unwrap();
        engines.push(Ledger::start(common::connect(&js.url()).await, views).await.unwrap());
    }
    for line in CATALOG {
        assert!(matches!(engines[0].submit(parse_line(line).unwrap()).await, Reply::Ok { .. }));
    }
    engines[0]
        .submit(parse_line(r#"{"cmd":"set_usage_alerts","tenant":"acme","tokens":[25,50,75,100]}"#).unwrap())
        .await;
    // 64 callers at once, alternating writers, 100 tokens each: 6,400 is
    // exactly the limit, so every threshold is crossed by some use.
    let mut calls = Vec::new();
    for i in 0..64 {
        let engine = engines[i % 2].clone();
        let line = format!(
            r#"{{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"r{i}","tokens":100}}"#
        );
        calls.push(tokio::spawn(async move { engine.submit(parse_line(&line).unwrap()).await }));
    }
    for call in calls {
        let reply = call.await.unwrap();
        assert!(matches!(reply, Reply::Ok { duplicate: false, .. }), "{reply:?}");
    }
    // One more: past the limit, a denial, and nothing crossed again.
    let denied = engines[1]
        .submit(
            parse_line(
                r#"{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"late","tokens":1}"#,
            )
            .unwrap(),
        )
        .await;
    assert!(matches!(denied, Reply::Rejected { seq: Some(_), .. }), "{denied:?}");

    // The log: each threshold once, recorded with the use that crossed it.
    // (acme's partition: where its uses and crossings are.)
    let log = common::connect(&js.url()).await;
    let log = log.in_partition(log.partition_of("acme"));
    let head = log.head().await.unwrap();
    let mut records = log.read(ledger::log::Position::pack(log.partition(), 1), None).await.unwrap();
    let mut crossed: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    let mut previous_used = None;
    while let Some(record) = records.next().await {
        let record = record.unwrap();
        let envelope = record.decode().event.unwrap();
        match envelope.payload {
            Event::TokensConsumed { .. } => previous_used = Some(record.position),
            Event::UsageThresholdCrossed { threshold, used, limit, .. } => {
                assert_eq!(limit, 6400);
                assert!(
                    used * 100 >= u64::from(threshold) * limit
                        && used * 100 < (u64::from(threshold) * limit + 100 * 100),
                    "{threshold}: {used}"
                );
                crossed.entry(threshold).or_default().push((record.position, previous_used.unwrap()));
            }
            _ => {}
        }
        if record.position >= head {
            break;
        }
    }
    assert_eq!(crossed.keys().copied().collect::<Vec<_>>(), [25, 50, 75, 100]);
    for (threshold, at) in &crossed {
        assert_eq!(at.len(), 1, "threshold {threshold} crossed {at:?}");
        // In the same append, right after (or among) the use's events.
        assert!(at[0].0 > at[0].1 && at[0].0 - at[0].1 <= 4, "{threshold}: {at:?}");
    }

    // Both writers' views derive the same notifications, in log order: four
    // crossings and one usage.denied.
    for engine in &engines {
        engine.sync().await.unwrap();
    }
    let kinds = |views: &ViewStore| -> Vec<String> {
        let mut rows = LedgerView::tenant_notices(views, "acme", 100).unwrap();
        rows.reverse();
        rows.iter().map(|r| r.notice.kind().to_string()).collect()
    };
    let first = kinds(engines[0].views());
    assert_eq!(first, kinds(engines[1].views()));
    assert_eq!(first.iter().filter(|k| *k == "usage.threshold_crossed").count(), 4, "{first:?}");
    assert_eq!(first.iter().filter(|k| *k == "usage.denied").count(), 1, "{first:?}");
    assert_eq!(first[0], "subscription.changed");
    for engine in engines {
        engine.shutdown().await;
    }

    // The audit re-derives all of it; a replay stores the same notifications.
    let data = tempfile::tempdir().unwrap();
    let ledger = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
            .arg("--data")
            .arg(data.path())
            .args(["--nats", &js.url()])
            .args(args)
            .env("LEDGER_LOG", "warn")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap())
    };
    let (ok, out) = ledger(&["audit", "verify"]);
    assert!(ok, "{out}");
    let views = ViewStore::open(&data.path().join("views")).unwrap();
    assert_eq!(kinds(&views), first);
}

/// A denial is news once: the first after an admitted use of its meter.
#[tokio::test(flavor = "multi_thread")]
async fn usage_denied_is_edge_triggered() {
    let dir = tempfile::tempdir().unwrap();
    let log = ledger::log::EmbeddedLog::open(&dir.path().join("log")).unwrap();
    let views = ViewStore::open(&dir.path().join("views")).unwrap();
    let engine = Ledger::start(log, views).await.unwrap();
    let lines = [
        CATALOG[0],
        CATALOG[1],
        r#"{"cmd":"set_usage_alerts","tenant":"acme","tokens":[],"storage":[]}"#,
        r#"{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"a","tokens":6000}"#,
        r#"{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"b","tokens":500}"#,
        r#"{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"c","tokens":500}"#,
        r#"{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"d","tokens":400}"#,
        r#"{"actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"e","tokens":1}"#,
        r#"{"actor":"acme:user","cmd":"upload","tenant":"acme","file":"huge","bytes":2000000000}"#,
    ];
    let mut replies = Vec::new();
    for line in lines {
        replies.push(engine.submit(parse_line(line).unwrap()).await);
    }
    engine.sync().await.unwrap();
    let rows = LedgerView::tenant_notices(engine.views(), "acme", 100).unwrap();
    let denied: Vec<(u64, &str)> = rows
        .iter()
        .rev()
        .filter(|r| r.notice.kind() == "usage.denied")
        .map(|r| {
            (
                r.position,
                if matches!(
                    r.notice,
                    projections::notice::Notice::Denied { meter: events::v1::MeterV1::Tokens, .. }
                ) {
                    "tokens"
                } else {
                    "storage"
                },
            )
        })
        .collect();
    let seq = |i: usize| match &replies[i] {
        Reply::Rejected { seq: Some(seq), .. } => *seq,
        other => panic!("{other:?}"),
    };
    // b denied (news), c denied (not news), d admitted, e denied (news
    // again), the upload denied (the storage meter's first).
    assert_eq!(denied, [(seq(4), "tokens"), (seq(7), "tokens"), (seq(8), "storage")]);
    assert!(rows.iter().all(|r| r.notice.kind() != "usage.threshold_crossed"), "silenced meters");
    engine.shutdown().await;
}
