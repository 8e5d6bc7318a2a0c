//! `ledger bench decide`: durable quota decisions per second through the
//! engine on JetStream (`sync_interval: always`), with latency percentiles,
//! beside the plain atomic-batch publish baseline in the same run; then the
//! same load on tenants with a long history against tenants without one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use events::Actor;
use projections::ViewStore;

use super::support::{baseline_round, connect, create_baseline_stream, machine, print_targets, rate, Rng};
use crate::engine::command::{Command, Submission};
use crate::engine::{EngineStats, Ledger, Reply};
use crate::log::{AppendBatch, AppendMessage, EventLog, Expectation, JetStreamLog, Source};

#[derive(Debug, Clone, Copy)]
pub struct DecideShape {
    pub decisions: usize,
    pub tenants: usize,
    pub clients: usize,
    pub history: usize,
    pub history_tenants: usize,
}

fn submission(tenant: &str, roll: u64, n: u64) -> Submission {
    let command = if roll % 10 < 7 {
        Command::ConsumeTokens {
            tenant: tenant.into(),
            request: format!("req-{n:016x}-{roll:08x}"),
            tokens: 1 + (roll % 2000) as i64,
        }
    } else {
        Command::Upload {
            tenant: tenant.into(),
            file: format!("uploads/{n:016x}.bin"),
            bytes: (roll % 100_000) as i64,
        }
    };
    Submission::new(Actor::TenantUser { tenant: tenant.into() }, command)
}

fn admin(command: Command) -> Submission {
    Submission::new(Actor::Admin, command)
}

pub(super) fn tenant_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:05}")
}

/// `clients` tasks each submit decisions one after another on random tenants
/// of `prefix-0..tenants`, `total` in all. Returns (elapsed, sorted latencies).
async fn load(
    ledger: &Ledger,
    prefix: &str,
    tenants: usize,
    clients: usize,
    total: usize,
    seed: u64,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let per_client = total / clients;
    let prefix: Arc<str> = prefix.into();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let ledger = ledger.clone();
        let prefix = prefix.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let roll = rng.next();
                let tenant = tenant_name(&prefix, (roll >> 20) as usize % tenants);
                let sent = Instant::now();
                let reply = ledger
                    .submit(submission(&tenant, roll, (seed << 40) ^ ((c as u64) << 24) ^ i as u64))
                    .await;
                latencies.push(sent.elapsed());
                match reply {
                    Reply::Ok { .. } | Reply::Rejected { seq: Some(_), .. } => {}
                    other => anyhow::bail!("decision failed: {other:?}"),
                }
            }
            Ok(latencies)
        }));
    }
    gather(started, tasks, total).await
}

pub(super) type ClientTask = tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>;

/// Waits for every client; returns the elapsed time since `started` and all
/// latencies, sorted.
pub(super) async fn gather(
    started: Instant,
    tasks: Vec<ClientTask>,
    total: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok((elapsed, latencies))
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// One result line: a rate and its latency percentiles.
pub(super) fn print_rate(label: &str, rate: f64, sorted: &[Duration]) {
    println!(
        "{label:<21}{rate:>10.0} decisions/s, p50 {:.2} ms, p99 {:.2} ms",
        percentile(sorted, 0.5),
        percentile(sorted, 0.99)
    );
}

/// `ledger serve` in this process on fresh views (the billing clock idle),
/// with the bench plan defined. The directory lives as long as the guard.
pub(super) async fn start_service(
    log: &JetStreamLog,
) -> anyhow::Result<(crate::serve::Server, Ledger, tempfile::TempDir)> {
    let views_dir = tempfile::tempdir()?;
    let views = ViewStore::open(views_dir.path())?;
    let service = crate::serve::Server::start(log.clone(), views, super::support::serve_options()).await?;
    let ledger = service.ledger().clone();
    define_bench_plan(&ledger).await?;
    Ok((service, ledger, views_dir))
}

/// Defines the plan every bench tenant subscribes to (no limit in reach).
pub(super) async fn define_bench_plan(ledger: &Ledger) -> anyhow::Result<()> {
    let plan = r#"{"cmd":"define_plan","plan":{"id":"bench","currency":"USD","price":"10.00","per_seat":true,"storage_quota_gb":"1000000","monthly_token_limit":1000000000000,"token_overage":"block","addons":[]}}"#;
    let define = crate::engine::command::parse_line(plan).map_err(|r| anyhow::anyhow!(r.message))?;
    anyhow::ensure!(matches!(ledger.submit(define).await, Reply::Ok { .. }), "defining the plan failed");
    Ok(())
}

pub(super) async fn subscribe_all(ledger: &Ledger, prefix: &str, tenants: usize) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(tenants);
    for i in 0..tenants {
        let tenant = tenant_name(prefix, i);
        pending.push(
            ledger.submit_nowait(admin(Command::Subscribe { tenant, plan: "bench".into(), seats: 1 })).await,
        );
    }
    for answer in pending {
        match crate::engine::wait(answer).await {
            Reply::Ok { .. } => {}
            other => anyhow::bail!("subscribe failed: {other:?}"),
        }
    }
    Ok(())
}

