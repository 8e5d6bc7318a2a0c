//! What every benchmark shares: the seeded generator, the bare atomic-batch
//! baseline, the server a run uses, rates and the machine line.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;

use super::natsd::NatsServer;
use crate::log::{JetStreamLog, JetStreamOptions};

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
    connect_partitioned(nats, 1).await
}

/// [`connect`] to a ledger of `partitions` partitions (created when the
/// server has no ledger yet; refused when it has one of another number).
pub(crate) async fn connect_partitioned(
    nats: Option<&str>,
    partitions: u32,
) -> anyhow::Result<(Option<NatsServer>, JetStreamLog)> {
    connect_replicated(nats, partitions, 1).await
}

/// [`connect_partitioned`], each stream of `replicas` replicas when this
/// makes the ledger (a cluster given by `--nats`).
pub(crate) async fn connect_replicated(
    nats: Option<&str>,
    partitions: u32,
    replicas: usize,
) -> anyhow::Result<(Option<NatsServer>, JetStreamLog)> {
    let server = match nats {
        Some(_) => None,
        None => Some(NatsServer::start()?),
    };
    let url = nats.map(str::to_string).unwrap_or_else(|| server.as_ref().expect("started").url().to_string());
    let options = JetStreamOptions { replicas, ..JetStreamOptions::new(&url) };
    let log = if partitions > 1 {
        JetStreamLog::init(&options, partitions).await?
    } else {
        JetStreamLog::connect(&options).await?
    };
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

/// Prints each target as met or MISSED, then `targets met: N of M`.
/// A target is (what, ratio, bound, at_least): met when the ratio is at
/// least (or, with `at_least` false, at most) the bound.
pub(crate) fn print_targets(targets: &[(&str, f64, f64, bool)]) {
    let mut met = 0;
    for &(what, ratio, bound, at_least) in targets {
        let ok = if at_least { ratio >= bound } else { ratio <= bound };
        met += usize::from(ok);
        println!("  {} {what}: {ratio:.3}", if ok { "met   " } else { "MISSED" });
    }
    println!("targets met: {met} of {}", targets.len());
}

/// How the benchmarks run `serve`: the billing clock idle, and webhooks
/// (like every bench's traffic) reaching loopback only.
pub(crate) fn serve_options() -> crate::serve::ServeOptions {
    crate::serve::ServeOptions {
        clock_interval: Duration::from_secs(3600),
        egress: crate::notify::egress::Egress {
            allow_hosts: Some(vec!["127.0.0.1".into()]),
            allow_private: false,
        },
    }
}
