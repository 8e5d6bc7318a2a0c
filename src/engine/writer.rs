//! The writer: one task owns the catalog and a cache of tenants, decides
//! queued commands into group-committed batches, appends each batch with
//! every touched tenant's expected position, then folds it into memory and
//! answers (see `mod.rs` for the whole picture).

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use events::{Envelope, Event, CATALOG_TENANT};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use projections::domain::{Fact, TenantState};
use projections::{LedgerView, ViewStore};
use tokio::sync::mpsc;

use super::command::{Command, Rejection, Submission};
use super::decide::{decide, Context, Decision};
use super::loaded::{load, Loaded, Overlay};
use super::pacing::{drain, Returns};
use super::{EngineStats, Job, Reply, MAX_GROUPS_IN_FLIGHT, MAX_RECENT_KEYS, MAX_RETRIES};
use crate::log::{AppendBatch, AppendMessage, EventLog, Expectation, LogError, MAX_BATCH_MESSAGES};

pub(super) struct Engine<L> {
    pub(super) log: L,
    pub(super) views: ViewStore,
    pub(super) catalog: Loaded,
    pub(super) tenants: HashMap<String, Loaded>,
    pub(super) ledger_time_us: i64,
    pub(super) appended: tokio::sync::watch::Sender<u64>,
    /// Tenants with a batch in flight: their next commands wait for it.
    pub(super) busy: HashSet<String>,
    /// Tenants being loaded off the decision loop, with the commands that
    /// wait for them (in arrival order).
    pub(super) loading: HashMap<String, Vec<Job>>,
    /// Decisions made so far: the clock of `Loaded::used`.
    pub(super) tick: u64,
    /// Most tenants kept in memory (see [`Engine::evict`]).
    pub(super) capacity: usize,
    pub(super) stats: std::sync::Arc<EngineStats>,
}

/// The catalog's `log_position` while it must be loaded again before the
/// next decision (a failed catalog append, or another writer moved it).
const STALE: u64 = u64::MAX;

/// A tenant load running off the decision loop.
type Load = futures_util::future::BoxFuture<'static, (String, anyhow::Result<Loaded>)>;

/// A batch ready to append and the commands it answers.
struct Group {
    staged: Vec<Staged>,
    batch: AppendBatch,
}

/// An append that finished, with the commands it answers.
struct InFlight {
    staged: Vec<Staged>,
    result: Result<crate::log::AppendAck, LogError>,
    /// How long the append took.
    took: std::time::Duration,
    /// An atomic batch (more than one message), not a single publish.
    batch: bool,
}

/// What deciding one command came to.
enum Outcome {
    /// Answer now; nothing to append.
    Answer(Reply),
    /// Append these events (each with its hash and encoded bytes); answer
    /// once durable, with `denial` if it was a recorded denial.
    Append { at_us: i64, envelopes: Vec<(Envelope, [u8; 32], Bytes)>, denial: Option<Rejection> },
}

/// How often a command whose answer appends nothing is decided again
/// because the tenant or the catalog moved on the log meanwhile.
const MAX_FRESHNESS_ROUNDS: usize = 16;

/// How many of a decision's events are the command's own: the usage alert
/// crossings a use records come after them. A command's `seq` (and its
/// idempotency key) is its own last event's, so a duplicate of a use that
/// crossed a threshold answers the same `seq` as the first time.
fn own_events<'e>(events: impl IntoIterator<Item = &'e Event>) -> usize {
    events.into_iter().filter(|e| !matches!(e, Event::UsageThresholdCrossed { .. })).count()
}

/// A decided command waiting for its batch to commit.
struct Staged {
    job: Job,
    tenant: String,
    envelopes: Vec<(Envelope, [u8; 32])>,
    /// Index of its first message in the batch.
    offset: usize,
    denial: Option<Rejection>,
}

/// Groups of at most this many messages, each one command's only message
/// and each for another tenant, go out as that many single publishes
/// rather than one atomic batch. An atomic batch costs the server several
/// journal commits whatever its size (`docs/benchmarks.md`), a single
/// publish with the tenant's expectation one, and is as atomic and as
/// durable; so a batch pays off only once it carries enough messages.
/// Small groups are what a partition of a ledger of several sees at a
/// modest load (16 clients over 4 partitions: ~4 a partition), and what
/// one partition sees at 2-4 clients.
const SINGLES_MAX: usize = 4;
/// Appends in flight at once, single publishes included.
const MAX_SINGLES_IN_FLIGHT: usize = 64;