/// Appends `history` token consumptions to each `old-*` tenant straight to
/// the log, in chained, expectation-checked batches (as the engine would,
/// only faster than deciding them one by one at low concurrency).
async fn seed_history(log: &JetStreamLog, tenants: usize, history: usize) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let mut heads = Vec::with_capacity(tenants);
    for i in 0..tenants {
        let tenant = tenant_name("old", i);
        let position = log.tenant_head(&tenant).await?;
        let mut records = log.read(position, Some(&tenant)).await?;
        let record = records.next().await.ok_or_else(|| anyhow::anyhow!("{tenant} has no events"))??;
        let at_us = events::decode(&record.payload)?.at_us;
        heads.push((tenant, position, events::event_hash(&record.payload), at_us));
    }
    let per_batch = (1000 / tenants).max(1);
    let mut written = 0;
    let mut n = 0u64;
    while written < history {
        let count = per_batch.min(history - written);
        let mut batch = AppendBatch::default();
        let mut order = Vec::new();
        for (index, (tenant, position, hash, at_us)) in heads.iter_mut().enumerate() {
            batch.expectations.push(Expectation { tenant: tenant.clone(), last_position: *position });
            for _ in 0..count {
                n += 1;
                let envelope = events::Envelope {
                    event_id: uuid::Uuid::now_v7().as_u128(),
                    tenant: tenant.clone(),
                    at_us: *at_us,
                    actor: Actor::TenantUser { tenant: tenant.clone() },
                    prev_hash: *hash,
                    offline: None,
                    key: None,
                    payload: events::Event::TokensConsumed {
                        request: format!("history-{n:012}"),
                        tokens: 1,
                        offline: false,
                    },
                };
                let bytes = events::encode(&envelope)?;
                *hash = events::event_hash(&bytes);
                batch.messages.push(AppendMessage {
                    tenant: tenant.clone(),
                    kind: "tokens_consumed",
                    payload: bytes.into(),
                });
                order.push(index);
            }
        }
        let ack = log.append(batch).await?;
        for (i, index) in order.iter().enumerate() {
            heads[*index].1 = ack.first + i as u64;
        }
        written += count;
    }
    Ok(())
}

