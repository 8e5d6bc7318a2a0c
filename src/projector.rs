//! The projector runtime: `replay`'s fold loop over the ledger's log. Each
//! view's rows and checkpoint commit together, so a projector may be killed
//! at any point and simply started again.

pub use projections::{select_views, View, ALL_VIEWS};
pub use replay::Options as ProjectorOptions;

use crate::log::EventLog;

/// Folds the log into `views` until `options.until` (or forever), logging
/// progress. Returns the lowest checkpoint reached.
pub async fn run<L: EventLog>(
    log: &L,
    store: &projections::ViewStore,
    views: &[&'static dyn View],
    options: ProjectorOptions,
) -> anyhow::Result<u64> {
    Ok(replay::run(log, store, views, options, &mut replay::LogProgress::new()).await?)
}

/// Brings views up to the log's current head.
pub async fn catch_up<L: EventLog>(
    log: &L,
    store: &projections::ViewStore,
    views: &[&'static dyn View],
) -> anyhow::Result<u64> {
    Ok(replay::catch_up(log, store, views).await?)
}
