//! The engine's fast paths keep every guarantee: chained decisions (many
//! commands of one tenant in one batch), a chained batch that conflicts
//! with another writer (every command decided again), and the bounded
//! tenant cache (an evicted tenant reloads to the same state). Real logs:
//! a nats-server on a random port, sled files in temporary directories.

mod common;

use common::{Backend, Embedded, JetStream};
use ledger::command::parse_line;
use ledger::engine::{EngineOptions, EngineStats, Ledger, Reply};
use projections::ViewStore;

const PLAN: &str = r#"{"at":"2026-01-01T00:00:00Z","cmd":"define_plan","plan":{"id":"p","currency":"USD","price":"1.00","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":3200,"token_overage":"block","addons":[]}}"#;

async fn start<L: ledger::log::EventLog>(log: L, tenant_cache: usize) -> (Ledger, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let views = ViewStore::open(dir.path()).unwrap();
    (Ledger::start_with(log, views, EngineOptions { tenant_cache }).await.unwrap(), dir)
}

fn tokens(tenant: &str, request: &str, tokens: u64) -> String {
    format!(
        r#"{{"actor":"{tenant}:user","cmd":"consume_tokens","tenant":"{tenant}","request":"{request}","tokens":{tokens}}}"#
    )
}

fn subscribe(tenant: &str) -> String {
    format!(r#"{{"cmd":"subscribe","tenant":"{tenant}","plan":"p","seats":1}}"#)
}

async fn submit(ledger: &Ledger, line: &str) -> Reply {
    ledger.submit(parse_line(line).unwrap()).await
}

/// Submits every line at once (one queue, so they chain) and returns the
/// replies in order.
async fn all_at_once(ledger: &Ledger, lines: &[String]) -> Vec<Reply> {
    let mut pending = Vec::new();
    for line in lines {
        pending.push(ledger.submit_nowait(parse_line(line).unwrap()).await);
    }
    let mut replies = Vec::new();
    for answer in pending {
        replies.push(ledger::engine::wait(answer).await);
    }
    replies
}

/// 64 consumptions of 100 tokens race for a 3,200-token limit on one
/// tenant: chained into few batches, exactly 32 are admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_tenant_chains_and_never_over_admits() {
    let backend = JetStream::new();
    let (ledger, _views) = start(common::connect(&backend.url()).await, 1000).await;
    for line in [PLAN.to_string(), subscribe("hot")] {
        assert!(matches!(submit(&ledger, &line).await, Reply::Ok { .. }));
    }
    let lines: Vec<String> = (0..64).map(|i| tokens("hot", &format!("r{i}"), 100)).collect();
    let replies = all_at_once(&ledger, &lines).await;
    let admitted = replies.iter().filter(|r| matches!(r, Reply::Ok { duplicate: false, .. })).count();
    let denied = replies
        .iter()
        .filter(|r| matches!(r, Reply::Rejected { rejection, seq: Some(_) } if rejection.code == "token_limit_exceeded"))
        .count();
    assert_eq!((admitted, denied), (32, 32), "{replies:?}");
    let chained = EngineStats::get(&ledger.stats().chained);
    assert!(chained >= 32, "only {chained} decisions chained: the hot tenant got one decision per commit");
    ledger.sync().await.unwrap();
    let usage = ledger::report::usage(ledger.views(), "hot", None).unwrap();
    assert_eq!(usage["tokens"]["used"], 3200);
}

/// Another writer appends to the tenant between this engine's load and its
/// chained batch: the batch conflicts, and every chained command is decided
/// again against the reloaded tenant; none is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_batch_that_conflicts_is_decided_again() {
    let backend = JetStream::new();
    let (a, _a_views) = start(common::connect(&backend.url()).await, 1000).await;
    let (b, _b_views) = start(common::connect(&backend.url()).await, 1000).await;
    for line in [PLAN.to_string(), subscribe("shared")] {
        assert!(matches!(submit(&a, &line).await, Reply::Ok { .. }));
    }
    // A holds the tenant in memory; B then appends to it.
    assert!(matches!(submit(&a, &tokens("shared", "a0", 100)).await, Reply::Ok { .. }));
    assert!(matches!(submit(&b, &tokens("shared", "b0", 100)).await, Reply::Ok { .. }));
    let lines: Vec<String> = (1..=20).map(|i| tokens("shared", &format!("a{i}"), 100)).collect();
    let replies = all_at_once(&a, &lines).await;
    let mut seqs: Vec<u64> = replies
        .iter()
        .map(|r| match r {
            Reply::Ok { seq, duplicate: false } => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 20, "two commands answered with one position");
    assert!(EngineStats::get(&a.stats().conflicts) >= 1, "the stale batch did not conflict");
    assert!(EngineStats::get(&a.stats().chained) >= 10);
    a.sync_to(b.appended().max(a.appended())).await.unwrap();
    let usage = ledger::report::usage(a.views(), "shared", None).unwrap();
    assert_eq!(usage["tokens"]["used"], 2200, "100 + 100 + 20 x 100, each once");
}