pub async fn decide(nats: Option<&str>, shape: DecideShape) -> anyhow::Result<()> {
    let (_server, log) = connect(nats).await?;
    let client = log.client().clone();
    println!(
        "bench decide: {} decisions (70% consume_tokens, 30% upload) over {} tenants from {} concurrent clients",
        shape.decisions, shape.tenants, shape.clients
    );
    println!(
        "machine: {}; nats-server {} with sync_interval: always",
        machine(),
        client.server_info().version
    );

    let views_dir = tempfile::tempdir()?;
    let views = ViewStore::open(views_dir.path())?;
    let ledger = Ledger::start(log.clone(), views.clone()).await?;
    define_bench_plan(&ledger).await?;
    subscribe_all(&ledger, "t", shape.tenants).await?;

    // The ingest baseline, same run: bare atomic-batch publishes of
    // decision-sized messages.
    create_baseline_stream(&client).await?;
    let payloads: Vec<(String, Bytes)> = (0..shape.decisions)
        .map(|i| {
            (format!("baseline.t-{:05}.tokens_consumed", i % shape.tenants), Bytes::from(vec![7u8; 150]))
        })
        .collect();
    let baseline = baseline_round(&client, &payloads, 16, 1000).await?;

    let (elapsed, latencies) = load(&ledger, "t", shape.tenants, shape.clients, shape.decisions, 1).await?;
    let decided = latencies.len();
    let decisions_rate = rate(decided, elapsed);
    let baseline_rate = rate(payloads.len(), baseline);
    println!("durable decisions: {decisions_rate:>10.0}/s ({decided} in {:.1}s)", elapsed.as_secs_f64());
    println!(
        "latency p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    println!("baseline atomic-batch publish: {baseline_rate:>10.0} messages/s");
    println!("ratio decisions/baseline messages: {:.3}", decisions_rate / baseline_rate);

    // History: `history_tenants` tenants with `history` prior events each,
    // against as many fresh tenants, both cold in a newly started engine.
    println!(
        "history: {} tenants with {} prior events each vs {} fresh tenants, {} clients, cold engine",
        shape.history_tenants,
        shape.history,
        shape.history_tenants,
        shape.history_tenants.min(shape.clients)
    );
    subscribe_all(&ledger, "old", shape.history_tenants).await?;
    subscribe_all(&ledger, "new", shape.history_tenants).await?;
    let clients = shape.history_tenants.min(shape.clients);
    seed_history(&log, shape.history_tenants, shape.history).await?;
    ledger.sync_to(log.head().await?).await?;
    ledger.shutdown().await;
    let cold = Ledger::start(log.clone(), views).await?;
    let probe = shape.decisions.min(shape.history_tenants * 200);
    let (new_elapsed, new_lat) = load(&cold, "new", shape.history_tenants, clients, probe, 3).await?;
    let (old_elapsed, old_lat) = load(&cold, "old", shape.history_tenants, clients, probe, 4).await?;
    let (new_rate, old_rate) = (rate(new_lat.len(), new_elapsed), rate(old_lat.len(), old_elapsed));
    print_rate("fresh tenants:", new_rate, &new_lat);
    print_rate("10k-event tenants:", old_rate, &old_lat);
    println!("ratio history/fresh: {:.3}", old_rate / new_rate);
    Ok(())
}

/// What `ledger bench decide` measures (`--decisions` sets the largest row;
/// the others are scaled so each runs a few seconds).
#[derive(Debug, Clone, Copy)]
pub struct MatrixShape {
    pub decisions: usize,
    /// Distinct tenants for the memory row (memory is read after a tenth of
    /// them and after all).
    pub memory_tenants: usize,
    /// Partitions of the ledger measured.
    pub partitions: u32,
}

/// One row of the matrix: decisions (or messages) per second, latencies.
struct Row {
    label: String,
    rate: f64,
    latencies: Vec<Duration>,
}

impl Row {
    fn new(label: &str, count: usize, elapsed: Duration, latencies: Vec<Duration>) -> Row {
        Row { label: label.to_string(), rate: rate(count, elapsed), latencies }
    }

    fn p50(&self) -> f64 {
        if self.latencies.is_empty() {
            f64::NAN
        } else {
            percentile(&self.latencies, 0.5)
        }
    }

    fn print(&self) {
        if self.latencies.is_empty() {
            println!("  {:<44}{:>10.0}/s", self.label, self.rate);
        } else {
            println!(
                "  {:<44}{:>10.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
                self.label,
                self.rate,
                self.p50(),
                percentile(&self.latencies, 0.99)
            );
        }
    }
}

/// The bare baseline of a single publish: `clients` tasks, each publishing
/// 150-byte messages one after another to its own subject with that
/// subject's expected last sequence (as the ledger's single publishes carry),
/// each waiting for its fsynced ack. `total` in all.
async fn bare_singles(
    client: &async_nats::Client,
    clients: usize,
    total: usize,
    run: &str,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let js = async_nats::jetstream::new(client.clone());
    let per_client = total / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let js = js.clone();
        let subject = format!("baseline.single-{run}-{clients}-{c}.x");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            let mut last = 0u64;
            for _ in 0..per_client {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Expected-Last-Subject-Sequence", last.to_string().as_str());
                headers.insert("Nats-Expected-Last-Subject-Sequence-Subject", subject.as_str());
                let sent = Instant::now();
                let ack = js
                    .publish_with_headers(subject.clone(), headers, Bytes::from(vec![7u8; 150]))
                    .await?
                    .await?;
                latencies.push(sent.elapsed());
                last = ack.sequence;
            }
            Ok(latencies)
        }));
    }
    gather(started, tasks, per_client * clients).await
}

