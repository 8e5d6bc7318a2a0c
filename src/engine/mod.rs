//! The ledger engine: the single writer per tenant inside a process.
//!
//! One task owns the in-memory state (catalog plus a cache of tenants) and
//! takes commands from a queue. It decides a run of queued commands, appends
//! all their events as **one** log batch (group commit: one durable round
//! trip for many decisions), and only then folds the events into memory and
//! answers. Each batch carries every touched tenant's expected last position;
//! when another writer got there first, the tenant is reloaded and its
//! commands decided again.
//!
//! Latency at low load, throughput at high: a command that finds the
//! engine idle forms a group of one and goes out at once (one message is a
//! single publish, not an atomic batch: see `log::jetstream`); while a
//! batch commits, the queue fills the next group, which goes out before
//! the first commits only when full. With nothing in flight, the engine
//! first lets the tasks just answered run (they often send their next
//! command at once), and after a commit of many commands it waits until
//! as many are queued, for at most three times that append's time (20 ms
//! at most; `pacing`), so a busy tenant's batches stay full rather than
//! alternating half-full. A
//! group may carry many commands of one tenant, each decided against what
//! its predecessors in the group leave (chained decisions, one expectation
//! per tenant); if the batch fails, every one of them is decided again. A tenant with a batch
//! in flight waits for it. Commands carrying their own `at` (imports) keep
//! their order. Two batches are in flight at once. A catalog command
//! travels alone, with nothing else in flight (every decision reads the
//! catalog).
//!
//! A cold tenant loads off the decision loop (other tenants are decided
//! meanwhile) from its row in the `ledger` view plus its events in the log
//! after that row, never by replaying its whole history. At most
//! `EngineOptions::tenant_cache` tenants stay in memory.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use events::CATALOG_TENANT;
use projections::ViewStore;
use tokio::sync::{mpsc, oneshot};

pub mod command;
pub mod decide;
mod loaded;
mod pacing;
mod writer;

use self::command::{Rejection, Submission};
use self::loaded::Loaded;
use self::writer::Engine;
use crate::log::EventLog;
use crate::projector::{self, ProjectorOptions};

/// The answer to one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Accepted (`duplicate`: accepted before, nothing appended). `seq` is the
    /// position of the command's last event.
    Ok { seq: u64, duplicate: bool },
    /// Rejected, or denied (a denial was recorded at `seq`).
    Rejected { rejection: Rejection, seq: Option<u64> },
    /// The log failed; whether anything was stored is unknown. Retrying the
    /// same command is safe where it has an idempotency key.
    Failed { message: String },
}

struct Job {
    submission: Submission,
    reply: oneshot::Sender<Reply>,
    retries: u32,
}

/// What an engine has done, counted as it runs (read by tests and
/// benchmarks; relaxed atomics, so a reading is a moment's snapshot).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Commands decided against a predecessor in the same group.
    pub chained: std::sync::atomic::AtomicU64,
    /// Batches another writer got to first (their commands decided again).
    pub conflicts: std::sync::atomic::AtomicU64,
    /// Tenants loaded off the decision loop.
    pub loads: std::sync::atomic::AtomicU64,
    /// Tenants dropped from memory by the cache bound.
    pub evictions: std::sync::atomic::AtomicU64,
    /// Batches appended, and the messages in them.
    pub batches: std::sync::atomic::AtomicU64,
    pub messages: std::sync::atomic::AtomicU64,
    /// Batches by messages in them: bucket i counts batches of more than
    /// 2^(i-1) and at most 2^i messages; the last bucket counts every larger
    /// one. Read by `GET /metrics`.
    pub batch_sizes: [std::sync::atomic::AtomicU64; BATCH_SIZE_BUCKETS],
}

/// Buckets of [`EngineStats::batch_sizes`]: up to 1, 2, 4, ... 1024 messages.
pub const BATCH_SIZE_BUCKETS: usize = 11;

