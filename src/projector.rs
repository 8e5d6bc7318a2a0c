//! The projector runtime: reads the log from a view's checkpoint and folds it
//! into the view in batches. Each batch's rows and checkpoint commit together
//! (see `projections::ViewStore::apply_batch`), so a projector may be killed
//! at any point and simply started again.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use projections::{Projection, Record, ViewStore};

use crate::log::{EventLog, LogRecord};

#[derive(Debug, Clone, Copy)]
pub struct ProjectorOptions {
    /// Most records folded per sled write.
    pub batch_size: usize,
    /// Stop once the checkpoint reaches this position; `None`: follow forever.
    pub until: Option<u64>,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        ProjectorOptions { batch_size: 1000, until: None }
    }
}

/// Decodes a record and checks it sits on the subject its envelope claims,
/// so a message published under another tenant's subject is refused too.
pub fn decode_record(record: &LogRecord) -> Record {
    let event = events::decode(&record.payload).and_then(|envelope| {
        if envelope.subject() == record.subject {
            Ok(envelope)
        } else {
            Err(events::EventError::Invalid(format!(
                "event for {} found on subject {}",
                envelope.subject(),
                record.subject
            )))
        }
    });
    Record { position: record.position, hash: events::event_hash(&record.payload), event }
}

/// Folds the log into `projection`'s view until `options.until` (or forever).
/// Returns the final checkpoint.
pub async fn run<L: EventLog, P: Projection>(
    log: &L,
    store: &ViewStore,
    projection: &P,
    options: ProjectorOptions,
) -> anyhow::Result<u64> {
    let mut checkpoint = store.checkpoint(P::NAME)?;
    if options.until.is_some_and(|until| checkpoint >= until) {
        return Ok(checkpoint);
    }
    let start = checkpoint;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut chunks = log.read(checkpoint + 1, None).await?.ready_chunks(options.batch_size.max(1));
    while let Some(chunk) = chunks.next().await {
        let mut records = Vec::with_capacity(chunk.len());
        for item in chunk {
            let record = item?;
            if options.until.is_some_and(|until| record.position > until) {
                break;
            }
            records.push(decode_record(&record));
        }
        if !records.is_empty() {
            checkpoint = store.apply_batch(projection, &records)?;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            let rate = (checkpoint - start) as f64 / started.elapsed().as_secs_f64();
            tracing::info!(view = P::NAME, checkpoint, target = ?options.until, rate = rate as u64, "projecting");
            last_report = Instant::now();
        }
        if options.until.is_some_and(|until| checkpoint >= until) {
            break;
        }
    }
    Ok(checkpoint)
}

/// Brings a view up to the log's current head.
pub async fn catch_up<L: EventLog, P: Projection>(
    log: &L,
    store: &ViewStore,
    projection: &P,
) -> anyhow::Result<u64> {
    let head = log.head().await?;
    run(log, store, projection, ProjectorOptions { until: Some(head), ..Default::default() }).await
}