/// With room for two tenants in memory, a tenant used, evicted by others,
/// and used again answers exactly as if it had stayed: its token count, its
/// request keys (duplicates keep their first position) and its live files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_tenant_reloads_to_the_same_state() {
    let mut backend = Embedded::new();
    let (ledger, _views) = start(backend.open().await, 2).await;
    assert!(matches!(submit(&ledger, PLAN).await, Reply::Ok { .. }));
    for t in ["t0", "t1", "t2", "t3", "t4"] {
        assert!(matches!(submit(&ledger, &subscribe(t)).await, Reply::Ok { .. }));
    }
    let first = match submit(&ledger, &tokens("t0", "big", 3000)).await {
        Reply::Ok { seq, duplicate: false } => seq,
        other => panic!("{other:?}"),
    };
    let upload = r#"{"actor":"t0:user","cmd":"upload","tenant":"t0","file":"kept.bin","bytes":1000}"#;
    assert!(matches!(submit(&ledger, upload).await, Reply::Ok { duplicate: false, .. }));
    for t in ["t1", "t2", "t3", "t4"] {
        assert!(matches!(submit(&ledger, &tokens(t, "x", 1)).await, Reply::Ok { .. }));
    }
    assert!(EngineStats::get(&ledger.stats().evictions) > 0, "nothing was evicted");
    let loads_before = EngineStats::get(&ledger.stats().loads);
    // 3,000 of 3,200 used: 300 more is denied, 200 fits.
    match submit(&ledger, &tokens("t0", "more", 300)).await {
        Reply::Rejected { rejection, seq: Some(_) } => {
            assert_eq!(rejection.code, "token_limit_exceeded");
            assert!(rejection.details.contains(&("used", 3000)), "{rejection:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(EngineStats::get(&ledger.stats().loads) > loads_before, "t0 was not loaded again");
    assert_eq!(submit(&ledger, &tokens("t0", "big", 3000)).await, Reply::Ok { seq: first, duplicate: true });
    assert!(matches!(submit(&ledger, upload).await, Reply::Ok { duplicate: true, .. }));
    assert!(matches!(submit(&ledger, &tokens("t0", "rest", 200)).await, Reply::Ok { duplicate: false, .. }));
}

/// A tenant loaded from a view row that holds its request keys and files
/// (some moved out to the row's buckets) still knows every one: duplicates
/// keep their first position and a stored file is still there. A tenant
/// whose row holds none needs no view lookup, and still answers a repeat
/// from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_loaded_from_its_view_knows_its_keys() {
    let backend = JetStream::new();
    let dir = tempfile::tempdir().unwrap();
    let views = ViewStore::open(dir.path()).unwrap();
    let a =
        Ledger::start_with(common::connect(&backend.url()).await, views.clone(), EngineOptions::default())
            .await
            .unwrap();
    for line in [PLAN.to_string(), subscribe("keyed"), subscribe("fresh")] {
        assert!(matches!(submit(&a, &line).await, Reply::Ok { .. }));
    }
    // More keys and files than a state row keeps: the first ones move to buckets.
    let mut first = std::collections::HashMap::new();
    for i in 0..80 {
        let key = format!("k{i}");
        match submit(&a, &tokens("keyed", &key, 1)).await {
            Reply::Ok { seq, duplicate: false } => first.insert(key, seq),
            other => panic!("{other:?}"),
        };
        let upload = format!(
            r#"{{"actor":"keyed:user","cmd":"upload","tenant":"keyed","file":"f{i}.bin","bytes":10}}"#
        );
        assert!(matches!(submit(&a, &upload).await, Reply::Ok { duplicate: false, .. }));
    }
    a.sync().await.unwrap();
    a.shutdown().await;
    drop(a);

    // A new engine over the same views and log loads both tenants from their rows.
    let b = Ledger::start_with(common::connect(&backend.url()).await, views, EngineOptions::default())
        .await
        .unwrap();
    for key in ["k0", "k1", "k40", "k79"] {
        assert_eq!(
            submit(&b, &tokens("keyed", key, 1)).await,
            Reply::Ok { seq: first[key], duplicate: true },
            "{key}"
        );
    }
    assert!(matches!(submit(&b, &tokens("keyed", "new", 1)).await, Reply::Ok { duplicate: false, .. }));
    for file in ["f0", "f79"] {
        let again = format!(
            r#"{{"actor":"keyed:user","cmd":"upload","tenant":"keyed","file":"{file}.bin","bytes":10}}"#
        );
        assert!(matches!(submit(&b, &again).await, Reply::Ok { duplicate: true, .. }), "{file}");
    }
    let delete = r#"{"actor":"keyed:user","cmd":"delete_file","tenant":"keyed","file":"f3.bin"}"#;
    assert!(matches!(submit(&b, delete).await, Reply::Ok { duplicate: false, .. }));
    let loads = EngineStats::get(&b.stats().loads);
    assert!(loads >= 1, "the tenant was not loaded from its view");

    let first_fresh = match submit(&b, &tokens("fresh", "once", 5)).await {
        Reply::Ok { seq, duplicate: false } => seq,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        submit(&b, &tokens("fresh", "once", 5)).await,
        Reply::Ok { seq: first_fresh, duplicate: true }
    );
    b.sync().await.unwrap();
    let usage = ledger::report::usage(b.views(), "keyed", None).unwrap();
    assert_eq!(usage["tokens"]["used"], 81, "80 keys once each, and one new");
}