impl EngineStats {
    pub(crate) fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts one appended batch of `messages` messages.
    pub(crate) fn batch(&self, messages: usize) {
        EngineStats::add(&self.batches, 1);
        EngineStats::add(&self.messages, messages as u64);
        let bucket =
            (messages.max(1).next_power_of_two().trailing_zeros() as usize).min(BATCH_SIZE_BUCKETS - 1);
        EngineStats::add(&self.batch_sizes[bucket], 1);
    }

    pub fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// How an engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Most tenants kept in memory; past it the least recently used are
    /// dropped (and load again from the view when next needed), so memory
    /// does not grow with every tenant ever touched. Default 50,000, or
    /// `LEDGER_TENANT_CACHE`.
    pub tenant_cache: usize,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        let tenant_cache =
            std::env::var("LEDGER_TENANT_CACHE").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000);
        EngineOptions { tenant_cache }
    }
}

/// A handle to a running engine. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    /// One decision pipeline per partition, in partition order: partitions
    /// commit in parallel, and a busy one delays no other.
    txs: std::sync::Arc<Vec<mpsc::Sender<Job>>>,
    /// The projector tasks (one per partition), stopped by [`Ledger::shutdown`].
    projectors: std::sync::Arc<Vec<tokio::task::AbortHandle>>,
    views: ViewStore,
    /// Per partition: the last position its pipeline appended.
    appended: std::sync::Arc<Vec<tokio::sync::watch::Receiver<u64>>>,
    /// Catalog commands queued here and not answered yet (a ledger of
    /// several partitions only): see [`Ledger::submit_nowait`].
    catalog_pending: std::sync::Arc<tokio::sync::watch::Sender<usize>>,
    stats: std::sync::Arc<EngineStats>,
}

/// How often a command is re-decided after conflicts before giving up. Each
/// conflict means another writer committed to the tenant, so the system as a
/// whole always progresses; the cap only bounds how long one command can be
/// overtaken. Writers normally own disjoint tenants, so this is rare.
const MAX_RETRIES: u32 = 1000;
/// Batches appended concurrently: one commits while the next fills, and the
/// next goes out before the first commits only when full. Measured on 2
/// cores (`bench decide`): 2 in flight beat 3, 4, 8 and 32, and waiting for
/// a full second batch beat sending it half-full (2,000 clients: 0.36-0.42
/// of bare batch publishing against 0.28-0.31), because fewer, larger
/// batches cost the server less per decision.
const MAX_GROUPS_IN_FLIGHT: usize = 2;
/// A tenant's in-memory request keys and files are dropped (by reloading
/// the tenant from the view) past this many.
const MAX_RECENT_KEYS: usize = 50_000;

impl Ledger {
    /// Starts the engine and the projectors over `log` and `views`.
    pub async fn start<L: EventLog>(log: L, views: ViewStore) -> anyhow::Result<Ledger> {
        Ledger::start_with(log, views, EngineOptions::default()).await
    }

    /// Starts the engine with `options`.
    pub async fn start_with<L: EventLog>(
        log: L,
        views: ViewStore,
        options: EngineOptions,
    ) -> anyhow::Result<Ledger> {
        let stats: std::sync::Arc<EngineStats> = std::sync::Arc::default();
        let (mut txs, mut appended, mut projectors) = (Vec::new(), Vec::new(), Vec::new());
        for partition in 0..log.partitions() {
            let (appended_tx, appended_rx) = tokio::sync::watch::channel(0);
            let mut engine = Engine {
                log: log.in_partition(partition),
                views: views.clone(),
                catalog: Loaded::default(),
                tenants: HashMap::new(),
                ledger_time_us: 0,
                appended: appended_tx,
                busy: HashSet::new(),
                loading: HashMap::new(),
                tick: 0,
                capacity: options.tenant_cache.max(1),
                stats: stats.clone(),
            };
            engine.ledger_time_us = engine.find_ledger_time().await?;
            engine.catalog = engine.load(CATALOG_TENANT).await?;
            let (tx, rx) = mpsc::channel(4096);
            let task = tokio::spawn(engine.run(rx));
            tokio::spawn(async move {
                if let Err(error) = task.await {
                    if error.is_panic() {
                        // Never a zombie: a process whose engine stopped would
                        // answer "unavailable" forever. Exit so a supervisor
                        // restarts it; the log holds every acknowledged event.
                        tracing::error!(%error, partition, "the ledger engine stopped; exiting");
                        std::process::exit(70);
                    }
                }
            });
            txs.push(tx);
            appended.push(appended_rx);
            projectors.push(for_each_projection(&log.in_partition(partition), &views, partition));
        }
        Ok(Ledger {
            txs: std::sync::Arc::new(txs),
            projectors: std::sync::Arc::new(projectors),
            views,
            appended: std::sync::Arc::new(appended),
            catalog_pending: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            stats,
        })
    }

