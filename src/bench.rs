//! `ledger bench`: throughput figures measured against a baseline in the same
//! run, since these machines are shared and noisy. Rounds alternate between
//! the ledger and its baseline so drift in the machine's load hits both.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use clap::Subcommand;
use events::{Actor, Envelope, Event};

use crate::log::{
    AppendBatch, AppendMessage, EmbeddedLog, EventLog, Expectation, JetStreamLog, JetStreamOptions,
};
use crate::natsd::NatsServer;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Durable ingest: the ledger's EventLog on JetStream against a plain
    /// async-nats atomic-batch publisher, plus the embedded log.
    Ingest {
        /// Events per path (ledger, baseline, embedded).
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Events per atomic batch (at most 1000).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Batches in flight at once (the server allows 50 per stream).
        #[arg(long, default_value_t = 16)]
        inflight: usize,
        /// Distinct tenants the events are spread over.
        #[arg(long, default_value_t = 10_000)]
        tenants: usize,
        /// Alternating ledger/baseline rounds.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// Append without per-tenant expectations, to see what the server's
        /// concurrency check costs.
        #[arg(long)]
        no_expectations: bool,
    },
    /// Replay: rebuild every view from a JetStream log of realistic events,
    /// against a bare ordered consumer reading the same stream.
    Replay {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 10_000)]
        tenants: usize,
        /// Alternating replay/bare-read rounds over the same stream.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// Durable quota decisions through the engine on JetStream, with
    /// latency percentiles, beside the ingest baseline; then tenants with a
    /// long history against fresh ones.
    Decide {
        #[arg(long, default_value_t = 200_000)]
        decisions: usize,
        #[arg(long, default_value_t = 10_000)]
        tenants: usize,
        /// Concurrent clients, each waiting for its answer before the next.
        #[arg(long, default_value_t = 2000)]
        clients: usize,
        /// Prior events per tenant in the history comparison.
        #[arg(long, default_value_t = 10_000)]
        history: usize,
        /// Tenants on each side of the history comparison.
        #[arg(long, default_value_t = 20)]
        history_tenants: usize,
    },
    /// Decisions through `ledger serve` (NATS request/reply) from concurrent
    /// tenant clients, beside the in-process engine on the same load.
    Serve {
        #[arg(long, default_value_t = 100_000)]
        decisions: usize,
        /// Concurrent tenant clients (one tenant each).
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// NATS connections the clients share.
        #[arg(long, default_value_t = 100)]
        connections: usize,
    },
}