/// Resident memory of this process, in MiB (`VmRSS`).
fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Subscribes `prefix-from..to` and has each decide once.
async fn subscribe_and_decide(ledger: &Ledger, prefix: &str, from: usize, to: usize) -> anyhow::Result<()> {
    for chunk_start in (from..to).step_by(10_000) {
        let chunk = chunk_start..(chunk_start + 10_000).min(to);
        let mut pending = Vec::with_capacity(chunk.len());
        for i in chunk.clone() {
            let tenant = tenant_name(prefix, i);
            pending.push(
                ledger
                    .submit_nowait(admin(Command::Subscribe { tenant, plan: "bench".into(), seats: 1 }))
                    .await,
            );
        }
        for answer in pending.drain(..) {
            anyhow::ensure!(
                matches!(crate::engine::wait(answer).await, Reply::Ok { .. }),
                "subscribe failed"
            );
        }
        for i in chunk {
            let tenant = tenant_name(prefix, i);
            pending.push(ledger.submit_nowait(submission(&tenant, i as u64, i as u64)).await);
        }
        for answer in pending {
            match crate::engine::wait(answer).await {
                Reply::Ok { .. } | Reply::Rejected { seq: Some(_), .. } => {}
                other => anyhow::bail!("decision failed: {other:?}"),
            }
        }
    }
    Ok(())
}

/// Waits until the views include the whole log, so that a row starts
/// quiet: the previous row's trailing view folds are not charged to it.
async fn settle(log: &JetStreamLog, ledger: &Ledger) -> anyhow::Result<()> {
    let head = log.head().await?;
    ledger.sync_to(head).await
}

