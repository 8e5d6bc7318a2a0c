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
use projections::{Projection, Record, View, ViewStore};

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

    /// The partition `head` and untargeted reads are in (0 for a log of
    /// one partition). Its positions carry the partition in their high
    /// bits, and views keep a checkpoint per partition.
    fn partition(&self) -> u32 {
        0
    }

    /// The head of the partition holding the catalog (partition 0): what a
    /// fold of another partition waits for when an event names a plan or
    /// add-on the views' catalog lacks.
    fn catalog_head(&self) -> impl Future<Output = Result<u64, Self::Error>> + Send {
        self.head()
    }

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

/// Records per view write when catching up to a known position: large, so a
/// tenant's rows are read and written once for many of its events.
pub const CATCH_UP_BATCH: usize = 100_000;

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
    /// When it last logged, and the position then.
    last: Instant,
    start: u64,
}

impl LogProgress {
    pub fn new() -> LogProgress {
        LogProgress { last: Instant::now(), start: 0 }
    }
}

impl Default for LogProgress {
    fn default() -> Self {
        LogProgress::new()
    }
}

impl Progress for LogProgress {
    /// Logs at most every 2 s, and only while there is a backlog: a
    /// projector following the tail folds each write as it comes, which is
    /// no news (it logs at debug level instead).
    fn update(&mut self, reached: u64, target: Option<u64>) {
        if self.start == 0 {
            self.start = reached;
        }
        if self.last.elapsed() < Duration::from_secs(2) {
            return;
        }
        let rate = (reached - self.start) as f64 / self.last.elapsed().as_secs_f64();
        if target.is_some_and(|t| reached < t) {
            tracing::info!(position = reached, ?target, rate = rate as u64, "folding the log");
        } else {
            tracing::debug!(position = reached, rate = rate as u64, "following the log");
        }
        self.start = reached;
        self.last = Instant::now();
    }
}

/// Folds one batch into every view (each on its own thread: views are
/// independent trees) and returns their new checkpoints.
fn fold_all(
    store: &ViewStore,
    views: &[&'static dyn View],
    checkpoints: &[u64],
    records: &[Record],
) -> Result<Vec<u64>, projections::ViewError> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = views
            .iter()
            .zip(checkpoints)
            .map(|(view, checkpoint)| {
                scope.spawn(move || {
                    let first_new = records.partition_point(|r| r.position <= *checkpoint);
                    if first_new < records.len() {
                        view.fold(store, &records[first_new..])
                    } else {
                        Ok(*checkpoint)
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a view fold panicked")).collect()
    })
}

type Folding = std::thread::JoinHandle<Result<Vec<u64>, projections::ViewError>>;

/// Folds the log into `views` until `options.until` (or forever). Returns
/// the lowest checkpoint reached.
///
/// Reading and folding overlap: while one batch is folded on other
/// threads, the next is read and decoded.
pub async fn run<S: Source>(
    log: &S,
    store: &ViewStore,
    views: &[&'static dyn View],
    options: Options,
    progress: &mut dyn Progress,
) -> Result<u64, ReplayError> {
    let partition = log.partition();
    let mut checkpoints: Vec<u64> =
        views.iter().map(|v| store.checkpoint_in(v.name(), partition)).collect::<Result<_, _>>()?;
    let lowest = |c: &[u64]| c.iter().copied().min().unwrap_or(0);
    if options.until.is_some_and(|until| lowest(&checkpoints) >= until) {
        return Ok(lowest(&checkpoints));
    }
    let start = lowest(&checkpoints);
    let mut chunks = log.read(start + 1, None).await.map_err(source)?.ready_chunks(options.batch_size.max(1));
    let mut records: Vec<Record> = Vec::with_capacity(options.batch_size);
    let mut folding: Option<Folding> = None;
    let mut done = false;
    while !done {
        let Some(chunk) = chunks.next().await else { break };
        for item in chunk {
            let record = item.map_err(source)?;
            if options.until.is_some_and(|until| record.position > until) {
                done = true;
                break;
            }
            done = options.until.is_some_and(|until| record.position >= until);
            records.push(record.decode());
        }
        // Following the tail, fold what is ready at once (latency); catching
        // up to a known position, fold full batches (throughput).
        if options.until.is_some() && !done && records.len() < options.batch_size {
            continue;
        }
        if let Some(previous) = folding.take() {
            checkpoints = previous.join().expect("the fold thread panicked")?;
            progress.update(lowest(&checkpoints), options.until);
        }
        let batch = std::mem::take(&mut records);
        if partition > 0 {
            catalog_covers(log, store, &batch).await?;
        }
        let (store, views, known) = (store.clone(), views.to_vec(), checkpoints.clone());
        let fold = std::thread::spawn(move || fold_all(&store, &views, &known, &batch));
        if options.until.is_none() {
            // Following the tail: finish now, so the views are current.
            checkpoints = fold.join().expect("the fold thread panicked")?;
            progress.update(lowest(&checkpoints), options.until);
        } else {
            folding = Some(fold);
        }
    }
    if let Some(previous) = folding.take() {
        checkpoints = previous.join().expect("the fold thread panicked")?;
        progress.update(lowest(&checkpoints), options.until);
    }
    Ok(lowest(&checkpoints))
}

/// How long a fold of another partition waits for the catalog's partition
/// to be folded before folding anyway (a plan no catalog event defines can
/// only be named by a message the ledger did not write).
const CATALOG_WAIT: Duration = Duration::from_secs(5);

/// The catalog (plans, add-ons) lives in partition 0, and a view's fold of
/// a tenant's notifications reads it: before a batch of another partition
/// that names a plan or add-on the views' catalog lacks is folded, this
/// waits until partition 0 is folded to its head (which holds every plan a
/// decision already on the log can name: plans are defined before use and
/// never change). Nothing to wait for in the common case.
async fn catalog_covers<S: Source>(
    log: &S,
    store: &ViewStore,
    records: &[Record],
) -> Result<(), ReplayError> {
    use events::Event;
    let named = |catalog: &projections::domain::CatalogState| {
        records.iter().filter_map(|r| r.event.as_ref().ok()).all(|e| match &e.payload {
            Event::Subscribed { plan, .. } | Event::PlanChanged { plan } => catalog.plans.contains_key(plan),
            Event::AddonPurchased { addon, .. } => catalog.addons.contains_key(addon),
            _ => true,
        })
    };
    if named(&projections::LedgerView::catalog(store)?) {
        return Ok(());
    }
    let head = log.catalog_head().await.map_err(source)?;
    let deadline = Instant::now() + CATALOG_WAIT;
    while store.checkpoint(projections::LedgerView::NAME)? < head && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if !named(&projections::LedgerView::catalog(store)?) {
        tracing::warn!(partition = log.partition(), "events name a plan or add-on the catalog lacks");
    }
    Ok(())
}

/// Brings `views` up to the log's current head.
pub async fn catch_up<S: Source>(
    log: &S,
    store: &ViewStore,
    views: &[&'static dyn View],
) -> Result<u64, ReplayError> {
    let head = log.head().await.map_err(source)?;
    let options = Options { until: Some(head), batch_size: CATCH_UP_BATCH };
    run(log, store, views, options, &mut LogProgress::new()).await
}