    /// Decides and records one command.
    pub async fn submit(&self, submission: Submission) -> Reply {
        wait(self.submit_nowait(submission).await).await
    }

    /// Queues a command and returns where its reply will arrive. Commands
    /// are decided in the order they are queued.
    ///
    /// The catalog is decided in partition 0's pipeline, and a command of
    /// another partition is decided in its own: on their own, a
    /// `subscribe` queued right after the `define_plan` it names could be
    /// decided first, against a catalog without the plan. So while a
    /// catalog command queued here is unanswered, commands of the other
    /// partitions wait to be queued (catalog changes are rare; the wait is
    /// one commit). Once it is answered, a command naming the new plan or
    /// add-on finds it: its partition's pipeline re-reads the catalog's
    /// head before it rejects anything.
    pub async fn submit_nowait(&self, submission: Submission) -> oneshot::Receiver<Reply> {
        let (reply, answer) = oneshot::channel();
        // The pipeline of the command's tenant's partition (the catalog's:
        // partition 0).
        let tenant = submission.command.tenant().unwrap_or(CATALOG_TENANT);
        let partition = crate::log::partition_of(tenant, self.partitions());
        let reply = if self.partitions() == 1 {
            reply
        } else if tenant == CATALOG_TENANT {
            self.catalog_pending.send_modify(|n| *n += 1);
            let (relay, relayed) = oneshot::channel();
            let pending = self.catalog_pending.clone();
            tokio::spawn(async move {
                let answer = wait(relayed).await;
                pending.send_modify(|n| *n -= 1);
                let _ = reply.send(answer);
            });
            relay
        } else {
            if partition != 0 {
                let mut pending = self.catalog_pending.subscribe();
                let _ = pending.wait_for(|n| *n == 0).await;
            }
            reply
        };
        let tx = &self.txs[partition as usize];
        if let Err(mpsc::error::SendError(job)) = tx.send(Job { submission, reply, retries: 0 }).await {
            let _ = job.reply.send(Reply::Failed { message: "the ledger engine has stopped".into() });
        }
        answer
    }

    /// Waits until every view includes every event this engine appended.
    pub async fn sync(&self) -> anyhow::Result<()> {
        for target in self.appended_all() {
            self.sync_to(target).await?;
        }
        Ok(())
    }

    /// How many partitions the ledger has.
    pub fn partitions(&self) -> u32 {
        self.txs.len() as u32
    }

    /// The position of the last event this engine appended to partition 0
    /// (the whole ledger when it has one partition).
    pub fn appended(&self) -> u64 {
        *self.appended[0].borrow()
    }

    /// Per partition, the position of the last event this engine appended.
    pub fn appended_all(&self) -> Vec<u64> {
        self.appended.iter().map(|a| *a.borrow()).collect()
    }

