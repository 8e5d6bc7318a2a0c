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

/// A projection as the runtime drives it: object-safe, so one reader can
/// feed several views.
pub trait View: Send + Sync {
    fn name(&self) -> &'static str;
    /// Folds `records` (all after the view's checkpoint) and returns the new checkpoint.
    fn fold(&self, store: &ViewStore, records: &[Record]) -> Result<u64, projections::ViewError>;
}

impl<P: Projection> View for P {
    fn name(&self) -> &'static str {
        P::NAME
    }
    fn fold(&self, store: &ViewStore, records: &[Record]) -> Result<u64, projections::ViewError> {
        store.apply_batch(self, records)
    }
}

/// Every view the ledger keeps.
pub const ALL_VIEWS: [&dyn View; 2] = [&projections::LedgerView, &projections::Activity];

/// The views named (all when `names` is empty); an unknown name is an error.
pub fn select_views(names: &[String]) -> anyhow::Result<Vec<&'static dyn View>> {
    if names.is_empty() {
        return Ok(ALL_VIEWS.to_vec());
    }
    names
        .iter()
        .map(|name| {
            ALL_VIEWS.iter().copied().find(|v| v.name() == name).ok_or_else(|| {
                let known: Vec<&str> = ALL_VIEWS.iter().map(|v| v.name()).collect();
                anyhow::anyhow!("unknown view {name:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// Folds the log into `views` until `options.until` (or forever), reading
/// the log once for all of them: each record is fetched and decoded once
/// and handed to every view whose checkpoint it is past. Returns the lowest
/// checkpoint reached.
pub async fn run<L: EventLog>(
    log: &L,
    store: &ViewStore,
    views: &[&dyn View],
    options: ProjectorOptions,
) -> anyhow::Result<u64> {
    let mut checkpoints: Vec<u64> =
        views.iter().map(|v| store.checkpoint(v.name())).collect::<Result<_, _>>()?;
    let lowest = |c: &[u64]| c.iter().copied().min().unwrap_or(0);
    if options.until.is_some_and(|until| lowest(&checkpoints) >= until) {
        return Ok(lowest(&checkpoints));
    }
    let start = lowest(&checkpoints);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut chunks = log.read(start + 1, None).await?.ready_chunks(options.batch_size.max(1));
    while let Some(chunk) = chunks.next().await {
        let mut records = Vec::with_capacity(chunk.len());
        for item in chunk {
            let record = item?;
            if options.until.is_some_and(|until| record.position > until) {
                break;
            }
            records.push(decode_record(&record));
        }
        for (view, checkpoint) in views.iter().zip(checkpoints.iter_mut()) {
            let first_new = records.partition_point(|r| r.position <= *checkpoint);
            if first_new < records.len() {
                *checkpoint = view.fold(store, &records[first_new..])?;
            }
        }
        let reached = lowest(&checkpoints);
        if last_report.elapsed() >= Duration::from_secs(2) {
            let rate = (reached - start) as f64 / started.elapsed().as_secs_f64();
            tracing::info!(checkpoint = reached, target = ?options.until, rate = rate as u64, "projecting");
            last_report = Instant::now();
        }
        if options.until.is_some_and(|until| reached >= until) {
            break;
        }
    }
    Ok(lowest(&checkpoints))
}

/// Brings views up to the log's current head.
pub async fn catch_up<L: EventLog>(log: &L, store: &ViewStore, views: &[&dyn View]) -> anyhow::Result<u64> {
    let head = log.head().await?;
    run(log, store, views, ProjectorOptions { until: Some(head), ..Default::default() }).await
}
