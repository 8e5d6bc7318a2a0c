//! One conformance suite, run against both log backends: the embedded sled
//! log and JetStream on a real nats-server (random port, temporary store,
//! `sync_interval: always`).
//!
//! On a ledger of several partitions (`LEDGER_TEST_PARTITIONS`), a batch is
//! one partition's: the suite writes acme and tenants beside it (beta, or a
//! name like it in acme's partition), reads `head` and the whole log in that
//! partition, and says positions there (on one partition, its sequences).

mod common;

use std::time::Duration;

use common::{batch, expect, Backend, Embedded, JetStream};
use futures_util::StreamExt;
use ledger::log::{AppendBatch, EventLog, LogError, LogRecord, Position, Source, MAX_BATCH_MESSAGES};

/// The log with `head` and untargeted reads in acme's partition, the
/// position of sequence `seq` there, and a tenant beside acme (beta).
fn in_acmes_partition<L: EventLog>(log: L) -> (L, impl Fn(u64) -> u64 + Copy, String) {
    let partition = log.partition_of("acme");
    let beta = common::beside("acme", "beta", log.partitions());
    (log.in_partition(partition), move |seq| Position::pack(partition, seq), beta)
}

/// The subject of `tenant`'s event of `kind` (in `tenant`'s partition).
fn subject<L: EventLog>(log: &L, tenant: &str, kind: &str) -> String {
    format!("{}.{tenant}.{kind}", events::partition_prefix(log.partition_of(tenant)))
}

async fn read_n<L: EventLog>(log: &L, from: u64, tenant: Option<&str>, n: usize) -> Vec<LogRecord> {
    let mut stream = log.read(from, tenant).await.unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("record within 10s")
            .expect("stream goes on")
            .unwrap();
        out.push(next);
    }
    out
}

/// Asserts that nothing beyond what was read arrives.
async fn assert_no_more<L: EventLog>(log: &L, from: u64) {
    let mut stream = log.read(from, None).await.unwrap();
    let next = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(next.is_err(), "unexpected record: {next:?}");
}

async fn order_and_positions<B: Backend>(mut backend: B) {
    let (log, at, beta) = in_acmes_partition(backend.open().await);
    assert_eq!(log.head().await.unwrap(), 0);
    let a = log.append(batch(&["acme", &beta, "acme"], 0)).await.unwrap();
    assert_eq!((a.first, a.last), (at(1), at(3)));
    let b = log.append(batch(&[&beta], 3)).await.unwrap();
    assert_eq!((b.first, b.last), (at(4), at(4)));
    assert_eq!(log.head().await.unwrap(), at(4));
    assert_eq!(log.tenant_head("acme").await.unwrap(), at(3));
    assert_eq!(log.tenant_head(&beta).await.unwrap(), at(4));
    assert_eq!(log.tenant_head("gamma").await.unwrap(), 0);

    let records = read_n(&log, at(1), None, 4).await;
    let positions: Vec<u64> = records.iter().map(|r| r.position).collect();
    assert_eq!(positions, [at(1), at(2), at(3), at(4)]);
    let subjects: Vec<&str> = records.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            subject(&log, "acme", "file_stored"),
            subject(&log, &beta, "tokens_consumed"),
            subject(&log, "acme", "tokens_consumed"),
            subject(&log, &beta, "file_stored")
        ]
    );
    for (n, r) in records.iter().enumerate() {
        let decoded = events::decode(&r.payload).unwrap();
        assert_eq!(decoded, common::event(&decoded.tenant, n as u64));
    }
    assert_no_more(&log, at(5)).await;
}