/// `ledger bench decide`: the decision matrix of issue 12, every figure a
/// ratio to a baseline measured in the same run.
pub async fn matrix(nats: Option<&str>, shape: MatrixShape) -> anyhow::Result<()> {
    let (server, log) = super::support::connect_partitioned(nats, shape.partitions).await?;
    let url = nats.map(str::to_string).unwrap_or_else(|| server.as_ref().expect("started").url().to_string());
    let client = log.client().clone();
    println!(
        "bench decide: quota decisions (70% consume_tokens, 30% upload), each client waiting for its answer"
    );
    println!(
        "machine: {}; nats-server {} with sync_interval: always",
        machine(),
        client.server_info().version
    );
    create_baseline_stream(&client).await?;
    let n = shape.decisions;
    let run = uuid::Uuid::now_v7().simple().to_string();

    // Baselines, bare async-nats, no ledger code.
    let (e, l) = bare_singles(&client, 1, (n / 50).max(200), &run).await?;
    let bare_one = Row::new("bare single publish, 1 client", l.len(), e, l);
    let (e, l) = bare_singles(&client, 16, (n / 5).max(1600), &run).await?;
    let bare_16 = Row::new("bare single publishes, 16 in flight", l.len(), e, l);
    let payloads: Vec<(String, Bytes)> = (0..n)
        .map(|i| (format!("baseline.t-{:05}.tokens_consumed", i % 10_000), Bytes::from(vec![7u8; 150])))
        .collect();
    let batches = baseline_round(&client, &payloads, 16, 1000).await?;
    let bare_batch = Row::new("bare atomic batches of 1000 (messages)", payloads.len(), batches, Vec::new());

    // The ledger through the in-process engine, and through `ledger serve`.
    let (service, ledger, _views_dir) = start_service(&log).await?;
    let mut rows = Vec::new();
    for (label, prefix, tenants, clients, count) in [
        ("ledger, 1 client, 1,000 tenants", "a", 1_000, 1, (n / 50).max(200)),
        ("ledger, 16 clients, 1,000 tenants", "b", 1_000, 16, (n / 5).max(1600)),
        ("ledger, 100 clients, 1,000 tenants", "c", 1_000, 100, (n / 2).max(10_000)),
        ("ledger, 100 clients, one tenant", "d", 1, 100, (n / 5).max(10_000)),
        ("ledger, 2,000 clients, 10,000 tenants", "e", 10_000, 2_000, n.max(20_000)),
    ] {
        subscribe_all(&ledger, prefix, tenants).await?;
        settle(&log, &ledger).await?;
        let (e, l) = load(&ledger, prefix, tenants, clients, count, rows.len() as u64 + 10).await?;
        rows.push(Row::new(label, l.len(), e, l));
    }
    let mut served = Vec::new();
    for (label, prefix, tenants, clients, count) in [
        ("serve, 1 client, 1 tenant", "sa", 1, 1, (n / 50).max(200)),
        ("serve, 100 clients, one tenant", "sd", 1, 100, (n / 5).max(10_000)),
    ] {
        subscribe_all(&ledger, prefix, tenants).await?;
        settle(&log, &ledger).await?;
        let (e, l) = load_service(&url, prefix, tenants, clients, clients.min(100), count, 20).await?;
        served.push(Row::new(label, l.len(), e, l));
    }
    // The in-process rows the served ones compare with, on the same tenants' shape.
    subscribe_all(&ledger, "ia", 1).await?;
    settle(&log, &ledger).await?;
    let (e, l) = load(&ledger, "ia", 1, 1, (n / 50).max(200), 30).await?;
    let engine_one = Row::new("ledger, 1 client, 1 tenant", l.len(), e, l);

    // Memory: distinct tenants deciding, with the tenant cache bounded.
    let before = resident_mib();
    let tenth = (shape.memory_tenants / 10).max(1);
    subscribe_and_decide(&ledger, "m", 0, tenth).await?;
    let at_tenth = resident_mib();
    subscribe_and_decide(&ledger, "m", tenth, shape.memory_tenants).await?;
    let at_all = resident_mib();
    service.stop().await;

    println!("baselines:");
    for row in [&bare_one, &bare_16, &bare_batch] {
        row.print();
    }
    println!("ledger (in-process engine):");
    for row in rows.iter().chain([&engine_one]) {
        row.print();
    }
    println!("through `ledger serve` (NATS request/reply):");
    for row in &served {
        row.print();
    }
    println!(
        "resident memory: {before:.0} MiB before, {at_tenth:.0} MiB after {tenth} tenants decided, {at_all:.0} MiB after {}",
        shape.memory_tenants
    );
    let stats = ledger.stats();
    println!(
        "engine: {} batches, {} messages, {} chained decisions, {} conflicts, {} loads, {} evictions",
        EngineStats::get(&stats.batches),
        EngineStats::get(&stats.messages),
        EngineStats::get(&stats.chained),
        EngineStats::get(&stats.conflicts),
        EngineStats::get(&stats.loads),
        EngineStats::get(&stats.evictions)
    );
    let targets = [
        ("1 client p50 <= 1.5 x bare single publish p50", rows[0].p50() / bare_one.p50(), 1.5, false),
        ("16 clients >= 1.0 x bare pipelined single publishes", rows[1].rate / bare_16.rate, 1.0, true),
        ("one tenant >= 0.5 x 1,000 tenants (100 clients)", rows[3].rate / rows[2].rate, 0.5, true),
        ("2,000 clients >= 0.35 x bare atomic batch messages", rows[4].rate / bare_batch.rate, 0.35, true),
        ("memory after all <= 1.5 x after a tenth", at_all / at_tenth, 1.5, false),
        (
            "serve within 1.5 x in-process (1-client p50, one-tenant rate)",
            (served[0].p50() / engine_one.p50()).max(rows[3].rate / served[1].rate),
            1.5,
            false,
        ),
    ];
    print_targets(&targets);
    Ok(())
}

