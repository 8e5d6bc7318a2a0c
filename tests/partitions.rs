//! A ledger of several partitions (`ledger init --partitions N`): tenants
//! hashed over N streams, N kept on the server and read by every writer,
//! positions as `P:SEQ`, and views, audit and point-in-time queries over
//! every partition. Real nats-server, real `ledger` processes.

mod common;

use std::path::Path;

use common::cli::ledger;
use ledger::bench::natsd::NatsServer;
use ledger::log::{partition_of, EventLog, JetStreamLog, JetStreamOptions, LogError};
use serde_json::Value;

fn run(data: &Path, nats: &str, args: &[&str], input: Option<&str>) -> String {
    let (code, stdout, stderr) = ledger(data, Some(nats), args, input);
    assert_eq!(code, 0, "ledger {args:?}: {stderr}");
    stdout
}

fn json(data: &Path, nats: &str, args: &[&str]) -> Value {
    serde_json::from_str(&run(data, nats, args, None)).unwrap()
}

/// Commands over many tenants, so every one of 4 partitions gets some.
fn commands(tenants: &[String]) -> String {
    let mut lines = vec![
        r#"{"cmd":"define_plan","at":"2026-02-01T00:00:00Z","plan":{"id":"p","name":"P","currency":"USD","price":"10","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1000,"token_overage":"block","addons":[]}}"#.to_string(),
    ];
    // In time order (a command's `at` never goes back on the ledger's clock).
    for t in tenants {
        lines.push(format!(
            r#"{{"cmd":"subscribe","tenant":"{t}","plan":"p","seats":1,"at":"2026-03-01T00:00:00Z"}}"#
        ));
    }
    for (request, day) in [("r1", 2), ("r2", 3)] {
        for t in tenants {
            lines.push(format!(
                r#"{{"cmd":"consume_tokens","tenant":"{t}","request":"{request}","tokens":600,"at":"2026-03-0{day}T00:00:00Z"}}"#
            ));
        }
    }
    lines.push(r#"{"cmd":"close_period","tenant":"t0","at":"2026-04-01T00:00:00Z"}"#.to_string());
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_ledger_spreads_tenants_and_answers_over_every_partition() {
    let server = NatsServer::start_configured("").unwrap();
    let url = server.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    // Created once with N; another N is refused by name; the same N is a no-op.
    let info = json(data, &url, &["init", "--partitions", "4", "--json"]);
    assert_eq!(info["partitions"], 4, "{info}");
    let streams: Vec<&str> =
        info["streams"].as_array().unwrap().iter().map(|s| s["stream"].as_str().unwrap()).collect();
    assert_eq!(streams, ["LEDGER", "LEDGER_P1", "LEDGER_P2", "LEDGER_P3"]);
    let (code, _, stderr) = ledger(data, Some(&url), &["init", "--partitions", "2"], None);
    assert_ne!(code, 0);
    assert!(stderr.contains("a ledger of 4 partitions exists"), "{stderr}");
    assert_eq!(json(data, &url, &["init", "--partitions", "4", "--json"])["partitions"], 4);

    // Every writer reads N from the server.
    let log = JetStreamLog::connect(&JetStreamOptions::new(&url)).await.unwrap();
    assert_eq!(EventLog::partitions(&log), 4);

    let tenants: Vec<String> = (0..16).map(|i| format!("t{i}")).collect();
    let results = run(data, &url, &["apply", "-"], Some(&commands(&tenants)));
    let results: Vec<Value> = results.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(results.iter().all(|r| r["ok"] == true || r["code"] == "token_limit_exceeded"), "{results:?}");
    // Each answer names the partition of its tenant (the catalog's: 0).
    assert_eq!(results[0]["partition"], 0);
    for (i, t) in tenants.iter().enumerate() {
        assert_eq!(results[1 + i]["partition"], partition_of(t, 4), "{t}: {}", results[1 + i]);
    }
    let info = json(data, &url, &["info", "--json"]);
    let used =
        info["streams"].as_array().unwrap().iter().filter(|s| s["last_seq"].as_u64() > Some(0)).count();
    assert_eq!(used, 4, "16 tenants reach every partition: {info}");

    // Views over every partition: the second request of each tenant was denied.
    for t in &tenants {
        let usage = json(data, &url, &["usage", t, "--at", "2026-03-15T00:00:00Z", "--json"]);
        assert_eq!(usage["tokens"]["used"], 600, "{t}: {usage}");
    }
    let tenants_view = json(data, &url, &["tenants", "--json"]);
    assert_eq!(tenants_view.as_array().unwrap().len(), 16, "{tenants_view}");

    // Point in time by P:SEQ in the tenant's partition; another partition is refused.
    let p = partition_of("t3", 4);
    let events: Vec<Value> = run(data, &url, &["events", "--tenant", "t3", "--json"], None)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e["partition"] == p), "{events:?}");
    let first = format!("{p}:{}", events[1]["position"]);
    let before =
        json(data, &url, &["usage", "t3", "--at", "2026-03-15T00:00:00Z", "--as-of-seq", &first, "--json"]);
    assert_eq!(before["tokens"]["used"], 600, "{before}");
    let other = format!("{}:{}", (p + 1) % 4, events[1]["position"]);
    let (code, _, stderr) = ledger(data, Some(&url), &["usage", "t3", "--as-of-seq", &other], None);
    assert_ne!(code, 0);
    assert!(stderr.contains(&format!("lives in partition {p}")), "{stderr}");

    // Every partition's chains, the catalog and the finalized invoice verify.
    let verify = json(data, &url, &["audit", "verify", "--json"]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["partitions"], 4, "{verify}");
    assert_eq!(verify["invoices_checked"], 1, "{verify}");
    let all: usize = run(data, &url, &["events", "--json"], None).lines().count();
    assert_eq!(verify["events"], all as u64, "{verify}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_never_makes_a_partition_or_decides_with_another_number() {
    let server = NatsServer::start_configured("").unwrap();
    let url = server.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // A ledger made by a writer is one partition; init cannot change it.
    run(data, &url, &["apply", "-"], Some(&commands(&["t0".to_string()])));
    let (code, _, stderr) = ledger(data, Some(&url), &["init", "--partitions", "4"], None);
    assert_ne!(code, 0);
    assert!(stderr.contains("a ledger of 1 partition exists"), "{stderr}");
    let info = json(data, &url, &["info", "--json"]);
    assert_eq!(info["partitions"], 1, "{info}");

    // A partitioned ledger missing a partition's stream: writers refuse it
    // rather than make the stream or decide with fewer partitions.
    let server = NatsServer::start_configured("").unwrap();
    let url = server.url().to_string();
    run(data, &url, &["init", "--partitions", "3"], None);
    let client = async_nats::connect(&url).await.unwrap();
    async_nats::jetstream::new(client).delete_stream("LEDGER_P2").await.unwrap();
    match JetStreamLog::connect(&JetStreamOptions::new(&url)).await {
        Err(LogError::Layout(message)) => assert!(message.contains("LEDGER_P2"), "{message}"),
        Err(other) => panic!("expected a layout error, got {other}"),
        Ok(_) => panic!("a writer opened a ledger missing a partition"),
    }
    let other = tempfile::tempdir().unwrap();
    let (code, _, stderr) =
        ledger(other.path(), Some(&url), &["apply", "-"], Some(&commands(&["t0".to_string()])));
    assert_ne!(code, 0);
    assert!(stderr.contains("LEDGER_P2"), "{stderr}");
    let client = async_nats::connect(&url).await.unwrap();
    let names: Vec<String> = {
        use futures_util::StreamExt;
        async_nats::jetstream::new(client).stream_names().map(|n| n.unwrap()).collect().await
    };
    assert!(!names.contains(&"LEDGER_P2".to_string()), "{names:?}");
}

/// `usage` with every log position left out (they change in a copy).
fn without_positions(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "seq" | "partition" | "position" | "last_seq"))
                .map(|(k, v)| (k, without_positions(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_positions).collect()),
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_number_of_partitions_is_a_copy_into_a_new_ledger() {
    let tenants: Vec<String> = (0..16).map(|i| format!("t{i}")).collect();
    let (one, four, two) = (
        NatsServer::start_configured("").unwrap(),
        NatsServer::start_configured("").unwrap(),
        NatsServer::start_configured("").unwrap(),
    );
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ledgers = [
        (dirs[0].path(), one.url().to_string()),
        (dirs[1].path(), four.url().to_string()),
        (dirs[2].path(), two.url().to_string()),
    ];

    // Today's ledger of one partition, made by a writer.
    let (data, url) = (ledgers[0].0, ledgers[0].1.as_str());
    run(data, url, &["apply", "-"], Some(&commands(&tenants)));
    let events = run(data, url, &["events", "--json"], None).lines().count() as u64;

    // Into 4 partitions, then those 4 into 2.
    let copied = json(data, url, &["copy", "--to", &ledgers[1].1, "--partitions", "4", "--json"]);
    assert_eq!((copied["events"].as_u64(), copied["skipped"].as_u64()), (Some(events), Some(0)), "{copied}");
    assert_eq!((copied["partitions_from"].as_u64(), copied["partitions_to"].as_u64()), (Some(1), Some(4)));
    let (data4, url4) = (ledgers[1].0, ledgers[1].1.as_str());
    let copied = json(data4, url4, &["copy", "--to", &ledgers[2].1, "--partitions", "2", "--json"]);
    assert_eq!((copied["events"].as_u64(), copied["tenants"].as_u64()), (Some(events), Some(17)), "{copied}");

    // Each copy verifies, and answers as the original, positions aside.
    for (data, url) in &ledgers {
        let verify = json(data, url, &["audit", "verify", "--json"]);
        assert_eq!(
            (verify["ok"].as_bool(), verify["events"].as_u64()),
            (Some(true), Some(events)),
            "{verify}"
        );
        assert_eq!(verify["invoices_checked"], 1, "{verify}");
    }
    assert_eq!(json(data4, url4, &["info", "--json"])["partitions"], 4);
    for t in &tenants {
        let args = ["usage", t.as_str(), "--at", "2026-03-15T00:00:00Z", "--json"];
        let original = without_positions(json(data, url, &args));
        for (other_data, other_url) in &ledgers[1..] {
            assert_eq!(without_positions(json(other_data, other_url, &args)), original, "{t}");
        }
    }
    let args = ["invoice", "t0", "--at", "2026-03-15T00:00:00Z", "--json"];
    assert_eq!(without_positions(json(data4, url4, &args)), without_positions(json(data, url, &args)));

    // A copy goes only into an empty ledger.
    let (code, _, stderr) = ledger(data, Some(url), &["copy", "--to", url4, "--partitions", "4"], None);
    assert_ne!(code, 0);
    assert!(stderr.contains("holds events already"), "{stderr}");

    // On a partitioned ledger, commands queued after a catalog change see
    // it, whichever partition decides them (no `at`: decided as they come).
    let fresh = NatsServer::start_configured("").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    run(scratch.path(), fresh.url(), &["init", "--partitions", "4"], None);
    // Catalog commands commit one at a time, so the last plans land well
    // after the subscribes that name them reach their partitions.
    let mut lines: Vec<String> = (0..60)
        .map(|i| {
            format!(
                r#"{{"cmd":"define_plan","plan":{{"id":"q{i}","currency":"USD","price":"1","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":10,"token_overage":"block","addons":[]}}}}"#
            )
        })
        .collect();
    lines.extend(
        tenants.iter().enumerate().map(|(i, t)| {
            format!(r#"{{"cmd":"subscribe","tenant":"{t}","plan":"q{}","seats":1}}"#, 59 - i % 4)
        }),
    );
    let answers = run(scratch.path(), fresh.url(), &["apply", "-"], Some(&(lines.join("\n") + "\n")));
    assert!(answers.lines().all(|l| l.contains(r#""ok":true"#)), "{answers}");
}
