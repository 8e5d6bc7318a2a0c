//! `ledger bench serve --http`: the same quota decisions through the HTTP
//! API (keep-alive connections, one per client) and through the NATS
//! service, on one `serve` running both over one engine, at 1 and 100
//! clients. Rounds alternate HTTP and NATS so the machine's drift hits
//! both. Targets (issue 13): 100-client throughput >= 0.7 x NATS, 1-client
//! p50 <= 1.5 x NATS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use projections::ViewStore;

use super::decide::{
    define_bench_plan, gather, load_service, percentile, print_rate, subscribe_all, tenant_name, ClientTask,
};
use super::support::{connect, machine, print_targets, rate, Rng};
use crate::log::AnyLog;
use crate::serve::keys::{KeyRing, KeyStore, Role};

/// Rounds per row, alternating HTTP and NATS.
const ROUNDS: usize = 2;
const MANY_CLIENTS: usize = 100;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>;

/// `clients` HTTP clients, one tenant and one key each, each sending
/// decisions one after another over its own keep-alive connection.
async fn load_http(
    base: &str,
    keys: &[String],
    clients: usize,
    total: usize,
    seed: u64,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let per_client = total / clients;
    let started = Instant::now();
    let mut tasks: Vec<ClientTask> = Vec::new();
    for c in 0..clients {
        let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build_http();
        let key = format!("Bearer {}", keys[c]);
        let tenant_base = format!("{base}/v1/tenants/{}", tenant_name("web", c));
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let roll = rng.next();
                let (command, body) = if roll % 10 < 7 {
                    (
                        "consume_tokens",
                        format!(r#"{{"request":"h{seed}-{c:05}-{i:08}","tokens":{}}}"#, 1 + roll % 2000),
                    )
                } else {
                    (
                        "upload",
                        format!(r#"{{"file":"h{seed}/{c:05}-{i:08}.bin","bytes":{}}}"#, roll % 100_000),
                    )
                };
                let request = hyper::Request::post(format!("{tenant_base}/{command}"))
                    .header("authorization", &key)
                    .header("content-type", "application/json")
                    .body(Full::new(bytes::Bytes::from(body)))?;
                let sent = Instant::now();
                let response = client.request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                latencies.push(sent.elapsed());
                anyhow::ensure!(
                    status == 200,
                    "decision failed: {status} {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Ok(latencies)
        }));
    }
    gather(started, tasks, total).await
}

struct Row {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Row {
    fn new() -> Row {
        Row { elapsed: Duration::ZERO, latencies: Vec::new() }
    }

    fn add(&mut self, (elapsed, latencies): (Duration, Vec<Duration>)) {
        self.elapsed += elapsed;
        self.latencies.extend(latencies);
        self.latencies.sort_unstable();
    }

    fn rate(&self) -> f64 {
        rate(self.latencies.len(), self.elapsed)
    }
}

/// `ledger bench serve --http`.
pub async fn serve_http(nats: Option<&str>, decisions: usize) -> anyhow::Result<()> {
    let (server, log) = connect(nats).await?;
    let url = nats.map(str::to_string).unwrap_or_else(|| server.as_ref().expect("started").url().to_string());
    let one = (decisions / 50).max(100);
    let many = (decisions / 5).max(MANY_CLIENTS * 10);
    println!(
        "bench serve --http: decisions (70% consume_tokens, 30% upload) through one `ledger serve` running \
         NATS and HTTP over one engine: {one} from 1 client, {many} from {MANY_CLIENTS} clients (one tenant \
         each), {ROUNDS} alternating rounds a path"
    );
    println!(
        "machine: {}; nats-server {} with sync_interval: always",
        machine(),
        log.client().server_info().version
    );

    let data = tempfile::tempdir()?;
    let views = ViewStore::open(&data.path().join("views"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    // The keys are stored with the ledger, as `serve` keeps them.
    let store = KeyStore::open(data.path(), &AnyLog::JetStream(log.clone())).await?;
    let mut tenant_keys = Vec::with_capacity(MANY_CLIENTS);
    for c in 0..MANY_CLIENTS {
        tenant_keys.push(store.add(Some(&tenant_name("web", c)), Role::User).await?.1);
    }
    let ring = Arc::new(KeyRing::new(store));
    let options = super::support::serve_options();
    let service =
        crate::serve::Server::start_with_http(log.clone(), views, options, Some((listener, ring))).await?;
    let ledger = service.ledger().clone();
    define_bench_plan(&ledger).await?;
    subscribe_all(&ledger, "web", MANY_CLIENTS).await?;
    subscribe_all(&ledger, "svc", MANY_CLIENTS).await?;

    let (mut http_one, mut nats_one, mut http_many, mut nats_many) =
        (Row::new(), Row::new(), Row::new(), Row::new());
    for round in 0..ROUNDS as u64 {
        http_one.add(load_http(&base, &tenant_keys, 1, one / ROUNDS, 10 + round).await?);
        nats_one.add(load_service(&url, "svc", 1, 1, 1, one / ROUNDS, 20 + round).await?);
        http_many.add(load_http(&base, &tenant_keys, MANY_CLIENTS, many / ROUNDS, 30 + round).await?);
        nats_many.add(
            load_service(&url, "svc", MANY_CLIENTS, MANY_CLIENTS, MANY_CLIENTS, many / ROUNDS, 40 + round)
                .await?,
        );
    }
    print_rate("HTTP, 1 client:", http_one.rate(), &http_one.latencies);
    print_rate("NATS, 1 client:", nats_one.rate(), &nats_one.latencies);
    print_rate("HTTP, 100 clients:", http_many.rate(), &http_many.latencies);
    print_rate("NATS, 100 clients:", nats_many.rate(), &nats_many.latencies);
    let p50 = |row: &Row| percentile(&row.latencies, 0.5);
    let targets = [
        ("100-client throughput HTTP/NATS >= 0.7", http_many.rate() / nats_many.rate(), 0.7, true),
        ("1-client p50 HTTP/NATS <= 1.5", p50(&http_one) / p50(&nats_one), 1.5, false),
    ];
    print_targets(&targets);
    service.stop().await;
    Ok(())
}