    /// Waits until every view includes the log up to `target` (in the
    /// partition `target` is a position of).
    pub async fn sync_to(&self, target: u64) -> anyhow::Result<()> {
        let partition = projections::partition_of_position(target);
        for view in projector::ALL_VIEWS {
            while self.views.checkpoint_in(view.name(), partition)? < target {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    }

    /// Stops the projectors and returns once no fold is writing the views.
    /// Commands already queued are still decided; the engine ends when the
    /// last handle is dropped. Stopping a projector at any point is safe: it
    /// resumes from its checkpoint.
    pub async fn shutdown(&self) {
        for task in self.projectors.iter() {
            task.abort();
        }
        // A fold thread ends its batch before its run lets go of the store.
        while self.views.folding() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn views(&self) -> &ViewStore {
        &self.views
    }

    /// What the engine has done so far.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The engine's counters, shared (for a metrics registry).
    pub fn stats_handle(&self) -> std::sync::Arc<EngineStats> {
        self.stats.clone()
    }
}

/// The reply a queued command will get.
pub async fn wait(answer: oneshot::Receiver<Reply>) -> Reply {
    answer.await.unwrap_or_else(|_| Reply::Failed { message: "the ledger engine has stopped".into() })
}

/// Runs one task that follows a partition of the log and folds it into
/// every view.
fn for_each_projection<L: EventLog>(log: &L, views: &ViewStore, partition: u32) -> tokio::task::AbortHandle {
    let (log, views) = (log.clone(), views.clone());
    let task = tokio::spawn(async move {
        // A lost connection ends the read; the views keep their checkpoints,
        // so the projector starts again from there once the log answers.
        // A read that silently stalls (an ordered consumer notices a server
        // restart only after missed heartbeats, tens of seconds) is caught
        // by the watchdog: the log has events the views lack, and the views
        // have not moved for STALL_LIMIT.
        // A panic in a fold (a bug) ends only that run, not the projector.
        loop {
            // One fold loop per store: a run aborted while its fold thread
            // finishes a batch keeps the lease until that batch is written.
            let lease = loop {
                match views.begin_fold_partition(partition) {
                    Some(lease) => break lease,
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            let (run_log, run_views) = (log.clone(), views.clone());
            let mut run = AbortOnDrop(tokio::spawn(async move {
                let _lease = lease;
                let options = ProjectorOptions::default();
                projector::run(&run_log, &run_views, &projector::ALL_VIEWS, options).await
            }));
            tokio::select! {
                result = &mut run.0 => match result {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "projector interrupted; resuming in 1 s");
                        // sled keeps a write error (a full disk) until the
                        // store is reopened: without this the views would
                        // never move again, even once space returns.
                        // Reads still work meanwhile, so the store is
                        // reopened only once its disk has room again.
                        // (Probing writes to disk: off the async workers.)
                        let store = views.clone();
                        let reopened = tokio::task::spawn_blocking(move || {
                            (!store.writable() && store.has_room()).then(|| store.reopen())
                        });
                        match reopened.await {
                            Ok(None | Some(Ok(()))) => {}
                            Ok(Some(Err(error))) => tracing::warn!(%error, "cannot reopen the views yet"),
                            Err(error) => tracing::warn!(%error, "reopening the views failed"),
                        }
                    }
                    Err(error) => tracing::error!(%error, "projector failed; resuming in 1 s"),
                },
                () = stalled(&log, &views, partition) => {
                    tracing::warn!("projector stalled behind the log; restarting it");
                    run.0.abort();
                    let _ = (&mut run.0).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    task.abort_handle()
}

/// Aborts the task when dropped: [`Ledger::shutdown`] aborts the
/// projector's supervising task, and with it the run it supervises.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long the views may stand still while the log is ahead of them.
const STALL_LIMIT: Duration = Duration::from_secs(2);

/// Returns once the views have stood still behind the log for [`STALL_LIMIT`].
async fn stalled<L: EventLog>(log: &L, views: &ViewStore, partition: u32) {
    let lowest = || projector::lowest_checkpoint_in(views, partition);
    let mut last = (lowest(), tokio::time::Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = lowest();
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
            continue;
        }
        let behind = log.head().await.is_ok_and(|head| head > now);
        if !behind {
            last.1 = tokio::time::Instant::now();
        } else if last.1.elapsed() >= STALL_LIMIT {
            return;
        }
    }
}
