//! Rebuilding views from the log: the fold loop every projector and every
//! replay runs, over any [`Source`] of log records.
//!
//! The log is read once for all views: each record is fetched and decoded
//! once and handed to every view whose checkpoint it is past. Each view's
//! rows and checkpoint commit together (`projections::ViewStore::apply_batch`),
//! so the loop can be killed at any point and started again.

pub mod audit;

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use projections::{Record, View, ViewStore};

/// One message as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub position: u64,
    pub subject: String,
    pub payload: Bytes,
}

impl LogRecord {
    pub fn decode(&self) -> Record {
        Record::decode(self.position, &self.subject, &self.payload)
    }
}

/// A stream of records that follows the tail: it ends only on error or drop.
pub type RecordStream<E> = BoxStream<'static, Result<LogRecord, E>>;

/// The read side of the log. Positions are 1-based and contiguous.
pub trait Source: Send + Sync + Clone + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The last position in the log (0 when empty).
    fn head(&self) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Records from `from` on (only the tenant's when given), then follows the tail.
    fn read(
        &self,
        from: u64,
        tenant: Option<&str>,
    ) -> impl Future<Output = Result<RecordStream<Self::Error>, Self::Error>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The log could not be read: see the source's error; rerun to resume.
    #[error("reading the log: {0}")]
    Source(Box<dyn std::error::Error + Send + Sync>),
    /// A view could not be written: see `projections::ViewError`.
    #[error(transparent)]
    View(#[from] projections::ViewError),
}

pub(crate) fn source<E: std::error::Error + Send + Sync + 'static>(e: E) -> ReplayError {
    ReplayError::Source(Box::new(e))
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Most records folded per view write.
    pub batch_size: usize,
    /// Stop once every view reaches this position; `None`: follow forever.
    pub until: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options { batch_size: 1000, until: None }
    }
}

/// Told how far a fold has come, about every batch.
pub trait Progress: Send {
    fn update(&mut self, reached: u64, target: Option<u64>);
}

/// Progress through `tracing`, every 2 seconds.
pub struct LogProgress {
    started: Instant,
    last: Instant,
    start: u64,
}

impl LogProgress {
    pub fn new() -> LogProgress {
        LogProgress { started: Instant::now(), last: Instant::now(), start: 0 }
    }
}

impl Default for LogProgress {
    fn default() -> Self {
        LogProgress::new()
    }
}

impl Progress for LogProgress {
    fn update(&mut self, reached: u64, target: Option<u64>) {
        if self.start == 0 {
            self.start = reached;
        }
        if self.last.elapsed() >= Duration::from_secs(2) {
            let rate = (reached - self.start) as f64 / self.started.elapsed().as_secs_f64();
            tracing::info!(position = reached, ?target, rate = rate as u64, "folding the log");
            self.last = Instant::now();
        }
    }
}

/// Folds the log into `views` until `options.until` (or forever). Returns
/// the lowest checkpoint reached.
pub async fn run<S: Source>(
    log: &S,
    store: &ViewStore,
    views: &[&dyn View],
    options: Options,
    progress: &mut dyn Progress,
) -> Result<u64, ReplayError> {
    let mut checkpoints: Vec<u64> =
        views.iter().map(|v| store.checkpoint(v.name())).collect::<Result<_, _>>()?;
    let lowest = |c: &[u64]| c.iter().copied().min().unwrap_or(0);
    if options.until.is_some_and(|until| lowest(&checkpoints) >= until) {
        return Ok(lowest(&checkpoints));
    }
    let start = lowest(&checkpoints);
    let mut chunks = log.read(start + 1, None).await.map_err(source)?.ready_chunks(options.batch_size.max(1));
    while let Some(chunk) = chunks.next().await {
        let mut records = Vec::with_capacity(chunk.len());
        for item in chunk {
            let record = item.map_err(source)?;
            if options.until.is_some_and(|until| record.position > until) {
                break;
            }
            records.push(record.decode());
        }
        for (view, checkpoint) in views.iter().zip(checkpoints.iter_mut()) {
            let first_new = records.partition_point(|r| r.position <= *checkpoint);
            if first_new < records.len() {
                *checkpoint = view.fold(store, &records[first_new..])?;
            }
        }
        let reached = lowest(&checkpoints);
        progress.update(reached, options.until);
        if options.until.is_some_and(|until| reached >= until) {
            break;
        }
    }
    Ok(lowest(&checkpoints))
}

/// Brings `views` up to the log's current head.
pub async fn catch_up<S: Source>(
    log: &S,
    store: &ViewStore,
    views: &[&dyn View],
) -> Result<u64, ReplayError> {
    let head = log.head().await.map_err(source)?;
    run(log, store, views, Options { until: Some(head), ..Default::default() }, &mut LogProgress::new()).await
}
