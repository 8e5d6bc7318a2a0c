//! The projector runtime: `replay`'s fold loop over the ledger's log. Each
//! view's rows and checkpoint commit together, so a projector may be killed
//! at any point and simply started again.

pub use projections::{select_views, View, ALL_VIEWS};
pub use replay::Options as ProjectorOptions;

use crate::log::{EventLog, LogError, RecordStream};

/// Folds the log into `views` until `options.until` (or forever), logging
/// progress. Returns the lowest checkpoint reached.
pub async fn run<L: EventLog>(
    log: &L,
    store: &projections::ViewStore,
    views: &[&'static dyn View],
    options: ProjectorOptions,
) -> anyhow::Result<u64> {
    let mut progress = replay::LogProgress::new();
    Ok(match options.until {
        Some(_) => replay::run(log, store, views, options, &mut progress).await?,
        None => replay::run(&Lingering(log.clone()), store, views, options, &mut progress).await?,
    })
}

/// How long the live projector lets events gather before folding them.
/// Following the tail at low load, every event would otherwise be folded
/// (and written to sled) alone, and that work competes with the writer and
/// nats-server for the machine's cores at the moment the next decision is
/// made (`docs/benchmarks.md`: the probe with the projectors stopped). The
/// views lag by at most this much more.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// The log, read so that a lone event (nothing else ready with it) waits up
/// to [`LINGER`] for those that follow it (at most a batch's worth), so the
/// fold takes them together; events that arrive together (a batch) go to
/// the fold at once, as they did.
#[derive(Clone)]
struct Lingering<L>(L);

impl<L: EventLog> replay::Source for Lingering<L> {
    type Error = LogError;

    fn partition(&self) -> u32 {
        self.0.partition()
    }

    async fn catalog_head(&self) -> Result<u64, LogError> {
        self.0.catalog_head().await
    }

    async fn head(&self) -> Result<u64, LogError> {
        self.0.head().await
    }

    async fn read(&self, from: u64, tenant: Option<&str>) -> Result<RecordStream, LogError> {
        use futures_util::{FutureExt, StreamExt};
        let records = self.0.read(from, tenant).await?.fuse();
        let lingering = futures_util::stream::unfold(
            (records, std::collections::VecDeque::new()),
            |(mut records, mut gathered)| async move {
                if let Some(record) = gathered.pop_front() {
                    return Some((record, (records, gathered)));
                }
                let first = records.next().await?;
                // What is ready at once (a batch's events arrive together)
                // is folded at once; only a lone event waits for company.
                while let Some(Some(record)) = records.next().now_or_never() {
                    gathered.push_back(record);
                }
                if !gathered.is_empty() {
                    return Some((first, (records, gathered)));
                }
                let deadline = tokio::time::Instant::now() + LINGER;
                while gathered.len() < crate::log::MAX_BATCH_MESSAGES {
                    match tokio::time::timeout_at(deadline, records.next()).await {
                        Ok(Some(record)) => gathered.push_back(record),
                        Ok(None) | Err(_) => break,
                    }
                }
                Some((first, (records, gathered)))
            },
        );
        Ok(lingering.boxed())
    }
}

/// Brings views up to the log's current head.
pub async fn catch_up<L: EventLog>(
    log: &L,
    store: &projections::ViewStore,
    views: &[&'static dyn View],
) -> anyhow::Result<u64> {
    Ok(replay::catch_up(log, store, views).await?)
}

/// The lowest position of partition 0 every view includes (0 when one is
/// unreadable).
pub fn lowest_checkpoint(views: &projections::ViewStore) -> u64 {
    lowest_checkpoint_in(views, 0)
}

/// The lowest position of `partition` every view includes (0 when one is
/// unreadable).
pub fn lowest_checkpoint_in(views: &projections::ViewStore, partition: u32) -> u64 {
    ALL_VIEWS.iter().map(|v| views.checkpoint_in(v.name(), partition).unwrap_or(0)).min().unwrap_or(0)
}

/// Events of the log the views include: over every partition, the lowest
/// sequence every view includes (for a ledger of one partition, its
/// lowest checkpoint).
pub fn events_folded(views: &projections::ViewStore, partitions: u32) -> u64 {
    (0..partitions).map(|p| crate::log::Position::unpack(lowest_checkpoint_in(views, p)).seq).sum()
}

/// Brings views up to the head of every partition of `log`: partition 0
/// (the catalog) last read and first folded, so every plan an event of
/// another partition names is folded before it.
pub async fn catch_up_all(
    log: &crate::log::AnyLog,
    store: &projections::ViewStore,
    views: &[&'static dyn View],
) -> anyhow::Result<()> {
    for (partition, head) in (0..).zip(log.heads().await?) {
        let options = ProjectorOptions { until: Some(head), batch_size: replay::CATCH_UP_BATCH };
        run(&log.in_partition(partition), store, views, options).await?;
    }
    Ok(())
}