/// `clients` tenant clients (tenant `prefix-<c>` each), sharing
/// `connections` NATS connections, each sending decisions through the
/// service one after another, `total` in all.
pub(super) async fn load_service(
    url: &str,
    prefix: &str,
    tenants: usize,
    clients: usize,
    connections: usize,
    total: usize,
    seed: u64,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    use ledger_client::{Client, ClientConfig, Role};
    let mut config = ClientConfig::new(url);
    config.request_timeout = Duration::from_secs(30);
    config.attempts = 1;
    let mut pool = Vec::with_capacity(connections);
    for _ in 0..connections {
        // `url` may list a cluster's servers, comma-separated.
        let (addresses, options) = ledger_client::nats::options(url, "bench", None);
        pool.push(options.connect(addresses).await?);
    }
    let per_client = total / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        // A client speaks for one tenant at a time: tenant `c` of fewer
        // tenants than clients, else a random one of its own share
        // (`c`, `c + clients`, ...), so clients never share a tenant's keys.
        let share: Vec<usize> =
            if tenants > clients { (c..tenants).step_by(clients).collect() } else { vec![c % tenants] };
        let handles: Vec<Client> = share
            .iter()
            .map(|&t| {
                Client::with_connection(
                    pool[c % connections].clone(),
                    config.clone(),
                    &tenant_name(prefix, t),
                    Role::User,
                )
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let roll = rng.next();
                let client = &handles[(roll >> 20) as usize % handles.len()];
                let sent = Instant::now();
                let answer = if roll % 10 < 7 {
                    client.consume_tokens(&format!("req-{seed}-{c:05}-{i:08}"), 1 + roll % 2000).await?
                } else {
                    client.upload(&format!("uploads/{seed}-{c:05}-{i:08}.bin"), roll % 100_000).await?
                };
                latencies.push(sent.elapsed());
                anyhow::ensure!(answer.ok, "decision failed: {}", answer.raw);
            }
            Ok(latencies)
        }));
    }
    gather(started, tasks, total).await
}

/// `ledger bench serve`.
pub async fn serve(
    nats: Option<&str>,
    decisions: usize,
    clients: usize,
    tenants: usize,
    connections: usize,
    (partitions, replicas): (u32, usize),
) -> anyhow::Result<()> {
    let (server, log) = super::support::connect_replicated(nats, partitions, replicas).await?;
    let url = nats.map(str::to_string).unwrap_or_else(|| server.as_ref().expect("started").url().to_string());
    println!(
        "bench serve: {decisions} decisions (70% consume_tokens, 30% upload) from {clients} concurrent \
         clients of {tenants} tenants over {connections} NATS connections, through `ledger serve`; then the same load on the \
         in-process engine; {partitions} partition(s)"
    );
    println!(
        "machine: {}; nats-server {} with sync_interval: always",
        machine(),
        log.client().server_info().version
    );
    let (service, ledger, _views_dir) = start_service(&log).await?;
    subscribe_all(&ledger, "svc", tenants).await?;
    subscribe_all(&ledger, "eng", tenants).await?;

    let counts = |l: &Ledger| {
        let s = l.stats();
        (EngineStats::get(&s.batches), EngineStats::get(&s.messages))
    };
    let before = counts(&ledger);
    let (svc_elapsed, svc_lat) =
        load_service(&url, "svc", tenants, clients, connections, decisions, 5).await?;
    let mid = counts(&ledger);
    let (eng_elapsed, eng_lat) = load(&ledger, "eng", tenants, clients, decisions, 6).await?;
    let after = counts(&ledger);
    for (phase, (b0, m0), (b1, m1)) in [("service", before, mid), ("in-process", mid, after)] {
        println!(
            "{phase}: {} batches, {:.1} messages each",
            b1 - b0,
            (m1 - m0) as f64 / (b1 - b0).max(1) as f64
        );
    }
    let (svc_rate, eng_rate) = (rate(svc_lat.len(), svc_elapsed), rate(eng_lat.len(), eng_elapsed));
    print_rate("through the service:", svc_rate, &svc_lat);
    print_rate("in-process engine:", eng_rate, &eng_lat);
    println!("ratio service/in-process: {:.3}", svc_rate / eng_rate);
    service.stop().await;
    Ok(())
}
