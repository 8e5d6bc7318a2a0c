//! `ledger bench`: throughput figures measured against a baseline in the same
//! run, since these machines are shared and noisy. Rounds alternate between
//! the ledger and its baseline so drift in the machine's load hits both.

//!
//! One file a benchmark (`ingest`, `replay`, `decide` with `serve`), the
//! event workload they share in `workload.rs`, the baselines and helpers in
//! `support.rs`, and `natsd.rs`, the nats-server launcher benches and tests
//! use (it is never on the product's code paths).

pub mod decide;
mod http;
mod ingest;
pub mod natsd;
mod replay;
mod support;
mod webhooks;
mod workload;

use clap::Subcommand;

use ingest::{ingest, IngestShape};
use replay::replay;

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
    /// The decision matrix: latency and throughput at 1, 16, 100 and 2,000
    /// clients, a hot tenant, through `ledger serve`, and memory over many
    /// tenants, each against bare baselines in the same run; ends with
    /// `targets met: N of 6`.
    Decide {
        /// Decisions in the largest row (others are scaled from it).
        #[arg(long, default_value_t = 100_000)]
        decisions: usize,
        /// Distinct tenants for the memory row.
        #[arg(long, default_value_t = 1_000_000)]
        memory_tenants: usize,
        /// Partitions of the ledger the bench creates (`ledger init`).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
    },
    /// The decision rate on tenants with a long history against fresh ones,
    /// and against the bare atomic-batch baseline.
    DecideHistory {
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
        /// Concurrent tenant clients, each waiting for its answer.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Tenants the clients spread over (default: one per client; 1 is a
        /// hot tenant; more than --clients gives each client its own share,
        /// picked at random per decision).
        #[arg(long)]
        tenants: Option<usize>,
        /// NATS connections the clients share.
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Instead: the same decisions through HTTP (keep-alive) against
        /// the NATS path, at 1 and 100 clients, on one `serve` running both.
        #[arg(long)]
        http: bool,
        /// Partitions of the ledger the bench creates (`ledger init`).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
    },
    /// Webhooks: decisions with three endpoints (one failing) against none,
    /// and how old notifications are when they arrive at 1,000 decisions/s.
    Webhooks {
        /// Decisions per round.
        #[arg(long, default_value_t = 20_000)]
        decisions: usize,
        /// Rounds each way, alternating.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

/// `replicas`: the global `--replicas`, for the ledger `bench serve` creates
/// on a cluster given by `--nats`.
pub async fn run(command: BenchCommand, nats: Option<&str>, replicas: usize) -> anyhow::Result<()> {
    match command {
        BenchCommand::Replay { events, tenants, rounds } => {
            replay(nats, events, tenants, rounds.max(1)).await
        }
        BenchCommand::Decide { decisions, memory_tenants, partitions } => {
            decide::matrix(nats, decide::MatrixShape { decisions, memory_tenants, partitions }).await
        }
        BenchCommand::DecideHistory { decisions, tenants, clients, history, history_tenants } => {
            anyhow::ensure!(
                clients >= 1 && tenants >= 1 && history_tenants >= 1,
                "counts must be at least 1"
            );
            let shape = decide::DecideShape { decisions, tenants, clients, history, history_tenants };
            decide::decide(nats, shape).await
        }
        BenchCommand::Serve { decisions, http: true, .. } => http::serve_http(nats, decisions).await,
        BenchCommand::Webhooks { decisions, rounds } => {
            anyhow::ensure!(decisions >= 100 && rounds >= 1, "--decisions at least 100, --rounds at least 1");
            webhooks::webhooks(nats, decisions, rounds).await
        }
        BenchCommand::Serve { decisions, clients, tenants, connections, http: false, partitions } => {
            let tenants = tenants.unwrap_or(clients);
            anyhow::ensure!(
                clients >= 1 && connections >= 1 && tenants >= 1,
                "--clients, --tenants and --connections must be at least 1"
            );
            decide::serve(nats, decisions, clients, tenants, connections, (partitions, replicas)).await
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
