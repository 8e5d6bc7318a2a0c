//! Quota decisions never over-admit under concurrency: 64 uploads and 64
//! token consumptions race for the last of a quota, through one engine on
//! each backend, and through two engines (two writers) sharing one
//! JetStream stream, where only the per-tenant expected sequence keeps them
//! apart.

mod common;

use common::{Backend, Embedded, JetStream};
use ledger::command::parse_line;
use ledger::engine::{Ledger, Reply};
use projections::ViewStore;

const SETUP: &str = r#"{"at":"2026-01-01T00:00:00Z","cmd":"define_plan","plan":{"id":"tiny","currency":"USD","price":"1.00","per_seat":false,"storage_quota_gb":"0.0000001","monthly_token_limit":1000,"token_overage":"block","addons":[]}}
{"at":"2026-01-01T00:00:00Z","cmd":"subscribe","tenant":"race","plan":"tiny","seats":1}"#;

/// floor(0.0000001 x 2^30) = 107 bytes of quota.
const QUOTA_BYTES: u64 = 107;

async fn start<L: ledger::log::EventLog>(log: L) -> (Ledger, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let views = ViewStore::open(dir.path()).unwrap();
    (Ledger::start(log, views).await.unwrap(), dir)
}

async fn submit(ledger: &Ledger, line: String) -> Reply {
    ledger.submit(parse_line(&line).unwrap()).await
}

/// Fires 64 uploads of 10 bytes and 64 consumptions of 100 tokens at once,
/// spread over `ledgers`; returns (uploads admitted, consumptions admitted).
async fn race(ledgers: &[Ledger]) -> (u64, u64) {
    let mut tasks = Vec::new();
    for i in 0..64 {
        let ledger = ledgers[i % ledgers.len()].clone();
        tasks.push(tokio::spawn(async move {
            let upload =
                format!(r#"{{"actor":"race:user","cmd":"upload","tenant":"race","file":"f{i}","bytes":10}}"#);
            let tokens = format!(
                r#"{{"actor":"race:user","cmd":"consume_tokens","tenant":"race","request":"r{i}","tokens":100}}"#
            );
            let (u, t) = tokio::join!(submit(&ledger, upload), submit(&ledger, tokens));
            let admitted = |reply: Reply, denial: &str| match reply {
                Reply::Ok { duplicate: false, .. } => 1,
                Reply::Rejected { rejection, seq: Some(_) } if rejection.code == denial => 0,
                other => panic!("unexpected reply {other:?}"),
            };
            (admitted(u, "storage_quota_exceeded"), admitted(t, "token_limit_exceeded"))
        }));
    }
    let mut totals = (0, 0);
    for task in tasks {
        let (u, t) = task.await.unwrap();
        totals.0 += u;
        totals.1 += t;
    }
    totals
}

async fn one_engine<B: Backend>(mut backend: B) {
    let (ledger, _views) = start(backend.open().await).await;
    for line in SETUP.lines() {
        assert!(matches!(submit(&ledger, line.into()).await, Reply::Ok { .. }));
    }
    let (uploads, tokens) = race(std::slice::from_ref(&ledger)).await;
    assert_eq!(uploads, QUOTA_BYTES / 10, "exactly as many 10-byte files as fit");
    assert_eq!(tokens, 10, "exactly 1000 / 100 consumptions");
    ledger.sync().await.unwrap();
    let usage = ledger::report::usage(ledger.views(), "race", None).unwrap();
    assert_eq!(usage["storage"]["used_bytes"], 100);
    assert_eq!(usage["tokens"]["used"], 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_one_engine_never_over_admits() {
    one_engine(Embedded::new()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_one_engine_never_over_admits() {
    one_engine(JetStream::new()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_two_writers_never_over_admit() {
    let mut backend = JetStream::new();
    let (first, _a) = start(backend.open().await).await;
    for line in SETUP.lines() {
        assert!(matches!(submit(&first, line.into()).await, Reply::Ok { .. }));
    }
    // The second writer starts after the setup, so it loads the tenant from
    // the log; from then on both believe they own it.
    let (second, _b) = start(backend.open().await).await;
    let (uploads, tokens) = race(&[first.clone(), second.clone()]).await;
    assert_eq!(uploads, QUOTA_BYTES / 10);
    assert_eq!(tokens, 10);
    first.sync_to(first.appended().max(second.appended())).await.unwrap();
    let usage = ledger::report::usage(first.views(), "race", None).unwrap();
    assert_eq!(usage["storage"]["used_bytes"], 100);
    assert_eq!(usage["tokens"]["used"], 1000);
}
