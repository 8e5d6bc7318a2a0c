//! The `ledger` binary end to end, on both backends.

mod common;

use std::path::Path;

use common::{Backend, Embedded, JetStream};
use ledger::log::{AppendMessage, EventLog};
use serde_json::json;

fn ledger(data: &Path, nats: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = common::cli::ledger(data, nats, args, None);
    (code == 0, out, err)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn events_and_activity<B: Backend>(mut backend: B, data: &Path, nats: Option<&str>) {
    let log = backend.open().await;
    // One batch is one partition's: beta (or a name beside acme's).
    let partition = log.partition_of("acme");
    let beta = common::beside("acme", "beta", log.partitions());
    let mut chained = common::Chained::default();
    log.append(chained.batch(&["acme", &beta, "acme", "acme"], 0)).await.unwrap();
    // A message that did not come from the ledger: printed as undecodable,
    // never counted.
    log.append(ledger::log::AppendBatch {
        messages: vec![AppendMessage {
            tenant: "acme".into(),
            kind: "tokens_consumed",
            payload: "forged".into(),
        }],
        expectations: vec![],
    })
    .await
    .unwrap();
    drop(log);

    let (ok, out, err) = ledger(data, nats, &["events", "--json"]);
    assert!(ok, "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["position"], 1);
    assert!(lines.iter().all(|l| l["partition"] == partition), "{lines:?}");
    assert_eq!(lines[0]["kind"], "file_stored");
    assert_eq!(lines[0]["actor"], "acme:user");
    assert_eq!(lines[1]["tenant"], beta.as_str());
    assert_eq!(lines[1]["payload"]["TokensConsumed"]["tokens"], 2);
    assert_eq!(lines[1]["at"], "2026-03-01T00:00:00.000001Z");
    assert!(lines[4]["error"].as_str().unwrap().contains("schema version"), "{}", lines[4]);
    assert_eq!(lines[4]["position"], 5);

    // A bare position is partition 0's: acme's are P:SEQ in another.
    let from = if partition == 0 { "2".to_string() } else { format!("{partition}:2") };
    let (ok, out, _) = ledger(data, nats, &["events", "--json", "--tenant", "acme", "--from", &from]);
    assert!(ok);
    let positions: Vec<u64> = json_lines(&out).iter().map(|l| l["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, [3, 4, 5]);

    let (ok, out, _) = ledger(data, nats, &["events"]);
    assert!(ok);
    assert!(out.lines().next().unwrap().contains("position"), "a header row");
    assert!(out.contains("UNDECODABLE"));

    let (ok, out, err) = ledger(data, nats, &["activity", "acme", "--json"]);
    assert!(ok, "{err}");
    let acme = &json_lines(&out)[0];
    assert_eq!(acme["events"], 3, "the forged message is not counted");
    assert_eq!(acme["events_by_kind"]["file_stored"], 2, "events 0 and 3");
    assert_eq!(acme["events_by_kind"]["tokens_consumed"], 1, "event 2");
    assert_eq!((acme["partition"].clone(), acme["last_position"].clone()), (json!(partition), json!(4)));

    let (ok, _, err) = ledger(data, nats, &["activity", "nobody"]);
    assert!(!ok);
    assert!(err.contains("no events for tenant nobody"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_events_and_activity() {
    let backend = Embedded::new();
    let data = backend.dir.path().to_path_buf();
    events_and_activity(backend, &data, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_events_and_activity() {
    let backend = JetStream::new();
    let data = tempfile::tempdir().unwrap();
    let url = backend.url();
    events_and_activity(backend, data.path(), Some(&url)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn views_refuse_a_different_log() {
    let backend = JetStream::new();
    let data = tempfile::tempdir().unwrap();
    // An embedded ledger (reading commands refuse a directory without one).
    let empty = data.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let (ok, _, err) = ledger(data.path(), None, &["apply", empty.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, _, err) = ledger(data.path(), Some(&backend.url()), &["activity"]);
    assert!(!ok);
    assert!(err.contains("were built from the embedded log"), "{err}");
}

#[test]
fn help_lists_the_commands() {
    let (ok, out, _) = ledger(Path::new("."), None, &["--help"]);
    assert!(ok);
    for command in ["events", "activity", "project", "bench"] {
        assert!(out.contains(command), "{command} missing from --help");
    }
}

#[test]
fn refuses_a_server_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = ledger(dir.path(), Some("nats://127.0.0.1:1"), &["events"]);
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
}

/// A data directory a running `serve` holds (sled admits one process):
/// the queries answer through serve's socket exactly as they do once it
/// stops; a command that needs the files is refused at once, saying why;
/// a socket left by a killed serve is passed over.
#[test]
fn a_served_data_directory_answers_queries_through_serve() {
    use common::http::HttpServe;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let (ok, _, err) = ledger(&data, None, &["demo"]);
    assert!(ok, "{err}");
    // Instants in the past, and the log's events up to a position: serve's
    // billing clock may be closing the demo's ended periods meanwhile, and
    // what already happened answers the same whoever is asked.
    let queries: [&[&str]; 6] = [
        &["usage", "acme", "--at", "2026-03-20T00:00:00Z", "--json"],
        &["usage", "demo", "--at", "2026-03-20T00:00:00Z", "--explain", "--json"],
        &["invoice", "acme", "--at", "2026-03-15T00:00:00Z", "--json"],
        &["invoice", "demo", "--at", "2026-03-15T00:00:00Z", "--explain"],
        &["tenants", "--json"],
        &["events", "--tenant", "demo"],
    ];
    let mut serve = HttpServe::spawn(&data, None);
    assert!(data.join("serve.sock").exists());
    let through_serve: Vec<String> = queries
        .iter()
        .map(|args| {
            let (ok, out, err) = ledger(&data, None, args);
            assert!(ok, "{args:?}: {err}");
            out
        })
        .collect();
    let (ok, activity, err) = ledger(&data, None, &["activity", "demo", "--json"]);
    assert!(ok && activity.contains(r#""tenant":"demo""#), "activity through serve: {err}");
    let (ok, info, err) = ledger(&data, None, &["info", "--json"]);
    let info: serde_json::Value =
        serde_json::from_str(&info).unwrap_or_else(|_| panic!("info through serve: {err}"));
    assert!(ok && info["partitions"] == 1 && info["streams"][0]["last_seq"].as_u64() >= Some(31), "{info}");
    let started = std::time::Instant::now();
    let (ok, _, err) = ledger(&data, None, &["audit", "verify"]);
    assert!(!ok);
    assert!(err.contains("held by a running `ledger serve`") && err.contains("`audit verify`"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "refused without waiting on the lock");
    let (ok, _, err) = ledger(&data, None, &["usage", "nobody"]);
    assert!(!ok && err.contains("not_subscribed"), "{err}");

    // Killed, serve leaves its socket behind; nothing answers on it.
    serve.kill();
    assert!(data.join("serve.sock").exists());
    for (args, served) in queries.iter().zip(&through_serve) {
        let (ok, out, err) = ledger(&data, None, args);
        assert!(ok, "{args:?}: {err}");
        if args[0] == "events" {
            // The log may have grown since (the clock's closes): the same
            // records up to where serve's answer ended.
            assert!(out.starts_with(served.as_str()), "{args:?}:\n{served}\n---\n{out}");
        } else {
            assert_eq!(&out, served, "{args:?}");
        }
    }
}

/// A subscription without `at` is dated by the ledger's clock on a whole
/// second, so its period bounds (which repeat its anchor) carry no
/// fraction of a second.
#[test]
fn a_subscription_the_clock_dates_starts_on_a_whole_second() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let commands = dir.path().join("commands.jsonl");
    std::fs::write(
        &commands,
        concat!(
            r#"{"cmd":"define_plan","plan":{"id":"p","currency":"USD","price":"1.00","per_seat":false,"#,
            r#""storage_quota_gb":"1","monthly_token_limit":10,"token_overage":"block","addons":[]}}"#,
            "\n",
            r#"{"cmd":"subscribe","tenant":"acme","plan":"p","seats":1}"#,
            "\n",
        ),
    )
    .unwrap();
    let (ok, out, err) = ledger(&data, None, &["apply", commands.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = ledger(&data, None, &["usage", "acme", "--json"]);
    assert!(ok, "{err}");
    let usage: serde_json::Value = serde_json::from_str(&out).unwrap();
    for bound in ["start", "end"] {
        let at = usage["period"][bound].as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(at).unwrap();
        assert_eq!(parsed.timestamp_subsec_nanos(), 0, "{bound} {at}");
        assert!(!at.contains('.'), "{bound} {at}");
    }
}
