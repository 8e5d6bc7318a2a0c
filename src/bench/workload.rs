//! The usage events `bench ingest` and `bench replay` append: realistic
//! sizes, chained per tenant as the decider writes them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use events::{Actor, Envelope, Event};

use super::support::Rng;
use crate::log::{AppendBatch, AppendMessage, EventLog, Expectation};

/// Produces realistic usage events for one worker's tenants, keeping each
/// tenant's hash chain and last position as a decider would.
pub(super) struct Generator {
    rng: Rng,
    worker: usize,
    workers: usize,
    tenants: usize,
    counter: u64,
    at_us: i64,
    /// tenant index -> (last position, hash of last event)
    heads: HashMap<usize, (u64, [u8; 32])>,
    /// tenant index -> its live files (id, bytes): deletes name one of them,
    /// as the decider's would.
    files: HashMap<usize, Vec<(String, u64)>>,
}

impl Generator {
    pub(super) fn new(worker: usize, workers: usize, tenants: usize) -> Generator {
        Generator {
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1)),
            worker,
            workers,
            tenants,
            counter: 0,
            at_us: events::samples::SAMPLE_AT_US,
            heads: HashMap::new(),
            files: HashMap::new(),
        }
    }

    fn tenant(&mut self) -> usize {
        let owned = self.tenants / self.workers;
        self.worker + self.workers * (self.rng.next() as usize % owned)
    }

    /// 70% token consumption, 20% uploads, 10% deletes of a live file (an
    /// upload when the tenant has none): the shape of a tenant site's traffic.
    fn event(&mut self, tenant: usize) -> Envelope {
        self.counter += 1;
        self.at_us += 1000;
        let name = format!("tenant-{tenant:06}");
        let roll = self.rng.next() % 10;
        let id = format!("{:016x}-{:04x}-{:012x}", self.rng.next(), self.worker, self.counter);
        let payload = match roll {
            0..=6 => Event::TokensConsumed {
                request: format!("req-{id}"),
                tokens: 1 + self.rng.next() % 4000,
                offline: false,
            },
            9 if self.files.get(&tenant).is_some_and(|f| !f.is_empty()) => {
                let live = self.files.get_mut(&tenant).expect("checked");
                let (file, bytes) = live.swap_remove(self.rng.next() as usize % live.len());
                Event::FileDeleted { file, bytes }
            }
            _ => {
                let (file, bytes) = (format!("uploads/{id}.bin"), self.rng.next() % (1 << 24));
                self.files.entry(tenant).or_default().push((file.clone(), bytes));
                Event::FileStored { file, bytes }
            }
        };
        let prev_hash = self.heads.get(&tenant).map_or([0; 32], |h| h.1);
        Envelope {
            event_id: ((self.at_us as u128) << 64) | self.rng.next() as u128,
            actor: Actor::TenantUser { tenant: name.clone() },
            tenant: name,
            at_us: self.at_us,
            prev_hash,
            offline: None,
            key: None,
            payload,
        }
    }

    /// A batch of `size` encoded events, expectations still to be filled in
    /// (they depend on the positions earlier batches get).
    pub(super) fn batch(&mut self, size: usize) -> Prepared {
        let mut prepared =
            Prepared { batch: AppendBatch::default(), order: Vec::with_capacity(size), tenants: Vec::new() };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..size {
            let tenant = self.tenant();
            let envelope = self.event(tenant);
            let bytes = events::encode(&envelope).expect("generated events are valid");
            self.heads.entry(tenant).or_insert((0, [0; 32])).1 = events::event_hash(&bytes);
            if seen.insert(tenant) {
                prepared.tenants.push((tenant, envelope.tenant.clone()));
            }
            prepared.order.push(tenant);
            prepared.batch.messages.push(AppendMessage {
                tenant: envelope.tenant,
                kind: envelope.payload.kind().name(),
                payload: Bytes::from(bytes),
            });
        }
        prepared
    }

    fn committed(&mut self, order: &[usize], first: u64) {
        for (i, tenant) in order.iter().enumerate() {
            self.heads.get_mut(tenant).expect("tenant in batch").0 = first + i as u64;
        }
    }
}

/// A generated batch and which tenant each message belongs to.
pub(super) struct Prepared {
    pub(super) batch: AppendBatch,
    order: Vec<usize>,
    /// Distinct tenants in first-appearance order: (index, id).
    tenants: Vec<(usize, String)>,
}

/// Appends `count` generated events through the ledger's `EventLog`, with one
/// task per generator over disjoint tenants. Events are generated and encoded
/// before the clock starts (encoding is the decider's cost, measured by `bench
/// decide`); inside it each batch gets one expectation per tenant, as a
/// decider's group commit does. Returns (elapsed, bytes).
pub(super) async fn ledger_round<L: EventLog>(
    log: &L,
    gens: &mut Vec<Generator>,
    count: usize,
    batch: usize,
    expectations: bool,
) -> anyhow::Result<(Duration, u64)> {
    let per_worker = count / gens.len();
    let mut work = Vec::new();
    let mut bytes = 0u64;
    for mut generator in std::mem::take(gens) {
        let mut batches = Vec::new();
        let mut left = per_worker;
        while left > 0 {
            let prepared = generator.batch(left.min(batch));
            bytes += prepared.batch.messages.iter().map(|m| m.payload.len() as u64).sum::<u64>();
            left -= prepared.order.len();
            batches.push(prepared);
        }
        work.push((generator, batches));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut generator, batches) in work {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for mut prepared in batches {
                if expectations {
                    prepared.batch.expectations = prepared
                        .tenants
                        .iter()
                        .map(|(index, id)| Expectation {
                            tenant: id.clone(),
                            last_position: generator.heads[index].0,
                        })
                        .collect();
                }
                let ack = log.append(prepared.batch).await?;
                generator.committed(&prepared.order, ack.first);
            }
            anyhow::Ok(generator)
        }));
    }
    for task in tasks {
        gens.push(task.await??);
    }
    Ok((started.elapsed(), bytes))
}