/// `group` as the appends that carry it: itself, or one single publish per
/// command (see [`SINGLES_MAX`]).
fn split(group: Group) -> Vec<Group> {
    let Group { staged, batch } = group;
    let n = batch.messages.len();
    let singles = n > 1
        && n <= SINGLES_MAX
        && staged.len() == n
        && batch.expectations.len() == n
        && staged
            .iter()
            .zip(&batch.messages)
            .zip(&batch.expectations)
            .all(|((s, m), e)| s.envelopes.len() == 1 && s.tenant == m.tenant && s.tenant == e.tenant);
    if !singles {
        return vec![Group { staged, batch }];
    }
    staged
        .into_iter()
        .zip(batch.messages)
        .zip(batch.expectations)
        .map(|((mut staged, message), expectation)| {
            staged.offset = 0;
            Group {
                staged: vec![staged],
                batch: AppendBatch { messages: vec![message], expectations: vec![expectation] },
            }
        })
        .collect()
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl<L: EventLog> Engine<L> {
    pub(super) async fn find_ledger_time(&self) -> anyhow::Result<i64> {
        let mut time = LedgerView::ledger_time_us(&self.views)?;
        let head = self.log.head().await?;
        if head > 0 {
            let mut records = self.log.read(head, None).await?;
            if let Some(record) = records.next().await {
                if let Ok(envelope) = record?.decode().event {
                    time = time.max(envelope.at_us);
                }
            }
        }
        Ok(time)
    }

    pub(super) async fn load(&self, tenant: &str) -> anyhow::Result<Loaded> {
        load(&self.log, &self.views, tenant).await
    }

    async fn ensure_loaded(&mut self, tenant: &str) -> anyhow::Result<()> {
        if self.catalog.log_position == STALE {
            // Every decision needs the catalog.
            self.catalog = self.load(CATALOG_TENANT).await?;
        }
        if tenant == CATALOG_TENANT || self.tenants.contains_key(tenant) {
            return Ok(());
        }
        let loaded = self.load(tenant).await?;
        self.cover(tenant, &loaded.state).await?;
        self.tenants.insert(tenant.to_string(), loaded);
        Ok(())
    }

    /// Reloads the catalog when `state` names a plan or add-on it lacks
    /// (another writer defined it after this engine loaded the catalog).
    async fn cover(&mut self, tenant: &str, state: &TenantState) -> anyhow::Result<()> {
        if !self.catalog.catalog.covers(state) {
            self.catalog = self.load(CATALOG_TENANT).await?;
            if !self.catalog.catalog.covers(state) {
                tracing::warn!(tenant, "the tenant names a plan or add-on the catalog lacks");
            }
        }
        Ok(())
    }

    /// Marks the catalog for reloading before the next decision.
    fn mark_catalog_stale(&mut self) {
        self.catalog = Loaded { log_position: STALE, ..Loaded::default() };
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut inflight: FuturesUnordered<futures_util::future::BoxFuture<'static, InFlight>> =
            FuturesUnordered::new();
        let mut loads: FuturesUnordered<Load> = FuturesUnordered::new();
        let mut open = true;
        let mut returns = Returns::default();
        // Atomic batches in flight; single publishes are not counted.
        let mut batches = 0;
        loop {
            drain(&mut rx, &mut queue);
            if inflight.is_empty() && !queue.is_empty() {
                // Commands answered just now are often followed at once by
                // their callers' next ones: let those tasks run first, so
                // they join this group rather than trail it alone.
                tokio::task::yield_now().await;
                drain(&mut rx, &mut queue);
            }
            let hold = if inflight.is_empty() { returns.hold(queue.len()) } else { None };
            // A second group goes out while one commits only once it is full:
            // batches cost the server per batch more than per message, so two
            // half-full ones in flight commit fewer decisions than one full one
            // and the next filling behind it.
            // Single publishes cost the server little and commit in any
            // order: behind them (and nothing else) the next group goes at
            // once, so small groups pipeline.
            let ready = batches == 0 || queue.len() >= MAX_BATCH_MESSAGES;
            if batches < MAX_GROUPS_IN_FLIGHT
                && inflight.len() < MAX_SINGLES_IN_FLIGHT
                && ready
                && !queue.is_empty()
                && hold.is_none()
            {
                if let Some(group) = self.build_group(&mut queue, !inflight.is_empty(), &mut loads).await {
                    for group in split(group) {
                        self.stats.batch(group.batch.messages.len());
                        let batch = group.batch.messages.len() > 1;
                        batches += usize::from(batch);
                        let log = self.log.clone();
                        let append = tokio::spawn(async move { log.append(group.batch).await });
                        let staged = group.staged;
                        let started = tokio::time::Instant::now();
                        inflight.push(Box::pin(async move {
                            // An append task that died has an unknown outcome,
                            // like a lost connection: its commands fail, and
                            // their tenants reload before deciding again.
                            let result = append.await.unwrap_or_else(|error| {
                                Err(LogError::Unavailable(format!("the append task failed: {error}")))
                            });
                            InFlight { staged, result, took: started.elapsed(), batch }
                        }));
                    }
                    continue;
                }
            }
            if !open && queue.is_empty() && inflight.is_empty() && loads.is_empty() {
                return;
            }
            let until = hold.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                job = rx.recv(), if open => match job {
                    Some(job) => queue.push_back(job),
                    None => open = false,
                },
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    batches -= usize::from(done.batch);
                    match done.result {
                        Ok(ack) => {
                            returns.answered(done.staged.len(), done.took);
                            self.commit(done.staged, ack.first);
                        }
                        Err(error) => self.abandon(done.staged, error, &mut queue),
                    }
                }
                Some((tenant, loaded)) = loads.next(), if !loads.is_empty() => {
                    self.loaded(tenant, loaded, &mut queue).await;
                }
                // Past the deadline, `hold` lets the next group go.
                () = tokio::time::sleep_until(until), if hold.is_some() => {}
            }
        }
    }

    /// Decides commands from the queue into one batch. A tenant's commands
    /// chain within the group: each is decided against the state its
    /// predecessors in the group leave ([`Overlay`]), under the one
    /// expectation its first message carries; a chained command whose
    /// answer would append nothing (it would rest on events not yet
    /// durable) waits for the next group, and so do the tenant's commands
    /// after it. Commands of tenants with a batch in flight wait (they must
    /// see its outcome), as does everything after a held command that
    /// carries its own `at` (imports keep their order). A tenant not in
    /// memory is loaded off the loop while other tenants are decided. A
    /// catalog command travels alone, with nothing else in flight.
    async fn build_group(
        &mut self,
        queue: &mut VecDeque<Job>,
        others_in_flight: bool,
        loads: &mut FuturesUnordered<Load>,
    ) -> Option<Group> {
        if self.busy.contains(CATALOG_TENANT) {
            // Every decision reads the catalog: wait for its change to land.
            return None;
        }
        let mut staged: Vec<Staged> = Vec::new();
        let mut messages: Vec<AppendMessage> = Vec::new();
        let mut expectations: Vec<Expectation> = Vec::new();
        let mut held: VecDeque<Job> = VecDeque::new();
        let mut held_tenants: HashSet<String> = HashSet::new();
        let mut in_group: HashSet<String> = HashSet::new();
        let mut overlays: HashMap<String, Overlay> = HashMap::new();
        while let Some(job) = queue.pop_front() {
            let tenant = job.submission.command.tenant().unwrap_or(CATALOG_TENANT).to_string();
            let catalog = tenant == CATALOG_TENANT;
            let ordered = job.submission.at_us.is_some();
            if catalog && (others_in_flight || !staged.is_empty() || !held.is_empty())
                || messages.len() + 16 > MAX_BATCH_MESSAGES
            {
                queue.push_front(job);
                break;
            }
            if self.busy.contains(&tenant) || held_tenants.contains(&tenant) {
                held_tenants.insert(tenant);
                held.push_back(job);
                if ordered {
                    break;
                }
                continue;
            }
            if let Some(waiting) = self.loading.get_mut(&tenant) {
                waiting.push(job);
                continue;
            }
            if !catalog && !ordered && !self.tenants.contains_key(&tenant) {
                // Cold: load it off the loop; its commands wait for it.
                EngineStats::add(&self.stats.loads, 1);
                self.loading.insert(tenant.clone(), vec![job]);
                let (log, views) = (self.log.clone(), self.views.clone());
                loads.push(Box::pin(async move {
                    let loaded = load(&log, &views, &tenant).await;
                    (tenant, loaded)
                }));
                continue;
            }
            let chained = in_group.contains(&tenant);
            let outcome = if chained {
                let overlay = overlays.entry(tenant.clone()).or_insert_with(|| {
                    let mut overlay = Overlay::new(&self.tenants[&tenant].state);
                    overlay.fold(staged.iter().filter(|s| s.tenant == tenant).flat_map(|s| &s.envelopes));
                    overlay
                });
                match self.decide_encoded(&tenant, &job, Some(overlay)) {
                    Outcome::Answer(_) => {
                        // Decided again after this group commits.
                        held_tenants.insert(tenant);
                        held.push_back(job);
                        if ordered {
                            break;
                        }
                        continue;
                    }
                    append => append,
                }
            } else {
                self.decide_fresh(&tenant, &job).await
            };
            let (at_us, envelopes, denial) = match outcome {
                Outcome::Answer(reply) => {
                    let _ = job.reply.send(reply);
                    continue;
                }
                Outcome::Append { at_us, envelopes, denial } => (at_us, envelopes, denial),
            };
            if messages.len() + envelopes.len() > MAX_BATCH_MESSAGES && !messages.is_empty() {
                // Decide it again at the head of the next group.
                queue.push_front(job);
                break;
            }
            self.tick += 1;
            let loaded = if catalog { Some(&mut self.catalog) } else { self.tenants.get_mut(&tenant) };
            let Some(loaded) = loaded else {
                // Decided just now from memory, so it is there; never
                // append without the tenant's expectation.
                let _ = job.reply.send(Reply::Failed { message: format!("tenant {tenant} left memory") });
                continue;
            };
            loaded.used = self.tick;
            if chained {
                EngineStats::add(&self.stats.chained, 1);
            } else {
                expectations.push(Expectation { tenant: tenant.clone(), last_position: loaded.log_position });
                in_group.insert(tenant.clone());
            }
            let offset = messages.len();
            let mut folded = Vec::with_capacity(envelopes.len());
            for (envelope, hash, bytes) in envelopes {
                messages.push(AppendMessage {
                    tenant: tenant.clone(),
                    kind: envelope.kind().name(),
                    payload: bytes,
                });
                folded.push((envelope, hash));
            }
            if let Some(overlay) = overlays.get_mut(&tenant) {
                overlay.fold(&folded);
            }
            self.ledger_time_us = self.ledger_time_us.max(at_us);
            staged.push(Staged { job, tenant, envelopes: folded, offset, denial });
            if catalog {
                break;
            }
        }
        // Held commands go back in front, in their order.
        while let Some(job) = held.pop_back() {
            queue.push_front(job);
        }
        if staged.is_empty() {
            return None;
        }
        self.busy.extend(in_group);
        self.evict();
        Some(Group { staged, batch: AppendBatch { messages, expectations } })
    }

    /// A load started by [`Engine::build_group`] finished: keep the tenant
    /// and put its waiting commands back at the head of the queue, in order
    /// (or fail them when it could not be loaded).
    async fn loaded(&mut self, tenant: String, loaded: anyhow::Result<Loaded>, queue: &mut VecDeque<Job>) {
        let waiting = self.loading.remove(&tenant).unwrap_or_default();
        match loaded {
            Ok(mut loaded) => {
                if let Err(error) = self.cover(&tenant, &loaded.state).await {
                    tracing::warn!(%error, "reloading the catalog");
                }
                self.tick += 1;
                loaded.used = self.tick;
                // One loaded in the meantime (by a stale check) is as good.
                self.tenants.entry(tenant).or_insert(loaded);
                for job in waiting.into_iter().rev() {
                    queue.push_front(job);
                }
            }
            Err(error) => {
                for job in waiting {
                    let _ = job.reply.send(Reply::Failed { message: format!("loading {tenant}: {error:#}") });
                }
            }
        }
    }

    /// Keeps at most `capacity` tenants in memory: past it, the least
    /// recently used tenants without a batch in flight are dropped, down to
    /// 90% (so eviction runs now and then, not at every group). A dropped
    /// tenant loads again, from its view row and the log, when next needed.
    fn evict(&mut self) {
        if self.tenants.len() <= self.capacity {
            return;
        }
        let excess = self.tenants.len() - self.capacity * 9 / 10;
        let mut idle: Vec<(u64, &String)> =
            self.tenants.iter().filter(|(t, _)| !self.busy.contains(*t)).map(|(t, l)| (l.used, t)).collect();
        if idle.len() > excess {
            idle.select_nth_unstable(excess);
            idle.truncate(excess);
        }
        let evicted: Vec<String> = idle.into_iter().map(|(_, t)| t.clone()).collect();
        EngineStats::add(&self.stats.evictions, evicted.len() as u64);
        for tenant in evicted {
            self.tenants.remove(&tenant);
        }
    }

    /// Decides a command against state no older than the log when the
    /// command arrived (the spec's "Many writers"). An answer that appends
    /// something is checked by the append itself (each touched tenant's
    /// expected position). An answer that appends nothing (a rejection, a
    /// duplicate) is checked here: the tenant's and the catalog's heads on
    /// the log must still be those the state was folded to, or the stale
    /// part is reloaded and the command decided again.
    async fn decide_fresh(&mut self, tenant: &str, job: &Job) -> Outcome {
        for _ in 0..MAX_FRESHNESS_ROUNDS {
            if let Err(error) = self.ensure_loaded(tenant).await {
                return Outcome::Answer(Reply::Failed { message: format!("loading {tenant}: {error:#}") });
            }
            let outcome = self.decide_encoded(tenant, job, None);
            let Outcome::Answer(reply) = &outcome else { return outcome };
            let settled = match reply {
                Reply::Ok { .. } => false,
                Reply::Rejected { rejection, .. } => rejection.code == "unavailable",
                Reply::Failed { .. } => true,
            };
            if settled {
                return outcome;
            }
            match self.drop_stale(tenant).await {
                Ok(false) => return outcome,
                Ok(true) => continue,
                Err(error) => return Outcome::Answer(Reply::Failed { message: error.to_string() }),
            }
        }
        Outcome::Answer(Reply::Failed {
            message: format!("tenant {tenant} kept changing on the log while deciding; try again"),
        })
    }

    /// Compares the tenant's and the catalog's heads on the log with what
    /// memory holds, drops whatever is behind (the catalog is reloaded at
    /// once), and says whether anything was.
    async fn drop_stale(&mut self, tenant: &str) -> Result<bool, LogError> {
        let catalog_only = tenant == CATALOG_TENANT;
        let (catalog_head, tenant_head) = if catalog_only {
            (self.log.tenant_head(CATALOG_TENANT).await?, 0)
        } else {
            let (c, t) = futures_util::future::join(
                self.log.tenant_head(CATALOG_TENANT),
                self.log.tenant_head(tenant),
            )
            .await;
            (c?, t?)
        };
        let mut stale = false;
        if catalog_head != self.catalog.log_position {
            stale = true;
            self.mark_catalog_stale();
        }
        if !catalog_only && self.tenants.get(tenant).is_some_and(|l| l.log_position != tenant_head) {
            stale = true;
            self.tenants.remove(tenant);
        }
        Ok(stale)
    }

    /// Decides one command against memory as it stands and encodes its
    /// events. No IO beyond the view lookups of request keys and files.
    fn decide_encoded(&self, tenant: &str, job: &Job, overlay: Option<&Overlay>) -> Outcome {
        let catalog = tenant == CATALOG_TENANT;
        let loaded = if catalog { &self.catalog } else { &self.tenants[tenant] };
        let state = overlay.map_or(&loaded.state, |o| &o.state);
        // Time never runs backwards for a tenant: its newest event (whoever
        // wrote it) and the catalog's bound every later `at`.
        let floor_us = state.chain.last_at_us.max(self.catalog.catalog.chain.last_at_us);
        // A retry after a conflict was in order against this engine's ledger
        // time when first decided; against the log it must be now.
        let regression = job
            .submission
            .at_us
            .filter(|at| *at < floor_us || (*at < self.ledger_time_us && job.retries == 0));
        let at_us = match job.submission.at_us {
            Some(at) => at,
            None => {
                let now_us = now_us().max(self.ledger_time_us).max(floor_us);
                // A subscription's `at` is its anchor, which every period
                // bound repeats: the ledger's clock gives it a whole second.
                if matches!(job.submission.command, Command::Subscribe { .. }) {
                    (now_us + 999_999) / 1_000_000 * 1_000_000
                } else {
                    now_us
                }
            }
        };
        let decided = self.decide(tenant, &job.submission, at_us, overlay);
        if let Some(at) = regression {
            // A resend of a command already accepted appends nothing, so
            // its old `at` moves no clock: it answers as the first time.
            if !matches!(decided, Ok(Decision::Duplicate { .. })) {
                let rejection = Rejection::new(
                    "clock_regression",
                    format!(
                        "at {} is before ledger time {}",
                        ledger_client::protocol::rfc3339(at),
                        ledger_client::protocol::rfc3339(floor_us.max(self.ledger_time_us))
                    ),
                );
                return Outcome::Answer(Reply::Rejected { rejection, seq: None });
            }
        }
        let (events, denial) = match decided {
            Err(rejection) => return Outcome::Answer(Reply::Rejected { rejection, seq: None }),
            Ok(Decision::Duplicate { seq }) => return Outcome::Answer(Reply::Ok { seq, duplicate: true }),
            Ok(Decision::Accept(events)) => (events, None),
            Ok(Decision::Deny { event, rejection }) => (vec![event], Some(rejection)),
        };
        let mut prev_hash = overlay.map_or_else(|| loaded.hash(catalog), |o| o.state.chain.last_hash);
        let mut envelopes = Vec::with_capacity(events.len());
        let last = own_events(&events).saturating_sub(1);
        for (i, payload) in events.into_iter().enumerate() {
            let envelope = Envelope {
                event_id: uuid::Uuid::now_v7().as_u128(),
                tenant: tenant.to_string(),
                at_us,
                actor: job.submission.actor.clone(),
                prev_hash,
                // A client's clock may run ahead of the ledger's; the
                // admission cannot be later than the recording.
                offline: job.submission.admitted_offline_at_us.and_then(|admitted_at_us| {
                    matches!(payload, Event::FileStored { .. } | Event::TokensConsumed { .. })
                        .then_some(events::Offline { admitted_at_us: admitted_at_us.min(at_us) })
                }),
                // The key rides on the command's last event, whose position
                // is the answer's `seq`.
                key: (i == last && denial.is_none())
                    .then(|| job.submission.idempotency_key.clone())
                    .flatten()
                    .map(|key| events::CommandKey { key, fingerprint: job.submission.command.fingerprint() }),
                payload,
            };
            // The decider keeps events within the codec's bounds; anything
            // it missed is a rejection here, decided before any append.
            let bytes = match events::encode(&envelope) {
                Ok(bytes) => bytes,
                Err(error) => {
                    let code = if catalog { "malformed" } else { "invalid_amount" };
                    let rejection =
                        Rejection::new(code, format!("the command's event cannot be recorded: {error}"));
                    return Outcome::Answer(Reply::Rejected { rejection, seq: None });
                }
            };
            prev_hash = events::event_hash(&bytes);
            envelopes.push((envelope, prev_hash, Bytes::from(bytes)));
        }
        Outcome::Append { at_us, envelopes, denial }
    }

    /// Decides against the tenant's memory, or the overlay of a chained
    /// command; request keys and files are looked up in the overlay, then
    /// memory, then the view.
    fn decide(
        &self,
        tenant: &str,
        submission: &Submission,
        at_us: i64,
        overlay: Option<&Overlay>,
    ) -> Result<Decision, Rejection> {
        let empty = TenantState::default();
        let loaded = self.tenants.get(tenant);
        let state = overlay.map(|o| &o.state).or(loaded.map(|l| &l.state)).unwrap_or(&empty);
        let earlier_request = match &submission.command {
            Command::ConsumeTokens { request, .. } => match overlay
                .and_then(|o| o.requests.get(request))
                .or_else(|| loaded.and_then(|l| l.recent_requests.get(request)))
            {
                Some(entry) => Some(*entry),
                None if loaded.is_some_and(|l| !l.view_requests) => None,
                None => LedgerView::request(&self.views, tenant, request)
                    .map_err(|e| Rejection::new("unavailable", format!("reading idempotency keys: {e}")))?,
            },
            _ => None,
        };
        let earlier_key = match &submission.idempotency_key {
            None => None,
            Some(key) if tenant == CATALOG_TENANT => self.catalog.catalog.keys.get(key).copied(),
            Some(key) => match overlay
                .and_then(|o| o.keys.get(key))
                .or_else(|| loaded.and_then(|l| l.recent_keys.get(key)))
            {
                Some(entry) => Some(*entry),
                None if loaded.is_some_and(|l| !l.view_keys) => None,
                None => LedgerView::command_key(&self.views, tenant, key)
                    .map_err(|e| Rejection::new("unavailable", format!("reading idempotency keys: {e}")))?,
            },
        };
        let existing_file = match &submission.command {
            Command::Upload { file, .. } | Command::DeleteFile { file, .. } => {
                match overlay
                    .and_then(|o| o.files.get(file))
                    .or_else(|| loaded.and_then(|l| l.recent_files.get(file)))
                {
                    Some(change) => *change,
                    None if loaded.is_some_and(|l| !l.view_files) => None,
                    None => LedgerView::file(&self.views, tenant, file)
                        .map_err(|e| Rejection::new("unavailable", format!("reading live files: {e}")))?,
                }
            }
            _ => None,
        };
        let ctx = Context {
            catalog: &self.catalog.catalog,
            state,
            actor: &submission.actor,
            at_us,
            earlier_request,
            existing_file,
            admitted_offline: submission.admitted_offline_at_us.is_some(),
            fingerprint: submission.idempotency_key.as_ref().map(|_| submission.command.fingerprint()),
            earlier_key,
        };
        decide(&ctx, &submission.command)
    }

    /// The batch is durable: fold it into memory and answer.
    fn commit(&mut self, staged: Vec<Staged>, first: u64) {
        let mut last = 0;
        let mut replies = Vec::with_capacity(staged.len());
        for s in staged {
            self.busy.remove(&s.tenant);
            let catalog = s.tenant == CATALOG_TENANT;
            let own = own_events(s.envelopes.iter().map(|(e, _)| &e.payload));
            let seq = first + (s.offset + own) as u64 - 1;
            // A tenant no longer in memory reloads from the log when next
            // needed, which then includes this batch.
            let loaded = if catalog { Some(&mut self.catalog) } else { self.tenants.get_mut(&s.tenant) };
            if let Some(loaded) = loaded {
                for (i, (envelope, hash)) in s.envelopes.iter().enumerate() {
                    let position = first + (s.offset + i) as u64;
                    loaded.fold(catalog, &Fact { position, hash: *hash, envelope });
                }
                if loaded.recent_len() > MAX_RECENT_KEYS {
                    self.tenants.remove(&s.tenant);
                }
            }
            // Everything this batch appended, crossings included.
            last = last.max(first + (s.offset + s.envelopes.len()) as u64 - 1);
            let reply = match s.denial {
                None => Reply::Ok { seq, duplicate: false },
                Some(rejection) => Reply::Rejected { rejection, seq: Some(seq) },
            };
            replies.push((s.job.reply, reply));
        }
        // Before answering, so a caller that then syncs waits for this batch.
        self.appended.send_modify(|a| *a = (*a).max(last));
        for (to, reply) in replies {
            let _ = to.send(reply);
        }
    }

    /// The batch was not stored: drop what memory may believe about the
    /// touched tenants and retry or fail their commands.
    fn abandon(&mut self, staged: Vec<Staged>, error: LogError, queue: &mut VecDeque<Job>) {
        let conflict = matches!(error, LogError::Conflict { .. });
        if conflict {
            EngineStats::add(&self.stats.conflicts, 1);
        }
        if let LogError::Conflict { tenant, .. } = &error {
            tracing::debug!(%tenant, "append conflict; reloading and deciding again");
        }
        for s in staged.into_iter().rev() {
            self.busy.remove(&s.tenant);
            if s.tenant == CATALOG_TENANT {
                self.mark_catalog_stale();
            } else {
                self.tenants.remove(&s.tenant);
            }
            let mut job = s.job;
            if conflict && job.retries < MAX_RETRIES {
                job.retries += 1;
                queue.push_front(job);
            } else {
                let _ = job.reply.send(Reply::Failed { message: error.to_string() });
            }
        }
    }
}