pub async fn run(command: BenchCommand, nats: Option<&str>) -> anyhow::Result<()> {
    match command {
        BenchCommand::Replay { events, tenants, rounds } => {
            replay(nats, events, tenants, rounds.max(1)).await
        }
        BenchCommand::Decide { decisions, tenants, clients, history, history_tenants } => {
            anyhow::ensure!(
                clients >= 1 && tenants >= 1 && history_tenants >= 1,
                "counts must be at least 1"
            );
            let shape =
                crate::bench_decide::DecideShape { decisions, tenants, clients, history, history_tenants };
            crate::bench_decide::decide(nats, shape).await
        }
        BenchCommand::Serve { decisions, clients, connections } => {
            anyhow::ensure!(clients >= 1 && connections >= 1, "counts must be at least 1");
            crate::bench_decide::serve(nats, decisions, clients, connections).await
        }
        BenchCommand::Ingest { events, batch, inflight, tenants, rounds, no_expectations } => {
            anyhow::ensure!((1..=1000).contains(&batch), "--batch must be 1..=1000");
            anyhow::ensure!(inflight >= 1 && tenants >= inflight, "need --tenants >= --inflight >= 1");
            ingest(
                nats,
                IngestShape {
                    events,
                    batch,
                    inflight,
                    tenants,
                    rounds: rounds.max(1),
                    expectations: !no_expectations,
                },
            )
            .await
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct IngestShape {
    events: usize,
    batch: usize,
    inflight: usize,
    tenants: usize,
    rounds: usize,
    expectations: bool,
}

/// xorshift64*: a dependency-free, seeded, reproducible event mix.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Produces realistic usage events for one worker's tenants, keeping each
/// tenant's hash chain and last position as a decider would.
struct Generator {
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
    fn new(worker: usize, workers: usize, tenants: usize) -> Generator {
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
            payload,
        }
    }

    /// A batch of `size` encoded events, expectations still to be filled in
    /// (they depend on the positions earlier batches get).
    fn batch(&mut self, size: usize) -> Prepared {
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
struct Prepared {
    batch: AppendBatch,
    order: Vec<usize>,
    /// Distinct tenants in first-appearance order: (index, id).
    tenants: Vec<(usize, String)>,
}

/// Appends `count` generated events through the ledger's `EventLog`, with one
/// task per generator over disjoint tenants. Events are generated and encoded
/// before the clock starts (encoding is the decider's cost, measured by `bench
/// decide`); inside it each batch gets one expectation per tenant, as a
/// decider's group commit does. Returns (elapsed, bytes).
async fn ledger_round<L: EventLog>(
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

/// The baseline: the same number of messages of the same sizes, published as
/// atomic batches by bare async-nats calls, with no encoding, no expectations
/// and no ledger code in the path.
pub(crate) async fn baseline_round(
    client: &async_nats::Client,
    payloads: &[(String, Bytes)],
    workers: usize,
    batch: usize,
) -> anyhow::Result<Duration> {
    let per_worker = payloads.len() / workers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = client.clone();
        let mine: Vec<(String, Bytes)> = payloads[w * per_worker..(w + 1) * per_worker].to_vec();
        tasks.push(tokio::spawn(async move {
            for (b, chunk) in mine.chunks(batch).enumerate() {
                let id = format!("bench-{w}-{b}-{}", uuid::Uuid::now_v7().simple());
                for (i, (subject, payload)) in chunk.iter().enumerate() {
                    let subject = subject.clone();
                    let mut headers = HeaderMap::new();
                    headers.insert("Nats-Batch-Id", id.as_str());
                    headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
                    if i + 1 < chunk.len() {
                        client.publish_with_headers(subject, headers, payload.clone()).await?;
                    } else {
                        headers.insert("Nats-Batch-Commit", "1");
                        let request = async_nats::Request::new()
                            .headers(headers)
                            .payload(payload.clone())
                            .timeout(Some(Duration::from_secs(30)));
                        let reply = client.send_request(subject, request).await?;
                        let ack: serde_json::Value = serde_json::from_slice(&reply.payload)?;
                        anyhow::ensure!(ack.get("error").is_none(), "baseline batch failed: {ack}");
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

/// The JetStream log a benchmark runs on: `--nats` when given, else a
/// nats-server of its own (random port, temporary store, `sync_interval:
/// always`) that lives as long as the returned guard.
pub(crate) async fn connect(nats: Option<&str>) -> anyhow::Result<(Option<NatsServer>, JetStreamLog)> {
    let server = match nats {
        Some(_) => None,
        None => Some(NatsServer::start()?),
    };
    let url = nats.map(str::to_string).unwrap_or_else(|| server.as_ref().expect("started").url().to_string());
    let log = JetStreamLog::connect(&JetStreamOptions::new(&url)).await?;
    Ok((server, log))
}

/// The stream the plain atomic-batch publisher baseline writes to.
pub(crate) async fn create_baseline_stream(client: &async_nats::Client) -> anyhow::Result<()> {
    async_nats::jetstream::new(client.clone())
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "BASELINE".into(),
            subjects: vec!["baseline.>".into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await?;
    Ok(())
}

pub(crate) fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

async fn ingest(nats: Option<&str>, shape: IngestShape) -> anyhow::Result<()> {
    let (_server, log) = connect(nats).await?;
    let client = log.client().clone();
    create_baseline_stream(&client).await?;

    println!(
        "bench ingest: {} events per path, batches of {}, {} in flight, {} tenants, {} rounds",
        shape.events, shape.batch, shape.inflight, shape.tenants, shape.rounds
    );
    println!(
        "machine: {}; nats-server {} with sync_interval: always",
        machine(),
        client.server_info().version
    );

    let per_round = shape.events / shape.rounds / shape.inflight * shape.inflight;
    let mut gens: Vec<Generator> =
        (0..shape.inflight).map(|w| Generator::new(w, shape.inflight, shape.tenants)).collect();
    let (mut ledger_time, mut baseline_time) = (Duration::ZERO, Duration::ZERO);
    let mut total_bytes = 0u64;
    for round in 0..shape.rounds {
        // The baseline sends exactly the sizes the ledger will send this round.
        let mut sizer: Vec<Generator> =
            (0..shape.inflight).map(|w| Generator::new(w, shape.inflight, shape.tenants)).collect();
        let payloads: Vec<(String, Bytes)> = sizer
            .iter_mut()
            .flat_map(|g| {
                let prepared = g.batch(per_round / shape.inflight);
                prepared
                    .batch
                    .messages
                    .into_iter()
                    .map(|m| (format!("baseline.{}.{}", m.tenant, m.kind), m.payload))
            })
            .collect();
        let b = baseline_round(&client, &payloads, shape.inflight, shape.batch).await?;
        let (l, bytes) = ledger_round(&log, &mut gens, per_round, shape.batch, shape.expectations).await?;
        baseline_time += b;
        ledger_time += l;
        total_bytes += bytes;
        println!(
            "  round {}: ledger {:>9.0} ev/s   baseline {:>9.0} ev/s",
            round + 1,
            rate(per_round, l),
            rate(per_round, b)
        );
    }
    let measured = per_round * shape.rounds;
    let ledger_rate = rate(measured, ledger_time);
    let baseline_rate = rate(measured, baseline_time);

    let dir = tempfile::tempdir()?;
    let embedded = EmbeddedLog::open(dir.path())?;
    let mut gens: Vec<Generator> =
        (0..shape.inflight).map(|w| Generator::new(w, shape.inflight, shape.tenants)).collect();
    let (e, _) = ledger_round(&embedded, &mut gens, measured, shape.batch, shape.expectations).await?;
    let embedded_rate = rate(measured, e);

    println!("mean encoded event: {:.0} bytes", total_bytes as f64 / measured as f64);
    println!("ledger EventLog on JetStream: {ledger_rate:>10.0} events/s ({measured} events)");
    println!("baseline atomic-batch publish: {baseline_rate:>9.0} events/s");
    println!("embedded log (sled, fsync per append): {embedded_rate:>10.0} events/s");
    println!("ratio ledger/baseline: {:.3} (target >= 0.8)", ledger_rate / baseline_rate);
    println!("ratio embedded/baseline: {:.3}", embedded_rate / baseline_rate);
    Ok(())
}

/// Reads the whole stream with a bare ordered consumer: the baseline replay
/// is measured against.
async fn bare_read(client: &async_nats::Client, head: u64) -> anyhow::Result<Duration> {
    use futures_util::StreamExt;
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(crate::log::STREAM_NAME).await?;
    let started = Instant::now();
    let consumer =
        stream.create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default()).await?;
    let mut messages = consumer.messages().await?;
    let mut bytes = 0usize;
    while let Some(message) = messages.next().await {
        let message = message?;
        bytes += message.payload.len();
        if message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence >= head {
            break;
        }
    }
    anyhow::ensure!(bytes > 0, "read nothing");
    Ok(started.elapsed())
}

async fn replay(nats: Option<&str>, events: usize, tenants: usize, rounds: usize) -> anyhow::Result<()> {
    use crate::log::Source;
    let (_server, log) = connect(nats).await?;
    let client = log.client().clone();
    println!("bench replay: {events} realistic events over {tenants} tenants, all views, {rounds} rounds");
    println!("machine: {}; nats-server {}", machine(), client.server_info().version);
    let workers = 16.min(tenants);
    let mut gens: Vec<Generator> = (0..workers).map(|w| Generator::new(w, workers, tenants)).collect();
    let per = events / workers * workers;
    let mut filled = 0;
    while filled < per {
        let step = (per - filled).min(200_000 / workers * workers);
        ledger_round(&log, &mut gens, step, 1000, true).await?;
        filled += step;
    }
    let head = log.head().await?;
    println!("stream filled: {head} events");
    let (mut replay_time, mut bare_time) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        let bare = bare_read(&client, head).await?;
        let dir = tempfile::tempdir()?;
        let store = projections::ViewStore::open(dir.path())?;
        let started = Instant::now();
        let options = replay::Options { until: Some(head), batch_size: replay::CATCH_UP_BATCH };
        let reached =
            replay::run(&log, &store, &crate::projector::ALL_VIEWS, options, &mut replay::LogProgress::new())
                .await?;
        let replayed = started.elapsed();
        anyhow::ensure!(reached == head, "replay stopped at {reached}");
        println!(
            "  round {}: replay {:>9.0} ev/s   bare read {:>9.0} ev/s",
            round + 1,
            rate(head as usize, replayed),
            rate(head as usize, bare)
        );
        replay_time += replayed;
        bare_time += bare;
    }
    let total = head as usize * rounds;
    let (replay_rate, bare_rate) = (rate(total, replay_time), rate(total, bare_time));
    println!("replay into fresh views (ledger + activity): {replay_rate:>10.0} events/s");
    println!("bare ordered consumer read:                  {bare_rate:>10.0} events/s");
    println!("ratio replay/bare: {:.3} (target >= 0.5)", replay_rate / bare_rate);
    Ok(())
}
