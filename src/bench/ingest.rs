//! `ledger bench ingest`: durable ingest through the ledger's `EventLog`
//! against a bare async-nats atomic-batch publisher, plus the embedded log.

use std::time::Duration;

use bytes::Bytes;

use super::support::{baseline_round, connect, create_baseline_stream, machine, rate};
use super::workload::{ledger_round, Generator};
use crate::log::EmbeddedLog;

#[derive(Debug, Clone, Copy)]
pub(super) struct IngestShape {
    pub events: usize,
    pub batch: usize,
    pub inflight: usize,
    pub tenants: usize,
    pub rounds: usize,
    pub expectations: bool,
}

pub(super) async fn ingest(nats: Option<&str>, shape: IngestShape) -> anyhow::Result<()> {
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
