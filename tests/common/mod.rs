//! Shared test helpers: events to append, and backends to append them to.
#![allow(dead_code)]

pub mod cli;
pub mod cluster;
pub mod http;
pub mod serve;
pub mod webhooks;

use std::path::PathBuf;

use bytes::Bytes;
use events::{Actor, Envelope, Event};
use ledger::bench::natsd::NatsServer;
use ledger::log::{AppendBatch, AppendMessage, EmbeddedLog, Expectation, JetStreamLog, JetStreamOptions};

/// A valid token-consumption event for `tenant`, numbered `n`.
pub fn event(tenant: &str, n: u64) -> Envelope {
    Envelope {
        event_id: n as u128 + 1,
        tenant: tenant.to_string(),
        at_us: events::samples::SAMPLE_AT_US + n as i64,
        actor: Actor::TenantUser { tenant: tenant.to_string() },
        prev_hash: [0; 32],
        offline: None,
        key: None,
        payload: if n % 3 == 0 {
            Event::FileStored { file: format!("f{n}"), bytes: n }
        } else {
            Event::TokensConsumed { request: format!("r{n}"), tokens: n + 1, offline: false }
        },
    }
}

pub fn message(envelope: &Envelope) -> AppendMessage {
    AppendMessage {
        tenant: envelope.tenant.clone(),
        kind: envelope.kind().name(),
        payload: Bytes::from(events::encode(envelope).unwrap()),
    }
}

/// A batch of events for the given tenants (in order), numbered from `first_n`.
pub fn batch(tenants: &[&str], first_n: u64) -> AppendBatch {
    AppendBatch {
        messages: tenants.iter().enumerate().map(|(i, t)| message(&event(t, first_n + i as u64))).collect(),
        expectations: Vec::new(),
    }
}

/// Builds batches whose events chain per tenant (each `prev_hash` is the
/// hash of the tenant's previous event), as the engine writes them; views
/// skip events that do not.
#[derive(Default)]
pub struct Chained {
    last: std::collections::HashMap<String, [u8; 32]>,
}

impl Chained {
    pub fn batch(&mut self, tenants: &[&str], first_n: u64) -> AppendBatch {
        let mut messages = Vec::with_capacity(tenants.len());
        for (i, tenant) in tenants.iter().enumerate() {
            let mut envelope = event(tenant, first_n + i as u64);
            envelope.prev_hash = self.last.get(*tenant).copied().unwrap_or([0; 32]);
            let bytes = events::encode(&envelope).unwrap();
            self.last.insert(tenant.to_string(), events::event_hash(&bytes));
            messages.push(AppendMessage {
                tenant: tenant.to_string(),
                kind: envelope.kind().name(),
                payload: Bytes::from(bytes),
            });
        }
        AppendBatch { messages, expectations: Vec::new() }
    }
}

pub fn expect(tenant: &str, last_position: u64) -> Expectation {
    Expectation { tenant: tenant.to_string(), last_position }
}

/// A backend under test that can be closed and opened again on the same data.
pub trait Backend {
    type Log: ledger::log::EventLog;
    fn open(&mut self) -> impl std::future::Future<Output = Self::Log>;
    /// Closes everything (the caller has dropped its logs and streams) and reopens.
    fn restart(&mut self) -> impl std::future::Future<Output = Self::Log>;
}

pub struct Embedded {
    pub dir: tempfile::TempDir,
}

impl Embedded {
    pub fn new() -> Embedded {
        Embedded { dir: tempfile::tempdir().unwrap() }
    }
}

impl Backend for Embedded {
    type Log = EmbeddedLog;
    async fn open(&mut self) -> EmbeddedLog {
        EmbeddedLog::open(&self.dir.path().join("log")).unwrap()
    }
    async fn restart(&mut self) -> EmbeddedLog {
        self.open().await
    }
}

pub struct JetStream {
    pub store: tempfile::TempDir,
    pub server: Option<NatsServer>,
}

impl JetStream {
    pub fn new() -> JetStream {
        let store = tempfile::tempdir().unwrap();
        let server = NatsServer::start_on_store(&store.path().join("js")).unwrap();
        JetStream { store, server: Some(server) }
    }

    pub fn url(&self) -> String {
        self.server.as_ref().unwrap().url().to_string()
    }

    pub fn store_dir(&self) -> PathBuf {
        self.store.path().join("js")
    }
}

/// Connects, retrying while a just-started server brings JetStream up.
pub async fn connect(url: &str) -> JetStreamLog {
    let mut last = None;
    for _ in 0..50 {
        match JetStreamLog::connect(&JetStreamOptions::new(url)).await {
            Ok(log) => return log,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {url}: {last:?}");
}

impl Backend for JetStream {
    type Log = JetStreamLog;
    async fn open(&mut self) -> JetStreamLog {
        connect(&self.url()).await
    }
    async fn restart(&mut self) -> JetStreamLog {
        self.server.take().unwrap().stop();
        self.server = Some(NatsServer::start_on_store(&self.store_dir()).unwrap());
        self.open().await
    }
}

// ---- Partitions: what a test needs to hold on a ledger of N partitions ----
// (`LEDGER_TEST_PARTITIONS`, src/bench/natsd.rs; N = 1 without it.)

/// How many partitions the harness gives a ledger on a fresh nats-server
/// (`LEDGER_TEST_PARTITIONS`): 1 without it. The embedded log has one.
pub fn test_partitions() -> u32 {
    std::env::var("LEDGER_TEST_PARTITIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(1)
}

/// `name` if it is in `anchor`'s partition of `partitions`, else the first
/// of `name2`, `name3`, ... that is: tenants a batch may carry together.
pub fn beside(anchor: &str, name: &str, partitions: u32) -> String {
    let partition = ledger::log::partition_of(anchor, partitions);
    std::iter::once(name.to_string())
        .chain((2..).map(|i| format!("{name}{i}")))
        .find(|candidate| ledger::log::partition_of(candidate, partitions) == partition)
        .expect("some name lands in the partition")
}
