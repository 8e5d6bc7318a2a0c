//! `ledger bench replay`: folding the log into fresh views against a bare
//! ordered consumer reading the same stream.

use std::time::{Duration, Instant};

use super::support::{connect, machine, rate};
use super::workload::{ledger_round, Generator};

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

pub(super) async fn replay(
    nats: Option<&str>,
    events: usize,
    tenants: usize,
    rounds: usize,
) -> anyhow::Result<()> {
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