async fn stale_expectation_rejects_whole_batch<B: Backend>(mut backend: B) {
    let (log, at, beta) = in_acmes_partition(backend.open().await);
    log.append(batch(&["acme", &beta], 0)).await.unwrap();
    // beta's expectation is stale and sits on a message in the middle.
    let mut stale = batch(&["acme", &beta, "acme", &beta], 10);
    stale.expectations = vec![expect("acme", at(1)), expect(&beta, at(1))];
    match log.append(stale).await {
        Err(LogError::Conflict { tenant, expected, actual }) => {
            assert_eq!((tenant.as_str(), expected, actual), (beta.as_str(), at(1), at(2)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(log.head().await.unwrap(), at(2), "nothing of the batch was stored");
    assert_no_more(&log, at(3)).await;

    // The same batch with correct expectations goes through.
    let mut fresh = batch(&["acme", &beta, "acme", &beta], 10);
    fresh.expectations = vec![expect("acme", at(1)), expect(&beta, at(2))];
    let ack = log.append(fresh).await.unwrap();
    assert_eq!((ack.first, ack.last), (at(3), at(6)));
    assert_eq!(log.tenant_head(&beta).await.unwrap(), at(6));
}

async fn expectation_zero_means_no_events_yet<B: Backend>(mut backend: B) {
    let log = backend.open().await;
    // newco, or a name like it in the partition of new (its prefix, below).
    let newco = common::beside("new", "newco", log.partitions());
    let mut first = batch(&[&newco], 0);
    first.expectations = vec![expect(&newco, 0)];
    let first = log.append(first).await.unwrap().first;
    assert_eq!(first, Position::pack(log.partition_of(&newco), 1));
    let mut again = batch(&[&newco], 1);
    again.expectations = vec![expect(&newco, 0)];
    assert!(matches!(log.append(again).await, Err(LogError::Conflict { actual, .. }) if actual == first));
    // A tenant whose id is a prefix of another's is a different tenant.
    let mut prefix = batch(&["new"], 2);
    prefix.expectations = vec![expect("new", 0)];
    log.append(prefix).await.unwrap();
}

async fn concurrent_writers_one_wins<B: Backend>(mut backend: B) {
    let (log, at, _) = in_acmes_partition(backend.open().await);
    log.append(batch(&["acme"], 0)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = batch(&["acme"], 100 + i);
            b.expectations = vec![expect("acme", at(1))];
            log.append(b).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(LogError::Conflict { tenant, .. }) => assert_eq!(tenant, "acme"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1, "exactly one writer with the same expectation wins");
    assert_eq!(log.head().await.unwrap(), at(2));
}

async fn reads_from_a_position_and_by_tenant<B: Backend>(mut backend: B) {
    let (log, at, beta) = in_acmes_partition(backend.open().await);
    let tenants: Vec<&str> = (0..20).map(|i| if i % 2 == 0 { "acme" } else { beta.as_str() }).collect();
    log.append(batch(&tenants, 0)).await.unwrap();
    let tail = read_n(&log, at(15), None, 6).await;
    assert_eq!(tail.iter().map(|r| r.position).collect::<Vec<_>>(), [15, 16, 17, 18, 19, 20].map(at));
    let records = read_n(&log, at(5), Some(&beta), 8).await;
    assert_eq!(
        records.iter().map(|r| r.position).collect::<Vec<_>>(),
        [6, 8, 10, 12, 14, 16, 18, 20].map(at)
    );
    let prefix = subject(&log, &beta, "");
    assert!(records.iter().all(|r| r.subject.starts_with(&prefix)), "{prefix}");
}

async fn follows_the_tail<B: Backend>(mut backend: B) {
    let (log, at, beta) = in_acmes_partition(backend.open().await);
    log.append(batch(&["acme"], 0)).await.unwrap();
    let mut stream = log.read(at(1), None).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap();
    assert_eq!(first.unwrap().unwrap().position, at(1));
    let writer = log.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        writer.append(batch(&[&beta, &beta], 1)).await.unwrap();
    });
    for expected in [2, 3] {
        let r = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(r.position, at(expected));
    }
}

async fn invalid_batches_store_nothing<B: Backend>(mut backend: B) {
    let (log, at, _) = in_acmes_partition(backend.open().await);
    assert!(matches!(log.append(AppendBatch::default()).await, Err(LogError::InvalidBatch(_))));
    let too_many: Vec<&str> = vec!["acme"; MAX_BATCH_MESSAGES + 1];
    assert!(matches!(log.append(batch(&too_many, 0)).await, Err(LogError::InvalidBatch(_))));
    let mut orphan = batch(&["acme"], 0);
    orphan.expectations = vec![expect("beta", 0)];
    assert!(matches!(log.append(orphan).await, Err(LogError::InvalidBatch(_))));
    assert_eq!(log.head().await.unwrap(), 0);
    // The largest allowed batch goes through whole.
    let full: Vec<&str> = vec!["acme"; MAX_BATCH_MESSAGES];
    let ack = log.append(batch(&full, 0)).await.unwrap();
    assert_eq!((ack.first, ack.last), (at(1), at(MAX_BATCH_MESSAGES as u64)));
}

async fn survives_restart<B: Backend>(mut backend: B) {
    let (log, at, beta) = in_acmes_partition(backend.open().await);
    log.append(batch(&["acme", &beta, "acme"], 0)).await.unwrap();
    let before = read_n(&log, at(1), None, 3).await;
    drop(log);
    let (log, at, _) = in_acmes_partition(backend.restart().await);
    assert_eq!(log.head().await.unwrap(), at(3));
    assert_eq!(log.tenant_head("acme").await.unwrap(), at(3));
    assert_eq!(read_n(&log, at(1), None, 3).await, before);
    // Expectations still hold after the restart.
    let mut next = batch(&[&beta], 3);
    next.expectations = vec![expect(&beta, at(2))];
    assert_eq!(log.append(next).await.unwrap().first, at(4));
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[tokio::test]
            async fn order_and_positions() {
                super::order_and_positions($make).await
            }
            #[tokio::test]
            async fn stale_expectation_rejects_whole_batch() {
                super::stale_expectation_rejects_whole_batch($make).await
            }
            #[tokio::test]
            async fn expectation_zero_means_no_events_yet() {
                super::expectation_zero_means_no_events_yet($make).await
            }
            #[tokio::test]
            async fn concurrent_writers_one_wins() {
                super::concurrent_writers_one_wins($make).await
            }
            #[tokio::test]
            async fn reads_from_a_position_and_by_tenant() {
                super::reads_from_a_position_and_by_tenant($make).await
            }
            #[tokio::test]
            async fn follows_the_tail() {
                super::follows_the_tail($make).await
            }
            #[tokio::test]
            async fn invalid_batches_store_nothing() {
                super::invalid_batches_store_nothing($make).await
            }
            #[tokio::test]
            async fn survives_restart() {
                super::survives_restart($make).await
            }
        }
    };
}

conformance!(embedded, Embedded::new());
conformance!(jetstream, JetStream::new());

/// A tail read asked to start at a position keeps to it across a server
/// restart: async-nats recreates an ordered consumer that has delivered
/// nothing yet from the stream's first message, and the log must not hand
/// those older records to its reader (found by `tests/faults.rs`).
#[tokio::test]
async fn jetstream_tail_read_keeps_its_start_across_a_server_restart() {
    let mut backend = JetStream::new();
    let (log, at, beta) = in_acmes_partition(backend.open().await);
    log.append(batch(&["acme", &beta, "acme"], 0)).await.unwrap();
    let mut tail = log.read(at(4), None).await.unwrap();
    backend.server.as_mut().unwrap().restart().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut next = batch(&[&beta], 3);
    next.expectations = vec![expect(&beta, at(2))];
    while let Err(error) = log.append(next.clone()).await {
        assert!(std::time::Instant::now() < deadline, "no append after the restart: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = tokio::time::timeout(Duration::from_secs(60), tail.next())
        .await
        .expect("the tail delivers within 60 s")
        .expect("the tail goes on")
        .unwrap();
    assert_eq!(first.position, at(4), "the tail handed out a record before where it was asked to start");
}

/// A tenant's short tail comes back whole and in order, and on JetStream
/// without opening a consumer (direct gets; a consumer per tenant load piled
/// up on the server under a crash loop). Both backends agree.
async fn read_tenant_returns_the_tail<B: Backend>(backend: &mut B) -> Vec<u64> {
    let (log, at, beta) = in_acmes_partition(backend.open().await);
    log.append(batch(&["acme", &beta, "acme", &beta, "acme"], 0)).await.unwrap();
    let head = log.tenant_head("acme").await.unwrap();
    assert_eq!(head, at(5));
    let all: Vec<u64> =
        log.read_tenant("acme", at(1), head).await.unwrap().iter().map(|r| r.position).collect();
    assert_eq!(all, [at(1), at(3), at(5)]);
    let tail: Vec<u64> =
        log.read_tenant("acme", at(2), head).await.unwrap().iter().map(|r| r.position).collect();
    assert_eq!(tail, [at(3), at(5)]);
    assert!(log.read_tenant("acme", at(6), head).await.unwrap().is_empty());
    all
}

#[tokio::test]
async fn embedded_read_tenant_returns_the_tail() {
    read_tenant_returns_the_tail(&mut Embedded::new()).await;
}

#[tokio::test]
async fn jetstream_read_tenant_returns_the_tail_without_a_consumer() {
    let mut backend = JetStream::new();
    read_tenant_returns_the_tail(&mut backend).await;
    let log = common::connect(&backend.url()).await;
    // LEDGER, and every other partition's stream.
    for partition in 0..log.partitions() {
        let stream = ledger::log::stream_name(partition);
        let info = log.client().request(format!("$JS.API.STREAM.INFO.{stream}"), "".into()).await.unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
        assert_eq!(info["state"]["consumer_count"], 0, "{info}");
    }
}
