//! Kill the projector process (SIGKILL) mid-stream again and again, resume
//! it each time, and check that the view it ends with is byte-identical to a
//! clean fold of the same log: no event applied twice, none skipped.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, Embedded, JetStream};
use ledger::log::{AppendBatch, EventLog, Position};
use projections::{Activity, Projection, ViewStore};

const EVENTS: u64 = 30_000;

async fn fill<L: EventLog>(log: &L) {
    let tenants = ["acme", "beta", "gamma", "delta", "epsilon", "zeta", "eta"];
    let mut n = 0;
    let mut chained = common::Chained::default();
    while n < EVENTS {
        let names: Vec<&str> = (0..1000).map(|i| tenants[((n + i) * 7919 % 7) as usize]).collect();
        // A batch is one partition's: the thousand events split by
        // partition (one batch on a ledger of one), each tenant's in order.
        let mut parts: std::collections::BTreeMap<u32, AppendBatch> = Default::default();
        for message in chained.batch(&names, n).messages {
            parts.entry(log.partition_of(&message.tenant)).or_default().messages.push(message);
        }
        for (_, part) in parts {
            log.append(part).await.unwrap();
        }
        n += 1000;
    }
}

/// How many events of the log's `partitions` the view has folded: its
/// checkpoint's sequence in each partition, added up.
fn checkpoint(data: &Path, view: &str, partitions: u32) -> u64 {
    let views = ViewStore::open(&data.join("views")).unwrap();
    (0..partitions).map(|p| Position::unpack(views.checkpoint_in(view, p).unwrap()).seq).sum()
}

/// Runs `ledger project` and SIGKILLs it at a pseudo-random moment, until one
/// run finishes by itself. Returns how many kills left a view part-way.
fn kill_until_done(data: &Path, nats: Option<&str>, view: &str, events: u64, partitions: u32) -> usize {
    let mut mid_stream_kills = 0;
    let mut seed = 0x2545_f491_u64;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(Instant::now() < deadline, "projector never finished");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ledger"));
        command.arg("--data").arg(data);
        if let Some(url) = nats {
            command.arg("--nats").arg(url);
        }
        command.args(["project", "--view", view, "--batch-size", "7"]).env("LEDGER_LOG", "warn");
        let mut child = command.stdout(Stdio::null()).spawn().unwrap();
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let wait_ms = 40 + (seed >> 33) % 400;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(wait_ms) {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "projector failed: {status}");
                return mid_stream_kills;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let at = checkpoint(data, view, partitions);
        if at > 0 && at < events {
            mid_stream_kills += 1;
        }
    }
}

async fn crash_and_resume<B: Backend>(mut backend: B, data: &Path, nats: Option<String>) {
    let log = backend.open().await;
    fill(&log).await;
    let partitions = log.partitions();
    // The embedded log is locked by whoever opens it: let the child have it.
    drop(log);

    let kills = kill_until_done(data, nats.as_deref(), Activity::NAME, EVENTS, partitions);
    assert!(kills >= 3, "only {kills} kills landed mid-stream; the test proved little");
    assert_eq!(checkpoint(data, Activity::NAME, partitions), EVENTS);

    let log = backend.open().await;
    let clean_dir = tempfile::tempdir().unwrap();
    let clean = ViewStore::open(clean_dir.path()).unwrap();
    for partition in 0..partitions {
        ledger::projector::catch_up(&log.in_partition(partition), &clean, &[&Activity]).await.unwrap();
    }
    let resumed = ViewStore::open(&data.join("views")).unwrap();
    assert_eq!(resumed.dump(Activity::NAME).unwrap(), clean.dump(Activity::NAME).unwrap());
    let total: u64 = clean
        .dump(Activity::NAME)
        .unwrap()
        .iter()
        .filter(|(k, _)| k[0] != 0)
        .map(|(_, v)| projections::decode_row::<projections::ActivityRow>(Activity::NAME, v).unwrap().events)
        .sum();
    assert_eq!(total, EVENTS, "every event counted exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_projector_survives_repeated_kills() {
    let backend = Embedded::new();
    let data = backend.dir.path().to_path_buf();
    crash_and_resume(backend, &data, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_projector_survives_repeated_kills() {
    let backend = JetStream::new();
    let data = tempfile::tempdir().unwrap();
    let url = backend.url();
    crash_and_resume(backend, data.path(), Some(url)).await;
}

/// The `ledger` view (state rows, request keys, invoices, a memo of decoded
/// rows between batches) resumes exactly too, on a log the engine wrote.
#[tokio::test(flavor = "multi_thread")]
async fn embedded_ledger_view_survives_repeated_kills() {
    let backend = Embedded::new();
    let data = backend.dir.path().to_path_buf();
    let mut lines = vec![
        r#"{"cmd":"define_plan","plan":{"id":"p","currency":"USD","price":"5.00","per_seat":true,"storage_quota_gb":"1","monthly_token_limit":100000000,"token_overage":"block","addons":[]}}"#.to_string(),
    ];
    let tenants = ["acme", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
    for t in tenants {
        lines.push(format!(r#"{{"cmd":"subscribe","tenant":"{t}","plan":"p","seats":2}}"#));
    }
    for i in 0..6000 {
        let t = tenants[i % tenants.len()];
        lines.push(if i % 4 == 0 {
            format!(r#"{{"actor":"{t}:user","cmd":"upload","tenant":"{t}","file":"f{i}","bytes":{i}}}"#)
        } else {
            format!(r#"{{"actor":"{t}:user","cmd":"consume_tokens","tenant":"{t}","request":"r{i}","tokens":{}}}"#, i + 1)
        });
    }
    let events = {
        let log = ledger::log::EmbeddedLog::open(&data.join("log")).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let engine = ledger::engine::Ledger::start(log.clone(), ViewStore::open(scratch.path()).unwrap())
            .await
            .unwrap();
        let (results, _) =
            ledger::apply::apply_lines(&engine, &lines, ledger::apply::Future::Allow).await.unwrap();
        assert!(results.iter().all(|r| r["ok"] == true));
        engine.shutdown().await;
        ledger::log::Source::head(&log).await.unwrap()
    };
    // The engine's task drops its log handle once the last Ledger is gone;
    // opening the log in the child waits for sled's lock.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let kills = kill_until_done(&data, None, projections::LedgerView::NAME, events, 1);
    assert!(kills >= 3, "only {kills} kills landed mid-stream; the test proved little");
    assert_eq!(checkpoint(&data, projections::LedgerView::NAME, 1), events);

    let log = ledger::log::EmbeddedLog::open(&data.join("log")).unwrap();
    let clean_dir = tempfile::tempdir().unwrap();
    let clean = ViewStore::open(clean_dir.path()).unwrap();
    ledger::projector::catch_up(&log, &clean, &[&projections::LedgerView]).await.unwrap();
    let resumed = ViewStore::open(&data.join("views")).unwrap();
    assert_eq!(
        resumed.dump(projections::LedgerView::NAME).unwrap(),
        clean.dump(projections::LedgerView::NAME).unwrap()
    );
}
